"""The compatibility matrix of docs/operators.md: each Kubeflow release, mode and launcher, with the
pipeline step running as the service account upstream gives it, in the namespace upstream runs it
in, against the job APIs upstream installs there (tests/conformance/kubeflow.py).

For each cell the launcher runs end to end against `FakeKubernetes` (no API server can run here;
see tests/cluster/fake_kube.py) with RBAC decided by `tests.conformance.rbac` over upstream's
roles plus what this project's manifests add for that mode (built with the real `kubectl
kustomize`), and the network checked with upstream's store policies beside ours. A cell either
trains and cleans up with every API call allowed, or ends with the one line the matrix quotes.
"""

from __future__ import annotations

import io

import pytest

from mlm.config import KFP_STORE_ENDPOINTS
from mlm.launch import job_specs as specs
from mlm.launch import kubernetes as launch
from tests.cluster.fake_kube import FakeKubernetes
from tests.cluster.manifest_policy import Endpoint, allowed
from tests.cluster.test_k8s_launcher import ARGS, IMAGE, FakeClock, finish_after
from tests.cluster.test_launcher_upstream import SUCCEEDED, controller
from tests.cluster.test_manifests import build, by_kind, pushgateway, trainer
from tests.conformance import kubeflow
from tests.conformance.rbac import Authorizer, Request

RUN_ID = "run-0123456789"
NAME = specs.job_name(RUN_ID, "pretrain")
# What this project applies for each mode (docs/operators.md, "Where jobs run").
PROJECT = {"standalone": "overlays/dev", "multi-user": "overlays/multi-user"}
DONE = {"trainjob": SUCCEEDED, "tfjob": {"type": "Succeeded"}}


def install_id(install: kubeflow.Install) -> str:
    return f"{install.release}-{install.mode}"


class Cluster:
    """One install as the launcher meets it: API server, RBAC, ServiceAccounts, logs."""

    def __init__(self, install: kubeflow.Install, trainer_version: str | None, project=True):
        self.install = install
        namespace = install.job_namespace
        self.kube = FakeKubernetes(
            trainer=trainer_version, training_operator=install.training_operator
        )
        ours = build(PROJECT[install.mode]) if project else ()
        self.authorizer = Authorizer([*install.upstream_rbac(), *ours])
        self.refused: list[Request] = []
        self.kube.authorize = self.authorizer.hook(install.runner, self.refused)
        self.kube.service_accounts = {
            (namespace, "default"),
            install.runner,
            *(
                (account["metadata"]["namespace"], account["metadata"]["name"])
                for account in by_kind(ours, "ServiceAccount")
            ),
        }
        follow = controller(self.kube, trainer_version)

        def create(job: dict) -> None:
            follow(job)
            for pod in self.kube.pods.get(namespace, []):
                container = pod["spec"]["containers"][0]["name"]
                self.kube.logs[(namespace, pod["metadata"]["name"], container, False)] = (
                    "step 10/100 loss 7.1"
                )

        self.kube.on_create = create

    def launch(self, kind: str, monkeypatch, tmp_path):
        """The pretrain step's launch, from a pod in the install's job namespace."""
        namespace_file = tmp_path / "namespace"
        namespace_file.write_text(self.install.job_namespace)
        monkeypatch.setattr(launch, "NAMESPACE_FILE", str(namespace_file))
        clock = FakeClock()
        self.kube.on_get = finish_after(2, DONE[kind])
        return launch.launch_pretraining_job(
            kind,
            NAME,
            launch.current_namespace(),
            IMAGE,
            2,
            0,
            ARGS,
            labels=specs.run_labels(RUN_ID, "pretrain"),
            keep_job=True,
            follow_logs=io.StringIO(),
            api_client=self.kube,
            poll_interval_s=30,
            clock=clock,
            sleep=clock.sleep,
        )

    def may(self, verb: str, group: str, resource: str, name: str | None = None) -> bool:
        request = Request(verb, group, resource, self.install.job_namespace, name)
        return self.authorizer.allowed(self.install.runner, request)


def trains(install, kind, trainer_version, monkeypatch, tmp_path):
    """The cell's success path: trains, follows worker 0's log, and the exit handler's cleanup
    deletes the job, with every request allowed."""
    cluster = Cluster(install, trainer_version)
    result = cluster.launch(kind, monkeypatch, tmp_path)
    assert result.state == "Succeeded"
    namespace = install.job_namespace
    assert [key[1] for key in cluster.kube.objects] == [namespace]
    assert any(path.endswith("/log") for _, path, _ in cluster.kube.calls)
    assert launch.delete_run_jobs(kind, RUN_ID, api_client=cluster.kube) == [NAME]
    assert cluster.kube.objects == {} and cluster.refused == []
    # The no-pods watchdog reads the namespace's events.
    assert cluster.may("list", "", "events")


def refusal(install, kind, monkeypatch, tmp_path) -> str:
    cluster = Cluster(install, None)
    with pytest.raises(launch.JobLaunchError) as caught:
        cluster.launch(kind, monkeypatch, tmp_path)
    message = str(caught.value)
    assert "\n" not in message and cluster.kube.objects == {}
    return message


STANDALONE = [i for i in kubeflow.INSTALLS if i.mode == "standalone"]
MULTI_USER = {i.release: i for i in kubeflow.INSTALLS if i.mode == "multi-user"}


# --- TrainJob ------------------------------------------------------------------------------------


@pytest.mark.parametrize("install", STANDALONE, ids=install_id)
@pytest.mark.parametrize("version", ["2.1.0", "2.3.0"])
def test_trainjob_standalone(install, version, monkeypatch, tmp_path):
    trains(install, "trainjob", version, monkeypatch, tmp_path)


@pytest.mark.parametrize("release", ["1.11", "26.03"])
def test_trainjob_multi_user(release, monkeypatch, tmp_path):
    trains(MULTI_USER[release], "trainjob", "2.1.0", monkeypatch, tmp_path)


def test_trainjob_multi_user_on_1_10_names_the_missing_trainer(monkeypatch, tmp_path):
    # kubeflow-edit has no trainer.kubeflow.org rights there, so RBAC answers 403 before the API
    # server could say 404; API discovery tells the two apart.
    message = refusal(MULTI_USER["1.10"], "trainjob", monkeypatch, tmp_path)
    assert "the TrainJob API (trainer.kubeflow.org/v1alpha1, trainjobs) is not installed" in message
    assert "Kubeflow 1.11 and 26.03 include v2.1.0, 1.10 none" in message


# --- TFJob ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("install", STANDALONE, ids=install_id)
def test_tfjob_standalone(install, monkeypatch, tmp_path):
    trains(install, "tfjob", None, monkeypatch, tmp_path)


def test_tfjob_multi_user_on_1_10(monkeypatch, tmp_path):
    trains(MULTI_USER["1.10"], "tfjob", None, monkeypatch, tmp_path)


@pytest.mark.parametrize("release", ["1.11", "26.03"])
def test_tfjob_multi_user_names_the_training_operator_to_install(release, monkeypatch, tmp_path):
    message = refusal(MULTI_USER[release], "tfjob", monkeypatch, tmp_path)
    assert "the TFJob API (kubeflow.org/v1, tfjobs) is not installed" in message
    assert "1.11 and 26.03 leave it out of their default install" in message


# --- what the project's manifests add, and why -----------------------------------------------------


@pytest.mark.parametrize("install", STANDALONE, ids=install_id)
def test_standalone_pipeline_runner_needs_the_projects_role(install, monkeypatch, tmp_path):
    """Upstream's pipeline-runner Role has kubeflow.org/* and pods, nothing of
    trainer.kubeflow.org, ServiceAccounts or events: without manifests/kfp-standalone the step
    may not even check the workers' ServiceAccount."""
    cluster = Cluster(install, "2.3.0", project=False)
    assert not cluster.may("create", "trainer.kubeflow.org", "trainjobs")
    assert not cluster.may("get", "", "serviceaccounts", specs.DEFAULT_SERVICE_ACCOUNT)
    assert not cluster.may("list", "", "events")
    assert cluster.may("create", "kubeflow.org", "tfjobs")  # kubeflow.org/* is upstream's
    cluster.kube.service_accounts = None  # as if the namespace were prepared
    with pytest.raises(launch.JobLaunchError) as caught:
        cluster.launch("trainjob", monkeypatch, tmp_path)
    message = str(caught.value)
    assert "may not read ServiceAccount kubeflow/mlm-trainer (HTTP 403" in message
    assert 'User "system:serviceaccount:kubeflow:pipeline-runner" cannot get' in message
    assert "kubectl apply -k manifests/job-namespace -n kubeflow" in message


def test_multi_user_needs_no_role_of_ours():
    """A profile's default-editor holds kubeflow-edit, which aggregates what the launcher uses:
    the project binds nothing there."""
    assert not by_kind(build(PROJECT["multi-user"]), "RoleBinding")
    for install in MULTI_USER.values():
        cluster = Cluster(install, None, project=False)
        assert cluster.may("get", "", "serviceaccounts", specs.DEFAULT_SERVICE_ACCOUNT)
        assert cluster.may("get", "", "pods/log") and cluster.may("list", "", "pods")
        assert cluster.may("create", "trainer.kubeflow.org", "trainjobs") == bool(install.trainer)
        assert cluster.may("create", "kubeflow.org", "tfjobs") == install.training_operator


# --- the network a run needs, with upstream's store policies ------------------------------------


@pytest.mark.parametrize("install", kubeflow.INSTALLS, ids=install_id)
def test_workers_reach_the_store_the_pushgateway_and_each_other(install):
    resources = [*build(PROJECT[install.mode]), *install.store_policies]
    worker = trainer(namespace=install.job_namespace)
    if install.mode == "multi-user":
        assert worker.namespace_labels == kubeflow.PROFILE_NAMESPACE_LABELS
    # The endpoint the compiled pipeline gives the steps, through its Service to the pod port.
    endpoint = KFP_STORE_ENDPOINTS[install.kfp]
    host, port = endpoint.removeprefix("http://").split(":")
    service = host.split(".")[0]
    store = kubeflow.STORES[install.kfp]
    assert host.endswith(".kubeflow") and service in store.services, endpoint
    service_port, pod_port = store.services[service]
    assert int(port) == service_port
    store_pod = Endpoint("kubeflow", store.pod_labels)
    assert allowed(resources, worker, store_pod, pod_port)
    assert allowed(resources, worker, pushgateway(), 9091)
    assert allowed(resources, worker, trainer(namespace=install.job_namespace), 2222)


def test_a_store_policy_that_admits_nothing_from_the_job_namespace_is_caught():
    # The check can fail: SeaweedFS's own policy alone (KFP 2.16) does not admit a pod of a
    # namespace that is neither a profile nor `kubeflow`.
    outsider = Endpoint("mlm", trainer().labels)
    store_pod = Endpoint("kubeflow", kubeflow.STORES["2.16"].pod_labels)
    assert not allowed([kubeflow.SEAWEEDFS_POLICY_2_16], outsider, store_pod, 8333)
    profile = Endpoint("team-a", trainer().labels, kubeflow.PROFILE_NAMESPACE_LABELS)
    assert allowed([kubeflow.SEAWEEDFS_POLICY_2_16], profile, store_pod, 8333)
    assert not allowed([kubeflow.SEAWEEDFS_POLICY_2_16], profile, store_pod, 8888)


def test_the_guides_matrix_names_tests_that_exist_and_covers_every_cell():
    import re
    from pathlib import Path

    from tests.conformance import test_pipeline_spec

    guide = (Path(__file__).resolve().parents[2] / "docs" / "operators.md").read_text()
    section = guide.split("## Kubeflow releases and what works where", 1)[1].split("\n## ", 1)[0]
    modules = {"matrix": globals(), "spec": vars(test_pipeline_spec)}
    named = re.findall(r"\b(matrix|spec)::(test_\w+)", section)
    assert named and all(name in modules[module] for module, name in named), named
    rows = [line for line in section.splitlines() if re.match(r"\| (1\.10|1\.11|26\.03) ", line)]
    cells = {(row.split("|")[1].split()[0], row.split("|")[2].strip()) for row in rows}
    assert cells == {(i.release, i.mode) for i in kubeflow.INSTALLS}
    for row in rows:
        # Three launcher cells, each a ✔ with its test or a quoted refusal with its test.
        for cell in row.split("|")[3:6]:
            assert "::test_" in cell or "spec::…" in cell, cell


def test_no_profile_subject_may_run_pods_as_the_account_that_holds_a_cloud_identity():
    """gke-gpu gives the workers' account in `kubeflow` a Workload Identity; a profile's
    default-editor holds `kubeflow-edit` in its own namespace only, so it can start no pod, job
    or TrainJob there (nor in `mlm`), and the profile's own `mlm-trainer` holds no identity."""
    identity = "iam.gke.io/gcp-service-account"

    def accounts_with_identity(resources):
        return [
            (a["metadata"].get("namespace"), a["metadata"]["name"])
            for a in by_kind(resources, "ServiceAccount")
            if identity in (a["metadata"].get("annotations") or {})
        ]

    assert accounts_with_identity(build("overlays/gke-gpu")) == [
        ("kubeflow", specs.DEFAULT_SERVICE_ACCOUNT)
    ]
    assert accounts_with_identity(build(PROJECT["multi-user"])) == []
    for install in MULTI_USER.values():
        authorizer = Authorizer([*install.upstream_rbac(), *build(PROJECT["multi-user"])])
        for namespace in ("kubeflow", "mlm"):
            for group, resource in (
                ("", "pods"),
                ("batch", "jobs"),
                ("trainer.kubeflow.org", "trainjobs"),
                ("kubeflow.org", "tfjobs"),
            ):
                request = Request("create", group, resource, namespace)
                assert not authorizer.allowed(install.runner, request), (install.name, request)
        # In its own namespace it may (that account has no identity).
        assert authorizer.allowed(
            install.runner, Request("create", "", "pods", install.job_namespace)
        )
