"""The launcher against the job APIs of the Kubeflow releases people run, as upstream defines them.

Each test states an upstream fact with its source and checks the launcher against the emulated
API server of that release (`FakeKubernetes(trainer=...)`: the CRD schemas of the published
`kubeflow-trainer-api` / `kubeflow-training` packages, the admission webhooks' rules in
tests/conformance). No Kubernetes API server can run here (see tests/cluster/fake_kube.py).
Kubeflow 1.11.0 and 26.03 ship Trainer v2.1.0 (kubeflow/manifests README at v1.11.0 and 26.03);
Trainer v2.3.0 is the current release (Helm chart `kubeflow-trainer` 2.3.0).
"""

from __future__ import annotations

import logging

import pytest

from mlm.launch import job_specs as specs
from mlm.launch import kubernetes as launch
from tests.cluster.fake_kube import FakeKubernetes, shipped_runtime
from tests.cluster.test_k8s_launcher import FakeClock, finish_after, run
from tests.cluster.test_manifests import build, one
from tests.conformance import tfjob_api, trainer_api

NAME = "mlm-pretrain-run1-0123456789"
PLACEMENT = {
    "node_selector": {"cloud.google.com/gke-accelerator": "nvidia-l4"},
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
    ],
    "spot": True,
}
SUCCEEDED = {"type": "Complete", "reason": "JobSetCompleted"}


def stored(kube: FakeKubernetes, plural: str = "trainjobs", namespace: str = "mlm") -> dict:
    return kube.objects[(plural, namespace, NAME)]


def controller(kube: FakeKubernetes, version: str | None):
    """An on_create hook acting as the job's controller: the worker pods it would create (from
    the upstream emulation of the release), or, when their ServiceAccount is missing, only the
    Warning event the API server's refusal leaves (as the Training Operator does, and JobSet's
    Job controller: `FailedCreate ... serviceaccount "x" not found`)."""

    def create(job: dict) -> None:
        namespace = job["metadata"]["namespace"]
        if job["kind"] == "TrainJob":
            runtime = kube.runtimes[job["spec"]["runtimeRef"]["name"]]
            template = trainer_api.worker_pod(job, runtime, version)
            count = job["spec"]["trainer"]["numNodes"]
            pods = [
                {
                    "metadata": {
                        "name": f"{job['metadata']['name']}-node-0-{i}-abcde",
                        "labels": {
                            **template["metadata"]["labels"],
                            "batch.kubernetes.io/job-completion-index": str(i),
                        },
                    },
                    "spec": template["spec"],
                }
                for i in range(count)
            ]
        else:
            pods = tfjob_api.worker_pods(job)
        account = pods[0]["spec"].get("serviceAccountName", "default")
        if not kube.has_service_account(namespace, account):
            kube.events.setdefault(namespace, []).append(
                {
                    "metadata": {"name": "e1"},
                    "type": "Warning",
                    "reason": "FailedCreatePod" if job["kind"] == "TFJob" else "FailedCreate",
                    "message": f'Error creating: pods "{pods[0]["metadata"]["name"]}" is '
                    f"forbidden: error looking up service account {namespace}/{account}: "
                    f'serviceaccount "{account}" not found',
                    "involvedObject": {"kind": job["kind"], "name": job["metadata"]["name"]},
                    "lastTimestamp": "2026-12-05T03:00:00Z",
                }
            )
            return
        for pod in pods:
            pod["status"] = {"phase": "Running"}
        kube.pods.setdefault(namespace, []).extend(pods)

    return create


# --- Fact 1: Trainer >= 2.2 admits runtimePatches only with a domain-prefixed manager ----------


def test_trainer_2_3_denies_a_patch_manager_that_is_not_a_domain_prefixed_path():
    """kubeflow/trainer v2.3.0 pkg/runtime/framework/plugins/jobset/jobset.go `Validate`:
    `apivalidation.IsDomainPrefixedPath(managerPath, patch.Manager)`; the project's first
    manager, "mlm-launcher", is refused; the launcher's is accepted."""
    assert trainer_api.domain_prefixed_path_errors("manager", "mlm-launcher")
    assert not trainer_api.domain_prefixed_path_errors("manager", specs.PATCH_MANAGER)
    # The docs' own example (docs/operator-guides/runtime-patches.md at v2.3.0) is accepted.
    assert not trainer_api.domain_prefixed_path_errors(
        "manager", "trainer.kubeflow.org/kubeflow-sdk"
    )


def test_a_webhook_denial_is_reported_as_such_not_as_rbac(monkeypatch):
    """The denial is HTTP 403 "admission webhook ... denied the request" (controller-runtime
    pkg/webhook/admission `Denied`); before, the launcher blamed the service account's rights."""
    monkeypatch.setattr(specs, "PATCH_MANAGER", "mlm-launcher")
    kube, clock = FakeKubernetes(trainer="2.3.0"), FakeClock()
    with pytest.raises(launch.JobLaunchError) as caught:
        run(kube, clock, name=NAME)
    message = str(caught.value)
    assert f'admission webhook "{trainer_api.WEBHOOK}" denied the request' in message
    assert "must be a domain-prefixed path" in message
    assert "may not create" not in message and "\n" not in message
    assert kube.objects == {}


def test_the_launchers_trainjob_is_admitted_and_places_its_pods_on_trainer_2_3():
    kube, clock = FakeKubernetes(trainer="2.3.0"), FakeClock()
    kube.on_create = controller(kube, "2.3.0")
    kube.on_get = finish_after(2, SUCCEEDED)
    result = run(kube, clock, name=NAME, keep_job=True, **PLACEMENT)
    assert result.state == "Succeeded"
    assert specs.RUNTIME_PATCHES in stored(kube)["spec"]
    pod = kube.pods["mlm"][0]["spec"]
    assert pod["nodeSelector"]["cloud.google.com/gke-accelerator"] == "nvidia-l4"
    assert pod["nodeSelector"][specs.GKE_SPOT_LABEL] == "true"
    assert {t["key"] for t in pod["tolerations"]} >= {"dedicated", specs.GKE_SPOT_LABEL}
    assert stored(kube)["spec"]["activeDeadlineSeconds"] > 0


# --- Fact 2: Trainer v2.1.0 (Kubeflow 1.11, 26.03) has no runtimePatches -----------------------


def test_trainer_2_1_prunes_runtime_patches_and_the_deadline():
    """kubeflow-trainer-api 2.1.0's TrainJobSpec has neither `runtimePatches` nor
    `activeDeadlineSeconds`: a create without fieldValidation=Strict (what the launcher sent
    before) keeps the job but drops placement and deadline without a word."""
    spec = specs.WorkerSpec(image="ghcr.io/mlm-project/mlm:0.1.0", num_workers=2, **PLACEMENT)
    manifest = specs.build_trainjob(NAME, "mlm", spec, ["--steps", "1"], 3600)
    verdict = trainer_api.check(manifest, "2.1.0")
    assert {"spec.runtimePatches", "spec.activeDeadlineSeconds"} <= set(verdict.unknown)
    assert "runtimePatches" not in verdict.pruned["spec"]
    assert not trainer_api.check(manifest, "2.3.0").unknown


def test_on_trainer_2_1_the_launcher_falls_back_to_pod_template_overrides(caplog):
    kube, clock = FakeKubernetes(trainer="2.1.0"), FakeClock()
    kube.on_create = controller(kube, "2.1.0")
    kube.on_get = finish_after(2, SUCCEEDED)
    with caplog.at_level(logging.WARNING, logger=launch.__name__):
        result = run(kube, clock, name=NAME, keep_job=True, **PLACEMENT)
    assert result.state == "Succeeded"
    strict = [q for m, _, q in kube.calls if m == "POST"]
    assert len(strict) == 2 and all(q.get("fieldValidation") == "Strict" for q in strict)
    job = stored(kube)
    assert specs.POD_TEMPLATE_OVERRIDES in job["spec"] and "runtimePatches" not in job["spec"]
    pod = kube.pods["mlm"][0]["spec"]  # what Trainer 2.1.0 makes of the overrides
    assert pod["nodeSelector"]["cloud.google.com/gke-accelerator"] == "nvidia-l4"
    assert pod["serviceAccountName"] == specs.DEFAULT_SERVICE_ACCOUNT
    assert {t["key"] for t in pod["tolerations"]} >= {"dedicated", specs.GKE_SPOT_LABEL}
    warnings = " ".join(r.getMessage() for r in caplog.records)
    assert "has no spec.activeDeadlineSeconds, spec.runtimePatches" in warnings
    assert "enforces the job timeout itself" in warnings


def test_on_trainer_2_1_the_launcher_enforces_the_deadline_and_deletes_the_job():
    kube, clock = FakeKubernetes(trainer="2.1.0"), FakeClock()
    kube.on_create = controller(kube, "2.1.0")
    with pytest.raises(
        launch.JobTimeoutError, match="did not finish within 3600 s and was deleted"
    ):
        run(kube, clock, name=NAME, timeout_s=3600)
    assert kube.objects == {}


def test_a_cluster_whose_trainjob_has_neither_shape_gets_one_line_naming_the_versions():
    """A CRD that knows neither field (neither Trainer 2.1 nor >= 2.2) refuses both shapes: the
    line names the unknown field and the releases the launcher writes for."""
    kube, clock = FakeKubernetes(trainer="2.1.0"), FakeClock()
    api = kube.apis[(trainer_api.GROUP, trainer_api.API_VERSION, "trainjobs")]

    def without_overrides(obj):
        verdict = api.check(obj)
        if "podTemplateOverrides" in obj["spec"]:
            verdict.unknown.append("spec.podTemplateOverrides")
        return verdict

    kube.apis[(trainer_api.GROUP, trainer_api.API_VERSION, "trainjobs")] = type(api)(
        api.kind, without_overrides, api.cel, api.admit, api.webhook
    )
    with pytest.raises(launch.JobLaunchError) as caught:
        run(kube, clock, name=NAME)
    message = str(caught.value)
    assert "has no spec.podTemplateOverrides" in message and "\n" not in message
    assert "Kubeflow Trainer v2.2 or later, Kubeflow Trainer v2.1" in message


# --- Fact 3: the namespace the job lands in ----------------------------------------------------


@pytest.mark.parametrize("kind, trainer", [("trainjob", "2.3.0"), ("tfjob", None)])
def test_a_namespace_without_the_workers_service_account_is_refused_before_any_job(kind, trainer):
    """A pod naming a missing ServiceAccount is refused by the API server's ServiceAccount
    admission; the Training Operator (v1.9.2 pkg/controller.v1/common/pod.go) then only records
    FailedCreatePod events and sets no condition, so a launcher watching pods waits forever."""
    kube, clock = FakeKubernetes(trainer=trainer), FakeClock()
    kube.service_accounts = {("mlm", "default")}
    with pytest.raises(launch.JobLaunchError) as caught:
        run(kube, clock, kind=kind, name=NAME)
    message = str(caught.value)
    assert "namespace mlm has no ServiceAccount mlm-trainer" in message
    assert "kubectl apply -k manifests/job-namespace -n mlm" in message and "\n" not in message
    assert not [c for c in kube.calls if c[0] == "POST"]


def test_a_job_whose_pods_never_come_is_stopped_with_the_controllers_event():
    """The account disappears between the check and the controller's pod create (or a policy
    refuses the pods): events only. The launcher stops after NO_PODS_GRACE_S, not 168 h."""
    kube, clock = FakeKubernetes(trainer=None), FakeClock()
    kube.on_create = controller(kube, None)
    checked = {"n": 0}
    accounts = kube.has_service_account

    def once(namespace, name):
        checked["n"] += 1
        return checked["n"] == 1 and accounts(namespace, name)

    kube.has_service_account = once
    with pytest.raises(launch.JobLaunchError) as caught:
        run(kube, clock, kind="tfjob", name=NAME)
    message = str(caught.value)
    assert f"TFJob mlm/{NAME} has created no worker pod in 300 s" in message
    assert 'FailedCreatePod: Error creating: pods "' in message
    assert "kubectl apply -k manifests/job-namespace -n mlm" in message and "\n" not in message
    assert launch.NO_PODS_GRACE_S <= clock.now - 1000.0 < launch.NO_PODS_GRACE_S + 30
    assert kube.objects == {}


def test_a_suspended_job_may_wait_for_its_pods():
    """A job queued by Kueue is suspended (TrainJob `spec.suspend`): no pods on purpose."""
    kube, clock = FakeKubernetes(trainer="2.3.0"), FakeClock()

    def suspend(job):
        job["spec"]["suspend"] = True

    kube.on_create = suspend
    kube.on_get = finish_after(40, SUCCEEDED)  # 40 polls of 30 s: past the no-pods grace
    assert run(kube, clock, name=NAME).state == "Succeeded"


def test_the_missing_runtime_is_named_with_its_fix():
    """kubeflow/trainer v2.3.0 pkg/webhooks/trainjob_webhook.go: "specified
    clusterTrainingRuntime must be created before the TrainJob is created"."""
    kube, clock = FakeKubernetes(trainer="2.3.0"), FakeClock()
    kube.runtimes = {}
    with pytest.raises(launch.JobLaunchError) as caught:
        run(kube, clock, name=NAME)
    message = str(caught.value)
    assert f"the ClusterTrainingRuntime {specs.RUNTIME_NAME} is not installed" in message
    assert "\n" not in message


# --- Facts 4 and 6: what the workers need to reach the store and the Pushgateway ---------------


def test_workers_get_the_stores_secret_endpoint_and_the_pushgateways_fqdn(monkeypatch):
    """KFP gives user containers no store settings (kubeflow/pipelines 2.15.0 backend/src/v2:
    nothing AWS_*); the compiled steps name the secret and endpoint, and the launcher hands them
    to the workers as secretKeyRefs in the job's own namespace. The Pushgateway lives in `mlm`,
    so workers elsewhere need its cluster-wide name."""
    monkeypatch.setenv("MLM_STORE_SECRET", "mlpipeline-minio-artifact")
    monkeypatch.setenv("MLM_STORE_ENDPOINT", "http://seaweedfs.kubeflow:8333")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    for version in trainer_api.VERSIONS:
        kube, clock = FakeKubernetes(trainer=version), FakeClock()
        kube.on_create = controller(kube, version)
        kube.on_get = finish_after(2, SUCCEEDED)
        run(kube, clock, name=NAME, keep_job=True, env_vars=launch.store_env_vars())
        pod = kube.pods["mlm"][0]
        env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
        for key, variable in {
            "accesskey": "AWS_ACCESS_KEY_ID",
            "secretkey": "AWS_SECRET_ACCESS_KEY",
        }.items():
            ref = env[variable]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": "mlpipeline-minio-artifact", "key": key}
        assert env["MLM_STORE_ENDPOINT"]["value"] == "http://seaweedfs.kubeflow:8333"
        assert env["MLM_PUSHGATEWAY_URL"]["value"].startswith("http://mlm-pushgateway.mlm.svc:")
        # Istio: no sidecar on workers (see docs/operators.md, "Istio").
        assert pod["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"


def test_tfjob_workers_carry_no_sidecar_and_the_store_settings(monkeypatch):
    monkeypatch.setenv("MLM_STORE_SECRET", "mlpipeline-minio-artifact")
    kube, clock = FakeKubernetes(trainer=None), FakeClock()
    kube.on_create = controller(kube, None)
    kube.on_get = finish_after(2, {"type": "Succeeded"})
    run(kube, clock, kind="tfjob", name=NAME, keep_job=True, env_vars=launch.store_env_vars())
    pod = kube.pods["mlm"][0]
    assert pod["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
    env = {e["name"] for e in pod["spec"]["containers"][0]["env"]}
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLM_STORE_SECRET"} <= env


# --- Fact 7: the gke-gpu runtime and Trainer 2.3's resource merge ------------------------------


def gke_gpu_runtime() -> dict:
    """The gke-gpu overlay's runtime, as `kubectl kustomize` builds it."""
    return one(build("overlays/gke-gpu"), "ClusterTrainingRuntime")


def test_trainer_2_3_keeps_a_runtime_gpu_limit_the_job_does_not_name():
    """kubeflow/trainer v2.3.0 pkg/util/trainingruntime `MergeResourceRequirements` (PR #3602)
    merges `resourcesPerNode` key by key; v2.1.0 replaced the whole block."""
    runtime = shipped_runtime()
    node = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]
    container = node["template"]["spec"]["containers"][0]
    container["resources"] = {"limits": {"nvidia.com/gpu": 1}}
    job = specs.build_trainjob(
        NAME, "mlm", specs.WorkerSpec(image="ghcr.io/mlm-project/mlm:0.1.0", num_workers=1), [], 60
    )
    merged = trainer_api.worker_pod(job, runtime, "2.3.0")["spec"]["containers"][0]["resources"]
    assert merged["limits"]["nvidia.com/gpu"] == 1
    replaced = trainer_api.worker_pod(job, runtime, "2.1.0")["spec"]["containers"][0]["resources"]
    assert "nvidia.com/gpu" not in replaced["limits"]


@pytest.mark.parametrize("version", trainer_api.VERSIONS)
@pytest.mark.parametrize("gpus", [0, 1])
def test_on_the_gke_gpu_runtime_cpu_runs_take_no_gpu_and_gpu_runs_do(version, gpus):
    runtime = gke_gpu_runtime()
    spec = specs.WorkerSpec(
        image="ghcr.io/mlm-project/mlm:0.1.0-gpu", num_workers=1, gpus_per_worker=gpus
    )
    api = specs.RUNTIME_PATCHES if version != "2.1.0" else specs.POD_TEMPLATE_OVERRIDES
    job = specs.build_trainjob(NAME, "mlm", spec, [], 60, api=api)
    resources = trainer_api.worker_pod(job, runtime, version)["spec"]["containers"][0]["resources"]
    assert int(resources["limits"].get("nvidia.com/gpu", 0)) == gpus
