"""`mlm pipeline`: compile the pipeline, submit a run or schedule a recurring run on a KFP server.

- `mlm pipeline compile [--output YAML] [--image IMAGE]` writes the pipeline's IR YAML (the
  `pipelines` and `components` packages are installed with `mlm`, so it runs from any directory).
- `mlm pipeline submit --host URL --package YAML [--experiment NAME] [--param KEY=VALUE ...]`
  creates one run from a compiled package.
- `mlm pipeline schedule --host URL --package YAML --cron "0 0 3 * * 0"` creates a recurring run
  (KFP's 6-field cron with seconds first, at most one run at a time, no back-filling of missed runs).

Authentication: `--token` (or the `KFP_TOKEN` environment variable) is sent as a bearer token;
without `--host` the client uses the in-cluster endpoint and service-account token, as
`kfp.Client(host=None)` does inside a Kubeflow cluster.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlm.errors import UserInputError

DEFAULT_EXPERIMENT = "mlm-pretraining"
# Relative to the working directory: the committed package when run from the repository root.
DEFAULT_PACKAGE = "pipelines/mlm_pretraining_pipeline.yaml"
TOKEN_ENV = "KFP_TOKEN"

# robfig/cron (what the KFP scheduler uses) with seconds: name, lowest, highest, names allowed.
_CRON_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("second", 0, 59, ()),
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    (
        "month",
        1,
        12,
        tuple(["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]),
    ),
    ("day of week", 0, 6, tuple(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])),
)
_CRON_DESCRIPTORS = (
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
)
_GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


def validate_cron(expression: str) -> str:
    """Checks a KFP cron expression and returns it stripped.

    KFP schedules with robfig/cron and 6 fields: second, minute, hour, day of month, month, day of
    week (e.g. "0 0 3 * * 0" is every Sunday at 03:00:00). Descriptors such as "@daily" and
    "@every 6h" are accepted too.

    Raises:
        UserInputError: The expression is not valid, with the field at fault.
    """
    text = " ".join(str(expression).split())
    if text.startswith("@"):
        if text in _CRON_DESCRIPTORS:
            return text
        every, _, duration = text.partition(" ")
        if every == "@every" and _GO_DURATION.match(duration):
            return text
        raise UserInputError(
            f"--cron {expression!r}: unknown descriptor; use one of "
            f"{', '.join(_CRON_DESCRIPTORS)} or '@every <duration>' (e.g. '@every 6h')"
        )
    fields = text.split(" ") if text else []
    if len(fields) == 5:
        raise UserInputError(
            f"--cron {expression!r}: KFP cron has 6 fields with seconds first "
            f"(second minute hour day-of-month month day-of-week); try '0 {text}'"
        )
    if len(fields) != 6:
        raise UserInputError(
            f"--cron {expression!r}: expected 6 fields (second minute hour day-of-month month "
            f"day-of-week), got {len(fields)}"
        )
    for value, (name, low, high, names) in zip(fields, _CRON_FIELDS):
        _validate_cron_field(expression, value, name, low, high, names)
    return text


def _validate_cron_field(
    expression: str, value: str, name: str, low: int, high: int, names: tuple[str, ...]
) -> None:
    def bad(reason: str) -> UserInputError:
        return UserInputError(f"--cron {expression!r}: {name} field {value!r} {reason}")

    def number(token: str) -> int:
        upper = token.upper()
        if upper in names:
            return names.index(upper) + low
        if not token.isdigit():
            raise bad(f"has {token!r}, which is not a number in {low}-{high}")
        result = int(token)
        if not low <= result <= high:
            raise bad(f"has {result}, outside {low}-{high}")
        return result

    if value == "?" and name in ("day of month", "day of week"):
        return
    for part in value.split(","):
        base, slash, step = part.partition("/")
        if slash and (not step.isdigit() or int(step) < 1):
            raise bad(f"has step {step!r}; a step must be a positive number")
        if base == "*":
            continue
        start, dash, end = base.partition("-")
        first = number(start)
        if dash and number(end) < first:
            raise bad(f"has the range {base!r}, which runs backwards")


def parse_params(pairs: Sequence[str] | None) -> dict[str, Any]:
    """Turns `KEY=VALUE` strings into pipeline arguments; a VALUE that parses as JSON is decoded
    (numbers, booleans), anything else stays a string."""
    params: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise UserInputError(f"--param {pair!r}: write it as KEY=VALUE (e.g. steps=2000)")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        params[key.strip()] = value
    return params


def _check_package(package: str) -> str:
    path = Path(package)
    if not path.is_file():
        raise UserInputError(
            f"--package {package}: no such file; run `make compile` (or `mlm pipeline compile`) "
            "to write the compiled pipeline first"
        )
    return str(path)


def make_client(host: str | None, token: str | None = None, namespace: str | None = None) -> Any:
    """Creates a `kfp.Client`.

    Args:
        host: KFP API endpoint (e.g. https://kubeflow.example.com/pipeline); None uses the
            in-cluster endpoint and the pod's service-account token.
        token: Bearer token for the API (None: the client's own credentials discovery).
        namespace: Kubeflow profile namespace for multi-user deployments.

    Returns:
        The client.
    """
    import kfp

    kwargs: dict[str, Any] = {"host": host or None, "existing_token": token or None}
    if namespace:
        kwargs["namespace"] = namespace
    return kfp.Client(**kwargs)


def submit_run(
    client: Any,
    package: str,
    *,
    params: Mapping[str, Any] | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    run_name: str | None = None,
    namespace: str | None = None,
    pipeline_root: str | None = None,
    enable_caching: bool | None = None,
    service_account: str | None = None,
) -> Any:
    """Creates one run of a compiled pipeline package.

    Args:
        client: A `kfp.Client` (or an object with the same `create_run_from_pipeline_package`).
        package: Path of the compiled pipeline YAML.
        params: Pipeline arguments.
        experiment: Experiment the run belongs to (created when missing).
        run_name: Display name of the run (None: KFP's default).
        namespace: Kubeflow profile namespace.
        pipeline_root: Where the run's artifacts go (None: the server's default).
        enable_caching: Override the compiled caching options for every task (None: keep them).
        service_account: Kubernetes service account for the run's pods.

    Returns:
        KFP's `RunPipelineResult` (has `run_id`).
    """
    return client.create_run_from_pipeline_package(
        _check_package(package),
        arguments=dict(params or {}),
        run_name=run_name,
        experiment_name=experiment,
        namespace=namespace,
        pipeline_root=pipeline_root,
        enable_caching=enable_caching,
        service_account=service_account,
    )


def schedule_run(
    client: Any,
    package: str,
    cron: str,
    *,
    job_name: str,
    params: Mapping[str, Any] | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    namespace: str | None = None,
    pipeline_root: str | None = None,
    enable_caching: bool | None = None,
    service_account: str | None = None,
) -> Any:
    """Creates a recurring run of a compiled pipeline package on a cron schedule.

    Runs never overlap (max_concurrency=1) and missed intervals are not back-filled
    (no_catchup=True): a retraining schedule only needs the latest run.

    Args:
        client: A `kfp.Client` (or an object with `create_experiment` and `create_recurring_run`).
        package: Path of the compiled pipeline YAML.
        cron: KFP 6-field cron expression (see `validate_cron`).
        job_name: Display name of the recurring run.
        params: Pipeline arguments for every run.
        experiment: Experiment the runs belong to (created when missing).
        namespace: Kubeflow profile namespace.
        pipeline_root: Where the runs' artifacts go (None: the server's default).
        enable_caching: Override the compiled caching options (None: keep them).
        service_account: Kubernetes service account for the runs' pods.

    Returns:
        KFP's `V2beta1RecurringRun`.
    """
    cron = validate_cron(cron)
    package = _check_package(package)
    experiment_id = client.create_experiment(name=experiment, namespace=namespace).experiment_id
    return client.create_recurring_run(
        experiment_id=experiment_id,
        job_name=job_name,
        cron_expression=cron,
        max_concurrency=1,
        no_catchup=True,
        params=dict(params or {}),
        pipeline_package_path=package,
        pipeline_root=pipeline_root,
        enable_caching=enable_caching,
        service_account=service_account,
    )


def compile_package(output: str, image: str | None = None) -> str:
    """Compiles the pipeline to `output` with `pipelines.compile` (installed with `mlm`)."""
    from pipelines.compile import compile_pipeline

    return compile_pipeline(output, image=image)


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="pipeline_command", metavar="ACTION", required=True)

    compile_parser = sub.add_parser("compile", help="write the pipeline's IR YAML")
    compile_parser.add_argument("--output", default=DEFAULT_PACKAGE, help="YAML path to write")
    compile_parser.add_argument(
        "--image", default=None, help="container image for every step (default: $MLM_IMAGE)"
    )

    def server_options(sub_parser: argparse.ArgumentParser) -> None:
        sub_parser.add_argument(
            "--host",
            default=None,
            help="KFP API endpoint; omit inside the cluster to use the in-cluster endpoint",
        )
        sub_parser.add_argument(
            "--token",
            default=os.environ.get(TOKEN_ENV),
            help=f"bearer token for the KFP API (default: ${TOKEN_ENV})",
        )
        sub_parser.add_argument("--namespace", default=None, help="Kubeflow profile namespace")
        sub_parser.add_argument("--package", default=DEFAULT_PACKAGE, help="compiled YAML")
        sub_parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT)
        sub_parser.add_argument(
            "--param",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="pipeline argument (repeatable), e.g. --param steps=2000",
        )
        sub_parser.add_argument("--pipeline-root", default=None, help="artifact root URI")
        sub_parser.add_argument("--service-account", default=None)
        sub_parser.add_argument(
            "--no-cache", action="store_true", help="run every task, ignoring cached results"
        )

    submit_parser = sub.add_parser("submit", help="create a run from a compiled package")
    server_options(submit_parser)
    submit_parser.add_argument("--run-name", default=None)

    schedule_parser = sub.add_parser("schedule", help="create a recurring run (cron)")
    server_options(schedule_parser)
    schedule_parser.add_argument(
        "--cron",
        required=True,
        help='6-field cron, seconds first: "0 0 3 * * 0" = Sundays 03:00',
    )
    schedule_parser.add_argument("--job-name", default="mlm-pretraining-recurring")


def run_cli(args: argparse.Namespace, client_factory: Callable[..., Any] | None = None) -> int:
    client_factory = client_factory or make_client
    if args.pipeline_command == "compile":
        print(compile_package(args.output, image=args.image))
        return 0

    params = parse_params(args.param)
    common = {
        "params": params,
        "experiment": args.experiment,
        "namespace": args.namespace,
        "pipeline_root": args.pipeline_root,
        "enable_caching": False if args.no_cache else None,
        "service_account": args.service_account,
    }
    if args.pipeline_command == "schedule":
        cron = validate_cron(args.cron)  # before contacting the server
        _check_package(args.package)
        client = client_factory(args.host, args.token, args.namespace)
        job = schedule_run(client, args.package, cron, job_name=args.job_name, **common)
        print(f"recurring run {getattr(job, 'recurring_run_id', '?')} scheduled: {cron}")
        return 0

    _check_package(args.package)
    client = client_factory(args.host, args.token, args.namespace)
    result = submit_run(client, args.package, run_name=args.run_name, **common)
    print(f"run {getattr(result, 'run_id', '?')} submitted to experiment {args.experiment}")
    return 0
