"""Kubeflow Trainer v2 as each supported release enforces it, built from upstream's published
API package and upstream rules written down with their source.

- Schema: the `kubeflow-trainer-api` models of that release (PyPI, side environments
  `trainer-api-<version>`), as JSON schemas closed the way the CRD's structural schema is
  (`tests.conformance.schema`). v2.1.0 has `spec.podTemplateOverrides` and no `runtimePatches` or
  `activeDeadlineSeconds`; v2.2.0 replaced the former with the latter (kubeflow/trainer PR #3309).
- Admission: the validating webhook `validator.trainjob.trainer.kubeflow.org`
  (kubeflow/trainer <tag> pkg/webhooks/trainjob_webhook.go) runs the runtime's validation
  plugins; a refusal reaches the client as HTTP 403 "admission webhook ... denied the request"
  (controller-runtime's `admission.Denied` for an error that is no API status).
- What the controller builds: the worker pod that results from a runtime and a TrainJob
  (`worker_pod`), with the merge rules of each release.
"""

from __future__ import annotations

import copy
import re
from functools import cache
from typing import Any

from tests.conformance.schema import Result, close_embedded_metadata, walk, with_int_or_string
from tests.conformance.upstream import run_in

VERSIONS = ("2.1.0", "2.3.0")
GROUP, API_VERSION = "trainer.kubeflow.org", "v1alpha1"
WEBHOOK = "validator.trainjob.trainer.kubeflow.org"
RUNTIME_WEBHOOK = "validator.clustertrainingruntime.trainer.kubeflow.org"
# kubeflow/trainer <tag> pkg/constants/constants.go: the label on the runtime's replicated job
# that says which one runs the trainer, and the container that gets trainer.image/command/args.
ANCESTOR_LABEL = "trainer.kubeflow.org/trainjob-ancestor-step"
TRAINER_ANCESTOR, NODE_CONTAINER = "trainer", "node"
RESERVED_CONTAINERS = ("dataset-initializer", "model-initializer", "node")

_SCHEMA_SCRIPT = """
import json
from kubeflow_trainer_api import models as m
print(json.dumps({
    "TrainJob": m.TrainerV1alpha1TrainJob.model_json_schema(by_alias=True),
    "ClusterTrainingRuntime": m.TrainerV1alpha1ClusterTrainingRuntime.model_json_schema(
        by_alias=True),
}))
"""

# Where the CRDs embed an ObjectMeta (kept to the five embedded fields by the CRD schema).
_PATCH_JOB = ("spec", "runtimePatches", "*", "trainingRuntimeSpec", "template")
_RUNTIME_JOB = ("spec", "template")
_JOB_TEMPLATE = ("spec", "replicatedJobs", "*", "template")
_EMBEDDED = {
    "TrainJob": {
        "2.1.0": [("spec", "podTemplateOverrides", "*")],
        "2.3.0": [
            _PATCH_JOB,
            _PATCH_JOB + _JOB_TEMPLATE,
            (*_PATCH_JOB, *_JOB_TEMPLATE, "spec", "template"),
        ],
    },
    "ClusterTrainingRuntime": {
        version: [
            _RUNTIME_JOB,
            _RUNTIME_JOB + _JOB_TEMPLATE,
            (*_RUNTIME_JOB, *_JOB_TEMPLATE, "spec", "template"),
        ]
        for version in VERSIONS
    },
}


@cache
def schemas(version: str) -> dict[str, dict]:
    """The TrainJob and ClusterTrainingRuntime schemas of Trainer `version`."""
    raw = run_in(f"trainer-api-{version}", _SCHEMA_SCRIPT)
    return {
        kind: close_embedded_metadata(with_int_or_string(schema), _EMBEDDED[kind][version])
        for kind, schema in raw.items()
    }


def check(obj: dict, version: str) -> Result:
    """What the Trainer `version` CRD's schema does with `obj` (a TrainJob or runtime)."""
    return walk(obj, schemas(version)[obj["kind"]])


# --- admission ---------------------------------------------------------------------------------

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = re.compile(rf"^{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*$")
_HTTP_PATH = re.compile(r"^[A-Za-z0-9/\-._~%!$&'()*+,;=:]+$")
# The CRD's CEL rule on metadata.name (all releases): a DNS-1035 label of at most 63 characters.
_TRAINJOB_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def domain_prefixed_path_errors(where: str, value: str) -> list[str]:
    """k8s.io/apimachinery v0.36.2 pkg/util/validation/validation.go `IsDomainPrefixedPath`,
    which kubeflow/trainer v2.2.1 and v2.3.0 apply to `runtimePatches[].manager`."""
    if not value:
        return [f"{where}: Required value"]
    host, sep, path = value.partition("/")
    if not sep or not host or not path:
        return [
            f'{where}: Invalid value: "{value}": must be a domain-prefixed path '
            '(such as "acme.io/foo")'
        ]
    errors = []
    if len(host) > 253 or not _DNS1123_SUBDOMAIN.match(host):
        errors.append(f'{where}: Invalid value: "{host}": a lowercase RFC 1123 subdomain ...')
    if not _HTTP_PATH.match(path):
        errors.append(f'{where}: Invalid value: "{path}": Invalid path')
    return errors


def _runtime_containers(runtime: dict) -> dict[str, set[str]]:
    jobs = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    return {
        job["name"]: {
            c["name"]
            for part in ("initContainers", "containers")
            for c in job["template"]["spec"]["template"]["spec"].get(part) or []
        }
        for job in jobs
    }


def _pod_patch_errors(where: str, job_name: str, pod_spec: dict, containers: set[str]) -> list[str]:
    """kubeflow/trainer v2.1.0 and v2.3.0 pkg/runtime/framework/plugins/jobset/jobset.go
    `Validate`: patched (init)containers must exist in the runtime's job, and the reserved
    containers' env may only come from the trainer / initializer APIs."""
    errors = []
    for part, what in (("initContainers", "initContainer"), ("containers", "container")):
        for container in pod_spec.get(part) or []:
            if container["name"] not in containers:
                errors.append(
                    f"{where}: Invalid value: must not have {what} that doesn't exist in the "
                    f"runtime job {job_name}"
                )
            elif (
                part == "containers"
                and container.get("env")
                and (container["name"] in RESERVED_CONTAINERS)
            ):
                errors.append(
                    f"{where}: Invalid value: must not have envs for the dataset-initializer, "
                    "model-initializer, node containers"
                )
    return errors


def admission_errors(job: dict, runtimes: dict[str, dict], version: str) -> list[str]:
    """Why Trainer `version`'s webhook refuses TrainJob `job` (empty: admitted).

    `runtimes` are the cluster's ClusterTrainingRuntimes by name. Sources: kubeflow/trainer
    <tag> pkg/runtime/core/clustertrainingruntime.go `ValidateObjects` (the referenced runtime
    must exist) and pkg/runtime/framework/plugins/jobset/jobset.go `Validate`.
    """
    spec = job["spec"]
    ref = spec["runtimeRef"]
    runtime = runtimes.get(ref["name"]) if ref.get("kind") == "ClusterTrainingRuntime" else None
    if runtime is None:
        return [
            f"spec.runtimeRef: Invalid value: {ref}: clustertrainingruntimes.trainer.kubeflow.org "
            f'"{ref["name"]}" not found: specified clusterTrainingRuntime must be created '
            "before the TrainJob is created"
        ]
    containers = _runtime_containers(runtime)
    errors = []
    if version == "2.1.0":
        for override in spec.get("podTemplateOverrides") or []:
            for target in override.get("targetJobs") or []:
                if target["name"] not in containers:
                    errors.append(
                        "spec.podTemplateOverrides: Invalid value: must not have targetJob that "
                        "doesn't exist in the runtime job template"
                    )
                    continue
                errors += _pod_patch_errors(
                    "spec.podTemplateOverrides",
                    target["name"],
                    override.get("spec") or {},
                    containers[target["name"]],
                )
        return errors
    for patch in spec.get("runtimePatches") or []:
        errors += domain_prefixed_path_errors("spec.runtimePatches.manager", patch.get("manager"))
        template = (patch.get("trainingRuntimeSpec") or {}).get("template") or {}
        for job_patch in (template.get("spec") or {}).get("replicatedJobs") or []:
            if job_patch["name"] not in containers:
                errors.append(
                    "spec.runtimePatches: Invalid value: must not have replicated job that "
                    "doesn't exist in the runtime job template"
                )
                continue
            pod = (((job_patch.get("template") or {}).get("spec") or {}).get("template")) or {}
            errors += _pod_patch_errors(
                "spec.runtimePatches",
                job_patch["name"],
                pod.get("spec") or {},
                containers[job_patch["name"]],
            )
    return errors


def cel_errors(job: dict) -> list[str]:
    """The TrainJob CRD's CEL rule on metadata.name, which the API server applies on create
    (kubeflow/trainer v2.1.0 and v2.3.0 manifests/base/crds/trainer.kubeflow.org_trainjobs.yaml:
    a DNS-1035 label of at most 63 characters)."""
    name = job["metadata"]["name"]
    if len(name) > 63 or not _TRAINJOB_NAME.match(name):
        return [f"metadata.name: Invalid value: {name!r}: must be a DNS-1035 label"]
    return []


def jobset_name_errors(job: dict) -> list[str]:
    """JobSet's rule that every pod name `<jobset>-<replicated job>-<job index>-<pod index>-<5
    characters>` fits in 63 characters (kubernetes-sigs/jobset v0.12.0
    pkg/webhooks/jobset_webhook.go), for the largest node index (`numNodes` - 1) of the runtime's
    `node` job: the controller's JobSet for a longer TrainJob name is refused."""
    name = job["metadata"]["name"]
    nodes = (job["spec"].get("trainer") or {}).get("numNodes") or 1
    longest = f"{name}-node-0-{nodes - 1}-abcde"
    if len(longest) > 63:
        return [f"the JobSet's pod name {longest!r} is longer than 63 characters"]
    return []


def runtime_admission_errors(runtime: dict) -> list[str]:
    """kubeflow/trainer v2.1.0 and v2.3.0 pkg/webhooks/trainingruntime_webhook.go
    `validateReplicatedJobs` (the ClusterTrainingRuntime webhook calls it): a replicated job
    carrying the ancestor label must run one replica and have the container its step requires
    (`node` for the trainer)."""
    errors = []
    for job in runtime["spec"]["template"]["spec"]["replicatedJobs"]:
        labels = ((job.get("template") or {}).get("metadata") or {}).get("labels") or {}
        if labels.get(ANCESTOR_LABEL) != TRAINER_ANCESTOR:
            continue
        if job.get("replicas", 1) != 1:
            errors.append(f"replicatedJobs[{job['name']}].replicas: must be 1")
        names = {c["name"] for c in job["template"]["spec"]["template"]["spec"]["containers"]}
        if NODE_CONTAINER not in names:
            errors.append(f"replicatedJobs[{job['name']}]: must have container {NODE_CONTAINER}")
    return errors


# --- what the controller builds ----------------------------------------------------------------

# Strategic merge patch keys of the core/v1 pod types (k8s.io/api core/v1 types.go
# `patchMergeKey` tags): lists merged by key; other lists (tolerations, args, ...) replace.
_MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "imagePullSecrets": "name",
    "schedulingGates": "name",
    "ports": "containerPort",
}


def strategic_merge(base: Any, patch: Any, key: str | None = None) -> Any:
    """`patch` merged into `base` with Kubernetes strategic-merge semantics for pod specs."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = copy.deepcopy(base)
        for name, value in patch.items():
            merged[name] = strategic_merge(base.get(name), value, name)
        return merged
    if isinstance(base, list) and isinstance(patch, list) and key in _MERGE_KEYS:
        field = _MERGE_KEYS[key]
        merged = copy.deepcopy(base)
        for item in patch:
            for i, existing in enumerate(merged):
                if existing.get(field) == item.get(field):
                    merged[i] = strategic_merge(existing, item)
                    break
            else:
                merged.append(copy.deepcopy(item))
        return merged
    return copy.deepcopy(patch)


def _merge_resources(runtime: dict, job: dict, version: str) -> dict:
    """`trainer.resourcesPerNode` applied to the runtime container's resources: v2.1.0 and v2.2.1
    replace the whole block (pkg/runtime/framework/plugins/jobset/builder.go `Trainer`:
    `WithResources` / `Resources = *...DeepCopy()`); v2.3.0 merges limits and requests key by key
    (pkg/runtime/core/trainingruntime.go with pkg/util/trainingruntime `MergeResourceRequirements`,
    PR #3602), so a runtime limit the job does not name survives."""
    if version in ("2.1.0", "2.2.1"):
        return copy.deepcopy(job)
    merged = copy.deepcopy(runtime or {})
    for part in ("limits", "requests"):
        if job.get(part):
            merged[part] = {**(merged.get(part) or {}), **job[part]}
    return merged


def worker_pod(job: dict, runtime: dict, version: str) -> dict:
    """The pod template Trainer `version` gives the workers of TrainJob `job` on `runtime`
    (kubeflow/trainer <tag> pkg/runtime/framework/plugins/jobset/builder.go `Trainer` and the
    JobSet plugin's override / patch application)."""
    spec = job["spec"]
    for replicated in runtime["spec"]["template"]["spec"]["replicatedJobs"]:
        labels = (replicated["template"].get("metadata") or {}).get("labels") or {}
        if labels.get(ANCESTOR_LABEL) == TRAINER_ANCESTOR:
            break
    else:
        raise AssertionError("the runtime has no trainer job")
    pod = copy.deepcopy(replicated["template"]["spec"]["template"])
    trainer = spec.get("trainer") or {}
    for container in pod["spec"]["containers"]:
        if container["name"] != NODE_CONTAINER:
            continue
        for name in ("image", "command", "args"):
            if name in trainer:
                container[name] = copy.deepcopy(trainer[name])
        if trainer.get("env"):
            container["env"] = strategic_merge(container.get("env") or [], trainer["env"], "env")
        if trainer.get("resourcesPerNode"):
            container["resources"] = _merge_resources(
                container.get("resources"), trainer["resourcesPerNode"], version
            )
    if version == "2.1.0":
        patches = [
            {"metadata": o.get("metadata") or {}, "spec": o.get("spec") or {}}
            for o in spec.get("podTemplateOverrides") or []
            if any(t["name"] == replicated["name"] for t in o.get("targetJobs") or [])
        ]
    else:
        patches = [
            (job_patch.get("template") or {}).get("spec", {}).get("template") or {}
            for patch in spec.get("runtimePatches") or []
            for job_patch in (
                ((patch.get("trainingRuntimeSpec") or {}).get("template") or {}).get("spec") or {}
            ).get("replicatedJobs")
            or []
            if job_patch["name"] == replicated["name"]
        ]
    for patch in patches:
        pod = strategic_merge(pod, patch)
    pod.setdefault("metadata", {}).setdefault("labels", {})
    pod["metadata"]["labels"]["jobset.sigs.k8s.io/jobset-name"] = job["metadata"]["name"]
    return pod
