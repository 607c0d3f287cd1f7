"""The compiled pipeline: it compiles, loads back, has its tasks wired in order inside an exit
handler whose cleanup task deletes the run's jobs, and retries pretrain with back-off."""

import subprocess
import sys
from pathlib import Path

import yaml
from kfp import components

from mlm.config import CompileConfig
from mlm_pipelines.compile import compile_pipeline
from mlm_pipelines.mlm_pipeline import CLEANUP_TASK, EXIT_HANDLER, SHARD_FAN_OUT
from mlm_pipelines.mlm_pipeline import task_order as compiled_order

REPO = Path(__file__).resolve().parents[2]


def load(path):
    docs = list(yaml.safe_load_all(Path(path).read_text()))
    return docs[0], (docs[1] if len(docs) > 1 else {})


def steps_dag(spec):
    """The tasks of the exit handler's DAG (the six steps)."""
    return spec["components"][f"comp-{EXIT_HANDLER}"]["dag"]["tasks"]


def assert_runs_in(spec, order):
    """The exit handler's DAG has exactly the tasks of `order`, each depending only on tasks
    before it, and each (but the first) on the one before it unless both read the same input."""
    tasks = steps_dag(spec)
    assert set(tasks) == set(order)
    for index, name in enumerate(order):
        needs = set(tasks[name].get("dependentTasks", []))
        assert needs <= set(order[:index]), f"{name} waits for {needs - set(order[:index])}"
    # The chain: each step waits for the step that makes its input, fingerprint first.
    assert not tasks[order[0]].get("dependentTasks")


def test_compiles_loads_back_and_lists_the_tasks_in_order(tmp_path):
    path = compile_pipeline(str(tmp_path / "pipeline.yaml"))
    spec, platform = load(path)
    assert spec["pipelineInfo"]["name"] == "mlm-pretraining"
    assert_runs_in(spec, compiled_order())
    tasks = steps_dag(spec)
    # plan-shards and tokenize both need only the fingerprint: they run side by side.
    assert tasks["plan-shards"]["dependentTasks"] == ["fingerprint"]
    assert set(tasks[SHARD_FAN_OUT]["dependentTasks"]) == {"fingerprint", "plan-shards", "tokenize"}
    assert tasks["merge-shards"]["dependentTasks"] == [SHARD_FAN_OUT]
    assert "merge-shards" in tasks["pretrain"]["dependentTasks"]

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
    shard_task = spec["components"][f"comp-{SHARD_FAN_OUT}"]["dag"]["tasks"]["shard"]
    assert tasks["pretrain"]["cachingOptions"].get("enableCache", False) is False
    assert tasks["tokenize"]["cachingOptions"]["enableCache"] is True
    assert shard_task["cachingOptions"]["enableCache"] is True
    assert tasks["merge-shards"]["cachingOptions"]["enableCache"] is True
    # The corpus fingerprint is computed afresh every run and keys tokenize's and shard's cache.
    assert tasks["fingerprint"]["cachingOptions"].get("enableCache", False) is False
    fingerprint = {"producerTask": "fingerprint", "outputParameterKey": "Output"}
    assert tasks["tokenize"]["inputs"]["parameters"]["corpus_fingerprint"] == {
        "taskOutputParameter": fingerprint
    }
    assert tasks[SHARD_FAN_OUT]["inputs"]["parameters"]["pipelinechannel--fingerprint-Output"] == {
        "taskOutputParameter": fingerprint
    }
    for name in ("tokenize", SHARD_FAN_OUT):
        assert "fingerprint" in tasks[name]["dependentTasks"]
    # The fan-out: one shard task per partition number plan-shards lists, joined by
    # merge-shards from the collected partitions.
    loop = tasks[SHARD_FAN_OUT]
    assert loop["parameterIterator"]["items"]["inputParameter"] == (
        "pipelinechannel--plan-shards-Output"
    )
    assert shard_task["inputs"]["parameters"]["partition"] == {
        "componentInputParameter": "pipelinechannel--plan-shards-Output-loop-item"
    }
    assert tasks["merge-shards"]["inputs"]["artifacts"]["parts"] == {
        "taskOutputArtifact": {
            "producerTask": SHARD_FAN_OUT,
            "outputArtifactKey": "pipelinechannel--shard-shards",
        }
    }
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
                 "worker_tolerations", "spot", "job_timeout_hours", "namespace", "precision",
                 "mask_ratio", "recipe"):  # fmt: skip
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
    assert {"name": "MLM_IMAGE", "value": "registry.example.com/mlm:9-gpu"} in executors[
        "exec-pretrain"
    ]["container"]["env"]
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-pretrain"]
    assert k8s["nodeSelector"]["labels"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert not list(tmp_path.glob(".*partial*"))


def store_wiring(spec, platform):
    """executor -> (its store env, its Secret-as-env entries)."""
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    return {
        name: (
            {
                e["name"]: e["value"]
                for e in executor["container"].get("env", [])
                if e["name"].startswith("MLM_STORE_")
            },
            k8s.get(name, {}).get("secretAsEnv", []),
        )
        for name, executor in spec["deploymentSpec"]["executors"].items()
    }


def executors(version: str) -> set[str]:
    """The executors of the steps in the YAML for a KFP version (each partition runs "shard")."""
    order = compiled_order(CompileConfig(kfp_version=version))
    return {f"exec-{name}" for name in order if name != SHARD_FAN_OUT} | {"exec-shard"}


def test_every_step_gets_the_store_secret_and_endpoint_of_its_kfp_version(tmp_path):
    expected_endpoint = {
        "2.5": "http://minio-service.kubeflow:9000",
        "2.15": "http://seaweedfs.kubeflow:8333",
        "2.16": "http://seaweedfs.kubeflow:8333",
    }
    for version, endpoint in expected_endpoint.items():
        out = compile_pipeline(str(tmp_path / f"{version}.yaml"), kfp_version=version)
        wiring = store_wiring(*load(out))
        steps = executors(version)
        assert set(wiring) == steps | {f"exec-{CLEANUP_TASK}"}
        for name in steps:
            env, secrets = wiring[name]
            assert env == {
                "MLM_STORE_SECRET": "mlpipeline-minio-artifact",
                "MLM_STORE_ENDPOINT": endpoint,
            }, name
            (secret,) = secrets
            assert secret["secretName"] == "mlpipeline-minio-artifact"
            assert {(m["secretKey"], m["envVar"]) for m in secret["keyToEnv"]} == {
                ("accesskey", "AWS_ACCESS_KEY_ID"),
                ("secretkey", "AWS_SECRET_ACCESS_KEY"),
            }
            # Optional where the backend knows the field: a pod without the Secret starts and
            # its store check names the Secret, instead of waiting in CreateContainerConfigError.
            # (kubeflow/pipelines 2.15.0 backend/src/v2/driver/k8s.go copies
            # SecretAsEnv.Optional into the SecretKeySelector; 2.5.0 driver.go resolves
            # secretNameParameter, which the SDK writes, and has no Optional.)
            assert secret.get("optional") is (None if version == "2.5" else True)
        # The exit task only deletes jobs: no store.
        assert wiring[f"exec-{CLEANUP_TASK}"] == ({}, [])

    # Another store, or none at all (e.g. GCS with Workload Identity).
    out = compile_pipeline(
        str(tmp_path / "own.yaml"), store_secret="own-keys", store_endpoint="https://s3.example.com"
    )
    env, (secret,) = store_wiring(*load(out))["exec-pretrain"]
    assert env == {"MLM_STORE_SECRET": "own-keys", "MLM_STORE_ENDPOINT": "https://s3.example.com"}
    assert secret["secretName"] == "own-keys"
    out = compile_pipeline(str(tmp_path / "none.yaml"), store_secret="")
    assert all(wiring == ({}, []) for wiring in store_wiring(*load(out)).values())


def test_kfp_2_5_yaml_has_no_task_config_and_the_cli_takes_the_settings(tmp_path, capsys):
    from mlm.cli import main

    output = tmp_path / "kfp25.yaml"
    assert main(["pipeline", "compile", "--output", str(output), "--kfp-version", "2.5"]) == 0
    assert capsys.readouterr().out.strip() == str(output)
    text = output.read_text()
    assert "TASK_CONFIG" not in text and "taskConfigPassthroughs" not in text
    spec, _ = load(output)
    assert (
        "task_config" not in spec["components"]["comp-pretrain"]["inputDefinitions"]["parameters"]
    )
    assert_runs_in(spec, compiled_order(CompileConfig(kfp_version="2.5")))
    assert "shard" in steps_dag(spec) and SHARD_FAN_OUT not in steps_dag(spec)
    # The default backend has both: the pretrain task's own env reaches the job's workers.
    spec, _ = load(compile_pipeline(str(tmp_path / "default.yaml")))
    pretrain = spec["components"]["comp-pretrain"]
    assert pretrain["inputDefinitions"]["parameters"]["task_config"]["parameterType"] == (
        "TASK_CONFIG"
    )
    assert {p["field"] for p in pretrain["taskConfigPassthroughs"]} >= {"ENV"}


def test_bad_compile_settings_fail_in_one_line(tmp_path):
    from mlm.errors import UserInputError

    for settings, expected in (
        ({"kfp_version": "2.4"}, "kfp_version='2.4': use one of 2.5, 2.15, 2.16"),
        ({"gpu_node_selector": "nvidia-l4"}, "write it as KEY=VALUE"),
        ({"store_endpoint": "seaweedfs.kubeflow:8333"}, "give the URL with its scheme"),
    ):
        try:
            compile_pipeline(str(tmp_path / "bad.yaml"), **settings)
        except UserInputError as error:
            assert expected in str(error)
        else:
            raise AssertionError(f"{settings} compiled")
    assert not list(tmp_path.iterdir())


def test_committed_yaml_matches_the_pipeline_source(tmp_path):
    committed = REPO / "pipelines" / "mlm_pretraining_pipeline.yaml"
    fresh = compile_pipeline(str(tmp_path / "fresh.yaml"))
    assert load(committed) == load(fresh), "run `make compile` and commit the YAML"


def test_every_pipeline_parameter_is_documented():
    import inspect

    from mlm_pipelines.mlm_pipeline import PARAMETERS, mlm_pretraining_pipeline

    guide = (REPO / "docs" / "pipeline.md").read_text()
    parameters = inspect.signature(mlm_pretraining_pipeline.pipeline_func).parameters
    assert list(parameters) == [parameter.name for parameter in PARAMETERS]
    # The steps' settings are documented where they are declared (`mlm <step> --help`, the UI's
    # descriptions); the guide states the rule and names the pipeline's own parameters.
    assert "every setting of the steps is a run parameter" in guide
    own = [p.name for p in PARAMETERS if p.setting is None or p.name == "shard_partitions"]
    assert own == ["corpus_uri", "labels_uri", "shard_partitions", "pretrain_pod_gpus",
                   "publish_model_as"]  # fmt: skip
    missing = [name for name in own if f"`{name}`" not in guide]
    assert missing == []
    descriptions = mlm_pretraining_pipeline.component_spec.inputs
    assert all(descriptions[name].description for name in parameters)
