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

The server operations are in `mlm.kfp_runs`, the checks of their inputs in `mlm.kfp_inputs`.
Authentication and TLS: see `mlm.kfp_auth` (bearer token from a file or `$KFP_TOKEN`, in-cluster
service-account token, IAP, Dex/oauth2-proxy session cookie, custom CA bundle).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any

from mlm.config import CompileConfig, add_arguments, from_args
from mlm.errors import UserInputError
from mlm.kfp_auth import SA_TOKEN_PATH, KFPConnection, explain_server_error
from mlm.kfp_inputs import (
    check_package,
    parse_params,
    validate_cron,
    validate_time,
    validate_window,
)
from mlm.kfp_runs import (
    DEFAULT_EXPERIMENT,
    DEFAULT_PIPELINE_NAME,
    DEFAULT_SCHEDULE_NAME,
    REVISION_ENV,
    SCHEDULE_ACTIONS,
    PipelineVersion,
    ScheduleResult,
    describe_recurring_run,
    find_recurring_runs,
    git_revision,
    make_client,
    manage_schedules,
    schedule_run,
    submit_run,
    upload_pipeline,
    version_name,
)

# Re-exported: `mlm.kfp_client` stays the one import for scripts and tests (which also patch
# `make_client` here, where `run_cli` looks it up).
__all__ = [
    "DEFAULT_EXPERIMENT",
    "DEFAULT_PACKAGE",
    "DEFAULT_PIPELINE_NAME",
    "DEFAULT_SCHEDULE_NAME",
    "REVISION_ENV",
    "SCHEDULE_ACTIONS",
    "PipelineVersion",
    "ScheduleResult",
    "add_cli_arguments",
    "connection_from_args",
    "describe_recurring_run",
    "find_recurring_runs",
    "git_revision",
    "make_client",
    "manage_schedules",
    "parse_params",
    "run_cli",
    "schedule_run",
    "submit_run",
    "upload_pipeline",
    "validate_cron",
    "validate_time",
    "validate_window",
    "version_name",
]

# Relative to the working directory: the committed package when run from the repository root.
DEFAULT_PACKAGE = CompileConfig().output


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds `compile`, `upload`, `submit`, `schedule` and `schedules` to `mlm pipeline`."""
    # allow_abbrev=False: a retired `--token VALUE` must not silently mean `--token-file`.
    sub = parser.add_subparsers(dest="pipeline_command", metavar="ACTION", required=True)

    compile_parser = sub.add_parser(
        "compile", allow_abbrev=False, help="write the pipeline's IR YAML for one KFP backend"
    )
    add_arguments(compile_parser, CompileConfig)

    upload_parser = sub.add_parser(
        "upload", allow_abbrev=False, help="upload the package as a pipeline version"
    )
    _add_server_options(upload_parser)
    _add_package_options(upload_parser)

    submit_parser = sub.add_parser(
        "submit", allow_abbrev=False, help="upload the package and start one run"
    )
    _add_server_options(submit_parser)
    _add_package_options(submit_parser)
    _add_launch_options(submit_parser)
    submit_parser.add_argument("--run-name", default=None, help="display name of the run")
    submit_parser.add_argument(
        "--no-cache",
        action="store_true",
        help="run every task, ignoring cached results (runs the package inline, unversioned)",
    )

    schedule_parser = sub.add_parser(
        "schedule", allow_abbrev=False, help="create or update a recurring run (cron)"
    )
    _add_server_options(schedule_parser)
    _add_package_options(schedule_parser)
    _add_launch_options(schedule_parser)
    _add_schedule_options(schedule_parser)

    schedules_parser = sub.add_parser(
        "schedules", allow_abbrev=False, help="list, pause, resume or delete"
    )
    schedules_parser.add_argument("action", choices=SCHEDULE_ACTIONS, help="what to do")
    _add_server_options(schedules_parser)
    schedules_parser.add_argument(
        "--name", default=None, help="recurring run name (all when listing without it)"
    )


def _add_server_options(sub_parser: argparse.ArgumentParser) -> None:
    """Where the server is and the credentials: the fields of `KFPConnection`."""
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


def _add_package_options(sub_parser: argparse.ArgumentParser) -> None:
    """The compiled package and the pipeline it becomes a version of."""
    sub_parser.add_argument("--package", default=DEFAULT_PACKAGE, help="compiled YAML")
    sub_parser.add_argument(
        "--pipeline-name", default=DEFAULT_PIPELINE_NAME, help="pipeline to add versions to"
    )


def _add_launch_options(sub_parser: argparse.ArgumentParser) -> None:
    """What a run (one-off or recurring) is started with."""
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


def _add_schedule_options(sub_parser: argparse.ArgumentParser) -> None:
    """The recurring run's name, cron and window."""
    sub_parser.add_argument(
        "--cron",
        required=True,
        help='6-field cron, seconds first: "0 0 3 * * 0" = Sundays 03:00',
    )
    sub_parser.add_argument(
        "--name", default=DEFAULT_SCHEDULE_NAME, help="the recurring run to create or update"
    )
    sub_parser.add_argument("--start-time", default=None, help="RFC 3339 time of the first")
    sub_parser.add_argument("--end-time", default=None, help="RFC 3339 time of the last")


def connection_from_args(args: argparse.Namespace) -> KFPConnection:
    """The `KFPConnection` that the server flags describe."""
    return KFPConnection(
        **{field.name: getattr(args, field.name) for field in dataclasses.fields(KFPConnection)}
    )


def run_cli(args: argparse.Namespace, client_factory: Callable[..., Any] | None = None) -> int:
    if args.pipeline_command == "compile":
        from mlm_pipelines.compile import compile_pipeline

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
    check_package(args.package)
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
