"""KFP component: pre-train the masked language model (in this pod, or as a Kubernetes job)."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from components import MLM_IMAGE


@dsl.component(
    base_image=MLM_IMAGE,
    install_kfp_package=False,
    # The task's env (e.g. object-store endpoint and credentials, set with set_env_variable or
    # kubernetes.use_secret_as_env) reaches the job's workers too (`task_config.env`). The pod
    # keeps all its settings (apply_to_task): its own GPUs and placement serve launcher "local";
    # the workers' resources and placement are the worker_* parameters.
    task_config_passthroughs=[
        dsl.TaskConfigPassthrough(field=field, apply_to_task=True)
        for field in (
            dsl.TaskConfigField.ENV,
            dsl.TaskConfigField.RESOURCES,
            dsl.TaskConfigField.KUBERNETES_TOLERATIONS,
            dsl.TaskConfigField.KUBERNETES_NODE_SELECTOR,
        )
    ],
)
def pretrain(
    shards: Input[Dataset],
    tokenizer: Input[Artifact],
    model: Output[Model],
    metrics: Output[Metrics],
    task_config: dsl.TaskConfig,
    recipe: str = "",
    variant: str = "tiny",
    model_overrides: dict = {},  # noqa: B006 (KFP takes defaults from the signature)
    batch_size: int = 32,
    steps: int = 1000,
    learning_rate: float = 5e-4,
    warmup_ratio: float = 0.1,
    pretrain_options: dict = {},  # noqa: B006
    workers: int = 1,
    gpus_per_worker: int = 0,
    launcher: str = "local",
    worker_image: str = "",
    worker_cpu: str = "4",
    worker_memory: str = "16Gi",
    worker_node_selector: dict = {},  # noqa: B006
    worker_tolerations: list = [],  # noqa: B006
    spot: bool = False,
    job_timeout_hours: float = 168.0,
    pushgateway_url: str = "",
    run_id: str = "",
    task_name: str = "pretrain",
    seed: int = 0,
    init_from: str = "",
    model_registry_uri: str = "",
):
    """Pre-trains a `variant` BERT with the MLM objective on the `shards` artifact.

    `recipe` ("" = none) names a bundle of settings that become the defaults
    (`mlm.config.RECIPES`): a parameter left at its default then takes the recipe's value, a
    parameter changed from its default wins (`model_overrides` merge key by key).

    `launcher` "local" trains in this pod (`workers` local processes); "trainjob" (Kubeflow
    Trainer v2) or "tfjob" (Training Operator) runs `workers` pods and waits for them (see
    `mlm.launch.kubernetes.launch_pretraining`): in this pod's namespace, labelled with `run_id`
    and `task_name`, named after them (a retry re-attaches to the job), running `worker_image`
    ("" = this step's own image, its "-gpu" variant for GPU workers) with `gpus_per_worker`
    GPUs, `worker_cpu` / `worker_memory`, `worker_node_selector`, `worker_tolerations` and `spot`
    per pod, for at most `job_timeout_hours`, with the artifact store the pipeline gave this step
    and this task's environment (`task_config.env`, KFP's task-config passthrough; KFP 2.5 has
    none, and its YAML leaves the input out, so `task_config` is then empty). `pretrain_options` holds any other
    `mlm.config.PretrainConfig` setting by name (precision, mask_ratio, whole_word_masking,
    gradient_clipping, checkpoint_every_steps, ...); an unknown name or a bad value fails the
    step with one line.

    The model artifact holds the pretrain output directory (`mlm_model.keras`, `encoder.keras`,
    `metrics.json`, `history.json`, `checkpoints/`, ...). Training writes straight to the
    artifact's URI when it is remote (gs://, s3://, minio://), so the checkpoints outlive this
    pod and a retried step resumes from the last one.
    """
    from mlm.errors import install_excepthook

    install_excepthook("pretrain")  # a known failure ends the step with one line, status 2

    import json

    from mlm import storage
    from mlm.artifacts import METRICS_FILE
    from mlm.config import from_kfp as plain
    from mlm.errors import UserInputError

    settings = {
        "variant": variant,
        "model_overrides": plain(model_overrides),
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
    reserved = {*settings, "recipe", "shard_dir", "tokenizer_dir", "output_dir", "workers"}
    clashes = sorted(reserved & set(pretrain_options))
    if clashes:
        raise UserInputError(
            f"pretrain_options {clashes}: these are pipeline parameters (or the step's inputs "
            "and outputs) of their own; set them there"
        )
    settings.update(plain(pretrain_options))
    if recipe:
        from mlm.config import PretrainLaunchConfig, changed_settings

        # KFP always passes every parameter: one still at its default was not chosen, so it
        # must not hide the recipe's value.
        settings = {**changed_settings(PretrainLaunchConfig, settings), "recipe": recipe}
    # Before any job: a store the workers cannot use fails here, in seconds, with one line.
    storage.check_store(model.uri)
    # Remote artifact URIs outlive the pod: train there, so a retry finds the checkpoints.
    output_dir = model.uri if "://" in model.uri else model.path
    if launcher == "local":
        from mlm.config import PretrainLaunchConfig
        from mlm.launch.local import run_pretraining

        run_pretraining(
            PretrainLaunchConfig.create(
                shard_dir=shards.path,
                tokenizer_dir=tokenizer.path,
                output_dir=output_dir,
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
            task=task_name,
            image=worker_image,
            job_options={
                "cpu": worker_cpu,
                "memory": worker_memory,
                "node_selector": plain(worker_node_selector),
                "tolerations": plain(worker_tolerations),
                "spot": spot,
                "timeout_s": job_timeout_hours * 3600,
                "env_vars": list(task_config.env or []) if task_config else [],
            },
            **settings,
        )
        output_dir = model.uri

    result = json.loads(storage.read_text(storage.join(output_dir, METRICS_FILE)))
    for key, value in result.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics.log_metric(key, value)
    model.metadata.update({"framework": "keras", "variant": variant, "steps": steps})
