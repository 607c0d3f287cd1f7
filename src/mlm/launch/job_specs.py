"""The distributed `mlm pretrain` job objects: N identical workers, as a TrainJob or a TFJob.

Two job kinds, both running MultiWorkerMirroredStrategy workers:

- "trainjob": a Kubeflow Trainer v2 `TrainJob` (trainer.kubeflow.org/v1alpha1) on the
  `mlm-tensorflow-distributed` ClusterTrainingRuntime this project ships in `manifests/`. Trainer
  sets no `TF_CONFIG` for TensorFlow: the runtime gives each pod `JOB_COMPLETION_INDEX`,
  `JOBSET_NAME` and `MLM_WORKER_PORT`, the job adds `MLM_NUM_WORKERS`, and
  `mlm.training.cluster.resolve_cluster` derives `TF_CONFIG` from them. Two shapes of the
  TrainJob API are in use (`TRAINJOB_APIS`): Trainer v2.2 and later place pods with
  `spec.runtimePatches` and stop a job at `spec.activeDeadlineSeconds`; v2.1.0 (the release
  Kubeflow 1.11 and 26.03 ship) has neither and places pods with `spec.podTemplateOverrides`
  (kubeflow/trainer PR #3309 replaced one with the other).
- "tfjob": a Kubeflow Training Operator v1 `TFJob` (kubeflow.org/v1), which sets `TF_CONFIG`.

The job objects are built from the published API models (`kubeflow-trainer-api` for TrainJob,
`kubeflow-training` for TFJob, the `kubernetes` client's models for pods), imported inside the
functions: only the cluster launchers need them. Creating, watching and deleting the jobs is
`mlm.launch.kubernetes`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlm import DEFAULT_IMAGE
from mlm.errors import UserInputError

RUNTIME_NAME = "mlm-tensorflow-distributed"
WORKER_PORT = 2222
DEFAULT_SERVICE_ACCOUNT = "mlm-trainer"
# Trainer >= 2.2 requires a runtime patch's manager to be a domain-prefixed path
# (kubeflow/trainer v2.3.0 pkg/runtime/framework/plugins/jobset/jobset.go: IsDomainPrefixedPath).
PATCH_MANAGER = "mlm.kubeflow.org/launcher"
# TrainJob pods are named `<name>-node-0-<i>-<suffix>` and their hostnames `<name>-node-0-<i>`
# must stay valid DNS labels (<= 63 characters), so job names are kept well under that.
MAX_JOB_NAME_LENGTH = 40
# TFJob retries of the whole worker set; on spot nodes preemption is expected, and every restart
# resumes from the last checkpoint. (A TrainJob's restarts are set in its ClusterTrainingRuntime.)
TFJOB_BACKOFF_LIMIT = 1
TFJOB_SPOT_BACKOFF_LIMIT = 3
# Seconds between SIGTERM and SIGKILL for a training pod (also in the ClusterTrainingRuntime).
# SIGTERM makes every worker finish the step in flight, run one more (it carries the stop flag
# through the all-reduce) and save; gs:// outputs then upload the checkpoint. Measured
# (bench/bench_preemption.py, 2-core CPU): a BERT-base MaskedLanguageModel checkpoint with AdamW
# (134 M parameters, 1.6 GB) saves in 5.3 s to local disk (tiny: 229 MB, 3.1 s); uploading
# 1.6 GB at >= 100 MB/s takes ~16 s; a BERT-base step on an accelerator takes under 2 s. About
# 25 s in all: 180 s leaves room for slow disks, slow steps and larger models.
TERMINATION_GRACE_PERIOD_SECONDS = 180
# The Pushgateway of manifests/, in namespace mlm; jobs run in other namespaces (the run's), so
# it is addressed with its namespace. TrainJob pods get it from the runtime.
PUSHGATEWAY_URL = "http://mlm-pushgateway.mlm.svc:9091"
GPU_RESOURCE = "nvidia.com/gpu"
GKE_SPOT_LABEL = "cloud.google.com/gke-spot"
# tini (PID 1 of the images) forwards SIGTERM to `mlm`; a pod's `command` replaces the image's
# ENTRYPOINT, so it must name tini itself.
WORKER_COMMAND = ("/usr/bin/tini", "--", "mlm", "pretrain")
POD_LABELS = {"app.kubernetes.io/part-of": "mlm", "app.kubernetes.io/component": "mlm-trainer"}
# Worker pods stay out of the Istio mesh of a Kubeflow profile namespace: an injected proxy would
# receive the workers' gRPC on 2222 as plain text from peers it cannot authorize (the profile's
# AuthorizationPolicy matches mTLS identities), and KFP keeps its own pipeline pods out the same
# way (backend/src/apiserver/template: sidecar.istio.io/inject "false"). Kubeflow's TFJob guide
# says the same. The ClusterTrainingRuntime carries the same label for TrainJob pods.
WORKER_POD_ONLY_LABELS = {"sidecar.istio.io/inject": "false"}
# Which pipeline run and task a job belongs to: the pipeline's cleanup deletes a run's jobs by them.
RUN_ID_LABEL = "mlm.kubeflow.org/run-id"
TASK_LABEL = "mlm.kubeflow.org/task"
_LABEL_VALUE = re.compile(r"[^A-Za-z0-9._-]+")
_DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class JobKind:
    """How one custom job kind is addressed and read.

    Attributes:
        kind: the Kubernetes kind.
        group, version, plural: the custom resource's API coordinates.
        container: the name of the training container in each worker pod.
        pod_label: the label its controller puts on every pod, valued with the job name.
        success_condition: the status condition type that means the job succeeded.
        chief_label: "key=value" that its controller puts only on worker 0's pods.
    """

    kind: str
    group: str
    version: str
    plural: str
    container: str
    pod_label: str
    success_condition: str
    chief_label: str

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
        # JobSet runs each replicated job as an Indexed Job: worker 0 has completion index 0.
        chief_label="batch.kubernetes.io/job-completion-index=0",
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
        chief_label="training.kubeflow.org/replica-index=0",
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
        labels: extra labels on the job (and the TFJob's pods), e.g. `run_labels(...)`.
        env_vars: further environment variables as Kubernetes EnvVar objects (`{"name", "value"}`
            or `{"name", "valueFrom"}`), e.g. the pipeline task's own env (secrets included);
            names set by `env` or the launcher win.
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
    labels: Mapping[str, str] | None = None
    env_vars: Sequence[Mapping[str, Any]] | None = None

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
        for variable in self.env_vars or ():
            if not isinstance(variable, Mapping) or not variable.get("name"):
                raise UserInputError(
                    f"env_vars entry {variable!r} is not a Kubernetes EnvVar "
                    '(e.g. {"name": "AWS_ENDPOINT_URL", "value": "http://minio-service:9000"})'
                )
        for toleration in self.tolerations or ():
            unknown = set(toleration) - {"key", "operator", "value", "effect", "toleration_seconds"}
            if unknown:
                raise UserInputError(
                    f"toleration {dict(toleration)!r} has unknown fields {sorted(unknown)}; use "
                    "key, operator, value, effect, toleration_seconds"
                )


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


def label_value(text: str) -> str:
    """`text` as a valid label value: at most 63 of [A-Za-z0-9._-], alphanumeric at both ends."""
    return _LABEL_VALUE.sub("-", text)[:63].strip("._-")


def run_labels(run_id: str, task: str) -> dict[str, str]:
    """The labels that tie a job to its pipeline run and task (empty parts are left out)."""
    labels = {RUN_ID_LABEL: label_value(run_id or ""), TASK_LABEL: label_value(task or "")}
    return {key: value for key, value in labels.items() if value}


def validate_job_name(name: str) -> None:
    """Raises UserInputError unless `name` is a DNS-1035 label of at most MAX_JOB_NAME_LENGTH."""
    if not isinstance(name, str) or not _DNS_1035.match(name) or len(name) > MAX_JOB_NAME_LENGTH:
        raise UserInputError(
            f"job name {name!r} must be lowercase letters, digits and '-', start with a letter, "
            f"end with a letter or digit, and be at most {MAX_JOB_NAME_LENGTH} characters; "
            "use mlm.launch.job_specs.job_name(run_id, task) to derive one"
        )


def job_kind(kind: str) -> JobKind:
    """The JobKind of a launcher name ("trainjob" or "tfjob")."""
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


def _labels(spec: WorkerSpec) -> dict[str, str]:
    return {**(spec.labels or {}), **POD_LABELS}


def _env(spec: WorkerSpec) -> list[Any]:
    """The worker container's env: MLM_NUM_WORKERS and `spec.env`, then `spec.env_vars` in
    order; the first variable of a name wins (the runtime's own MLM_PUSHGATEWAY_URL too)."""
    from kubernetes.client import V1EnvVar

    env = {"MLM_NUM_WORKERS": str(spec.num_workers), **(spec.env or {})}
    variables = [V1EnvVar(name=key, value=str(value)) for key, value in env.items()]
    taken = {*env, "MLM_PUSHGATEWAY_URL"}
    for variable in spec.env_vars or ():
        if variable["name"] in taken:
            continue
        taken.add(variable["name"])
        variables.append(
            V1EnvVar(
                name=variable["name"],
                value=variable.get("value"),
                value_from=variable.get("valueFrom"),
            )
        )
    return variables


# The TrainJob API shapes this launcher can write, newest first: the field that places pods on
# the runtime's `node` job, and the Trainer releases that have it.
RUNTIME_PATCHES, POD_TEMPLATE_OVERRIDES = "runtimePatches", "podTemplateOverrides"
TRAINJOB_APIS = {
    RUNTIME_PATCHES: "Kubeflow Trainer v2.2 or later",
    POD_TEMPLATE_OVERRIDES: "Kubeflow Trainer v2.1",
}


def build_trainjob(
    name: str,
    namespace: str,
    spec: WorkerSpec,
    pretrain_args: Sequence[str],
    timeout_s: int,
    api: str = RUNTIME_PATCHES,
) -> dict[str, Any]:
    """The TrainJob manifest: `spec.num_workers` nodes of the TensorFlow runtime.

    Image, command, worker count, resources and env go in `spec.trainer`; node selector,
    tolerations and service account go on the runtime's `node` replicated job, as a runtime patch
    (`api="runtimePatches"`, Trainer >= 2.2, with `activeDeadlineSeconds`) or a pod template
    override (`api="podTemplateOverrides"`, Trainer 2.1, which has no deadline field: the
    launcher enforces the timeout itself).

    Args:
        name: the job name (see `job_name`).
        namespace: where the job runs.
        spec: the workers.
        pretrain_args: the arguments after `mlm pretrain`.
        timeout_s: the job's active deadline, so the cluster stops it even without the launcher.
        api: which TrainJob API shape to write (`TRAINJOB_APIS`).

    Returns:
        The TrainJob as a JSON-ready dict.
    """
    if api not in TRAINJOB_APIS:
        raise ValueError(f"api must be one of {sorted(TRAINJOB_APIS)}, got {api!r}")
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
        "trainer": {
            "image": spec.image,
            "command": list(WORKER_COMMAND),
            "args": list(pretrain_args),
            "numNodes": spec.num_workers,
            "env": _serialize(_env(spec)),
            "resourcesPerNode": _serialize(_resources(spec)),
        },
    }
    if api == RUNTIME_PATCHES:
        job_spec["activeDeadlineSeconds"] = int(timeout_s)
    if pod_patch and api == RUNTIME_PATCHES:
        node_job = {"name": "node", "template": {"spec": {"template": {"spec": pod_patch}}}}
        job_spec[RUNTIME_PATCHES] = [
            {
                "manager": PATCH_MANAGER,
                "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [node_job]}}},
            }
        ]
    elif pod_patch:
        job_spec[POD_TEMPLATE_OVERRIDES] = [{"targetJobs": [{"name": "node"}], "spec": pod_patch}]
    manifest = {
        "apiVersion": kind.api_version,
        "kind": kind.kind,
        "metadata": {"name": name, "namespace": namespace, "labels": _labels(spec)},
        "spec": job_spec,
    }
    if api == RUNTIME_PATCHES:
        _check_with_trainer_model(manifest)
    return manifest


def _check_with_trainer_model(manifest: dict[str, Any]) -> None:
    """Round-trips `manifest` through the installed Trainer API model, which checks every
    field's type. The model ignores fields it does not know, so a field it drops is a bug here
    (it would be pruned by an API server of that release too)."""
    from kubeflow_trainer_api.models import TrainerV1alpha1TrainJob

    rebuilt = TrainerV1alpha1TrainJob.from_dict(manifest).to_dict()
    if rebuilt != manifest:
        raise AssertionError(f"the Trainer API model does not keep this TrainJob: {manifest}")


# The workers' root filesystem is read-only; what they write locally goes to an emptyDir
# (manifests/base/runtime/tensorflow-distributed.yaml does the same for TrainJobs).
SCRATCH_VOLUME, SCRATCH_PATH = "scratch", "/scratch"
SCRATCH_ENV = {
    "TMPDIR": SCRATCH_PATH,
    "HOME": f"{SCRATCH_PATH}/home",
    "KERAS_HOME": f"{SCRATCH_PATH}/home/.keras",
    "MPLCONFIGDIR": f"{SCRATCH_PATH}/home/.matplotlib",
}


def build_tfjob(
    name: str, namespace: str, spec: WorkerSpec, pretrain_args: Sequence[str], timeout_s: int
) -> dict[str, Any]:
    """The TFJob manifest: `spec.num_workers` replicas of type Worker (worker 0 is the chief),
    as a JSON-ready dict. The arguments are those of `build_trainjob`."""
    from kubeflow.training.models import (
        KubeflowOrgV1ReplicaSpec,
        KubeflowOrgV1RunPolicy,
        KubeflowOrgV1TFJob,
        KubeflowOrgV1TFJobSpec,
    )
    from kubernetes.client import V1ObjectMeta

    kind = JOB_KINDS["tfjob"]
    pod = _tfjob_pod_template(spec, pretrain_args, kind.container)
    job = KubeflowOrgV1TFJob(
        api_version=kind.api_version,
        kind=kind.kind,
        metadata=V1ObjectMeta(name=name, namespace=namespace, labels=_labels(spec)),
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


def _tfjob_pod_template(spec: WorkerSpec, pretrain_args: Sequence[str], container_name: str) -> Any:
    """The pod template of a TFJob worker (a `V1PodTemplateSpec`): one hardened container with
    a writable scratch volume, scheduled by `spec`."""
    from kubernetes.client import (
        V1Capabilities,
        V1Container,
        V1ContainerPort,
        V1EmptyDirVolumeSource,
        V1EnvVar,
        V1ObjectMeta,
        V1PodSecurityContext,
        V1PodSpec,
        V1PodTemplateSpec,
        V1SeccompProfile,
        V1SecurityContext,
        V1Volume,
        V1VolumeMount,
    )

    selector, tolerations = _scheduling(spec)
    container = V1Container(
        name=container_name,
        image=spec.image,
        command=list(WORKER_COMMAND),
        args=list(pretrain_args),
        env=[
            V1EnvVar(name="MLM_PUSHGATEWAY_URL", value=PUSHGATEWAY_URL),
            *(V1EnvVar(name=name, value=value) for name, value in SCRATCH_ENV.items()),
            *_env(spec),
        ],
        ports=[V1ContainerPort(name="tfjob-port", container_port=WORKER_PORT)],
        resources=_resources(spec),
        security_context=V1SecurityContext(
            allow_privilege_escalation=False,
            read_only_root_filesystem=True,
            capabilities=V1Capabilities(drop=["ALL"]),
        ),
        volume_mounts=[V1VolumeMount(name=SCRATCH_VOLUME, mount_path=SCRATCH_PATH)],
    )
    return V1PodTemplateSpec(
        metadata=V1ObjectMeta(labels={**_labels(spec), **WORKER_POD_ONLY_LABELS}),
        spec=V1PodSpec(
            containers=[container],
            termination_grace_period_seconds=TERMINATION_GRACE_PERIOD_SECONDS,
            service_account_name=spec.service_account,
            automount_service_account_token=False,
            volumes=[V1Volume(name=SCRATCH_VOLUME, empty_dir=V1EmptyDirVolumeSource())],
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


def job_manifests(
    kind: str,
    name: str,
    namespace: str,
    spec: WorkerSpec,
    pretrain_args: Sequence[str],
    timeout_s: int,
) -> list[tuple[str, dict[str, Any]]]:
    """The manifests of a `kind` job, as (API shape, manifest), the one to try first first: a
    TrainJob in each shape of `TRAINJOB_APIS` (newest first), a TFJob in its one shape."""
    if kind == "trainjob":
        return [
            (api, build_trainjob(name, namespace, spec, pretrain_args, timeout_s, api=api))
            for api in TRAINJOB_APIS
        ]
    return [("tfjob", build_tfjob(name, namespace, spec, pretrain_args, timeout_s))]
