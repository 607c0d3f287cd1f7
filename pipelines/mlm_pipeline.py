"""The `mlm-pretraining` pipeline: fingerprint → tokenize → shard → pretrain → evaluate → export →
finetune → publish.

It only wires the components in `components/` and sets task options; parameter defaults equal
the components' (and so `mlm.config`'s; tests/test_config.py checks both):

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

from components import MLM_IMAGE
from components.cleanup import cleanup
from components.evaluate import evaluate
from components.export import export
from components.finetune import finetune
from components.fingerprint import fingerprint
from components.merge_shards import merge_shards
from components.plan_shards import plan_shards
from components.pretrain import pretrain
from components.publish import publish
from components.shard import shard
from components.tokenize import tokenize
from mlm.config import CompileConfig
from mlm.storage import STORE_ENDPOINT_ENV, STORE_SECRET_ENV, STORE_SECRET_KEYS

PIPELINE_NAME = "mlm-pretraining"
GPU_RESOURCE = "nvidia.com/gpu"
PRETRAIN_RETRIES = 3
PRETRAIN_BACKOFF = "60s"
PRETRAIN_BACKOFF_FACTOR = 2.0
PRETRAIN_MAX_BACKOFF = "600s"


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
    compiles it: every task's image (None: the components' own, `components.MLM_IMAGE`), the
    pretrain pod's GPU node selector and the store wiring of every step."""
    config = config or CompileConfig()
    image = config.image or MLM_IMAGE
    node_selector = (
        tuple(config.gpu_node_selector.split("=", 1)) if config.gpu_node_selector else None
    )

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description=(
            "Pre-train a BERT-style encoder with masked language modelling, evaluate it, export it "
            "and fine-tune a classifier on it (against a random-init baseline)."
        ),
    )
    def mlm_pretraining_pipeline(
        corpus_uri: str = "",
        labels_uri: str = "",
        vocab_size: int = 8000,
        lowercase: bool = True,
        pretrained_tokenizer_uri: str = "",
        max_seq_length: int = 128,
        num_shards: int = 8,
        line_by_line: bool = False,
        shard_partitions: int = 1,
        cache_uri: str = "",
        retrain_tokenizer: bool = False,
        recipe: str = "",
        variant: str = "tiny",
        model_overrides: dict = {},  # noqa: B006 (KFP reads defaults from the signature)
        batch_size: int = 32,
        steps: int = 1000,
        learning_rate: float = 5e-4,
        warmup_ratio: float = 0.1,
        pretrain_options: dict = {},  # noqa: B006
        workers: int = 1,
        gpus_per_worker: int = 0,
        pretrain_pod_gpus: int = 0,
        launcher: str = "local",
        worker_image: str = "",
        worker_cpu: str = "4",
        worker_memory: str = "16Gi",
        worker_node_selector: dict = {},  # noqa: B006
        worker_tolerations: list = [],  # noqa: B006
        spot: bool = False,
        job_timeout_hours: float = 168.0,
        pushgateway_url: str = "",
        eval_batches: int = 0,
        finetune_task: str = "text_classification",
        finetune_validation_uri: str = "",
        finetune_validation_fraction: float = 0.2,
        finetune_max_seq_length: int = 128,
        finetune_batch_size: int = 16,
        finetune_epochs: int = 10,
        finetune_learning_rate: float = 1e-3,
        baseline: bool = True,
        seed: int = 0,
        init_from: str = "",
        model_registry_uri: str = "",
        publish_model_as: str = "",
    ):
        """Pre-trains, evaluates, exports and fine-tunes an MLM encoder.

        Args:
            corpus_uri: Text corpus (file, directory, or gs:// / s3:// / minio:// URI; "" = built-in corpus).
            labels_uri: Labelled CSV/TSV/JSONL (text,label) or CoNLL file for fine-tuning
                ("" = built-in labelled set).
            vocab_size: WordPiece vocabulary size.
            lowercase: Lowercase text before tokenizing.
            pretrained_tokenizer_uri: Use this tokenizer directory instead of training one.
            max_seq_length: Tokens per pre-training example.
            num_shards: TFRecord shards per split (per partition).
            shard_partitions: Shard the corpus's files in this many parallel pods (at most one
                per file), joined by merge-shards; each writes num_shards files per split.
                KFP 2.5 pipelines shard in one pod.
            cache_uri: A lasting location (gs://, s3://, minio:// or a path the pods share) for
                recurring runs over a growing corpus: tokenize keeps its tokenizer there and
                shard one part per input file, so a later run adopts the tokenizer and shards
                only new or changed files ("" = every run starts from scratch).
            retrain_tokenizer: With cache_uri: train a new tokenizer and cache it instead (every
                cached shard part is then made again).
            line_by_line: One padded pre-training example per corpus line (a document, a news
                item) instead of packing lines into full sequences.
            recipe: A named bundle of pre-training settings ("fast", "seed"; "" = none) that
                become the defaults: parameters left at their defaults take the recipe's values,
                parameters changed from them win.
            variant: BERT size ("tiny", "small", "base", "large").
            model_overrides: BERT constructor overrides, e.g. {"num_layers": 2}.
            batch_size: Global pre-training batch size.
            steps: Pre-training optimizer steps.
            learning_rate: Peak pre-training learning rate.
            warmup_ratio: Share of the pre-training steps spent warming up linearly.
            pretrain_options: Any other `mlm pretrain` setting by name, e.g. {"precision":
                "mixed_bfloat16", "mask_ratio": 0.2, "whole_word_masking": true,
                "gradient_clipping": 1.0, "checkpoint_every_steps": 500}; unknown names and bad
                values fail the pretrain step with one line.
            workers: Training workers (local processes or job pods).
            gpus_per_worker: GPUs per worker pod (launcher "trainjob"/"tfjob").
            pretrain_pod_gpus: GPUs for the pretrain pod itself (launcher "local").
            launcher: "local", "trainjob" (Kubeflow Trainer v2) or "tfjob" (Training Operator).
            worker_image: Image of the job's workers ("" = the pipeline's image; its "-gpu" tag
                when gpus_per_worker > 0).
            worker_cpu: CPU request per worker pod (the limit is twice that).
            worker_memory: Memory request and limit per worker pod.
            worker_node_selector: Node labels the worker pods must land on, e.g.
                {"cloud.google.com/gke-accelerator": "nvidia-l4"}.
            worker_tolerations: Extra tolerations of the worker pods, e.g. [{"key": "dedicated",
                "operator": "Equal", "value": "ml", "effect": "NoSchedule"}].
            spot: Run the worker pods on spot (preemptible) nodes.
            job_timeout_hours: Longest the training job may run (its active deadline).
            pushgateway_url: Prometheus Pushgateway for training metrics ("" = off).
            eval_batches: Validation batches to score (0 = the whole split).
            finetune_task: "text_classification", "sentiment_analysis", "ner", ...
            finetune_validation_uri: Held-out labelled file ("" = stratified split of labels_uri).
            finetune_validation_fraction: Share of labels_uri held out when there is no
                validation file.
            finetune_max_seq_length: Tokens per fine-tuning example.
            finetune_batch_size: Fine-tuning batch size.
            finetune_epochs: Most fine-tuning epochs (early stopping on validation loss).
            finetune_learning_rate: Peak fine-tuning learning rate.
            baseline: Also fine-tune a random-init encoder of the same architecture.
            seed: Seed for pre-training, evaluation masks and fine-tuning.
            init_from: Continue pre-training from this model: a pretrain output directory, or
                "registry:NAME" for the newest model published as NAME in model_registry_uri
                (none yet: random weights); "" = random weights. `steps` are added to its step
                count, and evaluate reports the perplexity change against it.
            model_registry_uri: Model registry directory (gs://, s3:// or a path the pods share).
            publish_model_as: Publish this run's model under this name in model_registry_uri at the
                end ("" = do not publish).
        """
        cleanup_task = cleanup(launcher=launcher, run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER)
        cleanup_task.set_display_name("cleanup")
        cleanup_task.set_caching_options(False)
        with dsl.ExitHandler(cleanup_task, name="steps"):
            fingerprint_task = fingerprint(corpus_uri=corpus_uri)
            fingerprint_task.set_display_name("fingerprint")
            # Always fresh: its output is what keys the cache of tokenize and shard.
            fingerprint_task.set_caching_options(False)
            corpus_fingerprint = fingerprint_task.output

            tokenize_task = tokenize(
                corpus_uri=corpus_uri,
                corpus_fingerprint=corpus_fingerprint,
                vocab_size=vocab_size,
                lowercase=lowercase,
                pretrained_tokenizer_uri=pretrained_tokenizer_uri,
                cache_uri=cache_uri,
                retrain_tokenizer=retrain_tokenizer,
            )
            tokenize_task.set_display_name("tokenize")

            shard_options = {
                "corpus_uri": corpus_uri,
                "corpus_fingerprint": corpus_fingerprint,
                "tokenizer": tokenize_task.outputs["tokenizer"],
                "max_seq_length": max_seq_length,
                "num_shards": num_shards,
                "line_by_line": line_by_line,
                "cache_uri": cache_uri,
            }
            if fans_out_sharding(config):
                plan_task = plan_shards(
                    corpus_uri=corpus_uri,
                    corpus_fingerprint=corpus_fingerprint,
                    shard_partitions=shard_partitions,
                )
                plan_task.set_display_name("plan-shards")
                with dsl.ParallelFor(plan_task.output) as partition:
                    partition_task = shard(
                        **shard_options, partition=partition, partitions=shard_partitions
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
                recipe=recipe,
                variant=variant,
                model_overrides=model_overrides,
                batch_size=batch_size,
                steps=steps,
                learning_rate=learning_rate,
                warmup_ratio=warmup_ratio,
                pretrain_options=pretrain_options,
                workers=workers,
                gpus_per_worker=gpus_per_worker,
                launcher=launcher,
                worker_image=worker_image,
                worker_cpu=worker_cpu,
                worker_memory=worker_memory,
                worker_node_selector=worker_node_selector,
                worker_tolerations=worker_tolerations,
                spot=spot,
                job_timeout_hours=job_timeout_hours,
                pushgateway_url=pushgateway_url,
                run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                task_name=dsl.PIPELINE_TASK_NAME_PLACEHOLDER,
                seed=seed,
                init_from=init_from,
                model_registry_uri=model_registry_uri,
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
            pretrain_task.set_accelerator_limit(pretrain_pod_gpus)
            # The limit is a placeholder, not a task input: inside the exit handler's DAG the
            # compiler only passes the parameter down when the task registers it as one it uses.
            pretrain_task.register_pipeline_channels([pretrain_pod_gpus])
            kubernetes.add_toleration(
                pretrain_task, key=GPU_RESOURCE, operator="Exists", effect="NoSchedule"
            )
            if node_selector:
                kubernetes.add_node_selector(pretrain_task, *node_selector)

            evaluate_task = evaluate(
                model=pretrain_task.outputs["model"],
                shards=shard_task.outputs["shards"],
                tokenizer=tokenize_task.outputs["tokenizer"],
                eval_batches=eval_batches,
                seed=seed,
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
                labels_uri=labels_uri,
                task=finetune_task,
                validation_uri=finetune_validation_uri,
                validation_fraction=finetune_validation_fraction,
                max_seq_length=finetune_max_seq_length,
                batch_size=finetune_batch_size,
                epochs=finetune_epochs,
                learning_rate=finetune_learning_rate,
                baseline=baseline,
                seed=seed,
            )
            finetune_task_.set_display_name("finetune")

            publish_task = publish(
                model=pretrain_task.outputs["model"],
                evaluation=evaluate_task.outputs["metrics"],
                tokenizer=tokenize_task.outputs["tokenizer"],
                model_registry_uri=model_registry_uri,
                model_name=publish_model_as,
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

    return mlm_pretraining_pipeline


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
