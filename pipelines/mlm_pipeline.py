"""The `mlm-pretraining` pipeline: fingerprint → tokenize → shard → pretrain → evaluate → export →
finetune → publish.

It only wires the components in `components/` and sets task options. Its parameters
(`PARAMETERS`) take their types, defaults and descriptions from `mlm.config`: every pretrain
setting is one of them, generated with the pretrain component's, and the other steps' settings
are listed by name (tests/test_config.py checks they match the components'):

- fingerprint runs first and is never cached: it digests the corpus listing (names, sizes,
  generations/ETags/mtimes; `mlm.data.fingerprint.corpus_fingerprint`) and passes the digest to
  tokenize and shard as a parameter, so their cache keys (which include parameter values) change
  exactly when the corpus does: a recurring run over a growing corpus location re-tokenizes and
  re-shards, and one over an unchanged corpus reuses the cached artifacts;
- continual pre-training: `init_from` starts pretrain from an earlier model (its weights and step
  count; `steps` are added to it), either a pretrain output directory or "registry:NAME", the
  newest model published as NAME in `model_registry_uri` (random weights while there is none);
  evaluate then also scores that model on the same batches (`perplexity_change`), and the last
  task, publish, registers this run's model as `publish_model_as` (when set), so a recurring run
  with `init_from="registry:NAME"` and `publish_model_as="NAME"` continues from the last one;
- tokenize and shard are cached (same corpus content and options → same artifacts); pretrain
  never is;
- pretrain is retried (`PRETRAIN_RETRIES` times, exponential back-off from `PRETRAIN_BACKOFF`): a
  retried pod re-attaches to the run's training job, or (launcher "local") resumes from the last
  checkpoint at the model artifact's remote URI;
- the steps run inside a `dsl.ExitHandler` whose `cleanup` task deletes the run's training
  jobs (by the run-id label) when the run ends, fails or is terminated;
- the pretrain step runs with the compiled image's name in $MLM_IMAGE, so its TrainJob/TFJob
  workers run the same image (`worker_image` overrides it per run);
- the pretrain pod requests `pretrain_pod_gpus` GPUs (`nvidia.com/gpu`, a runtime parameter) and
  tolerates the `nvidia.com/gpu` taint; with `launcher` "trainjob" or "tfjob" the pod only launches
  and watches the job, whose `workers` pods get `gpus_per_worker` GPUs each;
- a node selector for the GPU node pool cannot be switched by a runtime parameter (a selector on a
  CPU-only run would pin it to GPU nodes), so it is a compile-time option
  (`CompileConfig.gpu_node_selector`);
- every step gets the artifact store from the cluster's Secret (`CompileConfig.store_secret`,
  default `mlpipeline-minio-artifact`): its `accesskey` / `secretkey` as `AWS_ACCESS_KEY_ID` /
  `AWS_SECRET_ACCESS_KEY`, and the Secret's name and the store's endpoint in `MLM_STORE_SECRET` /
  `MLM_STORE_ENDPOINT` (`mlm.storage`), which the pretrain step hands on to its job's workers.

`make_pipeline(config)` builds the pipeline for one `CompileConfig`; `mlm_pretraining_pipeline` is
the one for the defaults without the store wiring, which the local runner (`pipelines/run_local.py`)
runs: there is no Secret to read outside a cluster.

An empty `corpus_uri` or `labels_uri` selects the built-in corpus / labelled set
(`mlm.data.default_corpus`), which the project image carries (Python's standard library).
"""

from kfp import dsl, kubernetes
from kfp.dsl.graph_component import GraphComponent

from mlm.config import CompileConfig
from mlm.storage import STORE_ENDPOINT_ENV, STORE_SECRET_ENV, STORE_SECRET_KEYS
from mlm_components import MLM_IMAGE
from mlm_components.cleanup import cleanup
from mlm_components.evaluate import PARAMETERS as EVALUATE_PARAMETERS
from mlm_components.evaluate import evaluate
from mlm_components.export import export
from mlm_components.finetune import PARAMETERS as FINETUNE_PARAMETERS
from mlm_components.finetune import finetune
from mlm_components.fingerprint import fingerprint
from mlm_components.merge_shards import merge_shards
from mlm_components.parameters import Parameter, StepParameters, merged, pipeline_function
from mlm_components.plan_shards import plan_shards
from mlm_components.pretrain import PARAMETERS as PRETRAIN_COMPONENT_PARAMETERS
from mlm_components.pretrain import pretrain
from mlm_components.publish import publish
from mlm_components.shard import PARAMETERS as SHARD_PARAMETERS
from mlm_components.shard import shard
from mlm_components.tokenize import PARAMETERS as TOKENIZE_PARAMETERS
from mlm_components.tokenize import tokenize

PIPELINE_NAME = "mlm-pretraining"
GPU_RESOURCE = "nvidia.com/gpu"
PRETRAIN_RETRIES = 3
PRETRAIN_BACKOFF = "60s"
PRETRAIN_BACKOFF_FACTOR = 2.0
PRETRAIN_MAX_BACKOFF = "600s"


DESCRIPTION = (
    "Pre-train a BERT-style encoder with masked language modelling, evaluate it, export it and "
    "fine-tune a classifier on it (against a random-init baseline)."
)
SUMMARY = "Pre-trains, evaluates, exports and fine-tunes an MLM encoder."


# How each step's component parameters appear in the pipeline: the data steps' and pretrain's
# under their own names, evaluate's and finetune's prefixed (their batch size is not
# pretrain's), one `seed` for all. A name steps share (`seed`; `layout`, `cache_uri`, ... of
# tokenize and shard) is one parameter that feeds each.
TOKENIZE = StepParameters(TOKENIZE_PARAMETERS)
SHARD = StepParameters(SHARD_PARAMETERS, fixed=("partition", "partitions"))
# The run id and the task name are KFP's placeholders, not the user's.
PRETRAIN = StepParameters(PRETRAIN_COMPONENT_PARAMETERS, fixed=("run_id", "task_name"))
EVALUATE = StepParameters(
    EVALUATE_PARAMETERS, prefix="eval_", names={"eval_batches": "eval_batches", "seed": "seed"}
)
FINETUNE = StepParameters(
    FINETUNE_PARAMETERS, prefix="finetune_", names={"baseline": "baseline", "seed": "seed"}
)
(SHARD_PARTITIONS,) = (p for p in SHARD_PARAMETERS if p.name == "partitions")
# Every pretrain setting is a pipeline parameter of its own name.
PRETRAIN_PARAMETERS = PRETRAIN.exposed()
# The pipeline's parameters, in the order of its docstring. KFP's compiled spec lists them by name.
PARAMETERS = merged(
    [
        Parameter(
            "corpus_uri", str, "",
            'text corpus (file, directory, or gs:// / s3:// / minio:// URI; "" = built-in '
            "corpus)",
        ),
        Parameter(
            "labels_uri", str, "",
            'labelled CSV/TSV/JSONL (text,label) or CoNLL file for fine-tuning ("" = built-in '
            "labelled set)",
        ),
    ],
    TOKENIZE.exposed(),
    SHARD.exposed(),
    [
        Parameter(
            "shard_partitions", int, SHARD_PARTITIONS.default,
            "shard the corpus's files in this many parallel pods (at most one per file), joined "
            "by merge-shards; each writes num_shards files per split (KFP 2.5 pipelines shard "
            "in one pod)",
            "partitions",
        )
    ],
    PRETRAIN_PARAMETERS,
    [
        Parameter(
            "pretrain_pod_gpus", int, 0,
            'GPUs of the pretrain pod itself (launcher "local"; a cluster launcher\'s workers '
            "get gpus_per_worker)",
        )
    ],
    EVALUATE.exposed(),
    FINETUNE.exposed(),
    [
        Parameter(
            "publish_model_as", str, "",
            'publish this run\'s model under this name in model_registry_uri at the end ("" = '
            "do not publish)",
        )
    ],
)  # fmt: skip


def _wire_store(task: dsl.PipelineTask, config: CompileConfig) -> None:
    """Gives `task` the artifact store of `config` (see the module docstring)."""
    if config.store_secret:
        # An optional Secret lets a pod without it start, and the step's store check name the
        # Secret in one line, where a required one would leave the pod waiting in
        # CreateContainerConfigError. KFP 2.5's SecretAsEnv has no `optional` (kfp-kubernetes
        # 1.5.0), so there the Secret is required.
        optional = {} if config.kfp_version == "2.5" else {"optional": True}
        kubernetes.use_secret_as_env(
            task,
            secret_name=config.store_secret,
            secret_key_to_env=dict(STORE_SECRET_KEYS),
            **optional,
        )
        task.set_env_variable(STORE_SECRET_ENV, config.store_secret)
    endpoint = config.store_endpoint_url()
    if endpoint:
        task.set_env_variable(STORE_ENDPOINT_ENV, endpoint)


def fans_out_sharding(config: CompileConfig) -> bool:
    """Whether the YAML shards in parallel pods (one per partition) joined by merge-shards.

    The join takes the partitions' artifacts with `dsl.Collected`, which the backend's driver
    resolves from KFP 2.14.0 on (kubeflow/pipelines commit ed828b513a, "enable dsl.Collected for
    parameters & artifacts", backend/src/v2/driver/driver.go; in tag 2.15.0, not in 2.5.0; the
    backend's own test pipeline is test_data/sdk_compiled_pipelines/valid/collected_artifacts.py
    at 2.15.0). KFP 2.5's YAML shards in one pod.
    """
    return config.kfp_version != "2.5"


def make_pipeline(config: CompileConfig | None = None) -> GraphComponent:
    """The `mlm-pretraining` pipeline as `config` (a `CompileConfig`; default: its defaults)
    compiles it: every task's image (None: the components' own, `mlm_components.MLM_IMAGE`), the
    pretrain pod's GPU node selector and the store wiring of every step."""
    config = config or CompileConfig()
    image = config.image or MLM_IMAGE
    node_selector = (
        tuple(config.gpu_node_selector.split("=", 1)) if config.gpu_node_selector else None
    )

    def mlm_pretraining_pipeline(values: dict) -> None:
        """The DAG, given the pipeline's parameters (`PARAMETERS`) by name."""
        cleanup_task = cleanup(launcher=values["launcher"], run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
        cleanup_task.set_display_name("cleanup")
        cleanup_task.set_caching_options(False)
        with dsl.ExitHandler(cleanup_task, name="steps"):
            fingerprint_task = fingerprint(corpus_uri=values["corpus_uri"])
            fingerprint_task.set_display_name("fingerprint")
            # Always fresh: its output is what keys the cache of tokenize and shard.
            fingerprint_task.set_caching_options(False)
            corpus_fingerprint = fingerprint_task.output

            tokenize_task = tokenize(
                corpus_uri=values["corpus_uri"],
                corpus_fingerprint=corpus_fingerprint,
                **TOKENIZE.arguments(values),
            )
            tokenize_task.set_display_name("tokenize")

            shard_options = {
                "corpus_uri": values["corpus_uri"],
                "corpus_fingerprint": corpus_fingerprint,
                "tokenizer": tokenize_task.outputs["tokenizer"],
                **SHARD.arguments(values),
            }
            if fans_out_sharding(config):
                plan_task = plan_shards(
                    corpus_uri=values["corpus_uri"],
                    corpus_fingerprint=corpus_fingerprint,
                    shard_partitions=values["shard_partitions"],
                )
                plan_task.set_display_name("plan-shards")
                with dsl.ParallelFor(plan_task.output) as partition:
                    partition_task = shard(
                        **shard_options, partition=partition, partitions=values["shard_partitions"]
                    )
                    partition_task.set_display_name("shard")
                shard_task = merge_shards(parts=dsl.Collected(partition_task.outputs["shards"]))
                shard_task.set_display_name("merge-shards")
                sharding = (plan_task, partition_task, shard_task)
            else:
                shard_task = shard(**shard_options)
                shard_task.set_display_name("shard")
                sharding = (shard_task,)

            pretrain_task = pretrain(
                shards=shard_task.outputs["shards"],
                tokenizer=tokenize_task.outputs["tokenizer"],
                **PRETRAIN.arguments(values),
                run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                task_name=dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
            )
            pretrain_task.set_display_name("pretrain")
            # A new model every run: a cached pretrain would silently reuse an old one.
            pretrain_task.set_caching_options(False)
            pretrain_task.set_retry(
                num_retries=PRETRAIN_RETRIES,
                backoff_duration=PRETRAIN_BACKOFF,
                backoff_factor=PRETRAIN_BACKOFF_FACTOR,
                backoff_max_duration=PRETRAIN_MAX_BACKOFF,
            )
            # The workers run the image this step runs (one image setting for the whole pipeline).
            pretrain_task.set_env_variable("MLM_IMAGE", image)
            pretrain_task.set_accelerator_type(GPU_RESOURCE)
            pretrain_task.set_accelerator_limit(values["pretrain_pod_gpus"])
            # The limit is a placeholder, not a task input: inside the exit handler's DAG the
            # compiler only passes the parameter down when the task registers it as one it uses.
            pretrain_task.register_pipeline_channels([values["pretrain_pod_gpus"]])
            kubernetes.add_toleration(
                pretrain_task, key=GPU_RESOURCE, operator="Exists", effect="NoSchedule"
            )
            if node_selector:
                kubernetes.add_node_selector(pretrain_task, *node_selector)

            evaluate_task = evaluate(
                model=pretrain_task.outputs["model"],
                shards=shard_task.outputs["shards"],
                tokenizer=tokenize_task.outputs["tokenizer"],
                **EVALUATE.arguments(values),
            )
            evaluate_task.set_display_name("evaluate")

            export_task = export(
                model=pretrain_task.outputs["model"],
                tokenizer=tokenize_task.outputs["tokenizer"],
                evaluation=evaluate_task.outputs["metrics"],
            )
            export_task.set_display_name("export")

            finetune_task_ = finetune(
                encoder=export_task.outputs["encoder"],
                labels_uri=values["labels_uri"],
                **FINETUNE.arguments(values),
            )
            finetune_task_.set_display_name("finetune")

            publish_task = publish(
                model=pretrain_task.outputs["model"],
                evaluation=evaluate_task.outputs["metrics"],
                tokenizer=tokenize_task.outputs["tokenizer"],
                model_registry_uri=values["model_registry_uri"],
                model_name=values["publish_model_as"],
                run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            )
            publish_task.set_display_name("publish")
            # Last, so only a run that completed every step becomes the one the next run continues from.
            publish_task.after(finetune_task_)
            publish_task.set_caching_options(False)

            steps = (
                fingerprint_task,
                tokenize_task,
                *sharding,
                pretrain_task,
                evaluate_task,
                export_task,
                finetune_task_,
                publish_task,
            )
            for task in steps:
                _wire_store(task, config)
        if config.image:
            for task in (cleanup_task, *steps):
                task.set_container_image(config.image)

    return dsl.pipeline(name=PIPELINE_NAME, description=DESCRIPTION)(
        pipeline_function(mlm_pretraining_pipeline, PARAMETERS, SUMMARY)
    )


# The pipeline without store wiring, for the local runner and for reading its signature.
mlm_pretraining_pipeline = make_pipeline(CompileConfig(store_secret=""))

# The fan-out's group in the exit handler's DAG: a "shard" task per partition (the compiler
# names a ParallelFor "for-loop-<n>").
SHARD_FAN_OUT = "for-loop-2"


def task_order(config: CompileConfig | None = None) -> tuple[str, ...]:
    """The tasks of the exit handler's DAG (`EXIT_HANDLER`) in an order they can run in, for the
    YAML `config` compiles (plan-shards and tokenize run side by side; `CLEANUP_TASK` is the
    exit task)."""
    sharding = (
        ("plan-shards", SHARD_FAN_OUT, "merge-shards")
        if fans_out_sharding(config or CompileConfig())
        else ("shard",)
    )
    return (
        "fingerprint",
        "tokenize",
        *sharding,
        "pretrain",
        "evaluate",
        "export",
        "finetune",
        "publish",
    )


# The steps whose outputs a (local) run leaves, in order; "merge-shards" holds the shards.
TASK_ORDER = tuple(task for task in task_order() if task not in ("plan-shards", SHARD_FAN_OUT))
EXIT_HANDLER = "exit-handler-1"
CLEANUP_TASK = "cleanup"
