"""`mlm pipeline`: compile, upload, run and schedule the pipeline on a KFP server.

- `mlm pipeline compile [--output YAML] [--image IMAGE] [--kfp-version V] [--store-secret NAME] ...`
  writes the pipeline's IR YAML for one KFP backend (`mlm.config.CompileConfig`; the `pipelines`
  and `components` packages are installed with `mlm`, so it runs from any directory).
- `mlm pipeline upload --package YAML` creates the pipeline `mlm-pretraining` once, and one
  pipeline version per package version + git revision + package content (re-uploading the same
  package is a no-op).
- `mlm pipeline submit --package YAML [--experiment NAME] [--param KEY=VALUE ...]` uploads (as
  above) and starts one run of that version.
- `mlm pipeline schedule --name N --cron "0 0 3 * * 0" [--start-time T] [--end-time T]` uploads and
  creates or updates THE recurring run named N: KFP's 6-field cron with seconds first, at most one
  run at a time, no back-filling of missed runs. Calling it again with a new package replaces the
  old recurring run by one on the new version; with nothing changed it keeps it.
- `mlm pipeline schedules list|pause|resume|delete [--name N]` manages recurring runs.

Authentication and TLS: see `mlm.kfp_auth` (bearer token from a file or `$KFP_TOKEN`, in-cluster
service-account token, IAP, Dex/oauth2-proxy session cookie, custom CA bundle).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import os
import re
import subprocess
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlm.config import CompileConfig, add_arguments, from_args
from mlm.errors import UserInputError
from mlm.kfp_auth import (
    SA_TOKEN_PATH,
    KFPConnection,
    client_arguments,
    explain_server_error,
    redact_in_logs,
)

DEFAULT_EXPERIMENT = "mlm-pretraining"
# Relative to the working directory: the committed package when run from the repository root.
DEFAULT_PACKAGE = CompileConfig().output
DEFAULT_PIPELINE_NAME = "mlm-pretraining"
DEFAULT_SCHEDULE_NAME = "mlm-pretraining-recurring"
# Set by image builds and CI where the source is not a git checkout.
REVISION_ENV = "MLM_GIT_REVISION"

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


def validate_time(value: str | None, flag: str) -> str | None:
    """Checks an RFC 3339 time (e.g. 2026-12-01T03:00:00Z) and returns it in UTC with a "Z"."""
    if not value:
        return None
    try:
        moment = datetime.datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise UserInputError(
            f"{flag} {value!r}: write an RFC 3339 time such as 2026-12-01T03:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise UserInputError(f"{flag} {value!r}: add a time zone, e.g. {value}Z for UTC")
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def validate_window(start_time: str | None, end_time: str | None) -> tuple[str | None, ...]:
    """Checks a schedule's optional start and end times; returns them normalized to UTC."""
    start_time = validate_time(start_time, "--start-time")
    end_time = validate_time(end_time, "--end-time")
    if start_time and end_time and end_time <= start_time:
        raise UserInputError(f"--end-time {end_time} must be after --start-time {start_time}")
    return start_time, end_time


def make_client(connection: KFPConnection) -> Any:
    """Creates a `kfp.Client` for a connection (see `mlm.kfp_auth`).

    Unlike `kfp.Client`, it asks the health endpoint once: kfp's client retries it five times
    on any API error, 401 included, logging each response in full, and a response that echoes
    the request would put the credentials in the log.
    """
    import kfp

    class Client(kfp.Client):
        def get_kfp_healthz(self, sleep_duration: int = 5) -> Any:
            return self._healthz_api.healthz_service_get_healthz()

    arguments = client_arguments(connection)
    redact_in_logs(arguments)
    with warnings.catch_warnings():
        # "This client only works with Kubeflow Pipeline v2.0.0-beta.2 and later": every
        # backend this project compiles for is later (config.KFP_BACKENDS).
        warnings.filterwarnings("ignore", "This client only works with", FutureWarning)
        return Client(**arguments)


def git_revision(directory: str | None = None) -> str:
    """The short git revision of the source (`$MLM_GIT_REVISION` first; "unknown" outside git)."""
    if os.environ.get(REVISION_ENV):
        return os.environ[REVISION_ENV]
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short=10", "HEAD"],
            cwd=directory or os.getcwd(),
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def version_name(package: str, revision: str | None = None) -> str:
    """The pipeline version name of a package: `<mlm version>-<git revision>-<content digest>`.

    The content digest keeps two different packages from one revision (other compile options,
    uncommitted changes) apart; the same package always gets the same name.
    """
    from mlm import __version__

    digest = hashlib.sha256(Path(package).read_bytes()).hexdigest()[:8]
    return f"{__version__}-{revision or git_revision()}-{digest}"


@dataclasses.dataclass(frozen=True)
class PipelineVersion:
    """A pipeline version on the server.

    Attributes:
        pipeline_id: The pipeline's id.
        version_id: The version's id.
        name: The version's name (see `version_name`).
        created: Whether this call uploaded it (False: it existed).
    """

    pipeline_id: str
    version_id: str
    name: str
    created: bool


def _pages(list_page: Callable[[str], Any], items: str) -> Iterator[Any]:
    """Every item of a paginated KFP list call (`list_page(page_token)`)."""
    token = ""
    while True:
        response = list_page(token)
        yield from getattr(response, items, None) or ()
        token = getattr(response, "next_page_token", "") or ""
        if not token:
            return


def _name_filter(key: str, value: str) -> str:
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": key, "stringValue": value}]})


def upload_pipeline(
    client: Any,
    package: str,
    *,
    pipeline_name: str = DEFAULT_PIPELINE_NAME,
    version: str | None = None,
    namespace: str | None = None,
) -> PipelineVersion:
    """Uploads a compiled package as a version of `pipeline_name`, creating the pipeline once.

    Idempotent: an existing version of the same name is returned, not uploaded again.
    """
    package = _check_package(package)
    version = version or version_name(package)
    pipeline_id = client.get_pipeline_id(pipeline_name)
    if pipeline_id is None:
        pipeline = client.upload_pipeline(package, pipeline_name=pipeline_name, namespace=namespace)
        pipeline_id = pipeline.pipeline_id
    existing = list(
        _pages(
            lambda token: client.list_pipeline_versions(
                pipeline_id, page_token=token, filter=_name_filter("display_name", version)
            ),
            "pipeline_versions",
        )
    )
    if existing:
        return PipelineVersion(pipeline_id, existing[0].pipeline_version_id, version, False)
    created = client.upload_pipeline_version(
        package, pipeline_version_name=version, pipeline_id=pipeline_id
    )
    return PipelineVersion(pipeline_id, created.pipeline_version_id, version, True)


def _experiment_id(client: Any, experiment: str, namespace: str | None) -> str:
    return client.create_experiment(name=experiment, namespace=namespace).experiment_id


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
    pipeline_name: str = DEFAULT_PIPELINE_NAME,
) -> tuple[Any, PipelineVersion | None]:
    """Starts one run: of the package's pipeline version (uploaded when new).

    With `enable_caching` set, the run is made from the package itself instead (KFP applies a
    caching override only to an inline package), and no version is uploaded.

    Returns:
        KFP's run (has `run_id`) and the pipeline version it runs (None for an inline package).
    """
    package = _check_package(package)
    if enable_caching is not None:
        result = client.create_run_from_pipeline_package(
            package,
            arguments=dict(params or {}),
            run_name=run_name,
            experiment_name=experiment,
            namespace=namespace,
            pipeline_root=pipeline_root,
            enable_caching=enable_caching,
            service_account=service_account,
        )
        return result, None
    version = upload_pipeline(client, package, pipeline_name=pipeline_name, namespace=namespace)
    run = client.run_pipeline(
        experiment_id=_experiment_id(client, experiment, namespace),
        job_name=run_name or f"{pipeline_name} {version.name}",
        params=dict(params or {}),
        pipeline_id=version.pipeline_id,
        version_id=version.version_id,
        pipeline_root=pipeline_root,
        service_account=service_account,
    )
    return run, version


def find_recurring_runs(
    client: Any, name: str | None = None, *, namespace: str | None = None
) -> list[Any]:
    """The recurring runs named `name` (all of them when None), oldest first."""
    return list(
        _pages(
            lambda token: client.list_recurring_runs(
                page_token=token,
                page_size=100,
                sort_by="created_at",
                namespace=namespace,
                filter=_name_filter("display_name", name) if name else None,
            ),
            "recurring_runs",
        )
    )


def _schedule_of(recurring_run: Any) -> tuple[Any, ...]:
    """What makes two recurring runs the same schedule: version, cron, window, parameters."""
    reference = getattr(recurring_run, "pipeline_version_reference", None)
    trigger = getattr(recurring_run, "trigger", None)
    cron = getattr(trigger, "cron_schedule", None)
    runtime = getattr(recurring_run, "runtime_config", None)
    return (
        getattr(reference, "pipeline_version_id", None),
        getattr(cron, "cron", None),
        _time_text(getattr(cron, "start_time", None)),
        _time_text(getattr(cron, "end_time", None)),
        json.dumps(getattr(runtime, "parameters", None) or {}, sort_keys=True),
    )


def _time_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return validate_time(str(value), "time")


@dataclasses.dataclass(frozen=True)
class ScheduleResult:
    """What `schedule_run` did.

    Attributes:
        recurring_run: The recurring run now named `name` (KFP's `V2beta1RecurringRun`).
        version: The pipeline version it runs.
        action: "created", "updated" (older ones replaced) or "unchanged".
        replaced: Ids of the recurring runs deleted.
    """

    recurring_run: Any
    version: PipelineVersion
    action: str
    replaced: tuple[str, ...]


def schedule_run(
    client: Any,
    package: str,
    cron: str,
    *,
    name: str = DEFAULT_SCHEDULE_NAME,
    params: Mapping[str, Any] | None = None,
    experiment: str = DEFAULT_EXPERIMENT,
    namespace: str | None = None,
    start_time: str | None = None,
    end_time: str | None = None,
    pipeline_root: str | None = None,
    service_account: str | None = None,
    pipeline_name: str = DEFAULT_PIPELINE_NAME,
) -> ScheduleResult:
    """Creates or updates the one recurring run named `name`.

    Runs never overlap (max_concurrency=1) and missed intervals are not back-filled
    (no_catchup=True): a retraining schedule only needs the latest run. The package is uploaded
    as a pipeline version first, so every run carries the version. An existing recurring run of
    that name with the same version, cron, window and parameters is kept; otherwise a new one is
    created first and the old ones are deleted after, so the schedule is never missing.
    """
    cron = validate_cron(cron)
    start_time, end_time = validate_window(start_time, end_time)
    version = upload_pipeline(client, package, pipeline_name=pipeline_name, namespace=namespace)
    existing = find_recurring_runs(client, name, namespace=namespace)
    wanted = (
        version.version_id,
        cron,
        start_time,
        end_time,
        json.dumps(dict(params or {}), sort_keys=True),
    )
    if len(existing) == 1 and _schedule_of(existing[0]) == wanted:
        return ScheduleResult(existing[0], version, "unchanged", ())
    created = client.create_recurring_run(
        experiment_id=_experiment_id(client, experiment, namespace),
        job_name=name,
        description=f"{pipeline_name} {version.name}",
        start_time=start_time,
        end_time=end_time,
        cron_expression=cron,
        max_concurrency=1,
        no_catchup=True,
        params=dict(params or {}),
        pipeline_id=version.pipeline_id,
        version_id=version.version_id,
        enabled=True,
        pipeline_root=pipeline_root,
        service_account=service_account,
    )
    replaced = tuple(old.recurring_run_id for old in existing)
    for recurring_run_id in replaced:
        client.delete_recurring_run(recurring_run_id)
    return ScheduleResult(created, version, "updated" if replaced else "created", replaced)


SCHEDULE_ACTIONS = ("list", "pause", "resume", "delete")


def manage_schedules(
    client: Any, action: str, name: str | None = None, *, namespace: str | None = None
) -> list[Any]:
    """Lists, pauses, resumes or deletes the recurring runs named `name` (all when listing
    without a name). Returns the recurring runs it acted on."""
    if action not in SCHEDULE_ACTIONS:
        raise UserInputError(f"schedules {action!r}: use one of {', '.join(SCHEDULE_ACTIONS)}")
    if action != "list" and not name:
        raise UserInputError(f"mlm pipeline schedules {action} needs --name")
    found = find_recurring_runs(client, name, namespace=namespace)
    if action != "list" and not found:
        raise UserInputError(f"no recurring run named {name!r}; `schedules list` shows them")
    method = {
        "pause": client.disable_recurring_run,
        "resume": client.enable_recurring_run,
        "delete": client.delete_recurring_run,
    }.get(action)
    for recurring_run in found if method else ():
        method(recurring_run.recurring_run_id)
    return found


def describe_recurring_run(recurring_run: Any) -> str:
    """One line: id, name, status, cron and the version it runs."""
    trigger = getattr(recurring_run, "trigger", None)
    cron = getattr(getattr(trigger, "cron_schedule", None), "cron", None) or "-"
    reference = getattr(recurring_run, "pipeline_version_reference", None)
    version = getattr(reference, "pipeline_version_id", None) or "inline package"
    status = getattr(recurring_run, "status", None) or getattr(recurring_run, "mode", "?")
    return (
        f"{recurring_run.recurring_run_id}  {recurring_run.display_name}  {status}  "
        f"cron {cron!r}  version {version}"
    )


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    # allow_abbrev=False: a retired `--token VALUE` must not silently mean `--token-file`.
    sub = parser.add_subparsers(dest="pipeline_command", metavar="ACTION", required=True)

    compile_parser = sub.add_parser(
        "compile", allow_abbrev=False, help="write the pipeline's IR YAML for one KFP backend"
    )
    add_arguments(compile_parser, CompileConfig)

    def server_options(sub_parser: argparse.ArgumentParser) -> None:
        sub_parser.add_argument(
            "--host",
            default=None,
            help="KFP API endpoint; omit inside the cluster to use the in-cluster endpoint",
        )
        sub_parser.add_argument("--namespace", default=None, help="Kubeflow profile namespace")
        auth = sub_parser.add_argument_group("credentials (at most one; see mlm.kfp_auth)")
        auth.add_argument(
            "--token-file", default=None, help="file with a bearer token (default: $KFP_TOKEN)"
        )
        auth.add_argument(
            "--sa-token",
            nargs="?",
            const=SA_TOKEN_PATH,
            default=None,
            metavar="PATH",
            help="send this pod's service-account token (default path: KFP's projected token)",
        )
        auth.add_argument("--iap-client-id", default=None, help="OAuth client id of IAP")
        auth.add_argument(
            "--cookie-file",
            default=None,
            help="file with a Dex/oauth2-proxy session cookie name=value (default: $KFP_COOKIE)",
        )
        auth.add_argument("--ca-bundle", default=None, help="PEM file of CAs to trust")

    def run_options(sub_parser: argparse.ArgumentParser) -> None:
        sub_parser.add_argument("--package", default=DEFAULT_PACKAGE, help="compiled YAML")
        sub_parser.add_argument(
            "--pipeline-name", default=DEFAULT_PIPELINE_NAME, help="pipeline to add versions to"
        )

    upload_parser = sub.add_parser(
        "upload", allow_abbrev=False, help="upload the package as a pipeline version"
    )
    server_options(upload_parser)
    run_options(upload_parser)

    def launch_options(sub_parser: argparse.ArgumentParser) -> None:
        sub_parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="experiment")
        sub_parser.add_argument(
            "--param",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="pipeline argument (repeatable), e.g. --param steps=2000",
        )
        sub_parser.add_argument("--pipeline-root", default=None, help="artifact root URI")
        sub_parser.add_argument(
            "--service-account", default=None, help="Kubernetes service account of the pods"
        )

    submit_parser = sub.add_parser(
        "submit", allow_abbrev=False, help="upload the package and start one run"
    )
    server_options(submit_parser)
    run_options(submit_parser)
    launch_options(submit_parser)
    submit_parser.add_argument("--run-name", default=None, help="display name of the run")
    submit_parser.add_argument(
        "--no-cache",
        action="store_true",
        help="run every task, ignoring cached results (runs the package inline, unversioned)",
    )

    schedule_parser = sub.add_parser(
        "schedule", allow_abbrev=False, help="create or update a recurring run (cron)"
    )
    server_options(schedule_parser)
    run_options(schedule_parser)
    launch_options(schedule_parser)
    schedule_parser.add_argument(
        "--cron",
        required=True,
        help='6-field cron, seconds first: "0 0 3 * * 0" = Sundays 03:00',
    )
    schedule_parser.add_argument(
        "--name", default=DEFAULT_SCHEDULE_NAME, help="the recurring run to create or update"
    )
    schedule_parser.add_argument("--start-time", default=None, help="RFC 3339 time of the first")
    schedule_parser.add_argument("--end-time", default=None, help="RFC 3339 time of the last")

    schedules_parser = sub.add_parser(
        "schedules", allow_abbrev=False, help="list, pause, resume or delete"
    )
    schedules_parser.add_argument("action", choices=SCHEDULE_ACTIONS, help="what to do")
    server_options(schedules_parser)
    schedules_parser.add_argument(
        "--name", default=None, help="recurring run name (all when listing without it)"
    )


def connection_from_args(args: argparse.Namespace) -> KFPConnection:
    """The `KFPConnection` that the server flags describe."""
    return KFPConnection(
        **{field.name: getattr(args, field.name) for field in dataclasses.fields(KFPConnection)}
    )


def run_cli(args: argparse.Namespace, client_factory: Callable[..., Any] | None = None) -> int:
    if args.pipeline_command == "compile":
        from pipelines.compile import compile_pipeline

        print(compile_pipeline(from_args(CompileConfig, args)))
        return 0
    connection = connection_from_args(args)
    try:
        return _run_server_command(args, connection, client_factory or make_client)
    except UserInputError:
        raise
    except Exception as error:
        message = explain_server_error(error, connection)
        if message is None:
            raise
        raise UserInputError(message) from None


def _run_server_command(
    args: argparse.Namespace, connection: KFPConnection, client_factory: Callable[..., Any]
) -> int:
    command = args.pipeline_command
    if command == "schedules":
        client = client_factory(connection)
        found = manage_schedules(client, args.action, args.name, namespace=connection.namespace)
        verb = {"list": "", "pause": "paused ", "resume": "resumed ", "delete": "deleted "}
        for recurring_run in found:
            print(verb[args.action] + describe_recurring_run(recurring_run))
        if not found:
            print("no recurring runs")
        return 0

    # Check everything local before contacting the server.
    _check_package(args.package)
    if command == "upload":
        version = upload_pipeline(
            client_factory(connection),
            args.package,
            pipeline_name=args.pipeline_name,
            namespace=connection.namespace,
        )
        state = "uploaded" if version.created else "already there"
        print(f"pipeline {args.pipeline_name} version {version.name}: {state}")
        return 0

    params = parse_params(args.param)
    common = {
        "params": params,
        "experiment": args.experiment,
        "namespace": connection.namespace,
        "pipeline_root": args.pipeline_root,
        "service_account": args.service_account,
        "pipeline_name": args.pipeline_name,
    }
    if command == "schedule":
        cron = validate_cron(args.cron)
        validate_window(args.start_time, args.end_time)
        result = schedule_run(
            client_factory(connection),
            args.package,
            cron,
            name=args.name,
            start_time=args.start_time,
            end_time=args.end_time,
            **common,
        )
        print(
            f"recurring run {args.name} {result.action} "
            f"({getattr(result.recurring_run, 'recurring_run_id', '?')}): {cron}, "
            f"version {result.version.name}"
        )
        return 0

    run, version = submit_run(
        client_factory(connection),
        args.package,
        run_name=args.run_name,
        enable_caching=False if args.no_cache else None,
        **common,
    )
    what = f"version {version.name}" if version else "the package inline"
    print(f"run {getattr(run, 'run_id', '?')} of {what} submitted to experiment {args.experiment}")
    return 0
