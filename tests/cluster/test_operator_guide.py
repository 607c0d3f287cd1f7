"""The commands of docs/operators.md that can be checked without a cluster.

Every kustomize directory the guide applies builds with the real `kubectl kustomize`; the
multi-user overlay prepares its profile's namespace and binds nothing (the profile's
`default-editor` holds upstream's `kubeflow-edit`: tests/conformance checks that it suffices), and
`manifests/job-namespace` carries no namespace, so `kubectl apply -n` puts it in any; the label
selectors and resource names the guide tells operators to use are the ones the launcher and the
RBAC role use.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlm.launch import job_specs as launch
from tests.cluster.manifest_policy import REPO, check_policy

KUBECTL = Path(sys.executable).with_name("kubectl")
GUIDE = (REPO / "docs" / "operators.md").read_text()


def kustomize(directory: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(KUBECTL), "kustomize", str(directory)], capture_output=True, text=True, check=False
    )


def guide_commands() -> list[str]:
    """The shell lines of the guide's bash blocks."""
    blocks = re.findall(r"```bash\n(.*?)```", GUIDE, re.S)
    return [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]


def kustomize_targets() -> set[str]:
    targets = set()
    for line in guide_commands():
        targets.update(
            re.findall(r"kubectl (?:kustomize|apply -k|delete -k) (manifests/\S+)", line)
        )
        targets.update(f"manifests/overlays/{o}" for o in re.findall(r"OVERLAY=(\S+)", line))
    return targets


def test_the_guide_applies_kustomize_directories_that_build(tmp_path):
    targets = kustomize_targets()
    assert {"manifests/overlays/dev", "manifests/overlays/multi-user"} <= targets
    # As an operator would: with each overlay's settings file made from its example.
    shutil.copytree(REPO / "manifests", tmp_path / "manifests")
    for example in (tmp_path / "manifests").rglob("*.env.example"):
        shutil.copy(example, example.with_suffix(""))
    for target in sorted(targets):
        result = kustomize(tmp_path / target)
        assert result.returncode == 0, f"{target}: {result.stderr}"


def test_multi_user_overlay_prepares_the_profiles_namespace_and_binds_nothing():
    result = kustomize(REPO / "manifests/overlays/multi-user")
    resources = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    in_profile = {
        (r["kind"], r["metadata"]["name"])
        for r in resources
        if r["metadata"].get("namespace") == "kubeflow-user-example-com"
    }
    assert in_profile == {
        ("ServiceAccount", launch.DEFAULT_SERVICE_ACCOUNT),
        ("NetworkPolicy", "mlm-trainer"),
    }
    assert not [r for r in resources if r["kind"] in ("Role", "RoleBinding", "ClusterRole")]
    assert check_policy(resources) == []


def test_the_job_namespace_kustomization_leaves_the_namespace_to_kubectl():
    """`kubectl apply -k manifests/job-namespace -n <namespace>` (the guide's per-profile step)
    works only if no object names a namespace of its own."""
    assert "kubectl apply -k manifests/job-namespace -n " in GUIDE
    result = kustomize(REPO / "manifests/job-namespace")
    assert result.returncode == 0, result.stderr
    resources = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert resources and all("namespace" not in r["metadata"] for r in resources)


@pytest.mark.parametrize("kind", sorted(launch.JOB_KINDS))
def test_the_guides_log_selectors_are_the_launchers_pod_labels(kind):
    label = launch.JOB_KINDS[kind].pod_label
    selectors = [
        selector
        for line in guide_commands()
        if line.startswith("kubectl logs")
        for selector in re.findall(r"-l (\S+)", line)
    ]
    assert any(selector.startswith(f"{label}=<job>,") for selector in selectors), selectors


def test_the_guides_pod_selector_and_job_kinds_match_the_launcher_and_its_role():
    component = launch.POD_LABELS["app.kubernetes.io/component"]
    assert f"-l app.kubernetes.io/component={component}" in GUIDE
    role = yaml.safe_load_all((REPO / "manifests/kfp-standalone/rbac.yaml").read_text())
    resources = {r for doc in role if doc["kind"] == "Role" for rule in doc["rules"]
                 for r in rule["resources"]}  # fmt: skip
    for line in guide_commands():
        for plural in re.findall(r"kubectl (?:get|delete) (\w+)", line):
            if plural in ("pods", "-k", "events"):
                continue
            plural = plural if plural.endswith("s") else plural + "s"
            assert plural in {k.plural for k in launch.JOB_KINDS.values()}, line
            assert plural in resources, line


def prerequisite(what: str) -> str:
    """The install cell of the guide's prerequisites row that starts with `what`."""
    rows = [line for line in GUIDE.splitlines() if line.startswith(f"| {what}")]
    assert len(rows) == 1, what
    return rows[0].split(" | ")[2]


def test_the_install_commands_are_the_ones_upstream_documents_for_each_release():
    # KFP standalone. The commands' form is kubeflow/website content/en/docs/components/
    # pipelines/operator-guides/installation/_index.md (commit 36dc512a8, current with 2.15.0);
    # the env is the one kubeflow/pipelines manifests/kustomize/README.md at 2.15.0 installs
    # (KFP_ENV=platform-agnostic). Not env/dev: from 2.14.3 on (commit 5181358d6a) its
    # kustomization retags every KFP image `newTag: master` and adds ../gcp/inverse-proxy.
    kfp = prerequisite("Kubeflow Pipelines, standalone")
    for command in (
        "export PIPELINE_VERSION=2.15.0",
        'kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/'
        'cluster-scoped-resources?ref=$PIPELINE_VERSION"',
        "kubectl wait --for condition=established --timeout=60s crd/applications.app.k8s.io",
        'kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/'
        'env/platform-agnostic?ref=$PIPELINE_VERSION"',
    ):
        assert command in kfp, command
    assert "kustomize/env/dev" not in GUIDE
    # Kubeflow Trainer: kubeflow/trainer docs/operator-guides/installation.md at v2.3.0 (Helm
    # chart, `--version ${VERSION#v}`), and for v2.1.0 the same page's kustomize form
    # (`manifests/overlays/manager?ref=${VERSION}`).
    assert (
        "helm install kubeflow-trainer oci://ghcr.io/kubeflow/charts/kubeflow-trainer "
        "--namespace kubeflow-system --create-namespace --version 2.3.0"
    ) in prerequisite("Kubeflow Trainer (for `launcher=trainjob`): v2.3")
    assert (
        'kubectl apply --server-side -k "https://github.com/kubeflow/trainer.git/'
        'manifests/overlays/manager?ref=v2.1.0"'
    ) in prerequisite("or Kubeflow Trainer v2.1")
    # The Training Operator: kubeflow/training-operator README (v1.9): the standalone overlay.
    assert (
        'kubectl apply --server-side -k "github.com/kubeflow/training-operator.git/'
        'manifests/overlays/standalone?ref=v1.9.2"'
    ) in prerequisite("or the Training Operator v1.9")
