"""Every PrometheusRule alert, evaluated by the real `promtool test rules` on made-up series.

The rules are the `spec.groups` of the PrometheusRule in the built base, written as a plain rules
file. Each case below is one promtool unit test: input series (promtool's expanding notation; time
starts at 0, so `time()` equals the minutes elapsed times 60), an evaluation time and the alerts
expected then. Every alert has at least one case where it fires and one where it stays quiet.
`make test` installs promtool (Debian package `prometheus`); without it these tests fail.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field

import pytest
import yaml

from tests.cluster.test_manifests import build, one

PROMTOOL = shutil.which("promtool")
JOB = 'job="mlm_pretrain"'
PUSHGATEWAY_UP = 'up{job="mlm-pushgateway"}'


@dataclass(frozen=True)
class Case:
    """One promtool test: series -> the alerts (run_id or other labels) firing at `at`."""

    alert: str
    name: str
    series: dict[str, str]
    at: str
    firing: list[dict[str, str]] = field(default_factory=list)


def run(run_id: str, **gauges: str) -> dict[str, str]:
    """Series of one run: {gauge name without the mlm_ prefix (or push_time_seconds): values}."""
    series = {}
    for name, values in gauges.items():
        metric = name if name == "push_time_seconds" else f"mlm_{name}"
        series[f'{metric}{{{JOB},run_id="{run_id}"}}'] = values
    return series


ALIVE = "0+60x120"  # a push (or report) every minute: the value is the push time
CASES = [
    Case(
        "MLMTrainingMetricsStale",
        "pushes stop at minute 10 (killed)",
        {**run("a", push_time_seconds="0+60x10 600x40", training_finished="0x50")},
        at="35m",
        firing=[{"run_id": "a"}],
    ),
    Case(
        "MLMTrainingMetricsStale",
        "live, finished and diverged runs",
        {
            **run("live", push_time_seconds=ALIVE, training_finished="0x50"),
            **run("done", push_time_seconds="0+60x10 600x40", training_finished="0x9 1x40"),
            **run("nan", push_time_seconds="0+60x10 600x40", training_diverged="0x9 1x40"),
        },
        at="35m",
    ),
    Case(
        "MLMTrainingNoProgress",
        "heartbeats go on, reports stop at minute 5 (hung collective)",
        {**run("a", push_time_seconds=ALIVE, last_success_timestamp="0+60x5 300x60")},
        at="50m",
        firing=[{"run_id": "a"}],
    ),
    Case(
        "MLMTrainingNoProgress",
        "progressing, dead (stale instead) and finished runs",
        {
            **run("live", push_time_seconds=ALIVE, last_success_timestamp=ALIVE),
            **run(
                "dead", push_time_seconds="0+60x5 300x60", last_success_timestamp="0+60x5 300x60"
            ),
            **run(
                "done",
                push_time_seconds=ALIVE,
                last_success_timestamp="0+60x5 300x60",
                training_finished="0x4 1x60",
            ),
        },
        at="50m",
    ),
    Case(
        "MLMTrainingLossNaN",
        "NaN loss with diverged=1, an infinite loss, NaN weights",
        {
            **run("nan", train_loss="5 4 3 NaN", training_diverged="0 0 0 1"),
            **run("inf", train_loss="5 4 3 Inf"),
            **run("weights", train_loss="5 4 3 3", training_diverged="0 0 0 1"),
        },
        at="5m",
        firing=[{"run_id": "inf"}, {"run_id": "nan"}, {"run_id": "weights"}],
    ),
    Case(
        "MLMTrainingLossNaN",
        "finite losses, diverged=0",
        {
            **run("a", train_loss="5-0.1x30", training_diverged="0x30"),
            **run("b", train_loss="2x30"),
        },
        at="20m",
    ),
    Case(
        "MLMThroughputDrop",
        "tokens/s fall from 1000 to 300 at minute 80",
        {**run("a", tokens_per_second="1000x80 300x40")},
        at="110m",
        firing=[{"run_id": "a"}],
    ),
    Case(
        "MLMThroughputDrop",
        "steady and a mild dip to 700",
        {
            **run("steady", tokens_per_second="1000x120"),
            **run("dip", tokens_per_second="1000x80 700x40"),
        },
        at="110m",
    ),
    Case(
        "MLMTrainingMetricsVanished",
        "the group disappears at minute 21 (gateway restarted)",
        {
            **run("a", push_time_seconds="0+60x20 stale", training_finished="0x20 stale"),
            PUSHGATEWAY_UP: "1x60",
        },
        at="40m",
        firing=[{"run_id": "a"}],
    ),
    Case(
        "MLMTrainingMetricsVanished",
        "a finished group deleted, a live group, the gateway down",
        {
            **run("done", push_time_seconds="0+60x20 stale", training_finished="0x10 1x10 stale"),
            **run("live", push_time_seconds=ALIVE, training_finished="0x60"),
            PUSHGATEWAY_UP: "1x60",
        },
        at="40m",
    ),
    Case(
        "MLMTrainingMetricsVanished",
        "every group gone while the gateway is down",
        {
            **run("a", push_time_seconds="0+60x20 stale", training_finished="0x20 stale"),
            PUSHGATEWAY_UP: "1x20 0x40",
        },
        at="40m",
    ),
    Case(
        "MLMPushgatewayDown",
        "scrapes fail from minute 5",
        {PUSHGATEWAY_UP: "1x5 0x20"},
        at="15m",
        firing=[{"job": "mlm-pushgateway"}],
    ),
    Case("MLMPushgatewayDown", "scraped", {PUSHGATEWAY_UP: "1x20"}, at="15m"),
    Case(
        "MLMPushgatewayDown",
        "target gone entirely: up == 0 alone stays silent",
        {PUSHGATEWAY_UP: "1x5 stale"},
        at="20m",
    ),
    Case(
        "MLMPushgatewayAbsent",
        "the target disappears at minute 6 (stale)",
        {PUSHGATEWAY_UP: "1x5 stale", 'up{job="other"}': "1x30"},
        at="20m",
        firing=[{"job": "mlm-pushgateway"}],
    ),
    Case(
        "MLMPushgatewayAbsent", "scraped, even while down", {PUSHGATEWAY_UP: "1x5 0x20"}, at="20m"
    ),
]


@pytest.fixture(scope="module")
def promtool() -> str:
    if PROMTOOL is None:
        pytest.fail("promtool is not installed: run `make test` (Debian package prometheus)")
    return PROMTOOL


@pytest.fixture(scope="module")
def rules() -> dict[str, dict]:
    """{alert name: rule} of the built PrometheusRule."""
    groups = one(build("base"), "PrometheusRule")["spec"]["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"] if "alert" in rule}


@pytest.fixture
def rules_file(tmp_path, promtool) -> str:
    """The PrometheusRule's spec.groups as a plain rules file that `promtool check rules` passes."""
    groups = one(build("base"), "PrometheusRule")["spec"]["groups"]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    checked = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    return str(path)


def render(template: str, labels: dict[str, str]) -> str:
    """An annotation template with its `{{ $labels.x }}` filled in (all the rules use)."""
    return re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels[m.group(1)], template)


def unit_test(case: Case, rule: dict) -> dict:
    """The promtool unit-test document of `case`."""
    expected = []
    for labels in case.firing:
        full = {**labels, **rule["labels"]}
        annotations = {key: render(value, full) for key, value in rule["annotations"].items()}
        expected.append({"exp_labels": full, "exp_annotations": annotations})
    return {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in case.series.items()],
                "alert_rule_test": [
                    {"eval_time": case.at, "alertname": case.alert, "exp_alerts": expected}
                ],
            }
        ],
    }


def promtool_test(promtool: str, rules_file: str, case: Case, rule: dict):
    path = rules_file.replace("rules.yaml", "test.yaml")
    with open(path, "w") as file:
        yaml.safe_dump(unit_test(case, rule), file, sort_keys=False)
    return subprocess.run(
        [promtool, "test", "rules", path], capture_output=True, text=True, check=False
    )


def test_every_alert_has_a_firing_and_a_quiet_case(rules):
    assert {case.alert for case in CASES if case.firing} == set(rules)
    assert {case.alert for case in CASES if not case.firing} == set(rules)


@pytest.mark.parametrize("case", CASES, ids=[f"{c.alert}: {c.name}" for c in CASES])
def test_alert(case, rules, rules_file, promtool):
    result = promtool_test(promtool, rules_file, case, rules[case.alert])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_fails_a_wrong_expectation(rules, rules_file, promtool):
    """The harness can fail: finite losses do not raise the NaN alert."""
    quiet = next(c for c in CASES if c.alert == "MLMTrainingLossNaN" and not c.firing)
    wrong = Case(quiet.alert, "wrong", quiet.series, quiet.at, firing=[{"run_id": "a"}])
    result = promtool_test(promtool, rules_file, wrong, rules[wrong.alert])
    assert result.returncode != 0 and "MLMTrainingLossNaN" in result.stdout + result.stderr
