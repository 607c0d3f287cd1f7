"""The Kubeflow installs this project supports, as upstream defines them: which job operators each
installs, the roles a pipeline step runs with, and the artifact store's Service and network
policy. Each fact names its source (repository, tag, path); upstream files are not copied, only
the parts that decide what the launcher and the workers may do. RBAC rules about API groups and
resources the project never touches are left out.

Releases (kubeflow/manifests README and example/kustomization.yaml at each tag):

| Kubeflow | KFP | Trainer (TrainJob) | Training Operator (TFJob) | artifact store |
| --- | --- | --- | --- | --- |
| 1.10.2 | 2.5.0 | not installed | v1.9.2 | MinIO |
| 1.11.0 | 2.15.0 | v2.1.0 | left out of the example | SeaweedFS |
| 26.03 | 2.16.0 | v2.1.0 | left out of the example | SeaweedFS |

"Standalone" is KFP alone at the same version (kubeflow/pipelines manifests/kustomize
env/platform-agnostic), with the job operator docs/operators.md installs beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RBAC = "rbac.authorization.k8s.io/v1"


def cluster_role(name: str, rules: list[dict], labels: dict | None = None, aggregates=None) -> dict:
    role: dict[str, Any] = {
        "apiVersion": RBAC,
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": dict(labels or {})},
        "rules": rules,
    }
    if aggregates:
        role["aggregationRule"] = {"clusterRoleSelectors": [{"matchLabels": aggregates}]}
    return role


def role(name: str, namespace: str, rules: list[dict]) -> dict:
    return {
        "apiVersion": RBAC,
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace},
        "rules": rules,
    }


def role_binding(name: str, namespace: str, kind: str, role_name: str, account: str) -> dict:
    return {
        "apiVersion": RBAC,
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role_name},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }


def rule(groups: list[str], resources: list[str], verbs: list[str]) -> dict:
    return {"apiGroups": groups, "resources": resources, "verbs": verbs}


# --- standalone KFP: the steps run in `kubeflow` as pipeline-runner -----------------------------

# kubeflow/pipelines <tag> manifests/kustomize/base/pipeline/pipeline-runner-role.yaml (a Role,
# namespace `kubeflow` from env/platform-agnostic) and pipeline-runner-rolebinding.yaml; the
# runner account: backend/src/apiserver/config/config.json DEFAULTPIPELINERUNNERSERVICEACCOUNT.
_PIPELINE_RUNNER_2_5 = [
    rule([""], ["secrets"], ["get"]),
    rule([""], ["configmaps"], ["get", "watch", "list"]),
    rule([""], ["persistentvolumes", "persistentvolumeclaims"], ["*"]),
    rule(["snapshot.storage.k8s.io"], ["volumesnapshots"], ["create", "delete", "get"]),
    rule(["argoproj.io"], ["workflows"], ["get", "list", "watch", "update", "patch"]),
    rule([""], ["pods", "pods/exec", "pods/log", "services"], ["*"]),
    rule(["", "apps", "extensions"], ["deployments", "replicasets"], ["*"]),
    rule(["kubeflow.org"], ["*"], ["*"]),
    rule(["batch"], ["jobs"], ["*"]),
    rule(["machinelearning.seldon.io"], ["seldondeployments"], ["*"]),
]
PIPELINE_RUNNER_RULES = {
    "2.5": _PIPELINE_RUNNER_2_5,
    # 2.15.0 and 2.16.0: one rule more (argoproj.io workflowtaskresults create, patch).
    "2.15": [
        *_PIPELINE_RUNNER_2_5,
        rule(["argoproj.io"], ["workflowtaskresults"], ["create", "patch"]),
    ],
    "2.16": [
        *_PIPELINE_RUNNER_2_5,
        rule(["argoproj.io"], ["workflowtaskresults"], ["create", "patch"]),
    ],
}


def standalone_rbac(kfp: str) -> list[dict]:
    return [
        role("pipeline-runner", "kubeflow", PIPELINE_RUNNER_RULES[kfp]),
        role_binding(
            "pipeline-runner-binding", "kubeflow", "Role", "pipeline-runner", "pipeline-runner"
        ),
    ]


# --- multi-user Kubeflow: the steps run in the profile's namespace as default-editor ------------

# kubeflow/pipelines <tag> manifests/kustomize/base/installs/multi-user/api-service/params.env:
# DEFAULTPIPELINERUNNERSERVICEACCOUNT=default-editor. kubeflow/dashboard components/
# profile-controller/controllers/profile_controller.go (commit 063d0737; kubeflow/kubeflow before
# the move): `updateServiceAccount(instance, DEFAULT_EDITOR, kubeflowEdit)` creates RoleBinding
# default-editor → ClusterRole kubeflow-edit in the profile's namespace.
EDIT = {"rbac.authorization.kubeflow.org/aggregate-to-kubeflow-edit": "true"}
VIEW = {"rbac.authorization.kubeflow.org/aggregate-to-kubeflow-view": "true"}
_EDIT_VERBS = ["create", "delete", "deletecollection", "patch", "update"]
_READ = ["get", "list", "watch"]

# kubeflow/manifests <tag> common/kubeflow-roles/base/cluster-roles.yaml (v1.10.2, v1.11.0, 26.03;
# 26.03 drops `serviceaccounts: impersonate`, commit ce9d36841, which the launcher never uses).
KUBEFLOW_ROLES = [
    cluster_role("kubeflow-edit", [], aggregates=EDIT),
    cluster_role("kubeflow-view", [], labels=EDIT, aggregates=VIEW),
    cluster_role(
        "kubeflow-kubernetes-edit",
        [
            rule(
                [""],
                [
                    "pods/attach",
                    "pods/exec",
                    "pods/portforward",
                    "pods/proxy",
                    "secrets",
                    "services/proxy",
                ],
                _READ,
            ),
            rule(
                [""],
                ["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy"],
                _EDIT_VERBS,
            ),
            rule(
                [""],
                [
                    "configmaps",
                    "endpoints",
                    "persistentvolumeclaims",
                    "replicationcontrollers",
                    "replicationcontrollers/scale",
                    "secrets",
                    "serviceaccounts",
                    "services",
                    "services/proxy",
                ],
                _EDIT_VERBS,
            ),
            rule(["batch"], ["cronjobs", "jobs"], _EDIT_VERBS),
        ],
        labels=EDIT,
    ),
    cluster_role(
        "kubeflow-kubernetes-view",
        [
            rule(
                [""],
                [
                    "configmaps",
                    "endpoints",
                    "persistentvolumeclaims",
                    "persistentvolumeclaims/status",
                    "pods",
                    "replicationcontrollers",
                    "replicationcontrollers/scale",
                    "serviceaccounts",
                    "services",
                    "services/status",
                ],
                _READ,
            ),
            rule(
                [""],
                [
                    "bindings",
                    "events",
                    "limitranges",
                    "namespaces/status",
                    "pods/log",
                    "pods/status",
                    "replicationcontrollers/status",
                    "resourcequotas",
                    "resourcequotas/status",
                ],
                _READ,
            ),
            rule(["batch"], ["cronjobs", "cronjobs/status", "jobs", "jobs/status"], _READ),
        ],
        labels=VIEW,
    ),
]

# kubeflow/manifests <tag> applications/trainer/upstream/overlays/kubeflow-platform/
# kubeflow-trainer-roles.yaml (v1.11.0, 26.03; what the example installs with Trainer v2.1.0).
TRAINER_ROLES = [
    cluster_role(
        "kubeflow-trainer-edit",
        [
            rule(["trainer.kubeflow.org"], ["trainingruntimes"], _READ),
            rule(["trainer.kubeflow.org"], ["trainjobs"], ["create", "patch", *_READ, "delete"]),
            rule([""], ["pods", "pods/log", "events"], _READ),
        ],
        labels=EDIT,
    ),
    cluster_role(
        "kubeflow-trainer-view",
        [rule(["trainer.kubeflow.org"], ["trainingruntimes", "trainjobs"], _READ)],
        labels=VIEW,
    ),
]

# kubeflow/manifests <tag> applications/training-operator/upstream/overlays/kubeflow/
# kubeflow-training-roles.yaml (identical at the three tags; the example installs it in v1.10.2
# only, and the Training Operator's standalone install does not install it at all).
_JOBS = ["mpijobs", "tfjobs", "pytorchjobs", "xgboostjobs", "paddlejobs", "jaxjobs"]
TRAINING_OPERATOR_ROLES = [
    cluster_role(
        "kubeflow-training-edit",
        [
            rule(
                ["kubeflow.org"],
                _JOBS,
                ["create", "delete", "get", "list", "patch", "update", "watch"],
            ),
            rule(["kubeflow.org"], [f"{job}/status" for job in _JOBS], ["get"]),
            rule([""], ["persistentvolumeclaims"], ["create", "delete", "get", "list", "watch"]),
            rule([""], ["events"], _READ),
        ],
        labels=EDIT,
    ),
    cluster_role("kubeflow-training-view", [rule(["kubeflow.org"], _JOBS, _READ)], labels=VIEW),
]


def profile_rbac(namespace: str) -> list[dict]:
    return [
        role_binding("default-editor", namespace, "ClusterRole", "kubeflow-edit", "default-editor")
    ]


# Kubeflow's profile namespaces carry this label (kubeflow/manifests <tag> applications/profiles/
# upstream/base/namespace-labels.yaml), which upstream's store policies select on.
PROFILE_NAMESPACE_LABELS = {"app.kubernetes.io/part-of": "kubeflow-profile"}


# --- the artifact store: its Service and the policies in front of its pods ----------------------


def network_policy(name: str, pod_selector: dict, ingress: list[dict]) -> dict:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": "kubeflow"},
        "spec": {"podSelector": pod_selector, "ingress": ingress, "policyTypes": ["Ingress"]},
    }


def _app_in(*apps: str) -> dict:
    return {"matchExpressions": [{"key": "app", "operator": "In", "values": list(apps)}]}


def _namespaces(key: str, *values: str) -> dict:
    return {
        "namespaceSelector": {
            "matchExpressions": [{"key": key, "operator": "In", "values": list(values)}]
        }
    }


_PROFILES = _namespaces("app.kubernetes.io/part-of", "kubeflow-profile")
_ISTIO = _namespaces("kubernetes.io/metadata.name", "istio-system")

# kubeflow/manifests v1.10.2 common/networkpolicies/base/default-allow-same-namespace.yaml (also at
# v1.11.0; 26.03: common/kubeflow-namespace/base/kubeflow/); kubeflow/pipelines 2.15.0
# manifests/kustomize/base/pipeline/allow-same-namespace-networkpolicy.yaml (deleted in 2.16.0).
SAME_NAMESPACE = network_policy(
    "default-allow-same-namespace", {}, [{"from": [{"podSelector": {}}]}]
)
# kubeflow/manifests v1.10.2 common/networkpolicies/base/minio.yaml.
MINIO_POLICY = network_policy(
    "minio", _app_in("minio"), [{"from": [_PROFILES, _ISTIO, {"podSelector": {}}]}]
)
# kubeflow/pipelines 2.15.0 manifests/kustomize/third-party/seaweedfs/base/seaweedfs/
# seaweedfs-networkpolicy.yaml (kubeflow/manifests v1.11.0 applications/pipeline/upstream/...).
SEAWEEDFS_POLICY_2_15 = network_policy(
    "seaweedfs",
    _app_in("seaweedfs"),
    [{"from": [_PROFILES], "ports": [{"port": 8333}]}, {"from": [_ISTIO]}],
)
# The same file at 2.16.0 (kubeflow/manifests 26.03): same-namespace pods on 8333 too.
SEAWEEDFS_POLICY_2_16 = network_policy(
    "seaweedfs",
    _app_in("seaweedfs"),
    [
        {"from": [_PROFILES], "ports": [{"port": 8333}]},
        {"from": [_ISTIO]},
        {"from": [{"podSelector": {}}], "ports": [{"port": 8333}]},
    ],
)


@dataclass(frozen=True)
class Store:
    """The artifact store: its pod's labels and the Services in front of it, by name, as
    (service port, pod port)."""

    pod_labels: dict[str, str]
    services: dict[str, tuple[int, int]]


# kubeflow/pipelines 2.5.0 manifests/kustomize/third-party/minio (minio-service 9000 → 9000);
# 2.15.0 third-party/seaweedfs (Service seaweedfs with s3 8333 → 8333, minio-service 9000 → 8333);
# 2.16.0 (kubeflow/manifests 26.03): minio-service removed, seaweedfs also serves 9000 → 8333.
STORES = {
    "2.5": Store({"app": "minio"}, {"minio-service": (9000, 9000)}),
    "2.15": Store({"app": "seaweedfs"}, {"seaweedfs": (8333, 8333), "minio-service": (9000, 8333)}),
    "2.16": Store({"app": "seaweedfs"}, {"seaweedfs": (8333, 8333)}),
}


@dataclass(frozen=True)
class Install:
    """One way to run the pipeline: a Kubeflow release in a mode."""

    release: str
    mode: str  # "standalone" or "multi-user"
    kfp: str  # the KFP backend, as `mlm pipeline compile --kfp-version` names it
    trainer: tuple[str, ...]  # Trainer API versions a TrainJob may meet (empty: none installed)
    training_operator: bool  # whether the TFJob CRD is installed
    store_policies: tuple[dict, ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        return f"Kubeflow {self.release} {self.mode}"

    @property
    def job_namespace(self) -> str:
        return "kubeflow" if self.mode == "standalone" else "kubeflow-user-example-com"

    @property
    def runner(self) -> tuple[str, str]:
        """The service account the pipeline's steps run as."""
        account = "pipeline-runner" if self.mode == "standalone" else "default-editor"
        return self.job_namespace, account

    def upstream_rbac(self) -> list[dict]:
        if self.mode == "standalone":
            return standalone_rbac(self.kfp)
        roles = [*KUBEFLOW_ROLES, *profile_rbac(self.job_namespace)]
        if self.trainer:
            roles += TRAINER_ROLES
        if self.training_operator:
            roles += TRAINING_OPERATOR_ROLES
        return roles


_KFP = {"1.10": "2.5", "1.11": "2.15", "26.03": "2.16"}
_POLICIES = {
    "1.10": (SAME_NAMESPACE, MINIO_POLICY),
    "1.11": (SAME_NAMESPACE, SEAWEEDFS_POLICY_2_15),
    "26.03": (SAME_NAMESPACE, SEAWEEDFS_POLICY_2_16),
}
# Standalone KFP 2.5.0 ships no NetworkPolicy; 2.15.0 the same-namespace one and SeaweedFS's,
# 2.16.0 SeaweedFS's only.
_STANDALONE_POLICIES = {
    "2.5": (),
    "2.15": (SAME_NAMESPACE, SEAWEEDFS_POLICY_2_15),
    "2.16": (SEAWEEDFS_POLICY_2_16,),
}

INSTALLS = (
    # Standalone: the guide installs Trainer (Helm chart 2.3.0, or v2.1.0) and the Training
    # Operator v1.9.2 (its standalone overlay) beside KFP.
    *(
        Install(release, "standalone", kfp, ("2.1.0", "2.3.0"), True, _STANDALONE_POLICIES[kfp])
        for release, kfp in _KFP.items()
    ),
    Install("1.10", "multi-user", "2.5", (), True, _POLICIES["1.10"]),
    Install("1.11", "multi-user", "2.15", ("2.1.0",), False, _POLICIES["1.11"]),
    Install("26.03", "multi-user", "2.16", ("2.1.0",), False, _POLICIES["26.03"]),
)
