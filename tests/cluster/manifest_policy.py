"""Security and hygiene rules every manifest of this project must keep, as a checker.

`check_policy(resources)` returns one line per violation (empty when all is well):

- every container of every pod template (Deployments, Jobs, the ClusterTrainingRuntime, TFJob
  replicas, a TrainJob's trainer) runs non-root, without privilege escalation, with all
  capabilities dropped and the RuntimeDefault seccomp profile, and has CPU and memory requests
  and limits;
- every image is pinned by a tag other than `latest`;
- RBAC stays least-privilege: no ClusterRole / ClusterRoleBinding, no wildcards, only the job
  kinds the launcher creates may be written, pods and pod logs may only be read;
- the network is closed by default: every Namespace the manifests create has a NetworkPolicy
  that selects all its pods and denies ingress and egress, and no policy rule opens a port to
  any peer (a rule without `from` / `to`).

`allowed(policies, source, destination, port)` evaluates NetworkPolicies the way Kubernetes does,
so tests can ask which connections a built overlay lets through.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

WRITABLE = {("trainer.kubeflow.org", "trainjobs"), ("kubeflow.org", "tfjobs")}
READABLE = {("", "pods"), ("", "pods/log"), ("", "events"), ("", "serviceaccounts")}
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
        if security.get("readOnlyRootFilesystem") is not True:
            yield f"{at} has a writable root filesystem (set readOnlyRootFilesystem: true)"
        else:
            # Whatever the program writes (TMPDIR, HOME) must be a mounted volume.
            mounts = [m.get("mountPath", "") for m in container.get("volumeMounts") or []]
            for variable in container.get("env") or []:
                if variable.get("name") in ("TMPDIR", "HOME") and not any(
                    (variable.get("value") or "").startswith(mount) for mount in mounts if mount
                ):
                    yield f"{at} writes {variable['name']}={variable.get('value')} on a read-only root"
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


def is_default_deny(policy: dict) -> bool:
    """Whether a NetworkPolicy selects every pod of its namespace and allows nothing in or out."""
    spec = policy.get("spec") or {}
    return (
        not any((spec.get("podSelector") or {}).values())
        and {"Ingress", "Egress"} <= set(spec.get("policyTypes") or [])
        and not spec.get("ingress")
        and not spec.get("egress")
    )


def _network_problems(resources: list[dict]) -> Iterator[str]:
    policies = [r for r in resources if r.get("kind") == "NetworkPolicy"]
    for namespace in (r for r in resources if r.get("kind") == "Namespace"):
        name = namespace["metadata"]["name"]
        if not any(p["metadata"].get("namespace") == name and is_default_deny(p) for p in policies):
            yield f"Namespace {name} has no default-deny NetworkPolicy for ingress and egress"
    for policy in policies:
        spec = policy.get("spec") or {}
        for direction, peers in (("ingress", "from"), ("egress", "to")):
            for rule in spec.get(direction) or []:
                if not rule.get(peers):
                    yield (
                        f"NetworkPolicy {policy['metadata']['name']} allows {direction} "
                        f"{'from' if peers == 'from' else 'to'} any peer"
                    )


def check_policy(resources: Iterable[dict]) -> list[str]:
    """All policy violations in `resources` (parsed manifests), as readable lines."""
    resources = list(resources)
    problems: list[str] = list(_network_problems(resources))
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


@dataclass(frozen=True)
class Endpoint:
    """One end of a connection: a pod (namespace and labels) or an address outside the cluster.

    Attributes:
        namespace: the pod's namespace (None: not a pod).
        labels: the pod's labels.
        namespace_labels: its namespace's labels besides kubernetes.io/metadata.name.
        ip: the address, matched by ipBlock peers (give one to a pod to ask about ipBlocks).
    """

    namespace: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    namespace_labels: dict[str, str] = field(default_factory=dict)
    ip: str | None = None

    def all_namespace_labels(self) -> dict[str, str]:
        return {**self.namespace_labels, "kubernetes.io/metadata.name": self.namespace or ""}


def selects(selector: dict | None, labels: dict[str, str]) -> bool:
    """A label selector (matchLabels, matchExpressions) against labels; {} selects everything."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        present = key in labels
        if not {
            "In": present and labels.get(key) in (values or []),
            "NotIn": not present or labels.get(key) not in (values or []),
            "Exists": present,
            "DoesNotExist": not present,
        }[operator]:
            return False
    return True


def _peer_matches(peer: dict, policy_namespace: str, other: Endpoint) -> bool:
    if "ipBlock" in peer:
        if other.ip is None:
            return False
        address = ipaddress.ip_address(other.ip)
        block = peer["ipBlock"]
        network = ipaddress.ip_network(block["cidr"])
        if address.version != network.version or address not in network:
            return False
        return not any(
            address.version == ipaddress.ip_network(c).version
            and address in ipaddress.ip_network(c)
            for c in block.get("except") or []
        )
    if other.namespace is None:
        return False
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], other.all_namespace_labels()):
            return False
    elif other.namespace != policy_namespace:
        return False
    return selects(peer.get("podSelector"), other.labels)


def _port_matches(ports: list[dict] | None, port: int, protocol: str) -> bool:
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != protocol:
            continue
        if "port" not in entry:
            return True
        low = entry["port"]
        if isinstance(low, int) and low <= port <= entry.get("endPort", low):
            return True
    return False


def _direction_allows(
    policies: list[dict], pod: Endpoint, other: Endpoint, port: int, protocol: str, kind: str
) -> bool:
    """Whether `pod`'s policies of `kind` ("Ingress"/"Egress") let `other` through on `port`."""
    direction, peers = ("ingress", "from") if kind == "Ingress" else ("egress", "to")
    isolating = [
        p
        for p in policies
        if p["metadata"].get("namespace") == pod.namespace
        and selects(p["spec"].get("podSelector"), pod.labels)
        and kind in (p["spec"].get("policyTypes") or ["Ingress"])
    ]
    if not isolating:
        return True  # not isolated in this direction
    return any(
        _port_matches(rule.get("ports"), port, protocol)
        and (
            not rule.get(peers)
            or any(_peer_matches(peer, p["metadata"]["namespace"], other) for peer in rule[peers])
        )
        for p in isolating
        for rule in p["spec"].get(direction) or []
    )


def allowed(
    resources: Iterable[dict],
    source: Endpoint,
    destination: Endpoint,
    port: int,
    protocol: str = "TCP",
    directions: tuple[str, ...] = ("Egress", "Ingress"),
) -> bool:
    """Whether the NetworkPolicies in `resources` let `source` open `port` on `destination`.

    Kubernetes semantics: a pod selected by a policy of a direction is isolated in it and accepts
    only what some such policy's rule allows; the rules of all policies add up. Egress is checked
    on the source pod, ingress on the destination pod; an address outside the cluster has none.
    `directions=("Ingress",)` asks only the destination's side (what a source whose own egress
    is open, e.g. in another namespace, would get).
    """
    policies = [r for r in resources if r.get("kind") == "NetworkPolicy"]
    if (
        "Egress" in directions
        and source.namespace is not None
        and not _direction_allows(policies, source, destination, port, protocol, "Egress")
    ):
        return False
    return (
        "Ingress" not in directions
        or destination.namespace is None
        or _direction_allows(policies, destination, source, port, protocol, "Ingress")
    )
