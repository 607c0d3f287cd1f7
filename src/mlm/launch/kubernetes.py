"""Run `mlm pretrain` as a distributed job on Kubernetes and wait for it.

Two job kinds, both running N identical workers with MultiWorkerMirroredStrategy:

- "trainjob": a Kubeflow Trainer v2 `TrainJob` (trainer.kubeflow.org/v1alpha1) on the
  `mlm-tensorflow-distributed` ClusterTrainingRuntime this project ships in `manifests/`. Trainer
  sets no `TF_CONFIG` for TensorFlow: the runtime gives each pod `JOB_COMPLETION_INDEX`,
  `JOBSET_NAME` and `MLM_WORKER_PORT`, this launcher adds `MLM_NUM_WORKERS`, and
  `mlm.training.cluster.resolve_cluster` derives `TF_CONFIG` from them.
- "tfjob": a Kubeflow Training Operator v1 `TFJob` (kubeflow.org/v1), which sets `TF_CONFIG`.

The job objects are built from the published API models (`kubeflow-trainer-api` for TrainJob,
`kubeflow-training` for TFJob, the `kubernetes` client's models for pods) and created with the
`CustomObjectsApi`. A job's name is derived from the pipeline run and task, so a retried pipeline
step finds the job its previous attempt created (HTTP 409) and waits for that one instead of
starting a second. The launcher polls the job until it succeeds, fails or times out; on failure
the error names the first worker that failed, its reason and the last lines of its log. The job
is deleted at the end unless `keep_job`.

The Kubernetes client and the Kubeflow model packages are imported inside functions: only the
cluster launchers need them.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlm.errors import UserInputError

logger = logging.getLogger(__name__)

RUNTIME_NAME = "mlm-tensorflow-distributed"
WORKER_PORT = 2222
DEFAULT_NAMESPACE = "mlm"
DEFAULT_SERVICE_ACCOUNT = "mlm-trainer"
DEFAULT_IMAGE = "ghcr.io/mlm-project/mlm:0.1.0"
PATCH_MANAGER = "mlm-launcher"
# TrainJob pods are named `<name>-node-0-<i>-<suffix>` and their hostnames `<name>-node-0-<i>`
# must stay valid DNS labels (<= 63 characters), so job names are kept well under that.
MAX_JOB_NAME_LENGTH = 40
# TFJob retries of the whole worker set; on spot nodes preemption is expected, and every restart
# resumes from the last checkpoint. (A TrainJob's restarts are set in its ClusterTrainingRuntime.)
TFJOB_BACKOFF_LIMIT = 1
TFJOB_SPOT_BACKOFF_LIMIT = 3
# The Pushgateway of manifests/ (same namespace). TrainJob pods get it from the runtime.
PUSHGATEWAY_URL = "http://mlm-pushgateway:9091"
GPU_RESOURCE = "nvidia.com/gpu"
GKE_SPOT_LABEL = "cloud.google.com/gke-spot"
POD_LABELS = {"app.kubernetes.io/part-of": "mlm", "app.kubernetes.io/component": "mlm-trainer"}
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class JobKind:
    """How one custom job kind is addressed and read.

    Attributes:
        kind: the Kubernetes kind.
        group, version, plural: the custom resource's API coordinates.
        container: the name of the training container in each worker pod.
        pod_label: the label its controller puts on every pod, valued with the job name.
        success_condition: the status condition type that means the job succeeded.
    """

    kind: str
    group: str
    version: str
    plural: str
    container: str
    pod_label: str
    success_condition: str

    @property
    def api_version(self) -> str:
        """`group/version`, as written in a manifest."""
        return f"{self.group}/{self.version}"


JOB_KINDS: dict[str, JobKind] = {
    "trainjob": JobKind(
        kind="TrainJob",
        group="trainer.kubeflow.org",
        version="v1alpha1",
        plural="trainjobs",
        container="node",
        pod_label="jobset.sigs.k8s.io/jobset-name",
        success_condition="Complete",
    ),
    "tfjob": JobKind(
        kind="TFJob",
        group="kubeflow.org",
        version="v1",
        plural="tfjobs",
        # The Training Operator injects TF_CONFIG and the port into the container of this name.
        container="tensorflow",
        pod_label="training.kubeflow.org/job-name",
        success_condition="Succeeded",
    ),
}


@dataclass(frozen=True)
class WorkerSpec:
    """The pods of a training job: N identical workers.

    Attributes:
        image: container image with the `mlm` command.
        num_workers: number of worker pods (MultiWorkerMirroredStrategy workers).
        gpus_per_worker: `nvidia.com/gpu` limit per pod (0 for CPU training).
        cpu: CPU request per pod (the limit is twice the request).
        memory: memory request and limit per pod.
        node_selector: extra node labels the pods must land on (e.g. GKE accelerator type).
        tolerations: extra tolerations, as dicts of V1Toleration fields (key, operator, ...).
        spot: run on spot (preemptible) nodes; checkpoint resume makes preemption safe.
        service_account: the pods' service account (its identity for gs:// access).
        env: extra environment variables for the training container.
    """

    image: str
    num_workers: int
    gpus_per_worker: int = 0
    cpu: str = "4"
    memory: str = "16Gi"
    node_selector: Mapping[str, str] | None = None
    tolerations: Sequence[Mapping[str, Any]] | None = None
    spot: bool = False
    service_account: str | None = DEFAULT_SERVICE_ACCOUNT
    env: Mapping[str, str] | None = None

    def validate(self) -> None:
        """Raises UserInputError naming the first bad field."""
        if not self.image or any(c.isspace() for c in self.image):
            raise UserInputError(f"image {self.image!r} is not a container image reference")
        if self.image.endswith(":latest") or ":" not in self.image.rsplit("/", 1)[-1]:
            raise UserInputError(
                f"image {self.image!r} must be pinned by tag (not :latest), e.g. "
                f"{DEFAULT_IMAGE}, so every worker and every retry runs the same code"
            )
        if not isinstance(self.num_workers, int) or self.num_workers < 1:
            raise UserInputError(f"num_workers must be an integer >= 1, got {self.num_workers!r}")
        if not isinstance(self.gpus_per_worker, int) or self.gpus_per_worker < 0:
            raise UserInputError(
                f"gpus_per_worker must be an integer >= 0, got {self.gpus_per_worker!r}"
            )
        from kubernetes.utils import parse_quantity

        for field_name in ("cpu", "memory"):
            value = getattr(self, field_name)
            try:
                if parse_quantity(value) <= 0:
                    raise ValueError(value)
            except (ValueError, TypeError):
                raise UserInputError(
                    f"{field_name} {value!r} is not a positive Kubernetes quantity "
                    '(e.g. cpu "4" or "500m", memory "16Gi")'
                ) from None
        for key, value in (self.node_selector or {}).items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise UserInputError(
                    f"node_selector entries must be strings, got {key!r}: {value!r} "
                    '(quote label values such as "true")'
                )
        for toleration in self.tolerations or ():
            unknown = set(toleration) - {"key", "operator", "value", "effect", "toleration_seconds"}
            if unknown:
                raise UserInputError(
                    f"toleration {dict(toleration)!r} has unknown fields {sorted(unknown)}; use "
                    "key, operator, value, effect, toleration_seconds"
                )


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


def job_name(*parts: str, prefix: str = "mlm-pretrain") -> str:
    """A deterministic, DNS-1035-safe job name from the pipeline run and task.

    The same parts always give the same name, so a retried step finds its job again. The name is
    `<prefix>-<readable part>-<hash of all parts>`, at most MAX_JOB_NAME_LENGTH characters.

    Args:
        *parts: what identifies the job, e.g. the KFP run id and the task name.
        prefix: the readable start of the name (lowercase letters, digits, '-').

    Returns:
        The job name.
    """
    if not parts or not any(parts):
        raise UserInputError("job_name needs at least one non-empty part (e.g. the run id)")
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:10]
    readable = re.sub(r"[^a-z0-9]+", "-", parts[0].lower()).strip("-")
    room = MAX_JOB_NAME_LENGTH - len(prefix) - len(digest) - 2
    readable = readable[: max(room, 0)].strip("-")
    name = "-".join(p for p in (prefix, readable, digest) if p)
    validate_job_name(name)
    return name


def validate_job_name(name: str) -> None:
    """Raises UserInputError unless `name` is a DNS-1035 label of at most MAX_JOB_NAME_LENGTH."""
    if not isinstance(name, str) or not _DNS_1035.match(name) or len(name) > MAX_JOB_NAME_LENGTH:
        raise UserInputError(
            f"job name {name!r} must be lowercase letters, digits and '-', start with a letter, "
            f"end with a letter or digit, and be at most {MAX_JOB_NAME_LENGTH} characters; "
            "use mlm.launch.kubernetes.job_name(run_id, task) to derive one"
        )


def _kind(kind: str) -> JobKind:
    try:
        return JOB_KINDS[kind]
    except KeyError:
        raise UserInputError(
            f"launcher kind {kind!r} is unknown; use one of {sorted(JOB_KINDS)} "
            "(or 'local' to train in the calling process)"
        ) from None


def _serialize(model: Any) -> Any:
    """A kubernetes-client model (or a structure of them) as plain JSON data."""
    from kubernetes.client import ApiClient

    return ApiClient().sanitize_for_serialization(model)


def _scheduling(spec: WorkerSpec) -> tuple[dict[str, str], list[Any]]:
    """Node selector and tolerations: the caller's, plus what GPUs and spot nodes need."""
    from kubernetes.client import V1Toleration

    selector = dict(spec.node_selector or {})
    tolerations = [V1Toleration(**dict(t)) for t in spec.tolerations or ()]
    taken = {t.key for t in tolerations}
    if spec.gpus_per_worker and GPU_RESOURCE not in taken:
        tolerations.append(V1Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule"))
    if spec.spot:
        selector.setdefault(GKE_SPOT_LABEL, "true")
        if GKE_SPOT_LABEL not in taken:
            tolerations.append(
                V1Toleration(
                    key=GKE_SPOT_LABEL, operator="Equal", value="true", effect="NoSchedule"
                )
            )
    return selector, tolerations


def _resources(spec: WorkerSpec) -> Any:
    from kubernetes.client import V1ResourceRequirements
    from kubernetes.utils import parse_quantity

    cpu_limit = parse_quantity(spec.cpu) * 2
    limits = {
        "cpu": str(int(cpu_limit)) if cpu_limit == int(cpu_limit) else f"{int(cpu_limit * 1000)}m",
        "memory": spec.memory,
    }
    if spec.gpus_per_worker:
        limits[GPU_RESOURCE] = str(spec.gpus_per_worker)
    return V1ResourceRequirements(requests={"cpu": spec.cpu, "memory": spec.memory}, limits=limits)


def _env(spec: WorkerSpec) -> list[Any]:
    from kubernetes.client import V1EnvVar

    env = {"MLM_NUM_WORKERS": str(spec.num_workers), **(spec.env or {})}
    return [V1EnvVar(name=key, value=str(value)) for key, value in env.items()]


def build_trainjob(
    name: str, namespace: str, spec: WorkerSpec, pretrain_args: Sequence[str], timeout_s: int
) -> dict[str, Any]:
    """The TrainJob manifest: `spec.num_workers` nodes of the TensorFlow runtime.

    Image, command, worker count, resources and env go in `spec.trainer`; node selector,
    tolerations and service account are a runtime patch on the runtime's `node` replicated job.

    Args:
        name: the job name (see `job_name`).
        namespace: where the job runs.
        spec: the workers.
        pretrain_args: the arguments after `mlm pretrain`.
        timeout_s: the job's active deadline, so the cluster stops it even without the launcher.

    Returns:
        The TrainJob as a JSON-ready dict.
    """
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

    kind = JOB_KINDS["trainjob"]
    selector, tolerations = _scheduling(spec)
    pod_patch: dict[str, Any] = {}
    if selector:
        pod_patch["nodeSelector"] = selector
    if tolerations:
        pod_patch["tolerations"] = _serialize(tolerations)
    if spec.service_account:
        pod_patch["serviceAccountName"] = spec.service_account
    job_spec: dict[str, Any] = {
        "runtimeRef": {
            "apiGroup": kind.group,
            "kind": "ClusterTrainingRuntime",
            "name": RUNTIME_NAME,
        },
        "activeDeadlineSeconds": int(timeout_s),
        "trainer": {
            "image": spec.image,
            "command": ["mlm", "pretrain"],
            "args": list(pretrain_args),
            "numNodes": spec.num_workers,
            "env": _serialize(_env(spec)),
            "resourcesPerNode": _serialize(_resources(spec)),
        },
    }
    if pod_patch:
        job_spec["runtimePatches"] = [
            {
                "manager": PATCH_MANAGER,
                "trainingRuntimeSpec": {
                    "template": {
                        "spec": {
                            "replicatedJobs": [
                                {
                                    "name": "node",
                                    "template": {"spec": {"template": {"spec": pod_patch}}},
                                }
                            ]
                        }
                    }
                },
            }
        ]
    manifest = {
        "apiVersion": kind.api_version,
        "kind": kind.kind,
        "metadata": {"name": name, "namespace": namespace, "labels": dict(POD_LABELS)},
        "spec": job_spec,
    }
    # Round-trip through the Trainer API model, which checks every field's type.
    return TrainerV1alpha1TrainJob.from_dict(manifest).to_dict()


def build_tfjob(
    name: str, namespace: str, spec: WorkerSpec, pretrain_args: Sequence[str], timeout_s: int
) -> dict[str, Any]:
    """The TFJob manifest: `spec.num_workers` replicas of type Worker (worker 0 is the chief).

    Args:
        name: the job name (see `job_name`).
        namespace: where the job runs.
        spec: the workers.
        pretrain_args: the arguments after `mlm pretrain`.
        timeout_s: the job's active deadline, so the cluster stops it even without the launcher.

    Returns:
        The TFJob as a JSON-ready dict.
    """
    from kubeflow.training.models import (
        KubeflowOrgV1ReplicaSpec,
        KubeflowOrgV1RunPolicy,
        KubeflowOrgV1TFJob,
        KubeflowOrgV1TFJobSpec,
    )
    from kubernetes.client import (
        V1Capabilities,
        V1Container,
        V1ContainerPort,
        V1EnvVar,
        V1ObjectMeta,
        V1PodSecurityContext,
        V1PodSpec,
        V1PodTemplateSpec,
        V1SeccompProfile,
        V1SecurityContext,
    )

    kind = JOB_KINDS["tfjob"]
    selector, tolerations = _scheduling(spec)
    container = V1Container(
        name=kind.container,
        image=spec.image,
        command=["mlm", "pretrain"],
        args=list(pretrain_args),
        env=[V1EnvVar(name="MLM_PUSHGATEWAY_URL", value=PUSHGATEWAY_URL), *_env(spec)],
        ports=[V1ContainerPort(name="tfjob-port", container_port=WORKER_PORT)],
        resources=_resources(spec),
        security_context=V1SecurityContext(
            allow_privilege_escalation=False, capabilities=V1Capabilities(drop=["ALL"])
        ),
    )
    pod = V1PodTemplateSpec(
        metadata=V1ObjectMeta(labels=dict(POD_LABELS)),
        spec=V1PodSpec(
            containers=[container],
            service_account_name=spec.service_account,
            automount_service_account_token=False,
            node_selector=selector or None,
            tolerations=tolerations or None,
            security_context=V1PodSecurityContext(
                run_as_non_root=True,
                run_as_user=1000,
                run_as_group=1000,
                fs_group=1000,
                seccomp_profile=V1SeccompProfile(type="RuntimeDefault"),
            ),
        ),
    )
    job = KubeflowOrgV1TFJob(
        api_version=kind.api_version,
        kind=kind.kind,
        metadata=V1ObjectMeta(name=name, namespace=namespace, labels=dict(POD_LABELS)),
        spec=KubeflowOrgV1TFJobSpec(
            tf_replica_specs={
                "Worker": KubeflowOrgV1ReplicaSpec(
                    replicas=spec.num_workers, restart_policy="OnFailure", template=pod
                )
            },
            run_policy=KubeflowOrgV1RunPolicy(
                backoff_limit=TFJOB_SPOT_BACKOFF_LIMIT if spec.spot else TFJOB_BACKOFF_LIMIT,
                active_deadline_seconds=int(timeout_s),
                # Keep failed pods until the job is deleted, so their logs can be read.
                clean_pod_policy="None",
            ),
        ),
    )
    return _serialize(job)


BUILDERS: dict[str, Callable[..., dict[str, Any]]] = {
    "trainjob": build_trainjob,
    "tfjob": build_tfjob,
}


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
    job_kind = _kind(kind)
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
    coordinates = (job_kind.group, job_kind.version, namespace, job_kind.plural)

    started = clock()
    try:
        custom.create_namespaced_custom_object(*coordinates, manifest)
        attached = False
        logger.info("created %s %s/%s (%d workers)", job_kind.kind, namespace, name, num_workers)
    except ApiException as error:
        if error.status != 409:
            raise
        attached = True
        logger.info("%s %s/%s exists; waiting for it", job_kind.kind, namespace, name)

    def delete() -> bool:
        if keep_job:
            return False
        try:
            custom.delete_namespaced_custom_object(
                *coordinates, name, body=V1DeleteOptions(propagation_policy="Background")
            )
        except ApiException as error:
            if error.status != 404:
                logger.warning("could not delete %s %s: %s", job_kind.kind, name, error.reason)
                return False
        return True

    deadline = started + timeout_s
    while True:
        try:
            job = custom.get_namespaced_custom_object(*coordinates, name)
        except ApiException as error:
            if error.status == 404:
                raise JobFailedError(
                    f"{job_kind.kind} {namespace}/{name} disappeared while running "
                    "(deleted by someone else?)",
                    name=name,
                    worker=None,
                    reason="deleted",
                    log_tail="",
                ) from error
            # Transient API trouble (throttling, a restarting API server): keep waiting.
            logger.warning("reading %s %s failed (%s); retrying", job_kind.kind, name, error.status)
            job = {}
        state, detail = _condition(job, job_kind)
        if state == "Succeeded":
            elapsed = clock() - started
            return JobResult(kind, name, namespace, state, attached, elapsed, delete())
        if state == "Failed":
            found = _diagnose(core, job_kind, name, namespace, log_lines)
            deleted = delete()
            reason = found["reason"] or detail or "no reason reported"
            message = f"{job_kind.kind} {namespace}/{name} failed: {detail or 'Failed'}"
            if found["worker"]:
                message += f"\nfirst failed worker: {found['worker']}: {reason}"
            if found["log_tail"]:
                message += (
                    f"\nlast {log_lines} log lines of {found['worker']}:\n{found['log_tail']}"
                )
            if keep_job or not deleted:
                message += (
                    f"\n(the job is kept: kubectl -n {namespace} describe {job_kind.plural} {name})"
                )
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
                f"{job_kind.kind} {namespace}/{name} did not finish within {timeout_s:g} s"
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
            "-gpu" if gpus_per_worker else ""
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
