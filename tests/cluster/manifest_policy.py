"""Security and hygiene rules every manifest of this project must keep, as a checker.

`check_policy(resources)` returns one line per violation (empty when all is well):

- every container of every pod template (Deployments, Jobs, the ClusterTrainingRuntime, TFJob
  replicas, a TrainJob's trainer) runs non-root, without privilege escalation, with all
  capabilities dropped and the RuntimeDefault seccomp profile, and has CPU and memory requests
  and limits;
- every image is pinned by a tag other than `latest`;
- RBAC stays least-privilege: no ClusterRole / ClusterRoleBinding, no wildcards, only the job
  kinds the launcher creates may be written, pods and pod logs may only be read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

WRITABLE = {("trainer.kubeflow.org", "trainjobs"), ("kubeflow.org", "tfjobs")}
READABLE = {("", "pods"), ("", "pods/log")}
READ_VERBS = {"get", "list", "watch"}
WRITE_VERBS = READ_VERBS | {"create", "delete"}


def pod_templates(resource: dict) -> Iterator[tuple[str, dict]]:
    """(where, pod template) for each pod template inside a resource."""
    kind, spec = resource.get("kind"), resource.get("spec") or {}
    if kind in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
        yield "spec.template", spec.get("template") or {}
    elif kind == "CronJob":
        yield "spec.jobTemplate.spec.template", spec["jobTemplate"]["spec"]["template"]
    elif kind == "TFJob":
        for replica, replica_spec in (spec.get("tfReplicaSpecs") or {}).items():
            yield f"spec.tfReplicaSpecs.{replica}.template", replica_spec.get("template") or {}
    elif kind in {"ClusterTrainingRuntime", "TrainingRuntime"}:
        for job in spec["template"]["spec"]["replicatedJobs"]:
            where = f"spec.template.spec.replicatedJobs[{job['name']}].template.spec.template"
            yield where, job["template"]["spec"]["template"]


def _image_problem(image: Any) -> str | None:
    if not isinstance(image, str) or not image:
        return "has no image"
    name = image.split("@", 1)[0].rsplit("/", 1)[-1]
    if ":" not in name and "@" not in image:
        return f"image {image} is not pinned by tag"
    if name.endswith(":latest"):
        return f"image {image} uses the latest tag"
    return None


def _resources_problem(resources: dict | None) -> str | None:
    resources = resources or {}
    missing = [
        f"{part}.{key}"
        for part in ("requests", "limits")
        for key in ("cpu", "memory")
        if key not in (resources.get(part) or {})
    ]
    return f"lacks resources {', '.join(missing)}" if missing else None


def _pod_problems(where: str, template: dict) -> Iterator[str]:
    pod = template.get("spec") or {}
    pod_security = pod.get("securityContext") or {}
    for container in (pod.get("containers") or []) + (pod.get("initContainers") or []):
        at = f"{where} container {container.get('name')}"
        security = container.get("securityContext") or {}
        if not security.get("runAsNonRoot", pod_security.get("runAsNonRoot")):
            yield f"{at} may run as root (set runAsNonRoot: true)"
        if security.get("runAsUser", pod_security.get("runAsUser")) == 0:
            yield f"{at} runs as uid 0"
        if security.get("allowPrivilegeEscalation") is not False:
            yield f"{at} allows privilege escalation"
        if security.get("privileged"):
            yield f"{at} is privileged"
        if "ALL" not in ((security.get("capabilities") or {}).get("drop") or []):
            yield f"{at} does not drop ALL capabilities"
        if (security.get("capabilities") or {}).get("add"):
            yield f"{at} adds capabilities"
        seccomp = security.get("seccompProfile") or pod_security.get("seccompProfile") or {}
        if seccomp.get("type") != "RuntimeDefault":
            yield f"{at} lacks the RuntimeDefault seccomp profile"
        for problem in (
            _image_problem(container.get("image")),
            _resources_problem(container.get("resources")),
        ):
            if problem:
                yield f"{at} {problem}"
    if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
        yield f"{where} shares a host namespace"


def _rbac_problems(resource: dict) -> Iterator[str]:
    kind, name = resource["kind"], resource["metadata"]["name"]
    if kind in {"ClusterRole", "ClusterRoleBinding"}:
        yield f"{kind} {name}: cluster-wide RBAC is not needed by anything mlm runs"
        return
    if kind == "RoleBinding" and resource["roleRef"]["kind"] != "Role":
        yield f"RoleBinding {name} binds a {resource['roleRef']['kind']}, not a namespaced Role"
    if kind != "Role":
        return
    for rule in resource.get("rules") or []:
        verbs = set(rule.get("verbs") or [])
        for group in rule.get("apiGroups") or [""]:
            for plural in rule.get("resources") or []:
                target = (group, plural)
                if "*" in verbs or "*" in group or "*" in plural:
                    yield f"Role {name} uses a wildcard in {rule}"
                elif target in WRITABLE:
                    if verbs - WRITE_VERBS:
                        yield f"Role {name} grants {sorted(verbs - WRITE_VERBS)} on {plural}"
                elif target in READABLE:
                    if verbs - READ_VERBS:
                        yield f"Role {name} grants {sorted(verbs - READ_VERBS)} on {plural} (read only)"
                else:
                    yield f"Role {name} grants access to {group or 'core'}/{plural}, which mlm never uses"


def check_policy(resources: Iterable[dict]) -> list[str]:
    """All policy violations in `resources` (parsed manifests), as readable lines."""
    problems: list[str] = []
    for resource in resources:
        label = f"{resource.get('kind')} {resource.get('metadata', {}).get('name')}"
        for where, template in pod_templates(resource):
            problems += [f"{label}: {p}" for p in _pod_problems(where, template)]
        if resource.get("kind") == "TrainJob":
            trainer = resource["spec"].get("trainer") or {}
            for problem in (
                _image_problem(trainer.get("image")),
                _resources_problem(trainer.get("resourcesPerNode")),
            ):
                if problem:
                    problems.append(f"{label}: trainer {problem}")
        if resource.get("kind") in {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}:
            problems += list(_rbac_problems(resource))
    return problems
