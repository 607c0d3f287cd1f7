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

The Kubernetes client is imported inside functions: only the cluster launchers need it.
"""

from __future__ import annotations

import contextlib
import json
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
from mlm.errors import UserInputError
from mlm.launch.job_specs import (
    DEFAULT_SERVICE_ACCOUNT,
    JOB_KINDS,
    RUN_ID_LABEL,
    RUNTIME_NAME,
    TRAINJOB_APIS,
    JobKind,
    WorkerSpec,
    job_kind,
    job_manifests,
    job_name,
    label_value,
    run_labels,
    validate_job_name,
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
# (connect, read) seconds of every API call: a hung connection must not hang the step.
REQUEST_TIMEOUT_S = (10.0, 60.0)
# How long a worker may stay unable to pull its image / unschedulable before the launch fails.
# Unschedulable waits longer: a cluster autoscaler may need minutes to add a (GPU) node.
IMAGE_PULL_GRACE_S = 120.0
UNSCHEDULABLE_GRACE_S = 600.0
# How long a job that is not suspended may go without any worker pod: its controller failing to
# create them (a missing ServiceAccount, a pod policy) shows only as events.
NO_PODS_GRACE_S = 300.0
_IMAGE_PULL_REASONS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
_CONTAINER_CONFIG_REASONS = {"CreateContainerConfigError", "CreateContainerError"}
# How long to wait for a job of the same name that is being deleted before recreating it.
TERMINATING_POLLS = 60
TERMINATING_POLL_S = 5.0
# Worker 0's log lines read per poll (new ones are printed; older ones were printed before).
FOLLOW_LOG_LINES = 1000
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


class JobFailedError(RuntimeError):
    """A training job failed. The message names the failing worker, its reason and its log tail.

    Attributes:
        name: the job's name.
        worker: the first failed pod (None when no pod could be found).
        reason: the container's or the job's failure reason.
        log_tail: the last lines of the failed worker's log ("" when unavailable).
    """

    def __init__(
        self, message: str, *, name: str, worker: str | None, reason: str, log_tail: str
    ) -> None:
        super().__init__(message)
        self.name = name
        self.worker = worker
        self.reason = reason
        self.log_tail = log_tail


class JobTimeoutError(TimeoutError):
    """A training job did not finish within its timeout (it is deleted unless kept)."""


class JobLaunchError(RuntimeError):
    """A training job could not be created, or its workers cannot start. The message is one line
    naming the cause and the fix."""


class JobCancelledError(RuntimeError):
    """The launcher was terminated (SIGTERM or Ctrl-C) while waiting; the job was deleted."""


def _transient_errors() -> tuple[type[BaseException], ...]:
    """Network failures worth retrying: dropped connections, timeouts, refused connects."""
    import urllib3

    return (urllib3.exceptions.HTTPError, OSError)


def _api_message(error: Any) -> str:
    """The API server's message in an ApiException (its Status body), else its reason."""
    try:
        message = json.loads(error.body or "{}").get("message")
    except (TypeError, ValueError, AttributeError):
        message = None
    return " ".join(str(message or error.reason or "").split())


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


# What each job kind needs installed, and which Kubeflow releases include it (kubeflow/manifests
# v1.10.2, v1.11.0 and 26.03 README and example/kustomization.yaml).
_INSTALL = {
    "trainjobs": (
        "install Kubeflow Trainer v2.1 or later (Kubeflow 1.11 and 26.03 include v2.1.0, 1.10 "
        "none) and this project's ClusterTrainingRuntime (kubectl apply -k manifests/overlays/...)"
    ),
    "tfjobs": (
        "install the Kubeflow Training Operator v1.9 (Kubeflow 1.10 includes it; 1.11 and 26.03 "
        "leave it out of their default install)"
    ),
}
# Who grants the job rights in each kind of install (docs/operators.md, "Where jobs run").
_GRANTS = (
    "standalone KFP: manifests/kfp-standalone (in overlays/dev and overlays/gke-gpu) binds "
    "kubeflow/pipeline-runner the Role mlm-pipeline-launcher; "
    "multi-user Kubeflow: a profile's default-editor gets TrainJobs from Kubeflow Trainer's "
    "kubeflow-trainer-edit role and TFJobs from the Training Operator's kubeflow-training-edit"
)


def _unknown_fields(error: Any) -> list[str]:
    """The fields a `fieldValidation=Strict` create names as unknown (HTTP 400 "strict decoding
    error: unknown field \"spec.x\""), else []."""
    if getattr(error, "status", None) != 400:
        return []
    return re.findall(r'unknown field \\?"([^"\\]+)\\?"', _api_message(error))


def _create_error(
    error: Any,
    kind: JobKind,
    name: str,
    namespace: str,
    service_account: str | None,
    served: bool | None = None,
) -> JobLaunchError:
    """One line for an ApiException on create: what went wrong and what to do (`served`: whether
    API discovery lists the kind, asked after a 403)."""
    message = _api_message(error)
    where = f"{kind.kind} {namespace}/{name}"
    if "admission webhook" in message:
        if "must be created before the TrainJob" in message:
            return JobLaunchError(
                f"cannot create {where}: the ClusterTrainingRuntime {RUNTIME_NAME} is not "
                f"installed ({message}); apply it with kubectl apply -k manifests/overlays/... "
                "(manifests/base/runtime)"
            )
        return JobLaunchError(
            f"cannot create {where}: the cluster's admission webhook refused it ({message}); "
            "check the installed Kubeflow Trainer / Training Operator version against "
            "docs/operators.md"
        )
    fields = _unknown_fields(error)
    if fields:
        supported = (
            ", ".join(TRAINJOB_APIS.values())
            if kind.plural == "trainjobs"
            else "the Training Operator v1.9"
        )
        return JobLaunchError(
            f"cannot create {where}: the cluster's {kind.kind} API has no {', '.join(fields)} "
            f"(HTTP 400: {message}); this launcher writes {kind.kind}s for {supported}: install "
            "one of them (docs/operators.md)"
        )
    if error.status == 403 and served is False:
        return JobLaunchError(
            f"cannot create {where}: the {kind.kind} API ({kind.api_version}, {kind.plural}) is "
            f"not installed in this cluster (HTTP 403, and API discovery does not list it); "
            f"{_INSTALL[kind.plural]}, or use another launcher"
        )
    if error.status == 404:
        if "namespace" in message.lower():
            return JobLaunchError(
                f"cannot create {where}: namespace {namespace!r} does not exist ({message}); "
                "create it or run the step in the namespace the jobs should use"
            )
        return JobLaunchError(
            f"cannot create {where}: the {kind.kind} API ({kind.api_version}, {kind.plural}) is "
            f"not installed in this cluster (HTTP 404); {_INSTALL[kind.plural]}, or use another "
            "launcher"
        )
    if error.status == 403 and "quota" in message.lower():
        return JobLaunchError(
            f"cannot create {where}: a ResourceQuota refuses it ({message}); ask for a larger "
            f"quota in namespace {namespace} or request fewer workers, GPUs, CPU or memory"
        )
    if error.status == 403:
        return JobLaunchError(
            f"cannot create {where}: this step's service account may not create "
            f"{kind.plural}.{kind.group} in namespace {namespace} (HTTP 403: {message}); "
            f"{_GRANTS}"
        )
    if error.status == 401:
        return JobLaunchError(
            f"cannot create {where}: the Kubernetes API refused the credentials (HTTP 401); "
            "check the pod's service account token or KUBECONFIG"
        )
    if error.status in (400, 422):
        return JobLaunchError(
            f"cannot create {where}: the cluster rejected it (HTTP {error.status}: {message}); "
            "check the worker settings (image, resources, node selector, tolerations)"
        )
    sa = f" as service account {service_account}" if service_account else ""
    return JobLaunchError(
        f"cannot create {where}{sa}: HTTP {error.status} {message}; check the API server"
    )


def _pending_problem(pod: Any) -> tuple[str, str] | None:
    """Why a worker pod cannot start, as (kind, one-line message), or None."""
    name = pod.metadata.name
    status = pod.status
    statuses = [*(status.init_container_statuses or []), *(status.container_statuses or [])]
    for container in statuses:
        waiting = container.state.waiting if container.state else None
        if waiting is None:
            continue
        detail = ": ".join(part for part in (waiting.reason, waiting.message) if part)
        if waiting.reason in _IMAGE_PULL_REASONS:
            return (
                "image",
                f"worker pod {name} cannot pull its image {container.image} ({detail}); check "
                "the image name and tag (the pipeline's image or worker_image) and that the "
                "nodes may pull from its registry (imagePullSecrets)",
            )
        if waiting.reason in _CONTAINER_CONFIG_REASONS:
            return (
                "image",
                f"worker pod {name} cannot start its container ({detail}); create the Secrets "
                "and ConfigMaps the job references, or fix the worker settings",
            )
    for condition in status.conditions or []:
        if (
            condition.type == "PodScheduled"
            and condition.status == "False"
            and condition.reason == "Unschedulable"
        ):
            return (
                "unschedulable",
                f"worker pod {name} cannot be scheduled ({condition.message or 'Unschedulable'}); "
                "request fewer GPUs, CPU or memory per worker, fix the node selector, "
                "tolerations or spot setting, or add nodes",
            )
    return None


def _timestamp_key(stamp: str) -> str:
    """An RFC 3339 timestamp made comparable as text (the fraction padded to 9 digits)."""
    seconds, _, fraction = stamp.rstrip("Z").partition(".")
    return f"{seconds}.{fraction:0<9}"


class _LogFollower:
    """Prints worker 0's new log lines (read with timestamps, so none is printed twice)."""

    def __init__(
        self, core: Any, kind: JobKind, namespace: str, output: TextIO | None, prefix: str
    ) -> None:
        self.core, self.kind, self.namespace = core, kind, namespace
        self.output, self.prefix = output, prefix
        self.last: str | None = None

    def poll(self, pods: Sequence[Any]) -> None:
        if self.output is None:
            return
        key, value = self.kind.chief_label.split("=", 1)
        started = [
            pod
            for pod in pods
            if (pod.metadata.labels or {}).get(key) == value
            and pod.status.phase in ("Running", "Succeeded", "Failed")
        ]
        if not started:
            return
        from kubernetes.client.exceptions import ApiException

        pod = max(started, key=lambda p: str(p.metadata.creation_timestamp or ""))
        try:
            text = self.core.read_namespaced_pod_log(
                pod.metadata.name,
                self.namespace,
                container=self.kind.container,
                timestamps=True,
                tail_lines=FOLLOW_LOG_LINES,
                _request_timeout=REQUEST_TIMEOUT_S,
            )
        except (ApiException, *_transient_errors()):
            return  # the log is a courtesy: never fail the step over it
        for line in (text or "").splitlines():
            stamp, _, message = line.partition(" ")
            stamp_key = _timestamp_key(stamp)
            if self.last is not None and stamp_key <= self.last:
                continue
            self.last = stamp_key
            self.output.write(f"{self.prefix}{message}\n")
        self.output.flush()


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


def _condition(job: Mapping[str, Any], kind: JobKind) -> tuple[str | None, str]:
    """The job's terminal state ("Succeeded", "Failed" or None) and the condition's message."""
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("status") != "True":
            continue
        detail = ": ".join(
            str(part) for part in (condition.get("reason"), condition.get("message")) if part
        )
        if condition.get("type") == kind.success_condition:
            return "Succeeded", detail
        if condition.get("type") == "Failed":
            return "Failed", detail
    return None, ""


def _failed_containers(pod: Any) -> list[tuple[Any, str, Any, bool]]:
    """(finished_at, container, terminated state, is_previous) for each non-zero exit in a pod."""
    found = []
    for status in pod.status.container_statuses or []:
        for state, previous in ((status.state, False), (status.last_state, True)):
            terminated = state.terminated if state else None
            if terminated is not None and terminated.exit_code not in (0, None):
                found.append((terminated.finished_at, status.name, terminated, previous))
    return found


def _diagnose(core: Any, kind: JobKind, name: str, namespace: str, log_lines: int) -> dict:
    """The first failed worker of a job: pod, reason and log tail (best effort)."""
    from kubernetes.client.exceptions import ApiException

    try:
        pods = core.list_namespaced_pod(
            namespace,
            label_selector=f"{kind.pod_label}={name}",
            _request_timeout=REQUEST_TIMEOUT_S,
        ).items
    except ApiException as error:
        return {"worker": None, "reason": f"cannot list pods ({error.status})", "log_tail": ""}
    failures = []
    for pod in pods:
        exits = _failed_containers(pod)
        for finished_at, container, terminated, previous in exits:
            failures.append((finished_at, pod.metadata.name, container, terminated, previous))
        if not exits and pod.status.phase == "Failed":
            # Evicted or preempted pods have no container exit, only a pod-level reason.
            reason = ": ".join(p for p in (pod.status.reason, pod.status.message) if p)
            failures.append((None, pod.metadata.name, None, reason or "pod failed", False))
    if not failures:
        return {"worker": None, "reason": "", "log_tail": ""}
    # The first worker to fail is the cause; the others usually die from losing their peer.
    failures.sort(key=lambda f: (f[0] is None, str(f[0] or ""), f[1]))
    _, worker, container, terminated, previous = failures[0]
    if container is None:
        return {"worker": worker, "reason": terminated, "log_tail": ""}
    reason = f"container {container} exited with code {terminated.exit_code}"
    if terminated.reason:
        reason += f" ({terminated.reason})"
    if terminated.message:
        reason += f": {terminated.message.strip()}"
    try:
        log_tail = core.read_namespaced_pod_log(
            worker,
            namespace,
            container=container,
            tail_lines=log_lines,
            previous=previous,
            _request_timeout=REQUEST_TIMEOUT_S,
        )
    except ApiException as error:
        log_tail = f"(log unavailable: {error.status} {error.reason})"
    return {"worker": worker, "reason": reason, "log_tail": (log_tail or "").rstrip()}


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
                f"{namespace}/{service_account} (HTTP 403: {_api_message(error)}): namespace "
                f"{namespace} is not prepared for mlm jobs ({prepare}; {_GRANTS})"
            ) from None
        logger.warning(
            "could not check ServiceAccount %s/%s: %s", namespace, service_account, error
        )
    except _transient_errors() as error:
        logger.warning(
            "could not check ServiceAccount %s/%s: %s", namespace, service_account, error
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
    """Creates (or re-attaches to) a distributed `mlm pretrain` job and waits until it ends.

    Args:
        kind: "trainjob" (Kubeflow Trainer v2) or "tfjob" (Training Operator v1).
        name: the job name, DNS-1035 and at most 40 characters (see `job_name`).
        namespace: where the job runs (see `current_namespace`).
        image: the `mlm` image, pinned by tag.
        num_workers: worker pods.
        gpus_per_worker: GPUs per pod (0: CPU).
        pretrain_args: the arguments after `mlm pretrain` (data, output, hyper-parameters).
        cpu, memory, node_selector, tolerations, spot, service_account, env, labels, env_vars:
            see `WorkerSpec`.
        timeout_s: how long to wait; the job also gets it as its active deadline.
        keep_job: leave the job (and its pods) in place when it ends (not when cancelled).
        api_client: a `kubernetes.client.ApiClient`; None loads in-cluster or kubeconfig config.
        poll_interval_s: seconds between status reads.
        log_lines: how many lines of the failed worker's log go into the error.
        follow_logs: where worker 0's log lines go as they appear (None: not followed).
        image_pull_grace_s, unschedulable_grace_s: how long a worker may be unable to pull its
            image / be scheduled before the launch fails.
        no_pods_grace_s: how long a job that is not suspended may have no worker pod at all.
        clock, sleep: time source and wait function (tests pass fakes).

    Returns:
        A JobResult with state "Succeeded".

    Raises:
        UserInputError: a bad parameter.
        JobLaunchError: the namespace is not prepared for jobs, the job could not be created or
            its workers cannot start (one line).
        JobFailedError: the job failed (the message names the worker, reason and log tail).
        JobTimeoutError: the job did not end within `timeout_s`.
        JobCancelledError: SIGTERM (or Ctrl-C) arrived; the job was deleted first.
    """
    kind_info = job_kind(kind)
    validate_job_name(name)
    if not isinstance(namespace, str) or not _DNS_1123.match(namespace) or len(namespace) > 63:
        raise UserInputError(f"namespace {namespace!r} is not a valid Kubernetes namespace name")
    if not timeout_s or timeout_s <= 0:
        raise UserInputError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
    spec = WorkerSpec(
        image=image,
        num_workers=num_workers,
        gpus_per_worker=gpus_per_worker,
        cpu=cpu,
        memory=memory,
        node_selector=node_selector,
        tolerations=tolerations,
        spot=spot,
        service_account=service_account,
        env=env,
        labels=labels,
        env_vars=env_vars,
    )
    spec.validate()
    manifests = job_manifests(kind, name, namespace, spec, pretrain_args, int(timeout_s))

    from kubernetes.client import CoreV1Api, CustomObjectsApi

    api_client = api_client if api_client is not None else _load_api_client()
    custom, core = CustomObjectsApi(api_client), CoreV1Api(api_client)
    coordinates = (kind_info.group, kind_info.version, namespace, kind_info.plural)
    job = _Job(custom, kind, kind_info, coordinates, name)

    started = clock()
    with _sigterm_raises():
        try:
            if service_account:
                _check_service_account(core, namespace, service_account)
            attached = job.create(manifests, service_account, sleep)
            return _wait(
                job,
                core,
                started=started,
                attached=attached,
                timeout_s=timeout_s,
                keep_job=keep_job,
                poll_interval_s=poll_interval_s,
                log_lines=log_lines,
                follower=_LogFollower(core, kind_info, namespace, follow_logs, "[worker 0] "),
                graces={
                    "image": image_pull_grace_s,
                    "unschedulable": unschedulable_grace_s,
                    "no_pods": no_pods_grace_s,
                },
                clock=clock,
                sleep=sleep,
            )
        except (JobCancelledError, KeyboardInterrupt) as error:
            # Ignore a second SIGTERM while deleting: Kubernetes sends SIGKILL after the grace.
            _ignore_sigterm()
            deleted = job.delete()
            outcome = "deleted it" if deleted else "could NOT delete it"
            raise JobCancelledError(
                f"cancelled while waiting for {kind_info.kind} {namespace}/{name} ({error or 'interrupted'}); "
                f"{outcome}"
            ) from error


def _ignore_sigterm() -> None:
    """Ignores further SIGTERMs (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


class _UnknownFieldsError(Exception):
    """A strict create named fields the cluster's CRD does not have."""

    def __init__(self, cause: Any, fields: list[str]) -> None:
        super().__init__(", ".join(fields))
        self.cause, self.fields = cause, fields


class _Job:
    """One custom job object: create, read and delete it, retrying transient failures."""

    def __init__(
        self, custom: Any, launcher: str, kind: JobKind, coordinates: tuple, name: str
    ) -> None:
        self.custom, self.launcher, self.kind = custom, launcher, kind
        self.coordinates, self.name = coordinates, name
        self.api: str | None = None  # the API shape the job was created in

    @property
    def namespace(self) -> str:
        return self.coordinates[2]

    def create(
        self,
        manifests: Sequence[tuple[str, Mapping[str, Any]]],
        service_account: str | None,
        sleep: Callable,
    ) -> bool:
        """Creates the job; True when it already existed (a retried step re-attaches).

        `manifests` are the job in each API shape the launcher can write, newest first (see
        `job_specs.job_manifests`). Each is sent with `fieldValidation=Strict`, so an API server
        whose CRD lacks a field refuses it (HTTP 400) instead of silently pruning it; the next
        shape is then tried. A job of the same name that is still being deleted (an earlier
        attempt's, deleted when it failed) is waited out and then created anew.
        """
        for index, (api, manifest) in enumerate(manifests):
            try:
                attached = self._create_waiting_out_deletion(manifest, service_account, sleep)
            except _UnknownFieldsError as error:
                if index == len(manifests) - 1:
                    raise _create_error(
                        error.cause, self.kind, self.name, self.namespace, service_account
                    ) from None
                logger.warning(
                    "the cluster's %s API has no %s; writing the %s shape instead",
                    self.kind.kind,
                    ", ".join(error.fields),
                    manifests[index + 1][0],
                )
                continue
            self.api = api
            if index:
                logger.warning(
                    "%s %s/%s uses %s (%s): it has no activeDeadlineSeconds, so this launcher "
                    "enforces the job timeout itself",
                    self.kind.kind,
                    self.namespace,
                    self.name,
                    api,
                    TRAINJOB_APIS.get(api, api),
                )
            return attached
        raise AssertionError("no manifest to create")

    def _create_waiting_out_deletion(
        self, manifest: Mapping[str, Any], service_account: str | None, sleep: Callable
    ) -> bool:
        for _ in range(TERMINATING_POLLS):
            attached = self._create_once(manifest, service_account, sleep)
            if not attached or not self._terminating():
                return attached
            logger.info("%s %s is still being deleted; waiting to create it anew", *self._id())
            sleep(TERMINATING_POLL_S)
        raise JobLaunchError(
            "cannot create {0} {1}: an earlier {0} of that name has been terminating for over "
            "{2:g} s (a stuck finalizer?); delete it: kubectl -n {3} delete {4} {5}".format(
                *self._id(),
                TERMINATING_POLLS * TERMINATING_POLL_S,
                self.namespace,
                self.kind.plural,
                self.name,
            )
        )

    def _id(self) -> tuple[str, str]:
        return self.kind.kind, f"{self.namespace}/{self.name}"

    def _served(self) -> bool | None:
        """Whether the cluster serves this job kind (API discovery, which RBAC grants every
        authenticated user: the `system:discovery` ClusterRole); None when that cannot be told.

        RBAC decides before the API server looks the resource up, so a service account without
        rights to a kind that is not installed gets 403, not 404: this tells the two apart."""
        from kubernetes.client.exceptions import ApiException

        group, version = self.kind.group, self.kind.version
        try:
            found = self.custom.api_client.call_api(
                f"/apis/{group}/{version}",
                "GET",
                response_type="object",
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _request_timeout=REQUEST_TIMEOUT_S,
            )
        except ApiException as error:
            return False if error.status == 404 else None
        except _transient_errors():
            return None
        resources = (found or {}).get("resources") or []
        return any(resource.get("name") == self.kind.plural for resource in resources)

    def _terminating(self) -> bool:
        """Whether the existing job is being deleted (or already gone)."""
        from kubernetes.client.exceptions import ApiException

        try:
            job = self.get()
        except ApiException:
            return True  # 404: gone in the meantime, so create it
        return bool(((job or {}).get("metadata") or {}).get("deletionTimestamp"))

    def _create_once(
        self,
        manifest: Mapping[str, Any],
        service_account: str | None,
        sleep: Callable[[float], None],
        attempts: int = 4,
    ) -> bool:
        from kubernetes.client.exceptions import ApiException

        for attempt in range(1, attempts + 1):
            try:
                self.custom.create_namespaced_custom_object(
                    *self.coordinates,
                    manifest,
                    field_validation="Strict",
                    _request_timeout=REQUEST_TIMEOUT_S,
                )
                logger.info("created %s %s/%s", self.kind.kind, self.namespace, self.name)
                return False
            except ApiException as error:
                if error.status == 409:
                    logger.info(
                        "%s %s/%s exists; waiting for it", self.kind.kind, self.namespace, self.name
                    )
                    return True
                fields = _unknown_fields(error)
                if fields:
                    raise _UnknownFieldsError(error, fields) from None
                retryable = error.status in (429, 500, 502, 503, 504)
                if not retryable or attempt == attempts:
                    raise _create_error(
                        error,
                        self.kind,
                        self.name,
                        self.namespace,
                        service_account,
                        served=self._served() if error.status == 403 else None,
                    ) from None
                reason = f"HTTP {error.status}"
            except _transient_errors() as error:
                if attempt == attempts:
                    raise JobLaunchError(
                        f"cannot create {self.kind.kind} {self.namespace}/{self.name}: the "
                        f"Kubernetes API is unreachable ({type(error).__name__}: {error}); "
                        "check the cluster's API server and this pod's network"
                    ) from None
                reason = type(error).__name__
            logger.warning("creating %s failed (%s); retrying", self.name, reason)
            sleep(2.0 * attempt)
        raise AssertionError("unreachable")

    def get(self) -> dict | None:
        """The job, or None when reading it failed transiently. Raises ApiException 404."""
        from kubernetes.client.exceptions import ApiException

        try:
            return self.custom.get_namespaced_custom_object(
                *self.coordinates, self.name, _request_timeout=REQUEST_TIMEOUT_S
            )
        except ApiException as error:
            if error.status == 404:
                raise
            reason = f"HTTP {error.status}"
        except _transient_errors() as error:
            reason = type(error).__name__
        # Throttling, a restarting API server, a dropped connection: keep waiting.
        logger.warning("reading %s %s failed (%s); retrying", self.kind.kind, self.name, reason)
        return None

    def delete(self) -> bool:
        """Deletes the job and its pods; True when it is gone."""
        from kubernetes.client import V1DeleteOptions
        from kubernetes.client.exceptions import ApiException

        for attempt in range(3):
            try:
                self.custom.delete_namespaced_custom_object(
                    *self.coordinates,
                    self.name,
                    body=V1DeleteOptions(propagation_policy="Background"),
                    _request_timeout=REQUEST_TIMEOUT_S,
                )
                return True
            except ApiException as error:
                if error.status == 404:
                    return True
                logger.warning(
                    "could not delete %s %s: %s", self.kind.kind, self.name, error.reason
                )
                if error.status not in (429, 500, 502, 503, 504):
                    return False
            except _transient_errors() as error:
                logger.warning("could not delete %s %s: %s", self.kind.kind, self.name, error)
            time.sleep(1.0 + attempt)
        return False


def _list_pods(core: Any, job: _Job) -> list[Any]:
    """The job's pods (empty when listing fails: watching goes on)."""
    from kubernetes.client.exceptions import ApiException

    try:
        return core.list_namespaced_pod(
            job.namespace,
            label_selector=f"{job.kind.pod_label}={job.name}",
            _request_timeout=REQUEST_TIMEOUT_S,
        ).items
    except (ApiException, *_transient_errors()) as error:
        logger.warning("listing the pods of %s failed (%s)", job.name, error)
        return []


def _wait(
    job: _Job,
    core: Any,
    *,
    started: float,
    attached: bool,
    timeout_s: float,
    keep_job: bool,
    poll_interval_s: float,
    log_lines: int,
    follower: _LogFollower,
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
        state, detail = _condition(current, kind_info)
        pods = _list_pods(core, job) if current else []
        follower.poll(pods)
        if state == "Succeeded":
            elapsed = clock() - started
            return JobResult(job.launcher, name, namespace, state, attached, elapsed, delete())
        if state == "Failed":
            found = _diagnose(core, kind_info, name, namespace, log_lines)
            _raise_failed(job, found, detail, log_lines, keep_job, delete())
        now = clock()
        seen = {}
        for pod in pods:
            problem = _pending_problem(pod)
            if problem is not None:
                key = (pod.metadata.name, problem[0])
                seen[key] = stuck_since.get(key, now)
                if now - seen[key] >= graces[problem[0]]:
                    job.delete()  # a job that cannot start only holds quota
                    raise JobLaunchError(problem[1])
        stuck_since = seen
        if pods or _suspended(current):
            podless_since = now
        elif now - podless_since >= graces["no_pods"]:
            cause = _warning_events(core, namespace, name)
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


def _suspended(job: Mapping[str, Any]) -> bool:
    """Whether a job is suspended (queued, e.g. by Kueue): it has no pods on purpose."""
    if (job.get("spec") or {}).get("suspend") or (
        (job.get("spec") or {}).get("runPolicy") or {}
    ).get("suspend"):
        return True
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Suspended" and c.get("status") == "True" for c in conditions)


def _warning_events(core: Any, namespace: str, job_name: str) -> str:
    """The newest Warning event about the job or the objects its controller made for it
    (names starting with the job's), as "reason: message", or "" (best effort)."""
    from kubernetes.client.exceptions import ApiException

    try:
        events = core.list_namespaced_event(
            namespace, field_selector="type=Warning", _request_timeout=REQUEST_TIMEOUT_S
        ).items
    except (ApiException, *_transient_errors()):
        return ""
    about = [
        e
        for e in events
        if e.involved_object is not None and (e.involved_object.name or "").startswith(job_name)
    ]
    if not about:
        return ""
    newest = max(about, key=lambda e: str(e.last_timestamp or e.event_time or ""))
    return " ".join(f"{newest.reason}: {newest.message}".split())


def _raise_failed(
    job: _Job, found: Mapping[str, Any], detail: str, log_lines: int, keep_job: bool, deleted: bool
) -> None:
    """Raises the JobFailedError of a failed job, from what `_diagnose` found."""
    kind_info, name, namespace = job.kind, job.name, job.namespace
    reason = found["reason"] or detail or "no reason reported"
    message = f"{kind_info.kind} {namespace}/{name} failed: {detail or 'Failed'}"
    if found["worker"]:
        message += f"\nfirst failed worker: {found['worker']}: {reason}"
    if found["log_tail"]:
        message += f"\nlast {log_lines} log lines of {found['worker']}:\n{found['log_tail']}"
    if keep_job or not deleted:
        message += f"\n(the job is kept: kubectl -n {namespace} describe {kind_info.plural} {name})"
    raise JobFailedError(
        message, name=name, worker=found["worker"], reason=reason, log_tail=found["log_tail"]
    )


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
            f"(HTTP {error.status}: {_api_message(error)}); delete them with kubectl -n "
            f"{namespace} delete {kind_info.plural} -l {RUN_ID_LABEL}={label_value(run_id)}"
        ) from None
    deleted = []
    for item in listed.get("items") or []:
        name = item["metadata"]["name"]
        if _Job(custom, launcher, kind_info, coordinates, name).delete():
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
    launcher: str,
    *,
    shard_dir: str,
    tokenizer_dir: str,
    output_dir: str,
    workers: int = 1,
    gpus_per_worker: int = 0,
    run_id: str | None = None,
    task: str = "pretrain",
    namespace: str | None = None,
    image: str | None = None,
    job_options: Mapping[str, Any] | None = None,
    **pretrain_options: Any,
) -> JobResult:
    """Runs the pretrain step as a `launcher` job: what the pretrain pipeline step calls.

    The job is named after `run_id` and `task` (the same on a retry of the step, which then
    re-attaches to it; without a run id, after `output_dir`) and labelled with both. It goes to
    `current_namespace(namespace)` and runs `worker_image(image, gpus_per_worker)` with this
    step's artifact store (`store_env_vars`); worker 0's log lines are printed to stdout as they
    appear.

    Args:
        launcher: "trainjob" or "tfjob".
        shard_dir, tokenizer_dir, output_dir: the step's data and output URIs (remote on a
            cluster: gs://, s3://, minio://).
        workers: worker pods; each runs one `mlm pretrain` process.
        gpus_per_worker: GPUs per pod.
        run_id: the pipeline run id (also the metrics' run_id).
        task: the pipeline task name.
        namespace, image: where and what to run (see above).
        job_options: further `launch_pretraining_job` keywords (cpu, memory, spot,
            node_selector, tolerations, timeout_s, ...).
        **pretrain_options: `mlm.config.PretrainConfig` settings (variant, steps, masking
            settings, ...), passed to each worker as `mlm pretrain` flags.

    Returns:
        The JobResult.
    """
    from mlm.config import PretrainConfig, to_argv

    # Each pod is one worker: its identity comes from the job, not from a local process count.
    pretrain_options.pop("workers", None)
    args = to_argv(
        PretrainConfig.create(
            shard_dir=shard_dir,
            tokenizer_dir=tokenizer_dir,
            output_dir=output_dir,
            run_id=run_id,
            **pretrain_options,
        )
    )
    options = {"follow_logs": sys.stdout, **dict(job_options or {})}
    options["labels"] = {**run_labels(run_id or "", task), **dict(options.get("labels") or {})}
    # The store first: a same-named variable of the task's own env (TaskConfig) does not win.
    options["env_vars"] = [*store_env_vars(), *(options.get("env_vars") or [])]
    return launch_pretraining_job(
        launcher,
        job_name(run_id, task) if run_id else job_name("", output_dir),
        current_namespace(namespace),
        worker_image(image, gpus_per_worker),
        workers,
        gpus_per_worker,
        args,
        **options,
    )
