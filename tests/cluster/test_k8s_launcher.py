"""The TrainJob / TFJob launcher against a fake Kubernetes API.

No Kubernetes API server can run on the test machines, so these tests use `FakeKubernetes`
(tests/cluster/fake_kube.py): the official client down to its HTTP `request()`, answered from
memory. Job status changes are scripted the way the Trainer / Training Operator controllers would
report them; time is a fake clock so the timeout path runs instantly.
"""

from __future__ import annotations

import pytest
import yaml
from kubernetes.client.exceptions import ApiException
from kubernetes_validate import validate

from mlm.errors import UserInputError
from mlm.launch import job_specs as specs
from mlm.launch import kubernetes as launch
from tests.cluster.fake_kube import FakeKubernetes, failed_pod
from tests.cluster.manifest_policy import REPO, check_policy

ARGS = ["gs://b/shards", "gs://b/tokenizer", "gs://b/out", "--steps", "100"]
IMAGE = "ghcr.io/mlm-project/mlm:0.1.0"


class FakeClock:
    """monotonic() and sleep() over a number that only sleep() moves."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def finish_after(polls: int, condition: dict):
    """An on_get hook that adds `condition` to the job's status on the `polls`-th read."""
    seen = {"n": 0}

    def hook(job: dict) -> None:
        seen["n"] += 1
        if seen["n"] >= polls:
            job.setdefault("status", {})["conditions"] = [
                {"type": "Created", "status": "True"},
                {"status": "True", **condition},
            ]

    return hook


def run(kube, clock, kind="trainjob", name="mlm-pretrain-run1-0123456789", **kwargs):
    return launch.launch_pretraining_job(
        kind,
        name,
        "mlm",
        kwargs.pop("image", IMAGE),
        kwargs.pop("num_workers", 2),
        kwargs.pop("gpus_per_worker", 0),
        ARGS,
        api_client=kube,
        poll_interval_s=30,
        clock=clock,
        sleep=clock.sleep,
        **kwargs,
    )


def posts(kube):
    return [call for call in kube.calls if call[0] == "POST"]


# --- names --------------------------------------------------------------------------------------


def test_job_name_is_deterministic_dns_safe_and_distinct():
    first = specs.job_name("Run_2024-11-28T03:00:00Z/ABC", "gs://b/out/pretrain")
    assert first == specs.job_name("Run_2024-11-28T03:00:00Z/ABC", "gs://b/out/pretrain")
    assert first.startswith("mlm-pretrain-run-2024-")
    assert len(first) <= specs.MAX_JOB_NAME_LENGTH
    specs.validate_job_name(first)
    assert first != specs.job_name("Run_2024-11-28T03:00:00Z/ABC", "gs://b/out/other")
    long = specs.job_name("x" * 300)
    assert len(long) <= specs.MAX_JOB_NAME_LENGTH and long[-1].isalnum()
    assert specs.job_name("", "gs://b/out").startswith("mlm-pretrain-")


@pytest.mark.parametrize(
    "bad", ["Upper", "1starts-with-digit", "ends-", "a" * 41, "under_score", ""]
)
def test_bad_job_names_are_refused(bad):
    with pytest.raises(UserInputError, match="job name"):
        specs.validate_job_name(bad)


# --- manifests built -----------------------------------------------------------------------------


def runtime_manifest() -> dict:
    path = REPO / "manifests/base/runtime/tensorflow-distributed.yaml"
    return yaml.safe_load(path.read_text())


def test_trainjob_references_the_shipped_runtime_and_sets_worker_identity():
    spec = specs.WorkerSpec(
        image=IMAGE + "-gpu",
        num_workers=4,
        gpus_per_worker=2,
        spot=True,
        node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"},
    )
    job = specs.build_trainjob("mlm-pretrain-x-0123456789", "mlm", spec, ARGS, 3600)
    runtime = runtime_manifest()
    assert job["spec"]["runtimeRef"] == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": runtime["kind"],
        "name": runtime["metadata"]["name"],
    }
    trainer = job["spec"]["trainer"]
    assert trainer["numNodes"] == 4
    assert trainer["command"] == ["/usr/bin/tini", "--", "mlm", "pretrain"]
    assert trainer["args"] == ARGS
    assert {"name": "MLM_NUM_WORKERS", "value": "4"} in trainer["env"]
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "2"
    assert trainer["resourcesPerNode"]["requests"] == {"cpu": "4", "memory": "16Gi"}
    assert job["spec"]["activeDeadlineSeconds"] == 3600
    (patch,) = job["spec"]["runtimePatches"]
    (replicated,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    # The patch must target the runtime's replicated job and container by their real names.
    runtime_job = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]
    assert replicated["name"] == runtime_job["name"] == "node"
    assert runtime_job["template"]["spec"]["template"]["spec"]["containers"][0]["name"] == (
        specs.JOB_KINDS["trainjob"].container
    )
    pod = replicated["template"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {
        "cloud.google.com/gke-accelerator": "nvidia-l4",
        "cloud.google.com/gke-spot": "true",
    }
    assert {t["key"] for t in pod["tolerations"]} == {"nvidia.com/gpu", "cloud.google.com/gke-spot"}
    # The runtime supplies the rest of the identity resolve_cluster reads.
    env = {
        e["name"]: e
        for e in runtime_job["template"]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["MLM_WORKER_PORT"]["value"] == str(specs.WORKER_PORT)
    assert "jobset-name" in env["JOBSET_NAME"]["valueFrom"]["fieldRef"]["fieldPath"]


def test_cpu_trainjob_has_no_gpu_toleration_or_limit():
    spec = specs.WorkerSpec(image=IMAGE, num_workers=1, cpu="500m", memory="2Gi")
    job = specs.build_trainjob("mlm-pretrain-x-0123456789", "mlm", spec, ARGS, 60)
    limits = job["spec"]["trainer"]["resourcesPerNode"]["limits"]
    assert limits == {"cpu": "1", "memory": "2Gi"}
    pod = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"][
        "replicatedJobs"
    ][0]["template"]["spec"]["template"]["spec"]
    assert "tolerations" not in pod and "nodeSelector" not in pod


@pytest.mark.parametrize(
    "spot, backoff", [(False, specs.TFJOB_BACKOFF_LIMIT), (True, specs.TFJOB_SPOT_BACKOFF_LIMIT)]
)
def test_tfjob_pod_template_is_valid_and_secure(spot, backoff):
    spec = specs.WorkerSpec(image=IMAGE, num_workers=3, gpus_per_worker=1, spot=spot)
    job = specs.build_tfjob("mlm-pretrain-x-0123456789", "mlm", spec, ARGS, 600)
    worker = job["spec"]["tfReplicaSpecs"]["Worker"]
    assert worker["replicas"] == 3 and worker["restartPolicy"] == "OnFailure"
    assert job["spec"]["runPolicy"] == {
        "activeDeadlineSeconds": 600,
        "backoffLimit": backoff,
        "cleanPodPolicy": "None",
    }
    assert worker["template"]["spec"]["terminationGracePeriodSeconds"] == (
        specs.TERMINATION_GRACE_PERIOD_SECONDS
    )
    container = worker["template"]["spec"]["containers"][0]
    assert container["name"] == "tensorflow"
    assert container["command"] == ["/usr/bin/tini", "--", "mlm", "pretrain"]
    assert {"name": "MLM_PUSHGATEWAY_URL", "value": specs.PUSHGATEWAY_URL} in container["env"]
    assert container["ports"] == [{"containerPort": 2222, "name": "tfjob-port"}]
    # The pod template is a real core/v1 object: check it against the Kubernetes schema.
    template = {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": "w"},
        "template": worker["template"],
    }
    validate(template, "1.33.0", strict=True)
    assert check_policy([job]) == []


def test_launcher_built_jobs_pass_the_manifest_policy():
    spec = specs.WorkerSpec(image=IMAGE, num_workers=2)
    assert (
        check_policy([specs.build_trainjob("mlm-pretrain-a-0123456789", "mlm", spec, ARGS, 60)])
        == []
    )


# --- lifecycle against the fake API ---------------------------------------------------------------


def test_trainjob_is_created_watched_and_deleted_on_success():
    kube, clock = FakeKubernetes(), FakeClock()
    kube.on_get = finish_after(3, {"type": "Complete", "reason": "JobsCompleted"})
    result = run(kube, clock)
    assert result.state == "Succeeded" and not result.attached and result.deleted
    assert result.elapsed_s == 60.0 and clock.sleeps == [30, 30]
    (post,) = posts(kube)
    assert post[1] == "/apis/trainer.kubeflow.org/v1alpha1/namespaces/mlm/trainjobs"
    assert kube.objects == {}  # deleted after success


def test_retried_step_reattaches_to_the_existing_job():
    kube, clock = FakeKubernetes(), FakeClock()
    name = "mlm-pretrain-run1-0123456789"
    kube.objects[("tfjobs", "mlm", name)] = {"metadata": {"name": name}, "status": {}}
    kube.on_get = finish_after(2, {"type": "Succeeded"})
    result = run(kube, clock, kind="tfjob", name=name, keep_job=True)
    assert result.attached and result.state == "Succeeded" and not result.deleted
    assert len(posts(kube)) == 1  # the create was tried once, answered 409, and not repeated
    assert ("tfjobs", "mlm", name) in kube.objects  # keep_job


def test_failure_names_the_first_failed_worker_with_reason_and_log_tail():
    kube, clock = FakeKubernetes(), FakeClock()
    name = "mlm-pretrain-run1-0123456789"
    labels = {"jobset.sigs.k8s.io/jobset-name": name}
    kube.pods["mlm"] = [
        failed_pod(f"{name}-node-0-1-xyz", labels, "node", 1, "Error", "2026-11-28T03:00:09Z"),
        failed_pod(
            f"{name}-node-0-0-abc", labels, "node", 137, "OOMKilled", "2026-11-28T03:00:01Z"
        ),
        failed_pod(
            "someone-else",
            {"jobset.sigs.k8s.io/jobset-name": "other"},
            "node",
            2,
            "Error",
            "2026-11-28T02:00:00Z",
        ),
    ]
    kube.logs[("mlm", f"{name}-node-0-0-abc", "node", False)] = (
        "\n".join(f"step {i} loss 4.2" for i in range(10)) + "\nResourceExhausted: out of memory"
    )
    kube.on_get = finish_after(
        2, {"type": "Failed", "reason": "FailedJobs", "message": "jobset failed"}
    )
    with pytest.raises(launch.JobFailedError) as caught:
        run(kube, clock, log_lines=3)
    error = caught.value
    assert error.worker == f"{name}-node-0-0-abc"
    assert error.reason == "container node exited with code 137 (OOMKilled)"
    assert error.log_tail == "step 8 loss 4.2\nstep 9 loss 4.2\nResourceExhausted: out of memory"
    text = str(error)
    assert "FailedJobs: jobset failed" in text and "out of memory" in text and "step 7" not in text
    log_call = next(c for c in kube.calls if c[1].endswith("/log"))
    assert log_call[2]["tailLines"] == "3" and log_call[2]["container"] == "node"
    assert kube.objects == {}  # deleted after the logs were read


def test_failure_of_an_evicted_pod_reports_the_pod_reason():
    kube, clock = FakeKubernetes(), FakeClock()
    name = "mlm-pretrain-run1-0123456789"
    kube.pods["mlm"] = [
        {
            "metadata": {
                "name": f"{name}-worker-0",
                "labels": {"training.kubeflow.org/job-name": name},
            },
            "status": {"phase": "Failed", "reason": "Evicted", "message": "node had disk pressure"},
        }
    ]
    kube.on_get = finish_after(1, {"type": "Failed", "reason": "TFJobFailed"})
    with pytest.raises(launch.JobFailedError, match="Evicted: node had disk pressure") as caught:
        run(kube, clock, kind="tfjob", keep_job=True)
    assert caught.value.worker == f"{name}-worker-0"
    assert "kubectl -n mlm describe tfjobs" in str(caught.value)
    assert kube.objects  # kept


def test_timeout_is_bounded_and_deletes_the_job():
    kube, clock = FakeKubernetes(), FakeClock()
    with pytest.raises(launch.JobTimeoutError, match="did not finish within 100 s and was deleted"):
        run(kube, clock, timeout_s=100)
    assert clock.now == 1100.0  # waited exactly the timeout, never past it
    assert clock.sleeps == [30, 30, 30, 10]
    assert kube.objects == {}


def test_transient_api_errors_while_watching_are_retried():
    kube, clock = FakeKubernetes(), FakeClock()
    finish = finish_after(3, {"type": "Succeeded"})
    reads = {"n": 0}

    def flaky(job):
        reads["n"] += 1
        if reads["n"] == 1:
            raise ApiException(status=503, reason="Service Unavailable")
        finish(job)

    kube.on_get = flaky
    assert run(kube, clock, kind="tfjob").state == "Succeeded"
    assert reads["n"] == 4


def test_job_deleted_by_someone_else_is_a_failure():
    kube, clock = FakeKubernetes(), FakeClock()
    original = kube._custom

    def custom(method, match, body):
        response = original(method, match, body)
        if method == "POST":
            kube.objects.clear()
        return response

    kube._custom = custom
    with pytest.raises(launch.JobFailedError, match="disappeared"):
        run(kube, clock)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"kind": "mpijob"}, "launcher kind 'mpijob' is unknown"),
        ({"name": "Bad_Name"}, "job name"),
        ({"image": "ghcr.io/mlm-project/mlm:latest"}, "pinned by tag"),
        ({"image": "ghcr.io/mlm-project/mlm"}, "pinned by tag"),
        ({"num_workers": 0}, "num_workers"),
        ({"gpus_per_worker": -1}, "gpus_per_worker"),
        ({"node_selector": {"cloud.google.com/gke-spot": True}}, "node_selector"),
        ({"tolerations": [{"key": "a", "tolerationSeconds": 5}]}, "unknown fields"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"cpu": "four"}, "cpu 'four' is not a positive Kubernetes quantity"),
        ({"memory": "0"}, "memory"),
    ],
)
def test_bad_parameters_fail_before_any_api_call(kwargs, message):
    kube, clock = FakeKubernetes(), FakeClock()
    with pytest.raises(UserInputError, match=message):
        run(kube, clock, **kwargs)
    assert kube.calls == []


def test_launch_pretraining_runs_one_process_per_pod_with_the_step_options(monkeypatch):
    monkeypatch.delenv("MLM_JOB_NAMESPACE", raising=False)
    monkeypatch.delenv("MLM_JOB_IMAGE", raising=False)
    kube, clock = FakeKubernetes(), FakeClock()
    kube.on_get = finish_after(1, {"type": "Complete"})
    captured = {}
    original = kube._custom

    def capture(method, match, body):
        if method == "POST":
            captured.update(body)
        return original(method, match, body)

    kube._custom = capture
    result = launch.launch_pretraining(
        "trainjob",
        shard_dir="gs://b/shards",
        tokenizer_dir="gs://b/tok",
        output_dir="gs://b/run-7/pretrain/model",
        workers=3,
        gpus_per_worker=1,
        run_id="run-7",
        variant="tiny",
        model_overrides={"num_layers": 2},
        steps=50,
        pushgateway_url=None,
        job_options={"api_client": kube, "clock": clock, "sleep": clock.sleep},
    )
    assert result.name == specs.job_name("run-7", "gs://b/run-7/pretrain/model")
    trainer = captured["spec"]["trainer"]
    assert trainer["image"] == "ghcr.io/mlm-project/mlm:0.1.0-gpu"
    assert trainer["numNodes"] == 3
    args = trainer["args"]
    assert args[:6] == [
        "--shards", "gs://b/shards", "--tokenizer", "gs://b/tok",
        "--output", "gs://b/run-7/pretrain/model",
    ]  # fmt: skip
    flags = dict(zip(args[6::2], args[7::2]))
    # Settings at their defaults (variant "tiny") do not travel.
    assert flags == {"--model-overrides": '{"num_layers": 2}', "--steps": "50", "--run-id": "run-7"}
    # The argument list is what the worker's `mlm pretrain` parses back into the same settings.
    from mlm.config import PretrainConfig, from_argv

    parsed = from_argv(PretrainConfig, args)
    assert (parsed.model.variant, parsed.steps, parsed.run_id) == ("tiny", 50, "run-7")
    assert parsed.model.model_overrides == {"num_layers": 2}
    assert parsed.output_dir == "gs://b/run-7/pretrain/model"


def test_a_trainjob_pod_environment_resolves_to_the_intended_cluster():
    """The env a TrainJob pod gets (runtime + launcher + Indexed Job) gives the right TF_CONFIG."""
    from mlm.training.cluster import resolve_cluster

    name = "mlm-pretrain-run1-0123456789"
    spec = specs.WorkerSpec(image=IMAGE, num_workers=3)
    job = specs.build_trainjob(name, "mlm", spec, ARGS, 60)
    runtime_container = runtime_manifest()["spec"]["template"]["spec"]["replicatedJobs"][0][
        "template"
    ]["spec"]["template"]["spec"]["containers"][0]
    # What the kubelet resolves: plain values, and the downward-API label for JOBSET_NAME.
    env = {e["name"]: e.get("value") for e in runtime_container["env"]}
    env["JOBSET_NAME"] = name
    env.update({e["name"]: e["value"] for e in job["spec"]["trainer"]["env"]})
    env["JOB_COMPLETION_INDEX"] = "2"
    info = resolve_cluster(env)
    assert (info.source, info.task_index, info.num_workers) == ("jobset", 2, 3)
    assert info.tf_config["cluster"]["worker"] == [
        f"{name}-node-0-{i}.{name}:{specs.WORKER_PORT}" for i in range(3)
    ]
    assert not info.is_chief
