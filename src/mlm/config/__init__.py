"""The settings of every step, declared once: name, type, default, checks and help text.

The `mlm <step>` flags and `--config FILE.yaml` (`mlm.config.argv`), the step functions
(`mlm.steps`), the pretrain workers' argv and, checked by a test, the KFP components' parameter
defaults all come from these classes. Inputs and outputs (URIs) are required settings too, so a
`--config` file can hold a whole run.

Python:

    from mlm.config import PretrainConfig
    config = PretrainConfig.create(shard_dir="runs/shards", tokenizer_dir="runs/tokenizer",
                                   output_dir="runs/pretrain", steps=100, mask_ratio=0.2)
    config.masking.mask_ratio  # 0.2; groups: config.model, config.masking

YAML (`mlm pretrain --config run.yaml --steps 200`: the flag wins):

    shard_dir: runs/shards
    tokenizer_dir: runs/tokenizer
    output_dir: runs/pretrain
    steps: 100
    model: {variant: small, model_overrides: {num_layers: 4}}
    masking: {mask_ratio: 0.2, whole_word_masking: true}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from mlm.config.argv import add_arguments, from_args, from_argv, to_argv
from mlm.config.base import (
    RECIPE_SETTING,
    Config,
    Field,
    dataclass,
    from_kfp,
    group,
    merge,
    nest,
    setting,
)
from mlm.config.data import INPUT_WINDOW_FILES, MergeShardsConfig, ShardConfig, TokenizeConfig

__all__ = [
    "DEFAULT_RECIPE",
    "RECIPES",
    "CompileConfig",
    "Config",
    "EvaluateConfig",
    "ExportConfig",
    "Field",
    "FinetuneConfig",
    "JobConfig",
    "MaskingConfig",
    "MergeShardsConfig",
    "ModelConfig",
    "PretrainConfig",
    "PretrainLaunchConfig",
    "ShardConfig",
    "TokenizeConfig",
    "add_arguments",
    "changed_settings",
    "from_args",
    "from_argv",
    "from_kfp",
    "group",
    "recipe_settings",
    "setting",
    "to_argv",
]

VARIANTS = ("tiny", "small", "base", "large")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
SCHEDULES = ("cosine_decay", "polynomial_decay", "constant")
OPTIMIZERS = ("adamw", "adam", "lamb", "sgd")
POOLINGS = ("cls", "pooled", "mean")
TOKEN_EMBEDDING_INITS = ("random", "cooccurrence")
SPLITS = ("validation", "train")


# --- pretrain -----------------------------------------------------------------------------------


@dataclass
class ModelConfig(Config):
    """The BERT encoder and the masked-LM output layer."""

    variant: str = setting("tiny", "BERT size", choices=VARIANTS)
    model_overrides: dict | None = setting(
        None, 'BERT arguments that replace the variant\'s, as JSON, e.g. {"num_layers": 2}'
    )
    tie_word_embeddings: bool = setting(
        False, "share the output projection with the token embedding"
    )
    token_embedding_init: str = setting(
        "random",
        "initial token embeddings of a new model: random (the variant's initializer) or "
        "cooccurrence (PPMI-SVD word vectors of the training shards, computed before training; "
        "a model from init_from keeps its own)",
        choices=TOKEN_EMBEDDING_INITS,
    )


@dataclass
class MaskingConfig(Config):
    """Which tokens the model learns to predict, and how they are corrupted."""

    mask_ratio: float = setting(
        0.15, "fraction of tokens selected for prediction", above=0, below=1
    )
    random_token_ratio: float = setting(
        0.1, "share of the selected tokens replaced by a random token", at_least=0, below=1
    )
    unchanged_ratio: float = setting(
        0.1, "share of the selected tokens left unchanged", at_least=0, below=1
    )
    whole_word_masking: bool = setting(
        False, 'select whole words (all "##" pieces of a word together)'
    )
    max_predictions_per_seq: int | None = setting(
        None, "fixed number of predictions per sequence, for static shapes (0: dynamic)"
    )

    def check(self) -> str | None:
        if self.random_token_ratio + self.unchanged_ratio > 1:
            return (
                f"random_token_ratio={self.random_token_ratio} + unchanged_ratio="
                f"{self.unchanged_ratio}: their sum must be at most 1"
            )
        if self.max_predictions_per_seq is not None and self.max_predictions_per_seq < 1:
            return f"max_predictions_per_seq={self.max_predictions_per_seq}: must be at least 1"
        return None


# Named pre-training recipes: `PretrainConfig` settings by name (groups flattened, as the step
# functions take them). "seed" is the class defaults (the settings of the seed README). "fast",
# the default (DEFAULT_RECIPE), learns more per second on a small corpus and a small model
# (after Izsak et al., 2021, Geiping & Goldstein, 2022, Wettig et al., 2023, and MosaicBERT,
# Portes et al., 2023), chosen on bench/bench_quality.py: ALiBi attention
# biases instead of learned positions (learned positions left the loss near the unigram plateau
# for ~2,400 steps), pre-norm blocks, output projection tied to the token embedding, no dropout
# while pre-training, 40% of the tokens masked (more predictions per step), peak learning rate
# 2e-3 (at 5e-3 ALiBi training stalls) with a short warm-up and linear decay to zero, and token
# embeddings that start from the shards' co-occurrence counts (PPMI-SVD vectors: at 250 labelled
# rows per class +5.8 and +5.4 accuracy points over random init in the benchmark's last two runs,
# where random initial embeddings gave +3.2).
RECIPES: dict[str, dict] = {
    "seed": {},
    "fast": {
        "tie_word_embeddings": True,
        "token_embedding_init": "cooccurrence",
        "model_overrides": {
            "norm_first": True,
            "position_embedding_type": "alibi",
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
        },
        "mask_ratio": 0.4,
        "learning_rate": 2e-3,
        "warmup_ratio": 0.06,
        "schedule": "polynomial_decay",
    },
}
# What `mlm pretrain`, the pipeline and `make run` train with when no recipe is named: the recipe
# `make bench-quality` measures (AG News and CoNLL-2003 gains, validation loss against Hugging
# Face's recipe) and `make run`'s demo gains with.
DEFAULT_RECIPE = "fast"


@dataclass
class PretrainConfig(Config):
    """`mlm pretrain`: one (possibly multi-worker) masked-LM pre-training run."""

    shard_dir: str = setting(help="shard directory (from `mlm shard`)", flag="--shards")
    tokenizer_dir: str = setting(
        help="tokenizer directory the shards were made with", flag="--tokenizer"
    )
    output_dir: str = setting(help="output directory (local or object store)", flag="--output")
    recipe: str | None = setting(
        DEFAULT_RECIPE,
        "a named recipe whose settings become the defaults (settings given explicitly win; "
        "model_overrides merge key by key; the defaults shown are fast's): fast (ALiBi, "
        "pre-norm, no dropout, co-occurrence token embeddings, 40% masking, peak learning rate "
        "2e-3) trains small encoders from scratch; seed is the class defaults of the seed "
        "README (learned positions, 15% masking, 5e-4), e.g. to continue a model trained with "
        "them; with a Hugging Face checkpoint in init_from also set a lower learning_rate",
        choices=tuple(RECIPES),
    )
    model: ModelConfig = group(ModelConfig, "the encoder")
    masking: MaskingConfig = group(MaskingConfig, "the masked-LM objective")
    batch_size: int = setting(
        32, "global batch size, split over all replicas of all workers", at_least=1
    )
    steps: int = setting(
        1000,
        "training steps of this run (with init_from: added to the initial model's step count; "
        "a resumed run trains the remainder)",
        at_least=1,
    )
    init_from: str | None = setting(
        None,
        "start from this model's weights and step count: a pretrain output directory, "
        "registry:NAME for the newest model published as NAME in model_registry_uri (none "
        "published yet, or not set: random weights), or a Hugging Face BERT checkpoint "
        "directory (config.json + model.safetensors; its architecture replaces variant and "
        "model_overrides; tokenize with its vocab.txt)",
    )
    model_registry_uri: str | None = setting(
        None, "model registry directory that init_from=registry:NAME reads (local, gs://, s3://)"
    )
    learning_rate: float = setting(5e-4, "peak learning rate", above=0)
    warmup_ratio: float = setting(
        0.1, "share of the steps spent warming up linearly to the peak", at_least=0, below=1
    )
    schedule: str = setting("cosine_decay", "learning-rate decay after warm-up", choices=SCHEDULES)
    optimizer: str = setting("adamw", "optimizer", choices=OPTIMIZERS)
    weight_decay: float = setting(
        0.01, "decoupled weight decay of AdamW/LAMB (not of LayerNorm and biases)", at_least=0
    )
    gradient_clipping: float | None = setting(
        1.0, "clip gradients to this global norm (0: no clipping)", at_least=0
    )
    gradient_accumulation_steps: int = setting(
        1, "apply the optimizer every this many batches (one replica only)", at_least=1
    )
    precision: str = setting(
        "float32", "mixed_float16 adds dynamic loss scaling", choices=PRECISIONS
    )
    jit_compile: bool = setting(
        False,
        "XLA-compile the training step. Off by default: on CPU the graph step is as fast in "
        "float32 and faster in bfloat16, whose matmuls XLA's CPU backend computes in float32 "
        "(docs/performance.md). With it, set "
        "--max-predictions-per-seq: with a dynamic prediction count XLA computes the MLM head "
        "at every position",
    )
    checkpoint_every_steps: int | None = setting(
        1000, "save a checkpoint every this many steps (0: not by steps)", at_least=0
    )
    checkpoint_every_minutes: float | None = setting(
        15.0, "also save one when this many minutes passed (0: not by time)", above=0
    )
    keep_checkpoints: int = setting(3, "how many recent checkpoints to keep", at_least=1)
    log_every_steps: int | None = setting(
        None, "report progress every this many steps (0: about 20 reports)", at_least=0
    )
    validation_batches: int = setting(
        20,
        "validation batches evaluated at the end of training (0: none)",
        at_least=0,
    )
    input_window_files: int = setting(
        INPUT_WINDOW_FILES,
        "object-store shards: files each worker keeps on local disk, fetched ahead of their "
        "reading and deleted once read, so the disk needed does not grow with the corpus (0: "
        "copy every shard before the first step)",
        at_least=0,
    )
    pushgateway_url: str | None = setting(
        None,
        "Prometheus Pushgateway to push metrics to (none: $MLM_PUSHGATEWAY_URL, if set)",
        aliases=("--pushgateway",),
    )
    run_id: str | None = setting(None, "grouping key of the pushed metrics (none: a unique id)")
    seed: int = setting(0, "seed of weight initialisation, data order and masking")
    quiet: bool = setting(False, "print only the start, checkpoint and final lines")

    def warmup_steps(self) -> int:
        """Linear warm-up steps: `warmup_ratio` of `steps`."""
        return int(self.warmup_ratio * self.steps)

    @classmethod
    def default_recipe_settings(cls) -> dict[str, Any]:
        return recipe_settings(DEFAULT_RECIPE)

    @classmethod
    def with_recipe(cls, nested: Mapping[str, Any]) -> dict[str, Any]:
        name = nested.get(RECIPE_SETTING, DEFAULT_RECIPE)
        if not name:  # None, or "" as KFP writes "not set": the class defaults
            return dict(nested)
        preset = nest(cls, recipe_settings(name), f"recipe {name}")
        merged = merge(cls, preset, nested)  # new dicts at every group level
        recipe_overrides = preset.get("model", {}).get("model_overrides")
        given_overrides = nested.get("model", {}).get("model_overrides")
        if recipe_overrides and isinstance(given_overrides, Mapping):
            # Explicit overrides replace the recipe's key by key, not as a whole.
            merged["model"]["model_overrides"] = {**recipe_overrides, **given_overrides}
        return merged

    def total_steps(self, initial_step: int) -> int:
        """The step count training stops at, starting from a model trained `initial_step`
        steps (0: random weights)."""
        return initial_step + self.steps


LAUNCHERS = ("local", "trainjob", "tfjob")


@dataclass
class JobConfig(Config):
    """Where the pretrain workers run: this machine, or the pods of a Kubernetes training job
    (`mlm.launch.kubernetes`). The worker_* settings, spot and the timeout shape the job's pods;
    the local launcher does not use them."""

    launcher: str = setting(
        "local",
        '"local": this machine (workers local processes); "trainjob": a Kubeflow Trainer v2 '
        'TrainJob; "tfjob": a Training Operator TFJob (workers pods)',
        choices=LAUNCHERS,
    )
    gpus_per_worker: int = setting(0, "GPUs per worker pod", at_least=0)
    worker_image: str | None = setting(
        None,
        "image of the job's workers (none: $MLM_IMAGE, else this version's image; its -gpu "
        "variant when gpus_per_worker > 0)",
    )
    worker_cpu: str = setting("4", "CPU request per worker pod (the limit is twice that)")
    worker_memory: str = setting("16Gi", "memory request and limit per worker pod")
    worker_node_selector: dict | None = setting(
        None,
        'node labels the worker pods must land on, e.g. {"cloud.google.com/gke-accelerator": '
        '"nvidia-l4"}',
    )
    worker_tolerations: list[dict] | None = setting(
        None,
        'extra tolerations of the worker pods, e.g. [{"key": "dedicated", "operator": "Equal", '
        '"value": "ml", "effect": "NoSchedule"}]',
    )
    spot: bool = setting(False, "run the worker pods on spot (preemptible) nodes")
    job_timeout_hours: float = setting(
        168.0, "longest the training job may run (its active deadline)", above=0
    )
    namespace: str | None = setting(
        None,
        "namespace of the job (none: this pod's namespace, else the kubeconfig context's, else "
        "default)",
    )
    task_name: str = setting(
        "pretrain",
        "the job's task: a label and part of its name, so a retried pipeline task re-attaches to "
        "its job (the pipeline passes its task name)",
    )


@dataclass
class PretrainLaunchConfig(PretrainConfig):
    """`mlm pretrain` as a user starts it: a `PretrainConfig`, how many workers run it and
    where (`JobConfig`). `mlm.launch.pretrain` runs it."""

    workers: int = setting(
        1,
        "workers wired by TF_CONFIG: local processes (1: train in this process), or the job's pods",
        at_least=1,
    )
    worker_timeout: float | None = setting(
        None, "with --workers above 1, seconds the whole run may take (0: no limit)", above=0
    )
    job: JobConfig = group(JobConfig, "where the workers run")

    def pretrain_config(self) -> PretrainConfig:
        """The settings of the training itself (what each worker runs)."""
        names = {spec.name for spec in dataclasses.fields(PretrainConfig)}
        return PretrainConfig(**{name: getattr(self, name) for name in names})


def changed_settings(config_class: type[Config], values: Mapping[str, Any]) -> dict[str, Any]:
    """The `values` (flat settings, as KFP passes them) that differ from the class's defaults,
    written as KFP writes them (None as the empty value): what a user changed in the UI."""
    defaults = {field.name: field.kfp_default for field in config_class.fields()}
    return {
        key: value for key, value in values.items() if key not in defaults or value != defaults[key]
    }


def recipe_settings(name: str) -> dict:
    """The `PretrainConfig` settings of a named recipe (a copy), e.g. `pretrain(..., **it)`."""
    from mlm.errors import UserInputError

    if name not in RECIPES:
        raise UserInputError(f"recipe={name!r}: unknown recipe; use one of {', '.join(RECIPES)}")
    return {
        key: dict(value) if isinstance(value, dict) else value
        for key, value in RECIPES[name].items()
    }


# --- evaluate, export, finetune -----------------------------------------------------------------


@dataclass
class EvaluateConfig(Config):
    """`mlm evaluate`: masked-LM perplexity and accuracy of a pre-trained model on shards."""

    model_dir: str = setting(
        help="pretrain output directory (with mlm_model.keras)", flag="--model"
    )
    shard_dir: str = setting(help="shard directory (same tokenizer)", flag="--shards")
    tokenizer_dir: str = setting(help="tokenizer directory", flag="--tokenizer")
    output_dir: str = setting(help="where metrics.json and report.md go", flag="--output")
    split: str = setting("validation", "the shard split to score", choices=SPLITS)
    batch_size: int = setting(32, "sequences per batch", at_least=1)
    eval_batches: int | None = setting(
        None,
        "batches to score (0: the whole split)",
        aliases=("--num-batches",),
        at_least=0,
    )
    seed: int = setting(0, "mask seed: batch i is masked with [seed, i]")
    mask_ratio: float = setting(
        0.15,
        "share of the tokens masked when scoring, whatever the model trained with (BERT's 15%: "
        "models trained with other ratios, e.g. the fast recipe's 40%, compare on one scale)",
        above=0,
        below=1,
    )
    num_samples: int = setting(4, "sequences shown in the report's predictions", at_least=0)
    previous_model: str | None = setting(
        None,
        "also score this earlier pretrain output directory on the same batches and masks, and "
        "report previous_perplexity and perplexity_change",
    )


@dataclass
class ExportConfig(Config):
    """`mlm export`: the encoder alone (.keras, SavedModel, tokenizer, model card)."""

    model_dir: str = setting(help="pretrain output directory (with encoder.keras)", flag="--model")
    tokenizer_dir: str = setting(
        help="tokenizer directory the model was trained with", flag="--tokenizer"
    )
    output_dir: str = setting(help="export directory (replaced as a whole)", flag="--output")
    evaluation_dir: str | None = setting(
        None,
        "`mlm evaluate` output directory whose metrics go on the model card",
        flag="--evaluation",
    )


@dataclass
class FinetuneConfig(Config):
    """`mlm finetune`: a classifier on an exported encoder, scored on held-out data."""

    encoder_dir: str = setting(help="`mlm export` directory", flag="--encoder")
    data: str = setting(help="labelled CSV/TSV/JSONL file, or CoNLL/IOB file for token tasks")
    output_dir: str = setting(help="output directory (replaced as a whole)", flag="--output")
    task: str = setting(
        "text_classification", "an NLPTaskType: text_classification, sentiment_analysis, ner, ..."
    )
    validation_data: str | None = setting(
        None, "held-out file in the same format (none: split --data)"
    )
    test_data: str | None = setting(
        None,
        "file in the same format scored after training instead of the held-out data, which then "
        "only decides early stopping (none: score the held-out data)",
    )
    text_column: str = setting("text", "text column of CSV/TSV/JSONL")
    label_column: str = setting("label", "label column of CSV/TSV/JSONL")
    validation_fraction: float = setting(
        0.2,
        "share held out when there is no --validation-data (stratified by label)",
        above=0,
        below=1,
    )
    max_seq_length: int = setting(128, "tokens per example; longer texts are cut", at_least=3)
    batch_size: int = setting(16, "examples per step", at_least=1)
    epochs: int = setting(
        10, "most passes over the data (early stopping may end sooner)", at_least=1
    )
    learning_rate: float = setting(1e-3, "peak learning rate (linear decay to 0)", above=0)
    warmup_ratio: float = setting(
        0.1, "share of the steps spent warming up linearly to the peak", at_least=0, below=1
    )
    weight_decay: float = setting(
        0.01, "AdamW weight decay (not of biases and LayerNorm)", at_least=0
    )
    patience: int = setting(
        3, "epochs without a lower validation loss before stopping (best weights kept)", at_least=1
    )
    layer_decay: float = setting(
        1.0,
        "layer-wise learning-rate decay: the head trains at --learning-rate, the top encoder "
        "block at this factor of it, each block below one more factor (1: one rate for all)",
        above=0,
    )
    head_only_epochs: int = setting(
        10,
        "epochs that train only the head on the frozen encoder before --epochs of training "
        "everything (linear probing, then fine-tuning: the head starts from what the encoder "
        "knows; 0: train everything from the start). With 10, the procedure make "
        "bench-quality's dev splits rank best over AG News and CoNLL-2003",
        at_least=0,
    )
    head_only_learning_rate: float = setting(
        3e-3,
        "peak learning rate of the head-only epochs (linear decay to 0). A head on frozen "
        "features takes a higher rate than the encoder: at 1e-3, ten epochs on 200 CoNLL-2003 "
        "sentences left a tagging head near all-O; on make bench-quality's dev splits 3e-3 "
        "gained 6 entity-F1 points there, lost 2 at 2,000 sentences",
        above=0,
    )
    dropout_rate: float = setting(0.1, "dropout in the head", at_least=0, below=1)
    pooling: str = setting(
        "mean",
        "sequence tasks: how the head pools the tokens (mean: the average of the final hidden "
        "states, what make bench-quality measured; cls: the [CLS] vector; pooled: [CLS] through "
        "the pre-trained pooler)",
        choices=POOLINGS,
    )
    baseline: bool = setting(
        True, "also train the same architecture from random initialisation (--no-baseline: skip)"
    )
    seed: int = setting(0, "seed of the split, the initialisation and the batch order")

    def check(self) -> str | None:
        if self.layer_decay > 1:
            return f"layer_decay={self.layer_decay}: must be at most 1 (1: one rate for all)"
        return None


# --- the compiled pipeline ----------------------------------------------------------------------

# The KFP backends the compiled YAML is made for, and the Kubeflow releases that ship them
# (kubeflow/manifests README at v1.10.2, v1.11.0, v26.03.0). tests/conformance/
# test_pipeline_spec.py parses the YAML with each backend's own pipeline-spec release.
KFP_BACKENDS = ("2.5", "2.15", "2.16")
# The Secret with the artifact store's keys (`accesskey`, `secretkey`) that a Kubeflow install puts
# in `kubeflow` and in every profile namespace (kubeflow/pipelines, manifests/kustomize/base/
# installs/multi-user/pipelines-profile-controller/sync.py at 2.5.0 and 2.15.0).
KFP_STORE_SECRET = "mlpipeline-minio-artifact"
# The store's in-cluster S3 endpoint per backend: MinIO behind `minio-service` on 9000 with KFP
# 2.5 (third-party/minio); SeaweedFS's S3 port 8333 from 2.15 on (third-party/seaweedfs: in
# 2.15 `minio-service:9000` forwards to it; Kubeflow 26.03 has no `minio-service`).
KFP_STORE_ENDPOINTS = {
    "2.5": "http://minio-service.kubeflow:9000",
    "2.15": "http://seaweedfs.kubeflow:8333",
    "2.16": "http://seaweedfs.kubeflow:8333",
}


@dataclass
class CompileConfig(Config):
    """`mlm pipeline compile`: the pipeline's IR YAML for one KFP backend."""

    output: str = setting("pipelines/mlm_pretraining_pipeline.yaml", "YAML path to write")
    image: str | None = setting(
        None,
        "container image of every step and of the training job's workers (default: $MLM_IMAGE, "
        "else the image of this version)",
    )
    gpu_node_selector: str | None = setting(
        None,
        "KEY=VALUE node selector of the pretrain pod, e.g. cloud.google.com/gke-accelerator="
        "nvidia-l4 (a compile-time option: a runtime parameter cannot switch a selector off)",
    )
    kfp_version: str = setting(
        "2.15",
        "KFP backend the YAML is for: 2.5 (Kubeflow 1.10; leaves out TaskConfig, which it "
        "rejects), 2.15 (Kubeflow 1.11, standalone 2.15), 2.16 (Kubeflow 26.03)",
        choices=KFP_BACKENDS,
    )
    store_secret: str = setting(
        KFP_STORE_SECRET,
        "Secret (keys accesskey, secretkey) every step and training worker gets as its AWS "
        'credentials for the artifact store; "" = none (the pods\' own identity, e.g. GCS '
        "Workload Identity)",
    )
    store_endpoint: str | None = setting(
        None,
        "S3 endpoint of the artifact store the steps and workers use (default with a "
        "--store-secret: the KFP version's in-cluster store, "
        + ", ".join(f"{v}: {url}" for v, url in KFP_STORE_ENDPOINTS.items())
        + ")",
    )

    def check(self) -> str | None:
        if self.gpu_node_selector is not None:
            key, sep, value = self.gpu_node_selector.partition("=")
            if not (key and sep and value):
                return (
                    f"gpu_node_selector={self.gpu_node_selector!r}: write it as KEY=VALUE, e.g. "
                    "cloud.google.com/gke-accelerator=nvidia-l4"
                )
        if self.store_endpoint is not None and not self.store_endpoint.startswith(
            ("http://", "https://")
        ):
            return (
                f"store_endpoint={self.store_endpoint!r}: give the URL with its scheme, e.g. "
                f"{KFP_STORE_ENDPOINTS[self.kfp_version]}"
            )
        return None

    def store_endpoint_url(self) -> str | None:
        """The endpoint the steps get: the given one, else the backend's store when the Secret
        is wired, else none (the steps' own AWS_ENDPOINT_URL, if any)."""
        if self.store_endpoint:
            return self.store_endpoint
        return KFP_STORE_ENDPOINTS[self.kfp_version] if self.store_secret else None
