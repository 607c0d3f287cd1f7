"""Run `mlm pretrain` as a distributed job on Kubernetes and wait for it.

The job object (a Kubeflow Trainer v2 `TrainJob` or a Training Operator v1 `TFJob`, see
`mlm.launch.job_specs`) is created with the `CustomObjectsApi`. A job's name is derived from the
pipeline run and task, so a retried pipeline step finds the job its previous attempt created
(HTTP 409) and waits for that one instead of starting a second. The launcher polls the job until
it succeeds, fails or times out; on failure the error names the first worker that failed, its
reason and the last lines of its log. The job is deleted at the end unless `keep_job`.

The Kubernetes client is imported inside functions: only the cluster launchers need it.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlm import DEFAULT_IMAGE, GPU_IMAGE_SUFFIX
from mlm.errors import UserInputError
from mlm.launch.job_specs import (
    BUILDERS,
    DEFAULT_SERVICE_ACCOUNT,
    JobKind,
    WorkerSpec,
    job_kind,
    job_name,
    validate_job_name,
)

logger = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "mlm"
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
        pods = core.list_namespaced_pod(namespace, label_selector=f"{kind.pod_label}={name}").items
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
            worker, namespace, container=container, tail_lines=log_lines, previous=previous
        )
    except ApiException as error:
        log_tail = f"(log unavailable: {error.status} {error.reason})"
    return {"worker": worker, "reason": reason, "log_tail": (log_tail or "").rstrip()}


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
    timeout_s: float = 7 * 24 * 3600,
    keep_job: bool = False,
    api_client: Any = None,
    poll_interval_s: float = 30.0,
    log_lines: int = 50,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> JobResult:
    """Creates (or re-attaches to) a distributed `mlm pretrain` job and waits until it ends.

    Args:
        kind: "trainjob" (Kubeflow Trainer v2) or "tfjob" (Training Operator v1).
        name: the job name, DNS-1035 and at most 40 characters (see `job_name`).
        namespace: where the job runs (the manifests' namespace is "mlm").
        image: the `mlm` image, pinned by tag.
        num_workers: worker pods.
        gpus_per_worker: GPUs per pod (0: CPU).
        pretrain_args: the arguments after `mlm pretrain` (data, output, hyper-parameters).
        cpu, memory, node_selector, tolerations, spot, service_account, env: see `WorkerSpec`.
        timeout_s: how long to wait; the job also gets it as its active deadline.
        keep_job: leave the job (and its pods) in place when it ends.
        api_client: a `kubernetes.client.ApiClient`; None loads in-cluster or kubeconfig config.
        poll_interval_s: seconds between status reads.
        log_lines: how many lines of the failed worker's log go into the error.
        clock, sleep: time source and wait function (tests pass fakes).

    Returns:
        A JobResult with state "Succeeded".

    Raises:
        UserInputError: a bad parameter.
        JobFailedError: the job failed (the message names the worker, reason and log tail).
        JobTimeoutError: the job did not end within `timeout_s`.
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
    )
    spec.validate()
    manifest = BUILDERS[kind](name, namespace, spec, pretrain_args, int(timeout_s))

    from kubernetes.client import CoreV1Api, CustomObjectsApi, V1DeleteOptions
    from kubernetes.client.exceptions import ApiException

    api_client = api_client if api_client is not None else _load_api_client()
    custom, core = CustomObjectsApi(api_client), CoreV1Api(api_client)
    coordinates = (kind_info.group, kind_info.version, namespace, kind_info.plural)

    started = clock()
    try:
        custom.create_namespaced_custom_object(*coordinates, manifest)
        attached = False
        logger.info("created %s %s/%s (%d workers)", kind_info.kind, namespace, name, num_workers)
    except ApiException as error:
        if error.status != 409:
            raise
        attached = True
        logger.info("%s %s/%s exists; waiting for it", kind_info.kind, namespace, name)

    def delete() -> bool:
        if keep_job:
            return False
        try:
            custom.delete_namespaced_custom_object(
                *coordinates, name, body=V1DeleteOptions(propagation_policy="Background")
            )
        except ApiException as error:
            if error.status != 404:
                logger.warning("could not delete %s %s: %s", kind_info.kind, name, error.reason)
                return False
        return True

    deadline = started + timeout_s
    while True:
        try:
            job = custom.get_namespaced_custom_object(*coordinates, name)
        except ApiException as error:
            if error.status == 404:
                raise JobFailedError(
                    f"{kind_info.kind} {namespace}/{name} disappeared while running "
                    "(deleted by someone else?)",
                    name=name,
                    worker=None,
                    reason="deleted",
                    log_tail="",
                ) from error
            # Transient API trouble (throttling, a restarting API server): keep waiting.
            logger.warning(
                "reading %s %s failed (%s); retrying", kind_info.kind, name, error.status
            )
            job = {}
        state, detail = _condition(job, kind_info)
        if state == "Succeeded":
            elapsed = clock() - started
            return JobResult(kind, name, namespace, state, attached, elapsed, delete())
        if state == "Failed":
            found = _diagnose(core, kind_info, name, namespace, log_lines)
            deleted = delete()
            reason = found["reason"] or detail or "no reason reported"
            message = f"{kind_info.kind} {namespace}/{name} failed: {detail or 'Failed'}"
            if found["worker"]:
                message += f"\nfirst failed worker: {found['worker']}: {reason}"
            if found["log_tail"]:
                message += (
                    f"\nlast {log_lines} log lines of {found['worker']}:\n{found['log_tail']}"
                )
            if keep_job or not deleted:
                message += f"\n(the job is kept: kubectl -n {namespace} describe {kind_info.plural} {name})"
            raise JobFailedError(
                message,
                name=name,
                worker=found["worker"],
                reason=reason,
                log_tail=found["log_tail"],
            )
        now = clock()
        if now >= deadline:
            deleted = delete()
            raise JobTimeoutError(
                f"{kind_info.kind} {namespace}/{name} did not finish within {timeout_s:g} s"
                + (" and was deleted" if deleted else " and is still there")
            )
        sleep(min(poll_interval_s, max(deadline - now, 0.0)))


def launch_pretraining(
    launcher: str,
    *,
    shard_dir: str,
    tokenizer_dir: str,
    output_dir: str,
    workers: int = 1,
    gpus_per_worker: int = 0,
    run_id: str | None = None,
    namespace: str | None = None,
    image: str | None = None,
    job_options: Mapping[str, Any] | None = None,
    **pretrain_options: Any,
) -> JobResult:
    """Runs the pretrain step as a `launcher` job: what the pretrain pipeline step calls.

    The job name comes from `run_id` and `output_dir` (unique per pipeline run and task, the same
    on a retry). Namespace and image default to $MLM_JOB_NAMESPACE / $MLM_JOB_IMAGE, else "mlm"
    and the project image (its "-gpu" tag when `gpus_per_worker` > 0).

    Args:
        launcher: "trainjob" or "tfjob".
        shard_dir, tokenizer_dir, output_dir: the step's data and output URIs (gs:// on a cluster).
        workers: worker pods; each runs one `mlm pretrain` process.
        gpus_per_worker: GPUs per pod.
        run_id: the pipeline run id (also the metrics' run_id).
        namespace, image: where and what to run (see above).
        job_options: further `launch_pretraining_job` keywords (spot, node_selector, timeout_s, ...).
        **pretrain_options: `mlm.config.PretrainConfig` settings (variant, steps, ...), passed
            to each worker as `mlm pretrain` flags.

    Returns:
        The JobResult.
    """
    namespace = namespace or os.environ.get("MLM_JOB_NAMESPACE") or DEFAULT_NAMESPACE
    if not image:
        image = os.environ.get("MLM_JOB_IMAGE") or DEFAULT_IMAGE + (
            GPU_IMAGE_SUFFIX if gpus_per_worker else ""
        )
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
    return launch_pretraining_job(
        launcher,
        job_name(run_id or "", output_dir),
        namespace,
        image,
        workers,
        gpus_per_worker,
        args,
        **dict(job_options or {}),
    )
