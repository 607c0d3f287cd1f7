"""KFP component: pre-train the masked language model (in this pod, or as a Kubernetes job)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components import MLM_IMAGE


@dsl.component(base_image=MLM_IMAGE, install_kfp_package=False)
def pretrain(
    shards: Input[Dataset],
    tokenizer: Input[Artifact],
    model: Output[Model],
    metrics: Output[Metrics],
    variant: str = "tiny",
    model_overrides: dict = {},  # noqa: B006 (KFP takes defaults from the signature)
    batch_size: int = 32,
    steps: int = 1000,
    learning_rate: float = 5e-4,
    warmup_ratio: float = 0.1,
    workers: int = 1,
    gpus_per_worker: int = 0,
    launcher: str = "local",
    pushgateway_url: str = "",
    run_id: str = "",
    seed: int = 0,
    init_from: str = "",
    model_registry_uri: str = "",
):
    """Pre-trains a `variant` BERT with the MLM objective on the `shards` artifact.

    `launcher` "local" trains in this pod (`workers` local processes); "trainjob" (Kubeflow
    Trainer v2) or "tfjob" (Training Operator) runs `workers` pods with `gpus_per_worker` GPUs each
    and waits for them. The `model` artifact holds the pretrain output directory
    (`mlm_model.keras`, `encoder.keras`, `metrics.json`, `history.json`, `checkpoints/`, ...).
    """
    import json

    from mlm import storage
    from mlm.artifacts import METRICS_FILE

    settings = {
        "variant": variant,
        # KFP passes a dict parameter as a protobuf Struct, whose numbers are all floats.
        "model_overrides": {
            key: int(value) if isinstance(value, float) and value.is_integer() else value
            for key, value in model_overrides.items()
        },
        "batch_size": batch_size,
        "steps": steps,
        "learning_rate": learning_rate,
        "warmup_ratio": warmup_ratio,
        "pushgateway_url": pushgateway_url,  # "" (like every empty value) = not set
        "run_id": run_id,
        "seed": seed,
        "init_from": init_from,  # "" = random weights; "registry:NAME" reads model_registry_uri
        "model_registry_uri": model_registry_uri,
    }
    if launcher == "local":
        from mlm.config import PretrainLaunchConfig
        from mlm.launch.local import run_pretraining

        run_pretraining(
            PretrainLaunchConfig.create(
                shard_dir=shards.path,
                tokenizer_dir=tokenizer.path,
                output_dir=model.path,
                workers=workers,
                **settings,
            )
        )
    else:
        # Only needed (and only importable with the Kubernetes client) for cluster launchers.
        from mlm.launch.kubernetes import launch_pretraining

        launch_pretraining(
            launcher,
            shard_dir=shards.uri,
            tokenizer_dir=tokenizer.uri,
            output_dir=model.uri,
            workers=workers,
            gpus_per_worker=gpus_per_worker,
            **settings,
        )

    # A cluster job writes to the artifact's URI; a local run to its (mounted) path.
    output_dir = model.path if launcher == "local" else model.uri
    result = json.loads(storage.read_text(storage.join(output_dir, METRICS_FILE)))
    for key, value in result.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics.log_metric(key, value)
    model.metadata.update({"framework": "keras", "variant": variant, "steps": steps})
