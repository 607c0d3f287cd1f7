"""The compiled pipeline: it compiles, loads back, has its tasks wired in order inside an exit
handler whose cleanup task deletes the run's jobs, and retries pretrain with back-off."""

import subprocess
import sys
from pathlib import Path

import yaml
from kfp import components

from pipelines.compile import compile_pipeline
from pipelines.mlm_pipeline import CLEANUP_TASK, EXIT_HANDLER, TASK_ORDER

REPO = Path(__file__).resolve().parents[2]


def load(path):
    docs = list(yaml.safe_load_all(Path(path).read_text()))
    return docs[0], (docs[1] if len(docs) > 1 else {})


def steps_dag(spec):
    """The tasks of the exit handler's DAG (the six steps)."""
    return spec["components"][f"comp-{EXIT_HANDLER}"]["dag"]["tasks"]


def task_order(spec):
    tasks = steps_dag(spec)
    order, done = [], set()
    while len(order) < len(tasks):
        ready = sorted(
            name
            for name, task in tasks.items()
            if name not in done and set(task.get("dependentTasks", [])) <= done
        )
        assert ready, "the task graph has a cycle"
        # A chain has exactly one ready task at a time.
        assert len(ready) == 1, f"tasks {ready} could run in parallel; expected a chain"
        order.append(ready[0])
        done.add(ready[0])
    return order


def test_compiles_loads_back_and_lists_the_tasks_in_order(tmp_path):
    path = compile_pipeline(str(tmp_path / "pipeline.yaml"))
    spec, platform = load(path)
    assert spec["pipelineInfo"]["name"] == "mlm-pretraining"
    assert task_order(spec) == list(TASK_ORDER)

    loaded = components.load_component_from_file(path)
    assert loaded.name == "mlm-pretraining"
    for name in (
        "corpus_uri",
        "labels_uri",
        "variant",
        "steps",
        "workers",
        "gpus_per_worker",
        "learning_rate",
        "pushgateway_url",
        "launcher",
        "max_seq_length",
        "line_by_line",
        "batch_size",
        "init_from",
        "model_registry_uri",
        "publish_model_as",
    ):
        assert name in loaded.component_spec.inputs, name

    tasks = steps_dag(spec)
    assert tasks["pretrain"]["cachingOptions"].get("enableCache", False) is False
    assert tasks["tokenize"]["cachingOptions"]["enableCache"] is True
    assert tasks["shard"]["cachingOptions"]["enableCache"] is True
    # The corpus fingerprint is computed afresh every run and keys tokenize's and shard's cache.
    assert tasks["fingerprint"]["cachingOptions"].get("enableCache", False) is False
    for name in ("tokenize", "shard"):
        parameter = tasks[name]["inputs"]["parameters"]["corpus_fingerprint"]
        assert parameter["taskOutputParameter"] == {
            "producerTask": "fingerprint",
            "outputParameterKey": "Output",
        }
        assert "fingerprint" in tasks[name]["dependentTasks"]
    # Continual pre-training: pretrain reads init_from; publish, last, is never cached.
    assert set(tasks["pretrain"]["inputs"]["parameters"]) >= {"init_from", "model_registry_uri"}
    assert tasks["publish"]["cachingOptions"].get("enableCache", False) is False
    assert tasks["publish"]["inputs"]["parameters"]["model_name"] == {
        "componentInputParameter": "pipelinechannel--publish_model_as"
    }

    executors = spec["deploymentSpec"]["executors"]
    images = {executor["container"]["image"] for executor in executors.values()}
    assert images == {"ghcr.io/mlm-project/mlm:0.1.0"}
    accelerator = executors["exec-pretrain"]["container"]["resources"]["accelerator"]
    assert accelerator["resourceType"] == "nvidia.com/gpu"
    assert "pretrain_pod_gpus" in accelerator["resourceCount"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-pretrain"]
    assert k8s["tolerations"] == [
        {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}
    ]
    assert "nodeSelector" not in k8s


def test_pretrain_retries_with_backoff_and_cleanup_runs_whatever_the_outcome(tmp_path):
    spec, _ = load(compile_pipeline(str(tmp_path / "pipeline.yaml")))
    assert steps_dag(spec)["pretrain"]["retryPolicy"] == {
        "maxRetryCount": 3,
        "backoffDuration": "60s",
        "backoffFactor": 2.0,
        "backoffMaxDuration": "600s",
    }
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {EXIT_HANDLER, CLEANUP_TASK}
    cleanup = root[CLEANUP_TASK]
    # An exit task: it runs after the steps however they ended (failed, terminated).
    assert cleanup["dependentTasks"] == [EXIT_HANDLER]
    assert cleanup["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    assert cleanup["inputs"]["parameters"] == {
        "launcher": {"componentInputParameter": "launcher"},
        "run_id": {"runtimeValue": {"constant": "{{$.pipeline_job_uuid}}"}},
    }
    # The task's env (object-store endpoint, secrets) reaches the job's workers; the pod keeps it.
    passthroughs = spec["components"]["comp-pretrain"]["taskConfigPassthroughs"]
    assert {"field": "ENV", "applyToTask": True} in passthroughs
    assert all(p["applyToTask"] for p in passthroughs)
    pretrain_inputs = steps_dag(spec)["pretrain"]["inputs"]["parameters"]
    assert pretrain_inputs["run_id"] == cleanup["inputs"]["parameters"]["run_id"]
    assert pretrain_inputs["task_name"] == {
        "runtimeValue": {"constant": "{{$.pipeline_task_name}}"}
    }
    for name in ("worker_image", "worker_cpu", "worker_memory", "worker_node_selector",
                 "worker_tolerations", "spot", "job_timeout_hours", "pretrain_options"):  # fmt: skip
        assert pretrain_inputs[name] == {"componentInputParameter": f"pipelinechannel--{name}"}


def test_image_and_gpu_node_selector_are_compile_time_options(tmp_path):
    # A fresh interpreter: the image is read when the components are first imported.
    output = tmp_path / "gpu.yaml"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "pipelines" / "compile.py"),
            "--output",
            str(output),
            "--image",
            "registry.example.com/mlm:9-gpu",
            "--gpu-node-selector",
            "cloud.google.com/gke-accelerator=nvidia-l4",
        ],
        check=True,
        cwd=tmp_path,
    )
    spec, platform = load(output)
    executors = spec["deploymentSpec"]["executors"]
    images = {e["container"]["image"] for e in executors.values()}
    assert images == {"registry.example.com/mlm:9-gpu"}
    # The pretrain step hands its own image on to the job's workers.
    assert executors["exec-pretrain"]["container"]["env"] == [
        {"name": "MLM_IMAGE", "value": "registry.example.com/mlm:9-gpu"}
    ]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-pretrain"]
    assert k8s["nodeSelector"]["labels"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert not list(tmp_path.glob(".*partial*"))


def test_committed_yaml_matches_the_pipeline_source(tmp_path):
    committed = REPO / "pipelines" / "mlm_pretraining_pipeline.yaml"
    fresh = compile_pipeline(str(tmp_path / "fresh.yaml"))
    assert load(committed) == load(fresh), "run `make compile` and commit the YAML"


def test_every_pipeline_parameter_is_documented():
    import inspect

    from pipelines.mlm_pipeline import mlm_pretraining_pipeline

    guide = (REPO / "docs" / "pipeline.md").read_text()
    parameters = inspect.signature(mlm_pretraining_pipeline.pipeline_func).parameters
    missing = [name for name in parameters if f"`{name}`" not in guide]
    assert missing == []
