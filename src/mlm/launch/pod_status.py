"""What a running job's pods say: why a worker cannot start, which worker failed first and why
(its exit and log tail), the job's terminal condition, recent Warning events, and worker 0's log
lines followed as they appear. Reads only (best effort: a failed read is not the job's failure).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from mlm.launch.job_errors import REQUEST_TIMEOUT_S, JobFailedError, transient_errors
from mlm.launch.job_specs import JobKind

if TYPE_CHECKING:
    from mlm.launch.job_object import Job


def suspended(job: Mapping[str, Any]) -> bool:
    """Whether a job is suspended (queued, e.g. by Kueue): it has no pods on purpose."""
    if (job.get("spec") or {}).get("suspend") or (
        (job.get("spec") or {}).get("runPolicy") or {}
    ).get("suspend"):
        return True
    conditions = (job.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Suspended" and c.get("status") == "True" for c in conditions)


def raise_failed(
    job: Job, found: Mapping[str, Any], detail: str, log_lines: int, keep_job: bool, deleted: bool
) -> None:
    """Raises the JobFailedError of a failed job, from what `diagnose` found."""
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


_IMAGE_PULL_REASONS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}


_CONTAINER_CONFIG_REASONS = {"CreateContainerConfigError", "CreateContainerError"}


# Worker 0's log lines read per poll (new ones are printed; older ones were printed before).
FOLLOW_LOG_LINES = 1000


def pending_problem(pod: Any) -> tuple[str, str] | None:
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


class LogFollower:
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
        except (ApiException, *transient_errors()):
            return  # the log is a courtesy: never fail the step over it
        for line in (text or "").splitlines():
            stamp, _, message = line.partition(" ")
            stamp_key = _timestamp_key(stamp)
            if self.last is not None and stamp_key <= self.last:
                continue
            self.last = stamp_key
            self.output.write(f"{self.prefix}{message}\n")
        self.output.flush()


def job_condition(job: Mapping[str, Any], kind: JobKind) -> tuple[str | None, str]:
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


def diagnose(core: Any, kind: JobKind, name: str, namespace: str, log_lines: int) -> dict:
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


def warning_events(core: Any, namespace: str, job_name: str) -> str:
    """The newest Warning event about the job or the objects its controller made for it
    (names starting with the job's), as "reason: message", or "" (best effort)."""
    from kubernetes.client.exceptions import ApiException

    try:
        events = core.list_namespaced_event(
            namespace, field_selector="type=Warning", _request_timeout=REQUEST_TIMEOUT_S
        ).items
    except (ApiException, *transient_errors()):
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
