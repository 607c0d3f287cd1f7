"""KFP component: pre-train the masked language model (in this pod, or as a Kubernetes job).

Its parameters are the settings of `mlm.config.PretrainLaunchConfig` (training, the model and
masking groups, and where the workers run: `JobConfig`), generated from the config: a new
setting there is a parameter here, with its default and help, without an edit.
"""

from kfp import dsl

from mlm.config import PretrainLaunchConfig
from mlm_components.parameters import settings_parameters, step_component

# Every optional pretrain setting is a parameter; the step's inputs and outputs are artifacts.
PARAMETERS = settings_parameters(PretrainLaunchConfig)
INPUTS = {
    "shards": "Input[Dataset]",
    "tokenizer": "Input[Artifact]",
    "model": "Output[Model]",
    "metrics": "Output[Metrics]",
    "task_config": "dsl.TaskConfig",
}
SUMMARY = """Pre-trains a BERT with the MLM objective on the `shards` artifact (`mlm pretrain`).

`recipe` (default `fast`; `seed` or "": the class defaults) names a bundle of settings that become
the defaults (`mlm.config.RECIPES`; the parameters' defaults are `fast`'s): a parameter left at
its default then takes the recipe's value, a parameter changed from its default wins
(`model_overrides` merge key by key). `launcher` "local" trains in this pod (`workers` local
processes); "trainjob" (Kubeflow Trainer v2) or "tfjob" (Training Operator) runs `workers` pods and
waits for them (`mlm.launch.kubernetes.launch_pretraining`), labelled with `run_id` and `task_name`
and named after them (a retry re-attaches to the job), with the artifact store the pipeline gave
this step and this task's environment (`task_config.env`, KFP's task-config passthrough; KFP 2.5
has none, and its YAML leaves the input out, so `task_config` is then empty). A bad value fails the
step with one line. The model artifact holds the pretrain output directory (`mlm_model.keras`,
`encoder.keras`, `metrics.json`, `history.json`, `checkpoints/`, ...); training writes straight to
the artifact's URI when it is remote (gs://, s3://, minio://), so the checkpoints outlive this pod
and a retried step resumes from the last one."""


pretrain = step_component(
    "pretrain",
    inputs=INPUTS,
    parameters=PARAMETERS,
    summary=SUMMARY,
    module=__name__,
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
