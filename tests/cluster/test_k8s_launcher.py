"""The TrainJob / TFJob launcher against a fake Kubernetes API.

No Kubernetes API server can run on the test machines, so these tests use `FakeKubernetes`
(tests/cluster/fake_kube.py): the official client down to its HTTP `request()`, answered from
memory. Job status changes are scripted the way the Trainer / Training Operator controllers would
report them; time is a fake clock so the timeout and start-up grace paths run instantly. The
pipeline's pretrain and cleanup step bodies run for real against the same fake API.
"""

from __future__ import annotations

import copy
import io
import json
import os
import signal
import subprocess
import sys
import threading

import pytest
import yaml
from kubernetes.client.exceptions import ApiException
from kubernetes_validate import validate

from mlm.config import JobConfig, PretrainLaunchConfig, recipe_settings
from mlm.errors import UserInputError
from mlm.launch import job_object
from mlm.launch import job_specs as specs
from mlm.launch import kubernetes as launch
from tests.cluster.fake_kube import (
    FakeKubernetes,
    failed_pod,
    pending_pod,
    running_pod,
    serve,
)
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

    def custom(method, match, body, query):
        response = original(method, match, body, query)
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


def capture_creates(kube) -> list[dict]:
    """The bodies of the custom objects created through `kube`, in order."""
    created: list[dict] = []
    original = kube._custom

    def capture(method, match, body, query):
        if method == "POST":
            created.append(copy.deepcopy(body))
        return original(method, match, body, query)

    kube._custom = capture
    return created


@pytest.fixture
def pod_namespace(monkeypatch, tmp_path):
    """This process runs "in a pod" of namespace kubeflow-user-alice (its service-account
    namespace file), as a KFP step does."""
    path = tmp_path / "namespace"
    path.write_text("kubeflow-user-alice\n")
    monkeypatch.setattr(launch, "NAMESPACE_FILE", str(path))
    monkeypatch.delenv("MLM_JOB_NAMESPACE", raising=False)
    return "kubeflow-user-alice"


def test_launch_pretraining_runs_one_process_per_pod_with_the_step_options(
    monkeypatch, pod_namespace
):
    monkeypatch.delenv("MLM_IMAGE", raising=False)
    kube, clock = FakeKubernetes(), FakeClock()
    kube.on_get = finish_after(1, {"type": "Complete"})
    created = capture_creates(kube)
    config = PretrainLaunchConfig.create(
        launcher="trainjob",
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
    )
    result = launch.launch_pretraining(config, api_client=kube, clock=clock, sleep=clock.sleep)
    assert result.name == specs.job_name("run-7", "pretrain")
    assert result.namespace == pod_namespace
    (captured,) = created
    assert captured["metadata"]["namespace"] == pod_namespace
    assert captured["metadata"]["labels"][specs.RUN_ID_LABEL] == "run-7"
    assert captured["metadata"]["labels"][specs.TASK_LABEL] == "pretrain"
    trainer = captured["spec"]["trainer"]
    assert trainer["image"] == "ghcr.io/mlm-project/mlm:0.1.0-gpu"
    assert trainer["numNodes"] == 3
    args = trainer["args"]
    assert args[:6] == [
        "--shards", "gs://b/shards", "--tokenizer", "gs://b/tok",
        "--output", "gs://b/run-7/pretrain/model",
    ]  # fmt: skip
    flags = dict(zip(args[6::2], args[7::2]))
    # Settings at their defaults (variant "tiny") do not travel; model_overrides travel merged
    # with the default recipe's, as the run uses them.
    overrides = {**recipe_settings("fast")["model_overrides"], "num_layers": 2}
    assert flags == {
        "--model-overrides": json.dumps(overrides), "--steps": "50", "--run-id": "run-7"
    }  # fmt: skip
    # The argument list is what the worker's `mlm pretrain` parses back into the same settings.
    from mlm.config import PretrainConfig, from_argv

    parsed = from_argv(PretrainConfig, args)
    assert (parsed.model.variant, parsed.steps, parsed.run_id) == ("tiny", 50, "run-7")
    assert parsed.model.model_overrides == overrides
    assert parsed.output_dir == "gs://b/run-7/pretrain/model"


def test_mlm_pretrain_with_a_cluster_launcher_runs_the_job_from_the_command_line(
    monkeypatch, capsys
):
    """`mlm pretrain --launcher tfjob` takes the pipeline step's path (`mlm.launch.pretrain`):
    the job settings shape the pods, the training settings become the workers' flags."""
    from mlm.cli import main

    monkeypatch.delenv("MLM_IMAGE", raising=False)
    monkeypatch.setenv("MLM_JOB_NAMESPACE", "team-a")
    monkeypatch.setattr(launch, "NAMESPACE_FILE", "/nonexistent/namespace")
    kube = FakeKubernetes()
    kube.on_get = finish_after(1, {"type": "Succeeded"})  # a TFJob's success condition
    created = capture_creates(kube)
    monkeypatch.setattr(launch, "_load_api_client", lambda: kube)
    status = main([
        "pretrain", "--shards", "s3://b/shards", "--tokenizer", "s3://b/tok",
        "--output", "s3://b/out", "--launcher", "tfjob", "--workers", "2", "--steps", "30",
        "--worker-cpu", "6", "--worker-tolerations",
        '[{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]',
        "--namespace", "team-b", "--run-id", "nightly-3",
    ])  # fmt: skip
    assert status == 0, capsys.readouterr().err
    (job,) = created
    assert job["kind"] == "TFJob" and job["metadata"]["namespace"] == "team-b"
    assert job["metadata"]["name"] == specs.job_name("nightly-3", "pretrain")
    (replicas,) = job["spec"]["tfReplicaSpecs"].values()
    assert replicas["replicas"] == 2
    pod = replicas["template"]["spec"]
    assert pod["containers"][0]["resources"]["requests"]["cpu"] == "6"
    assert {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    args = pod["containers"][0]["args"]
    assert args[args.index("--steps") + 1] == "30" and "--launcher" not in args
    assert "--workers" not in args and "--worker-cpu" not in args


def test_namespace_comes_from_the_pod_then_the_setting_then_the_kubeconfig(monkeypatch, tmp_path):
    monkeypatch.setattr(launch, "NAMESPACE_FILE", str(tmp_path / "absent"))
    monkeypatch.delenv("MLM_JOB_NAMESPACE", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    assert launch.current_namespace() == "default"  # kubectl's default
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://k.example.com"}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [
                    {"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "team-b"}}
                ],
                "current-context": "x",
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    assert launch.current_namespace() == "team-b"
    monkeypatch.setenv("MLM_JOB_NAMESPACE", "team-a")
    assert launch.current_namespace() == "team-a"
    (tmp_path / "ns").write_text("kubeflow-user-bob\n")
    monkeypatch.setattr(launch, "NAMESPACE_FILE", str(tmp_path / "ns"))
    assert launch.current_namespace() == "kubeflow-user-bob"
    assert launch.current_namespace("explicit") == "explicit"


def test_workers_run_the_pipeline_image(monkeypatch):
    monkeypatch.setenv("MLM_IMAGE", "registry.example.com/mlm:9")
    assert launch.worker_image(None, 0) == "registry.example.com/mlm:9"
    assert launch.worker_image("", 2) == "registry.example.com/mlm:9-gpu"
    monkeypatch.setenv("MLM_IMAGE", "registry.example.com/mlm:9-gpu")
    assert launch.worker_image("", 2) == "registry.example.com/mlm:9-gpu"
    assert launch.worker_image("other.example.com/x:1", 2) == "other.example.com/x:1"


# --- the pipeline's pretrain step against the fake API ---------------------------------------------


def compiled_pretrain_image(tmp_path) -> str:
    """The image the compiled pretrain step runs and hands on to its workers ($MLM_IMAGE)."""
    from mlm_pipelines.compile import compile_pipeline

    path = compile_pipeline(str(tmp_path / "p.yaml"))
    spec = next(yaml.safe_load_all(open(path).read()))  # noqa: SIM115
    env = spec["deploymentSpec"]["executors"]["exec-pretrain"]["container"]["env"]
    (image,) = [e["value"] for e in env if e["name"] == "MLM_IMAGE"]
    return image


def run_pretrain_step(kube, tmp_path, task_env=None, **parameters):
    """The compiled pipeline's pretrain step body with launcher "trainjob", against `kube`.

    The job's workers are not real: the test plays the controller (the job completes on the first
    read) and writes the metrics.json the workers would write to the model URI.
    """
    from kfp.dsl import Artifact, Dataset, Metrics, Model, TaskConfig

    from mlm_components.pretrain import pretrain

    model_uri = tmp_path / "model"
    model_uri.mkdir(exist_ok=True)
    (model_uri / "metrics.json").write_text('{"final_loss": 3.5, "steps": 50}')
    metrics = Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    pretrain.python_func(
        shards=Dataset(name="shards", uri="gs://b/run-7/shard/shards"),
        tokenizer=Artifact(name="tokenizer", uri="gs://b/run-7/tokenize/tokenizer"),
        model=Model(name="model", uri=str(model_uri)),
        metrics=metrics,
        task_config=TaskConfig(env=task_env),
        launcher="trainjob",
        run_id="run-7",
        task_name="pretrain",
        **parameters,
    )
    return metrics


def test_without_task_config_kfp_2_5_the_step_still_hands_its_store_to_the_workers(
    monkeypatch, tmp_path, pod_namespace
):
    # KFP 2.5's YAML has no TaskConfig input, so KFP's executor passes an empty TaskConfig; the
    # store comes from what the compiled step names in its own environment.
    monkeypatch.setenv("MLM_STORE_SECRET", "mlpipeline-minio-artifact")
    monkeypatch.setenv("MLM_STORE_ENDPOINT", "http://minio-service.kubeflow:9000")
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    kube = FakeKubernetes()
    kube.on_get = finish_after(1, {"type": "Complete"})
    created = capture_creates(kube)
    monkeypatch.setattr(launch, "_load_api_client", lambda: kube)
    run_pretrain_step(kube, tmp_path, workers=2, task_env=None)
    (job,) = created
    assert job["spec"]["trainer"]["env"] == [
        {"name": "MLM_NUM_WORKERS", "value": "2"},
        *(
            {
                "name": env,
                "valueFrom": {"secretKeyRef": {"name": "mlpipeline-minio-artifact", "key": key}},
            }
            for key, env in (
                ("accesskey", "AWS_ACCESS_KEY_ID"),
                ("secretkey", "AWS_SECRET_ACCESS_KEY"),
            )
        ),
        {"name": "MLM_STORE_SECRET", "value": "mlpipeline-minio-artifact"},
        {"name": "MLM_STORE_ENDPOINT", "value": "http://minio-service.kubeflow:9000"},
    ]


def test_a_store_the_workers_cannot_reach_fails_the_step_in_one_line_before_any_job(
    monkeypatch, tmp_path, pod_namespace
):
    from kfp.dsl import Artifact, Dataset, Metrics, Model, TaskConfig

    from mlm_components.pretrain import pretrain
    from tests.gcs_emulator import _free_port

    endpoint = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLM_STORE_SECRET", "mlpipeline-minio-artifact")
    monkeypatch.setenv("MLM_STORE_ENDPOINT", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "any")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "any")
    kube = FakeKubernetes()
    monkeypatch.setattr(launch, "_load_api_client", lambda: kube)
    with pytest.raises(UserInputError) as caught:
        pretrain.python_func(
            shards=Dataset(name="shards", uri="minio://mlpipeline/v2/artifacts/run-7/shards"),
            tokenizer=Artifact(name="tokenizer", uri="minio://mlpipeline/v2/artifacts/run-7/tok"),
            model=Model(name="model", uri="minio://mlpipeline/v2/artifacts/run-7/pretrain/model"),
            metrics=Metrics(name="metrics", uri=str(tmp_path / "metrics")),
            task_config=TaskConfig(),
            launcher="trainjob",
            run_id="run-7",
        )
    message = str(caught.value)
    assert f"cannot reach the S3 endpoint {endpoint}" in message and "\n" not in message
    assert "mlpipeline-minio-artifact" in message
    assert kube.calls == []  # no job, not even a look at the cluster


def test_the_runs_image_resources_placement_and_options_reach_the_trainjob(
    monkeypatch, tmp_path, pod_namespace
):
    image = compiled_pretrain_image(tmp_path)
    monkeypatch.setenv("MLM_IMAGE", image)  # what the compiled step's container has
    kube = FakeKubernetes()
    kube.on_get = finish_after(1, {"type": "Complete"})
    created = capture_creates(kube)
    monkeypatch.setattr(launch, "_load_api_client", lambda: kube)
    metrics = run_pretrain_step(
        kube,
        tmp_path,
        workers=2,
        gpus_per_worker=1,
        steps=50,
        worker_cpu="6",
        worker_memory="30Gi",
        # The task's own env, as KFP's task-config passthrough hands it to the step.
        task_env=[
            {"name": "AWS_ENDPOINT_URL", "value": "http://minio-service.kubeflow:9000"},
            {
                "name": "AWS_SECRET_ACCESS_KEY",
                "valueFrom": {
                    "secretKeyRef": {"name": "mlpipeline-minio-artifact", "key": "secretkey"}
                },
            },
            {"name": "MLM_NUM_WORKERS", "value": "99"},  # the launcher's own wins
        ],
        # KFP hands dict/list parameters over as protobuf Structs: numbers become floats.
        worker_node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"},
        worker_tolerations=[
            {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
        ],
        spot=True,
        job_timeout_hours=2.0,
        precision="mixed_bfloat16",
        mask_ratio=0.2,
        whole_word_masking=True,
        checkpoint_every_steps=25,
    )
    (job,) = created
    assert job["metadata"]["namespace"] == pod_namespace
    assert job["metadata"]["name"] == specs.job_name("run-7", "pretrain")
    labels = job["metadata"]["labels"]
    assert (labels[specs.RUN_ID_LABEL], labels[specs.TASK_LABEL]) == ("run-7", "pretrain")
    trainer = job["spec"]["trainer"]
    assert trainer["image"] == image + "-gpu"
    assert trainer["numNodes"] == 2
    assert trainer["resourcesPerNode"] == {
        "requests": {"cpu": "6", "memory": "30Gi"},
        "limits": {"cpu": "12", "memory": "30Gi", "nvidia.com/gpu": "1"},
    }
    assert job["spec"]["activeDeadlineSeconds"] == 7200
    assert trainer["env"] == [
        {"name": "MLM_NUM_WORKERS", "value": "2"},
        {"name": "AWS_ENDPOINT_URL", "value": "http://minio-service.kubeflow:9000"},
        {
            "name": "AWS_SECRET_ACCESS_KEY",
            "valueFrom": {
                "secretKeyRef": {"name": "mlpipeline-minio-artifact", "key": "secretkey"}
            },
        },
    ]
    pod = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"][
        "replicatedJobs"
    ][0]["template"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {
        "cloud.google.com/gke-accelerator": "nvidia-l4",
        "cloud.google.com/gke-spot": "true",
    }
    assert {t["key"] for t in pod["tolerations"]} == {
        "dedicated",
        "nvidia.com/gpu",
        "cloud.google.com/gke-spot",
    }
    from mlm.config import PretrainConfig, from_argv

    parsed = from_argv(PretrainConfig, trainer["args"])
    assert parsed.precision == "mixed_bfloat16"
    assert (parsed.masking.mask_ratio, parsed.masking.whole_word_masking) == (0.2, True)
    assert parsed.checkpoint_every_steps == 25 and parsed.steps == 50
    assert parsed.output_dir == str(tmp_path / "model")
    assert kube.objects == {}  # deleted after success
    assert metrics.metadata == {"final_loss": 3.5, "steps": 50}


def test_a_worker_image_parameter_overrides_the_pipeline_image(
    monkeypatch, tmp_path, pod_namespace
):
    monkeypatch.setenv("MLM_IMAGE", "ghcr.io/mlm-project/mlm:0.1.0")
    kube = FakeKubernetes()
    kube.on_get = finish_after(1, {"type": "Complete"})
    created = capture_creates(kube)
    monkeypatch.setattr(launch, "_load_api_client", lambda: kube)
    run_pretrain_step(kube, tmp_path, gpus_per_worker=1, worker_image="reg.example.com/mine:2")
    assert created[0]["spec"]["trainer"]["image"] == "reg.example.com/mine:2"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"precision": "fp8"}, "precision='fp8': use one of"),
        ({"mask_ratio": 1.5}, "mask_ratio"),
        ({"workers": 0}, "workers"),
    ],
)
def test_bad_pretrain_parameters_fail_the_step_with_one_line_before_any_job(
    monkeypatch, tmp_path, pod_namespace, options, message
):
    kube = FakeKubernetes()
    monkeypatch.setattr(launch, "_load_api_client", lambda: kube)
    with pytest.raises(UserInputError) as caught:
        run_pretrain_step(kube, tmp_path, **options)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert kube.calls == []


def test_job_settings_defaults_are_the_launchers():
    """`launch_pretraining_job` (the Python API below the settings) has the settings' defaults."""
    import inspect

    job = JobConfig()
    launcher = inspect.signature(launch.launch_pretraining_job).parameters
    assert job.worker_cpu == launcher["cpu"].default
    assert job.worker_memory == launcher["memory"].default
    assert job.spot == launcher["spot"].default
    assert job.job_timeout_hours * 3600 == launcher["timeout_s"].default


# --- retry, cancel, launch failures ----------------------------------------------------------------


class PodLost(BaseException):
    """The pretrain pod vanishing mid-wait (node lost, OOM-killed): nothing runs after it."""


def test_a_retried_step_reattaches_to_the_job_its_first_attempt_created(monkeypatch, pod_namespace):
    kube, clock = FakeKubernetes(), FakeClock()

    def lose_pod(seconds):
        raise PodLost

    config = PretrainLaunchConfig.create(
        launcher="trainjob",
        shard_dir="gs://b/shards",
        tokenizer_dir="gs://b/tok",
        output_dir="gs://b/out",
        run_id="8f14e45f-ceea-467f-a0a5-2f3b7a6c0d11",
        task_name="pretrain",
        steps=10,
    )
    with pytest.raises(PodLost):
        launch.launch_pretraining(config, api_client=kube, clock=clock, sleep=lose_pod)
    assert len(kube.objects) == 1  # the job outlives the lost pod

    finish = finish_after(1, {"type": "Complete"})
    jobs_seen = []

    def watch(job):
        jobs_seen.append(sorted(kube.objects))
        finish(job)

    kube.on_get = watch
    result = launch.launch_pretraining(config, api_client=kube, clock=clock, sleep=clock.sleep)
    assert result.attached and result.state == "Succeeded"
    # The retry's create was answered 409 (same name), and it waited for the first job.
    assert [c[0] for c in kube.calls].count("POST") == 2
    assert jobs_seen and all(
        seen == [("trainjobs", pod_namespace, result.name)] for seen in jobs_seen
    )
    assert kube.objects == {}


def test_a_retry_waits_out_its_failed_predecessor_being_deleted_then_creates_the_job():
    kube, clock = FakeKubernetes(), FakeClock()
    name = "mlm-pretrain-run1-0123456789"
    key = ("trainjobs", "mlm", name)
    kube.objects[key] = {
        "metadata": {"name": name, "deletionTimestamp": "2026-11-28T03:00:00Z"},
        "status": {"conditions": [{"type": "Failed", "status": "True"}]},
    }
    reads = {"n": 0}
    finish = finish_after(1, {"type": "Complete"})

    def garbage_collect(job):
        reads["n"] += 1
        if reads["n"] == 2:  # by the second look the garbage collector has removed it
            del kube.objects[key]
            raise ApiException(status=404, reason="Not Found")
        if "deletionTimestamp" not in job["metadata"]:
            finish(job)

    kube.on_get = garbage_collect
    result = run(kube, clock, name=name)
    assert not result.attached and result.state == "Succeeded"
    assert [c[0] for c in kube.calls].count("POST") == 3  # 409, 409, created
    assert clock.sleeps[:2] == [job_object.TERMINATING_POLL_S, job_object.TERMINATING_POLL_S]


def test_sigterm_deletes_the_job_then_ends_the_launcher():
    """A real SIGTERM, sent to this process while the launcher waits (as Kubernetes stops the
    pretrain pod when a run is terminated)."""
    kube, clock = FakeKubernetes(), FakeClock()
    name = "mlm-pretrain-run1-0123456789"
    reads = {"n": 0}

    def terminate_on_second_read(job):
        reads["n"] += 1
        if reads["n"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    kube.on_get = terminate_on_second_read
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(launch.JobCancelledError, match="deleted it"):
        run(kube, clock, name=name, keep_job=True)  # cancelled jobs are deleted even if kept
    assert kube.objects == {}
    assert kube.calls[-1][0] == "DELETE" and kube.calls[-1][1].endswith(f"/trainjobs/{name}")
    assert signal.getsignal(signal.SIGTERM) == before  # the handler was restored


LAUNCHER_PROCESS = """
import sys

from kubernetes.client import ApiClient, Configuration

from mlm.launch.kubernetes import launch_pretraining_job

launch_pretraining_job(
    "trainjob", "mlm-pretrain-run1-0123456789", "mlm", "ghcr.io/mlm-project/mlm:0.1.0", 2, 0,
    ["--shards", "gs://b/s", "--tokenizer", "gs://b/t", "--output", "gs://b/o"],
    api_client=ApiClient(Configuration(host=sys.argv[1])), poll_interval_s=0.2,
)
"""


def test_sigterm_to_a_launcher_process_deletes_its_job():
    """A launcher in its own process, against the fake API served over HTTP on loopback: SIGTERM
    (what Kubernetes sends the pretrain pod when the run is terminated) deletes the job, and the
    process ends with one line saying so."""
    kube = FakeKubernetes()
    name = "mlm-pretrain-run1-0123456789"
    watched = threading.Event()

    def seen(job):
        watched.set()

    kube.on_get = seen
    with serve(kube) as url:
        process = subprocess.Popen(
            [sys.executable, "-c", LAUNCHER_PROCESS, url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert watched.wait(timeout=120), process.communicate(timeout=30)[0]
            assert ("trainjobs", "mlm", name) in kube.objects
            process.send_signal(signal.SIGTERM)
            output, _ = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode != 0
    last = output.strip().splitlines()[-1]
    assert last.startswith("mlm.launch.job_errors.JobCancelledError: "), output
    assert f"cancelled while waiting for TrainJob mlm/{name}" in last and "deleted it" in last
    assert kube.objects == {}
    assert ("DELETE", f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/mlm/trainjobs/{name}") in [
        call[:2] for call in kube.calls
    ]


CRD_MISSING = (404, "the server could not find the requested resource")
RBAC_DENIED = (
    403,
    'trainjobs.trainer.kubeflow.org is forbidden: User "system:serviceaccount:kubeflow-user:'
    'default-editor" cannot create resource "trainjobs" in API group "trainer.kubeflow.org" in '
    'the namespace "mlm"',
)
QUOTA = (
    403,
    'trainjobs.trainer.kubeflow.org "mlm-pretrain-run1-0123456789" is forbidden: exceeded '
    "quota: compute, requested: count/trainjobs.trainer.kubeflow.org=1, used: "
    "count/trainjobs.trainer.kubeflow.org=2, limited: count/trainjobs.trainer.kubeflow.org=2",
)


@pytest.mark.parametrize(
    "error, expected",
    [
        (
            CRD_MISSING,
            "the TrainJob API (trainer.kubeflow.org/v1alpha1, trainjobs) is not installed",
        ),
        (RBAC_DENIED, "may not create trainjobs.trainer.kubeflow.org in namespace mlm"),
        (QUOTA, "a ResourceQuota refuses it (trainjobs.trainer.kubeflow.org"),
    ],
)
def test_a_job_that_cannot_be_created_fails_at_once_with_one_line(error, expected):
    kube, clock = FakeKubernetes(), FakeClock()
    kube.create_error = error
    with pytest.raises(launch.JobLaunchError) as caught:
        run(kube, clock)
    message = str(caught.value)
    assert expected in message and "\n" not in message
    assert clock.sleeps == []  # not retried: it cannot succeed


@pytest.mark.parametrize(
    "pod, grace, expected",
    [
        (
            {"waiting": "ImagePullBackOff"},
            launch.IMAGE_PULL_GRACE_S,
            "cannot pull its image registry.example.com/mlm:nope (ImagePullBackOff",
        ),
        (
            {"unschedulable": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."},
            launch.UNSCHEDULABLE_GRACE_S,
            "cannot be scheduled (0/3 nodes are available: 3 Insufficient nvidia.com/gpu.)",
        ),
    ],
)
def test_workers_that_cannot_start_fail_the_launch_within_minutes(pod, grace, expected):
    kube, clock = FakeKubernetes(), FakeClock()
    name = "mlm-pretrain-run1-0123456789"
    labels = {"jobset.sigs.k8s.io/jobset-name": name}
    kube.pods["mlm"] = [
        running_pod(f"{name}-node-0-0-a", labels),
        pending_pod(f"{name}-node-0-1-b", labels, **pod),
    ]
    with pytest.raises(launch.JobLaunchError) as caught:
        run(kube, clock, name=name)
    message = str(caught.value)
    assert f"worker pod {name}-node-0-1-b {expected}" in message and "\n" not in message
    waited = clock.now - 1000.0
    assert grace <= waited < grace + 30  # one poll past the grace, not the 7-day timeout
    assert kube.objects == {}  # a job that cannot start is deleted


def test_api_calls_carry_timeouts_and_network_errors_are_retried():
    import urllib3

    kube, clock = FakeKubernetes(), FakeClock()
    finish = finish_after(3, {"type": "Complete"})
    reads = {"n": 0}
    original = kube._custom
    posts_seen = {"n": 0}

    def flaky_custom(method, match, body, query):
        if method == "POST":
            posts_seen["n"] += 1
            if posts_seen["n"] == 1:
                raise urllib3.exceptions.MaxRetryError(None, "/apis", "connection refused")
        return original(method, match, body, query)

    def flaky_get(job):
        reads["n"] += 1
        if reads["n"] == 2:
            raise urllib3.exceptions.ProtocolError("Connection aborted.")
        finish(job)

    kube._custom = flaky_custom
    kube.on_get = flaky_get
    assert run(kube, clock).state == "Succeeded"
    assert posts_seen["n"] == 2  # the create was retried after the network error
    assert set(kube.timeouts) == {launch.REQUEST_TIMEOUT_S}


def test_worker_zeros_progress_lines_stream_into_the_step_log():
    kube, clock = FakeKubernetes(), FakeClock()
    name = "mlm-pretrain-run1-0123456789"
    chief = {
        "jobset.sigs.k8s.io/jobset-name": name,
        "batch.kubernetes.io/job-completion-index": "0",
    }
    other = {
        "jobset.sigs.k8s.io/jobset-name": name,
        "batch.kubernetes.io/job-completion-index": "1",
    }
    kube.pods["mlm"] = [
        running_pod(f"{name}-node-0-1-b", other),
        running_pod(f"{name}-node-0-0-a", chief),
    ]
    kube.logs[("mlm", f"{name}-node-0-1-b", "node", False)] = "worker 1 says hi"
    log_key = ("mlm", f"{name}-node-0-0-a", "node", False)
    progress = [
        f"step {s}/300 loss {5 - s / 100:.2f} tokens/s 1234 ETA {300 - s}s" for s in (100, 200, 300)
    ]
    reads = {"n": 0}

    def advance(job):
        # One more progress line between reads; the job completes on the third.
        reads["n"] += 1
        kube.logs[log_key] = "\n".join(progress[: reads["n"]])
        if reads["n"] == 3:
            job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}

    kube.on_get = advance
    output = io.StringIO()
    run(kube, clock, name=name, follow_logs=output)
    assert output.getvalue().splitlines() == [f"[worker 0] {line}" for line in progress]


def test_the_exit_handler_deletes_only_the_runs_jobs(monkeypatch, pod_namespace):
    kube = FakeKubernetes()
    for name, run_id in (("a-1", "run-a"), ("a-2", "run-a"), ("b-1", "run-b")):
        kube.objects[("tfjobs", pod_namespace, name)] = {
            "metadata": {"name": name, "labels": specs.run_labels(run_id, "pretrain")}
        }
    kube.objects[("tfjobs", "elsewhere", "a-3")] = {
        "metadata": {"name": "a-3", "labels": specs.run_labels("run-a", "pretrain")}
    }
    monkeypatch.setattr(launch, "_load_api_client", lambda: kube)
    from mlm_components.cleanup import cleanup

    cleanup.python_func(launcher="tfjob", run_id="run-a")
    assert set(kube.objects) == {("tfjobs", pod_namespace, "b-1"), ("tfjobs", "elsewhere", "a-3")}
    assert launch.delete_run_jobs("trainjob", "run-a", api_client=kube) == []
    cleanup.python_func(launcher="local", run_id="run-b")  # nothing to do, no API call
    assert ("tfjobs", pod_namespace, "b-1") in kube.objects


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
