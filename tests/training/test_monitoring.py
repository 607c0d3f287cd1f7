"""Progress lines, TensorBoard event files and a real Prometheus Pushgateway."""

from __future__ import annotations

import io
import logging

import pytest

from mlm.monitoring import (
    ProgressPrinter,
    PushgatewayReporter,
    TensorBoardWriter,
    format_duration,
)
from tests.training.conftest import _free_port, scrape

METRICS = {
    "step": 40,
    "loss": 4.81234,
    "accuracy": 0.10341,
    "learning_rate": 9.8e-5,
    "tokens_per_second": 5120.4,
    "eta_seconds": 72.0,
}


def read_scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    """All scalars of the event files under `logdir`: {tag: [(step, value), ...]}."""
    import tensorflow as tf

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in tf.io.gfile.glob(f"{logdir}/events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                number = (
                    float(tf.make_ndarray(value.tensor))
                    if value.HasField("tensor")
                    else value.simple_value
                )
                scalars.setdefault(value.tag, []).append((event.step, number))
    return scalars


def test_format_duration():
    assert format_duration(0) == "0:00:00"
    assert format_duration(72.4) == "0:01:12"
    assert format_duration(3 * 3600 + 61) == "3:01:01"
    assert format_duration(-5) == "0:00:00"


def test_progress_line_has_every_column():
    out = io.StringIO()
    ProgressPrinter(200, stream=out).report(METRICS)
    assert out.getvalue() == (
        "step 40/200 (20%) | loss 4.8123 | acc 0.1034 | lr 9.80e-05 | 5120 tok/s | eta 0:01:12\n"
    )


def test_quiet_progress_prints_only_the_last_step_and_messages():
    out = io.StringIO()
    printer = ProgressPrinter(200, quiet=True, stream=out)
    printer.report(METRICS)
    printer.message("saved checkpoint")
    printer.report({**METRICS, "step": 200})
    assert out.getvalue().splitlines()[0] == "saved checkpoint"
    assert out.getvalue().splitlines()[1].startswith("step 200/200 (100%) | loss 4.8123")
    assert len(out.getvalue().splitlines()) == 2


def test_tensorboard_events_hold_the_scalars(tmp_path):
    writer = TensorBoardWriter(str(tmp_path))
    writer.report(METRICS)
    writer.report({**METRICS, "step": 80, "loss": 3.5})
    writer.close()
    scalars = read_scalars(tmp_path)
    assert set(scalars) == {"loss", "accuracy", "learning_rate", "tokens_per_second"}
    assert scalars["loss"] == [(40, pytest.approx(4.81234)), (80, pytest.approx(3.5))]
    assert scalars["learning_rate"][0] == (40, pytest.approx(9.8e-5))


def test_pushgateway_receives_the_gauges(pushgateway):
    reporter = PushgatewayReporter(pushgateway, run_id="monitoring-test")
    assert reporter.report(METRICS)
    metrics = scrape(pushgateway)
    labels = "instance=,job=mlm_pretrain,run_id=monitoring-test"
    assert metrics["mlm_train_loss"][labels] == pytest.approx(4.81234)
    assert metrics["mlm_train_accuracy"][labels] == pytest.approx(0.10341)
    assert metrics["mlm_learning_rate"][labels] == pytest.approx(9.8e-5)
    assert metrics["mlm_tokens_per_second"][labels] == pytest.approx(5120.4)
    assert metrics["mlm_global_step"][labels] == 40
    assert metrics["mlm_last_success_timestamp"][labels] > 1.7e9
    assert metrics["push_time_seconds"][labels] > 1.7e9
    # The next push replaces the group's values.
    assert reporter.report({**METRICS, "step": 41, "loss": 4.5})
    assert scrape(pushgateway)["mlm_global_step"][labels] == 41


def test_pushgateway_down_warns_once_per_streak_and_never_raises(caplog):
    reporter = PushgatewayReporter(f"http://127.0.0.1:{_free_port()}", "down", timeout=1.0)
    with caplog.at_level(logging.INFO, logger="mlm.monitoring"):
        assert reporter.report(METRICS) is False
        assert reporter.report(METRICS) is False
        assert reporter.report(METRICS) is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "push failed" in warnings[0].getMessage()


def test_pushgateway_recovery_is_logged(pushgateway, caplog):
    reporter = PushgatewayReporter(pushgateway, "recovers", timeout=1.0)
    good_url = reporter.url
    reporter.url = f"http://127.0.0.1:{_free_port()}"
    with caplog.at_level(logging.INFO, logger="mlm.monitoring"):
        assert not reporter.report(METRICS)
        reporter.url = good_url
        assert reporter.report(METRICS)
        reporter.url = f"http://127.0.0.1:{_free_port()}"
        assert not reporter.report(METRICS)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("push failed" in m for m in messages) == 2
    assert sum("work again" in m for m in messages) == 1
