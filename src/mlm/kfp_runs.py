"""Pipeline versions, runs and recurring runs on a KFP server, behind `mlm pipeline`.

Every function takes a `kfp.Client` (see `make_client`) so tests can pass a fake one; the
command-line wiring is in `mlm.kfp_client`, the input checks in `mlm.kfp_inputs`.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import subprocess
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from mlm.errors import UserInputError
from mlm.kfp_auth import KFPConnection, client_arguments, redact_in_logs
from mlm.kfp_inputs import check_package, validate_cron, validate_time, validate_window

DEFAULT_EXPERIMENT = "mlm-pretraining"
# Relative to the working directory: the committed package when run from the repository root.
DEFAULT_PIPELINE_NAME = "mlm-pretraining"
DEFAULT_SCHEDULE_NAME = "mlm-pretraining-recurring"
# Set by image builds and CI where the source is not a git checkout.
REVISION_ENV = "MLM_GIT_REVISION"


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
    package = check_package(package)
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
    package = check_package(package)
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
