"""Run `mlm pretrain` as a distributed job on Kubernetes and wait for it.

The job object (a Kubeflow Trainer v2 `TrainJob` or a Training Operator v1 `TFJob`, see
`mlm.launch.job_specs`) is created with the `CustomObjectsApi`, in the calling pod's own namespace
and labelled with the pipeline run and task. Its name is derived from the run id and the task, so
a retried pipeline step finds the job its previous attempt created (HTTP 409) and waits for that
one instead of starting a second.

While it waits, the launcher

- prints worker 0's new log lines (step, loss, tokens/s, ETA) to its own output, so they appear in
  the pipeline step's log;
- creates the job with `fieldValidation=Strict`, so a field the cluster's API lacks is refused
  rather than pruned, and then writes the older shape it supports (Kubeflow Trainer v2.1);
- fails with one line naming the cause and the fix when the job cannot start: the namespace lacks
  the workers' ServiceAccount, the job API is not installed (404), the service account may not
  create it (403), the admission webhook refuses it, a ResourceQuota refuses it, no worker pod
  appears, a worker cannot pull its image, or a worker stays unschedulable;
- retries API calls that fail on the network or with a 5xx (every call carries a timeout);
- deletes the job when it is terminated (SIGTERM, as Kubernetes stops a pod when a run is
  cancelled) and then exits.

On failure the error names the first worker that failed, its reason and the last lines of its log.
The job is deleted at the end unless `keep_job`. `delete_run_jobs` deletes every job of a run (the
pipeline's exit handler calls it).

The pieces live beside this module: `job_specs` (the manifests), `job_object` (creating,
reading and deleting the job object), `pod_status` (why a pod cannot start or failed, worker 0's
log) and `job_errors` (the exceptions and the one-line wording of a refused create). The
Kubernetes client is imported inside functions: only the cluster launchers need it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from mlm import DEFAULT_IMAGE, GPU_IMAGE_SUFFIX
from mlm.config import PretrainLaunchConfig, to_argv
from mlm.errors import UserInputError
from mlm.launch.job_errors import (
    GRANTS,
    REQUEST_TIMEOUT_S,
    JobCancelledError,
    JobFailedError,
    JobLaunchError,
    JobTimeoutError,
    api_message,
    transient_errors,
)
from mlm.launch.job_object import Job, list_pods
from mlm.launch.job_specs import (
    DEFAULT_SERVICE_ACCOUNT,
    JOB_KINDS,
    RUN_ID_LABEL,
    JobKind,
    WorkerSpec,
    job_kind,
    job_manifests,
    job_name,
    label_value,
    run_labels,
    validate_job_name,
)
from mlm.launch.pod_status import (
    LogFollower,
    diagnose,
    job_condition,
    pending_problem,
    raise_failed,
    suspended,
    warning_events,
)

logger = logging.getLogger(__name__)

# Outside a pod with no namespace configured, as kubectl does.
DEFAULT_NAMESPACE = "default"
# Where Kubernetes mounts the pod's own namespace. Jobs go to the run's namespace: there the
# pipeline step's service account has its rights (standalone KFP: kubeflow/pipeline-runner;
# multi-user Kubeflow: <profile>/default-editor), the store's Secret exists
# (mlpipeline-minio-artifact) and the store admits the pods (docs/operators.md, "Where jobs run").
NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
# What a namespace must hold before a job can start there (manifests/job-namespace).
PREPARE_NAMESPACE = "kubectl apply -k manifests/job-namespace -n {namespace}"
# How long a worker may stay unable to pull its image / unschedulable before the launch fails.
# Unschedulable waits longer: a cluster autoscaler may need minutes to add a (GPU) node.
IMAGE_PULL_GRACE_S = 120.0
UNSCHEDULABLE_GRACE_S = 600.0
# How long a job that is not suspended may go without any worker pod: its controller failing to
# create them (a missing ServiceAccount, a pod policy) shows only as events.
NO_PODS_GRACE_S = 300.0
_DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class JobResult:
    """How a launched job ended.

    Attributes:
        kind: "trainjob" or "tfjob".
        name: the job's name.
        namespace: its namespace.
        state: "Succeeded".
        attached: True when the job already existed (a retried step re-attached to it).
        elapsed_s: seconds this call waited for the job.
        deleted: True when the job was deleted after it ended.
    """

    kind: str
    name: str
    namespace: str
    state: str
    attached: bool
    elapsed_s: float
    deleted: bool

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-friendly dict."""
        return dict(self.__dict__)


def current_namespace(explicit: str | None = None) -> str:
    """Where jobs go: `explicit`, else this pod's namespace (its service-account namespace file),
    else $MLM_JOB_NAMESPACE, else the kubeconfig's current context's namespace, else "default"."""
    if explicit:
        return explicit
    with contextlib.suppress(OSError):
        own = Path(NAMESPACE_FILE).read_text().strip()
        if own:
            return own
    if os.environ.get("MLM_JOB_NAMESPACE"):
        return os.environ["MLM_JOB_NAMESPACE"]
    try:
        from kubernetes import config

        _, active = config.list_kube_config_contexts(os.environ.get("KUBECONFIG") or None)
    except Exception:  # no kubeconfig, or one that does not parse: not ours to judge here
        active = None
    return ((active or {}).get("context") or {}).get("namespace") or DEFAULT_NAMESPACE


def worker_image(image: str | None = None, gpus_per_worker: int = 0) -> str:
    """The workers' image: `image`, else the pipeline's own image ($MLM_IMAGE, which the compiled
    pretrain step carries; else `mlm.DEFAULT_IMAGE`), as its "-gpu" variant for GPU workers."""
    if image:
        return image
    base = os.environ.get("MLM_IMAGE") or DEFAULT_IMAGE
    if gpus_per_worker and not base.endswith(GPU_IMAGE_SUFFIX):
        base += GPU_IMAGE_SUFFIX
    return base


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While active (main thread only), SIGTERM raises JobCancelledError where the code is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise JobCancelledError(f"terminated by signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _load_api_client() -> Any:
    """An ApiClient from the pod's service account, else from the local kubeconfig."""
    from kubernetes import config
    from kubernetes.client import ApiClient

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as error:
            raise UserInputError(
                "no Kubernetes credentials: run inside a pod with a service account, or point "
                f"KUBECONFIG at a cluster ({error})"
            ) from error
    return ApiClient()


def _check_service_account(core: Any, namespace: str, service_account: str) -> None:
    """Fails with one line when the workers' ServiceAccount is missing from `namespace`: the
    job's controller could create no pod (the API server refuses pods that name a missing
    account, and the Training Operator then retries forever without a condition)."""
    from kubernetes.client.exceptions import ApiException

    prepare = PREPARE_NAMESPACE.format(namespace=namespace)
    try:
        core.read_namespaced_service_account(
            service_account, namespace, _request_timeout=REQUEST_TIMEOUT_S
        )
    except ApiException as error:
        if error.status == 404:
            raise JobLaunchError(
                f"namespace {namespace} has no ServiceAccount {service_account}, which the "
                f"training pods run as: prepare the namespace for mlm jobs ({prepare}; "
                "docs/operators.md, 'Where jobs run')"
            ) from None
        if error.status == 403:
            raise JobLaunchError(
                f"this step's service account may not read ServiceAccount "
                f"{namespace}/{service_account} (HTTP 403: {api_message(error)}): namespace "
                f"{namespace} is not prepared for mlm jobs ({prepare}; {GRANTS})"
            ) from None
        logger.warning(
            "could not check ServiceAccount %s/%s: %s", namespace, service_account, error
        )
    except transient_errors() as error:
        logger.warning(
            "could not check ServiceAccount %s/%s: %s", namespace, service_account, error
        )


def _checked_manifests(
    kind: str,
    name: str,
    namespace: str,
    worker: WorkerSpec,
    pretrain_args: Sequence[str],
    timeout_s: float,
) -> tuple[JobKind, list]:
    """The job's kind and its manifests (newest API shape first), after checking every argument
    (a bad one is a `UserInputError`, before any API call)."""
    kind_info = job_kind(kind)
    validate_job_name(name)
    if not isinstance(namespace, str) or not _DNS_1123.match(namespace) or len(namespace) > 63:
        raise UserInputError(f"namespace {namespace!r} is not a valid Kubernetes namespace name")
    if not timeout_s or timeout_s <= 0:
        raise UserInputError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
    worker.validate()
    return kind_info, list(
        job_manifests(kind, name, namespace, worker, pretrain_args, int(timeout_s))
    )


def launch_pretraining_job(
    kind: str,
    name: str,
    namespace: str,
    image: str,
    num_workers: int,
    gpus_per_worker: int,
    pretrain_args: Sequence[str],
    *,
    cpu: str = "4",
    memory: str = "16Gi",
    node_selector: Mapping[str, str] | None = None,
    tolerations: Sequence[Mapping[str, Any]] | None = None,
    spot: bool = False,
    service_account: str | None = DEFAULT_SERVICE_ACCOUNT,
    env: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    env_vars: Sequence[Mapping[str, Any]] | None = None,
    timeout_s: float = 7 * 24 * 3600,
    keep_job: bool = False,
    api_client: Any = None,
    poll_interval_s: float = 30.0,
    log_lines: int = 50,
    follow_logs: TextIO | None = None,
    image_pull_grace_s: float = IMAGE_PULL_GRACE_S,
    unschedulable_grace_s: float = UNSCHEDULABLE_GRACE_S,
    no_pods_grace_s: float = NO_PODS_GRACE_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> JobResult:
    """Creates (or re-attaches to) a distributed `mlm pretrain` job, waits until it ends and
    returns its JobResult (state "Succeeded").

    Args:
        kind: "trainjob" (Kubeflow Trainer v2) or "tfjob" (Training Operator v1).
        name: the job name, DNS-1035 and at most 40 characters (see `job_name`).
        namespace, image: where the job runs (`current_namespace`) and the `mlm` image (by tag).
        num_workers, gpus_per_worker: worker pods, and GPUs per pod (0: CPU).
        pretrain_args: the arguments after `mlm pretrain` (data, output, hyper-parameters).
        cpu, memory, node_selector, tolerations, spot, service_account, env, labels, env_vars:
            see `WorkerSpec`.
        timeout_s: how long to wait; the job also gets it as its active deadline.
        keep_job: leave the job (and its pods) in place when it ends (not when cancelled).
        api_client: a `kubernetes.client.ApiClient`; None loads in-cluster or kubeconfig config.
        poll_interval_s, log_lines: seconds between status reads; log lines of a failed worker.
        follow_logs: where worker 0's log lines go as they appear (None: not followed).
        image_pull_grace_s, unschedulable_grace_s, no_pods_grace_s: how long a worker may be
            unable to pull its image / be scheduled, and a job that is not suspended have no
            worker pod at all, before the launch fails.
        clock, sleep: time source and wait function (tests pass fakes).

    Raises:
        UserInputError: a bad parameter. JobLaunchError: the namespace is not prepared for jobs,
        the job could not be created or its workers cannot start (one line). JobFailedError:
        the job failed (the worker, reason and log tail). JobTimeoutError: not ended within
        `timeout_s`. JobCancelledError: SIGTERM (or Ctrl-C) arrived; the job was deleted first.
    """
    worker = WorkerSpec(
        image=image, num_workers=num_workers, gpus_per_worker=gpus_per_worker, cpu=cpu,
        memory=memory, node_selector=node_selector, tolerations=tolerations, spot=spot,
        service_account=service_account, env=env, labels=labels, env_vars=env_vars,
    )  # fmt: skip
    kind_info, manifests = _checked_manifests(
        kind, name, namespace, worker, pretrain_args, timeout_s
    )

    from kubernetes.client import CoreV1Api, CustomObjectsApi

    api_client = api_client if api_client is not None else _load_api_client()
    custom, core = CustomObjectsApi(api_client), CoreV1Api(api_client)
    coordinates = (kind_info.group, kind_info.version, namespace, kind_info.plural)
    job = Job(custom, kind, kind_info, coordinates, name)
    graces = {"image": image_pull_grace_s, "unschedulable": unschedulable_grace_s}
    wait = {
        "started": clock(), "timeout_s": timeout_s, "keep_job": keep_job, "clock": clock,
        "poll_interval_s": poll_interval_s, "log_lines": log_lines, "sleep": sleep,
        "follower": LogFollower(core, kind_info, namespace, follow_logs, "[worker 0] "),
        "graces": {**graces, "no_pods": no_pods_grace_s},
    }  # fmt: skip
    return _create_and_wait(job, core, manifests, service_account, wait)


def _create_and_wait(
    job: Job,
    core: Any,
    manifests: Sequence[tuple[str, Mapping[str, Any]]],
    service_account: str | None,
    wait: Mapping[str, Any],
) -> JobResult:
    """Creates `job` (or re-attaches to it) and waits for it (`_wait`); a SIGTERM or Ctrl-C
    meanwhile deletes it and raises JobCancelledError."""
    with _sigterm_raises():
        try:
            if service_account:
                _check_service_account(core, job.namespace, service_account)
            attached = job.create(manifests, service_account, wait["sleep"])
            return _wait(job, core, attached=attached, **wait)
        except (JobCancelledError, KeyboardInterrupt) as error:
            # Ignore a second SIGTERM while deleting: Kubernetes sends SIGKILL after the grace.
            _ignore_sigterm()
            deleted = job.delete()
            outcome = "deleted it" if deleted else "could NOT delete it"
            raise JobCancelledError(
                f"cancelled while waiting for {job.kind.kind} {job.namespace}/{job.name} "
                f"({error or 'interrupted'}); {outcome}"
            ) from error


def _ignore_sigterm() -> None:
    """Ignores further SIGTERMs (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _wait(
    job: Job,
    core: Any,
    *,
    started: float,
    attached: bool,
    timeout_s: float,
    keep_job: bool,
    poll_interval_s: float,
    log_lines: int,
    follower: LogFollower,
    graces: Mapping[str, float],
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> JobResult:
    """Polls the job until it succeeds, fails, cannot start or times out."""
    from kubernetes.client.exceptions import ApiException

    kind_info, name, namespace = job.kind, job.name, job.namespace

    def delete() -> bool:
        return False if keep_job else job.delete()

    deadline = started + timeout_s
    stuck_since: dict[tuple[str, str], float] = {}
    podless_since = clock()
    while True:
        try:
            current = job.get() or {}
        except ApiException as error:
            raise JobFailedError(
                f"{kind_info.kind} {namespace}/{name} disappeared while running "
                "(deleted by someone else?)",
                name=name,
                worker=None,
                reason="deleted",
                log_tail="",
            ) from error
        state, detail = job_condition(current, kind_info)
        pods = list_pods(core, job) if current else []
        follower.poll(pods)
        if state == "Succeeded":
            elapsed = clock() - started
            return JobResult(job.launcher, name, namespace, state, attached, elapsed, delete())
        if state == "Failed":
            found = diagnose(core, kind_info, name, namespace, log_lines)
            raise_failed(job, found, detail, log_lines, keep_job, delete())
        now = clock()
        seen = {}
        for pod in pods:
            problem = pending_problem(pod)
            if problem is not None:
                key = (pod.metadata.name, problem[0])
                seen[key] = stuck_since.get(key, now)
                if now - seen[key] >= graces[problem[0]]:
                    job.delete()  # a job that cannot start only holds quota
                    raise JobLaunchError(problem[1])
        stuck_since = seen
        if pods or suspended(current):
            podless_since = now
        elif now - podless_since >= graces["no_pods"]:
            cause = warning_events(core, namespace, name)
            job.delete()  # it would only wait for pods that will not come
            raise JobLaunchError(
                f"{kind_info.kind} {namespace}/{name} has created no worker pod in "
                f"{graces['no_pods']:g} s ({cause or 'no event says why'}); see kubectl -n "
                f"{namespace} get events; a missing ServiceAccount or Secret, or a policy that "
                f"refuses the pods, is fixed by {PREPARE_NAMESPACE.format(namespace=namespace)}"
            )
        if now >= deadline:
            deleted = delete()
            raise JobTimeoutError(
                f"{kind_info.kind} {namespace}/{name} did not finish within {timeout_s:g} s"
                + (" and was deleted" if deleted else " and is still there")
            )
        sleep(min(poll_interval_s, max(deadline - now, 0.0)))


def delete_run_jobs(
    launcher: str, run_id: str, *, namespace: str | None = None, api_client: Any = None
) -> list[str]:
    """Deletes every `launcher` job labelled with pipeline run `run_id`; returns their names.

    What the pipeline's exit handler runs, so that a run that ends (or is terminated) leaves no
    job holding GPUs. Nothing to do (an empty list) for launcher "local", or when the job API is
    not installed.
    """
    if launcher not in JOB_KINDS or not run_id:
        return []
    from kubernetes.client import CustomObjectsApi
    from kubernetes.client.exceptions import ApiException

    kind_info = JOB_KINDS[launcher]
    namespace = current_namespace(namespace)
    api_client = api_client if api_client is not None else _load_api_client()
    custom = CustomObjectsApi(api_client)
    coordinates = (kind_info.group, kind_info.version, namespace, kind_info.plural)
    try:
        listed = custom.list_namespaced_custom_object(
            *coordinates,
            label_selector=f"{RUN_ID_LABEL}={label_value(run_id)}",
            _request_timeout=REQUEST_TIMEOUT_S,
        )
    except ApiException as error:
        if error.status == 404:
            return []
        raise JobLaunchError(
            f"cannot list the {kind_info.plural} of run {run_id} in namespace {namespace} "
            f"(HTTP {error.status}: {api_message(error)}); delete them with kubectl -n "
            f"{namespace} delete {kind_info.plural} -l {RUN_ID_LABEL}={label_value(run_id)}"
        ) from None
    deleted = []
    for item in listed.get("items") or []:
        name = item["metadata"]["name"]
        if Job(custom, launcher, kind_info, coordinates, name).delete():
            deleted.append(name)
    return deleted


# Store settings that are no secrets and travel to the workers as values.
_STORE_SETTINGS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "AWS_REGION")


def store_env_vars(environ: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The env that gives the workers this step's artifact store (as Kubernetes EnvVars).

    The compiled pipeline names the store's Secret and endpoint in every step's environment
    (`mlm.storage.STORE_SECRET_ENV`, `STORE_ENDPOINT_ENV`); the workers get the Secret's keys as
    `secretKeyRef`s in their own namespace (never the values) and the endpoint and region
    settings as values. Nothing when the step has no store settings.
    """
    from mlm.storage import STORE_ENDPOINT_ENV, STORE_SECRET_ENV, STORE_SECRET_KEYS

    environ = os.environ if environ is None else environ
    variables: list[dict[str, Any]] = []
    secret = environ.get(STORE_SECRET_ENV)
    if secret:
        variables += [
            {"name": env, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
            for key, env in STORE_SECRET_KEYS.items()
        ]
        variables.append({"name": STORE_SECRET_ENV, "value": secret})
    for name in (STORE_ENDPOINT_ENV, *_STORE_SETTINGS):
        if environ.get(name):
            variables.append({"name": name, "value": environ[name]})
    return variables


def launch_pretraining(
    config: PretrainLaunchConfig,
    *,
    env_vars: Sequence[Mapping[str, Any]] = (),
    **job_keywords: Any,
) -> JobResult:
    """Runs `config` as a `config.job.launcher` job ("trainjob" or "tfjob"): what
    `mlm.launch.pretrain` calls for a cluster launcher.

    The job is named after `config.run_id` and `config.job.task_name` (the same on a retry of
    the pipeline step, which then re-attaches to it; without a run id, after `output_dir`) and
    labelled with both. It goes to `current_namespace(config.job.namespace)` and runs
    `config.workers` pods of `worker_image(config.job.worker_image, gpus_per_worker)`, each one
    `mlm pretrain` worker with the training settings as flags, with this process's artifact
    store (`store_env_vars`) and then `env_vars` (e.g. a KFP task's own env) in its env; worker
    0's log lines are printed to stdout as they appear.

    Args:
        config: the run; its data and output URIs must be ones the pods can reach (gs://,
            s3://, minio://, or a volume they share).
        env_vars: further container env entries of the workers.
        **job_keywords: further `launch_pretraining_job` keywords (api_client, clock, sleep,
            poll_interval_s, keep_job, ...).

    Returns:
        The JobResult.
    """
    job = config.job
    training = config.pretrain_config()
    options: dict[str, Any] = {
        "cpu": job.worker_cpu,
        "memory": job.worker_memory,
        "node_selector": job.worker_node_selector,
        "tolerations": job.worker_tolerations,
        "spot": job.spot,
        "timeout_s": job.job_timeout_hours * 3600,
        "follow_logs": sys.stdout,
        **job_keywords,
    }
    options["labels"] = {
        **run_labels(training.run_id or "", job.task_name),
        **dict(options.get("labels") or {}),
    }
    # The store first: a same-named variable of the task's own env (TaskConfig) does not win.
    options["env_vars"] = [*store_env_vars(), *env_vars]
    name = (
        job_name(training.run_id, job.task_name)
        if training.run_id
        else job_name("", training.output_dir)
    )
    return launch_pretraining_job(
        job.launcher,
        name,
        current_namespace(job.namespace),
        worker_image(job.worker_image, job.gpus_per_worker),
        config.workers,
        job.gpus_per_worker,
        to_argv(training),
        **options,
    )
