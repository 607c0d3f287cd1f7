"""The `pretrain` step: masked-LM pre-training of a BERT encoder on shards, on any strategy.

One process trains on its local devices; `workers > 1` starts that many local processes wired by
`TF_CONFIG` (as a TFJob would); in a Kubernetes job each pod runs this same step and finds its
identity with `resolve_cluster()`. The output directory receives (chief only):

- `mlm_model.keras` (the whole MaskedLanguageModel) and `encoder.keras`;
- `metrics.json` (steps, tokens, final loss/accuracy, tokens_per_second, validation metrics ...);
- `history.json` (per logging interval: step, loss, accuracy, learning_rate, tokens_per_second);
- `checkpoints/` (the last K checkpoints; a rerun with the same arguments resumes from them);
- `tensorboard/` (event files with loss, accuracy, learning_rate, tokens_per_second);
- `workers/worker-<i>.json` (every worker: final step and a digest of its weights).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from typing import Any

from mlm import storage
from mlm.errors import UserInputError

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
SCHEDULES = ("cosine_decay", "polynomial_decay", "constant")
OPTIMIZERS = ("adamw", "adam", "lamb", "sgd")
VARIANTS = ("tiny", "small", "base", "large")


@dataclasses.dataclass
class PretrainResult:
    """What `pretrain` produced.

    Attributes:
        output_dir: the output directory (local path or gs:// URI).
        model_path: the saved MaskedLanguageModel (`mlm_model.keras`).
        encoder_path: the saved encoder (`encoder.keras`).
        metrics: the content of `metrics.json`.
    """

    output_dir: str
    model_path: str
    encoder_path: str
    metrics: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise UserInputError(message)


def pretrain(
    shard_dir: str,
    tokenizer_dir: str,
    output_dir: str,
    *,
    variant: str = "tiny",
    model_overrides: dict[str, Any] | None = None,
    batch_size: int = 32,
    steps: int = 1000,
    learning_rate: float = 1e-4,
    warmup_steps: int | None = None,
    schedule: str = "cosine_decay",
    optimizer: str = "adamw",
    weight_decay: float = 0.01,
    gradient_clipping: float | None = 1.0,
    gradient_accumulation_steps: int = 1,
    mask_ratio: float = 0.15,
    whole_word_masking: bool = False,
    max_predictions_per_seq: int | None = None,
    tie_word_embeddings: bool = False,
    precision: str = "float32",
    jit_compile: bool = False,
    workers: int = 1,
    checkpoint_every_steps: int | None = 1000,
    checkpoint_every_minutes: float | None = 15.0,
    keep_checkpoints: int = 3,
    log_every_steps: int | None = None,
    validation_batches: int = 20,
    pushgateway_url: str | None = None,
    run_id: str | None = None,
    seed: int = 0,
    quiet: bool = False,
    worker_timeout: float | None = None,
) -> PretrainResult:
    """Pre-trains a BERT encoder with the masked-LM objective; resumes from its checkpoints.

    Args:
        shard_dir: shard directory written by `mlm shard` (local or gs://).
        tokenizer_dir: the tokenizer directory the shards were made with.
        output_dir: where the model, metrics and checkpoints go (local or gs://).
        variant: BERT size: "tiny", "small", "base" or "large".
        model_overrides: BERT arguments that replace the variant's (e.g. {"num_layers": 2}).
        batch_size: the global batch size (split over all replicas of all workers).
        steps: training steps (global batches) to reach; a resumed run trains the remainder.
        learning_rate: peak learning rate.
        warmup_steps: linear warm-up steps (default: 10% of `steps`).
        schedule: "cosine_decay", "polynomial_decay" or "constant".
        optimizer: "adamw", "adam", "lamb" or "sgd".
        weight_decay: decoupled weight decay (AdamW/LAMB); LayerNorm and biases are excluded.
        gradient_clipping: clip gradients to this global norm (None: no clipping).
        gradient_accumulation_steps: apply the optimizer every this many steps.
        mask_ratio: fraction of tokens selected for prediction.
        whole_word_masking: select whole words (all "##" pieces of a word together).
        max_predictions_per_seq: fixed number of predictions per sequence (static shapes).
        tie_word_embeddings: share the output projection with the token embedding.
        precision: "float32", "mixed_float16" (with dynamic loss scaling) or "mixed_bfloat16".
        jit_compile: XLA-compile the training step.
        workers: local worker processes to start (1: train in this process).
        checkpoint_every_steps: save a checkpoint every this many steps (None: never by steps).
        checkpoint_every_minutes: also save when this many minutes passed (None: never by time).
        keep_checkpoints: how many recent checkpoints to keep.
        log_every_steps: report progress every this many steps (default: about 20 reports).
        validation_batches: batches of the validation split evaluated at the end (0: none).
        pushgateway_url: Prometheus Pushgateway to push metrics to (default: $MLM_PUSHGATEWAY_URL).
        run_id: the Pushgateway grouping key (default: a new unique id).
        seed: seed of weight initialisation, data order and masking.
        quiet: print only the start, checkpoint and final lines.
        worker_timeout: with workers > 1, seconds the whole run may take.

    Returns:
        The PretrainResult (on a non-chief worker of a multi-worker job, `metrics` is empty).

    Raises:
        UserInputError: a bad parameter or input directory.
        TrainingDivergedError: the loss became NaN or infinite.
        WorkersFailedError: a local worker failed (workers > 1).
    """
    options = dict(locals())
    _validate(options)
    pushgateway_url = pushgateway_url or os.environ.get("MLM_PUSHGATEWAY_URL") or None
    run_id = run_id or f"pretrain-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    if workers > 1:
        if os.environ.get("TF_CONFIG"):
            raise UserInputError(
                "workers > 1 starts local worker processes, but TF_CONFIG is already set (this "
                "process is a worker of a cluster): drop --workers or unset TF_CONFIG"
            )
        return _launch_local(options | {"pushgateway_url": pushgateway_url, "run_id": run_id})
    return _train(options | {"pushgateway_url": pushgateway_url, "run_id": run_id})


def _validate(o: dict[str, Any]) -> None:
    _check(o["variant"] in VARIANTS, f"variant={o['variant']!r}: use one of {VARIANTS}")
    _check(o["precision"] in PRECISIONS, f"precision={o['precision']!r}: use one of {PRECISIONS}")
    _check(o["schedule"] in SCHEDULES, f"schedule={o['schedule']!r}: use one of {SCHEDULES}")
    _check(o["optimizer"] in OPTIMIZERS, f"optimizer={o['optimizer']!r}: use one of {OPTIMIZERS}")
    for name in ("batch_size", "steps", "workers", "keep_checkpoints"):
        _check(o[name] >= 1, f"{name}={o[name]}: must be at least 1")
    _check(
        o["gradient_accumulation_steps"] >= 1,
        f"gradient_accumulation_steps={o['gradient_accumulation_steps']}: must be at least 1",
    )
    lr = o["learning_rate"]
    _check(math.isfinite(lr) and lr > 0, f"learning_rate={lr}: must be a positive number")
    _check(0 < o["mask_ratio"] < 1, f"mask_ratio={o['mask_ratio']}: must be between 0 and 1")
    for name in ("warmup_steps", "checkpoint_every_steps", "log_every_steps"):
        value = o[name]
        _check(value is None or value >= 0, f"{name}={value}: must not be negative")
    minutes = o["checkpoint_every_minutes"]
    _check(minutes is None or minutes > 0, f"checkpoint_every_minutes={minutes}: must be > 0")
    _check(o["validation_batches"] >= 0, "validation_batches must not be negative")
    overrides = o["model_overrides"]
    _check(
        overrides is None or isinstance(overrides, dict),
        f"model_overrides must be a dict of BERT arguments, got {type(overrides).__name__}",
    )


# ------------------------------------------------------------------------------------------------
# Several local workers
# ------------------------------------------------------------------------------------------------


def _launch_local(options: dict[str, Any]) -> PretrainResult:
    from mlm.launch.local import run_local_workers

    argv = [sys.executable, "-m", "mlm.cli", "pretrain", *to_argv(options | {"workers": 1})]
    run_local_workers(argv, options["workers"], timeout=options["worker_timeout"])
    output_dir = options["output_dir"]
    return PretrainResult(
        output_dir=output_dir,
        model_path=storage.join(output_dir, "mlm_model.keras"),
        encoder_path=storage.join(output_dir, "encoder.keras"),
        metrics=storage.read_json(storage.join(output_dir, "metrics.json")),
    )


# ------------------------------------------------------------------------------------------------
# One process (alone, or one worker of a cluster)
# ------------------------------------------------------------------------------------------------


def _train(o: dict[str, Any]) -> PretrainResult:
    """Set-up, train, evaluate, write: one process of a (possibly one-process) job."""
    from mlm.training.cluster import resolve_cluster
    from mlm.training.strategy import make_strategy

    cluster = resolve_cluster()
    strategy = make_strategy(cluster)  # first: MultiWorkerMirroredStrategy configures the runtime

    import keras
    import tensorflow as tf

    from mlm.data import read_manifest, read_tokenizer_info
    from mlm.monitoring import ProgressPrinter
    from mlm.training.checkpoints import CheckpointKeeper
    from mlm.training.loop import LoopConfig, train_loop

    info = read_tokenizer_info(o["tokenizer_dir"])
    manifest = read_manifest(o["shard_dir"], tokenizer_hash=info.content_hash)
    replicas = strategy.num_replicas_in_sync
    if o["batch_size"] % replicas:
        raise UserInputError(
            f"batch_size={o['batch_size']} is the global batch and must divide evenly over the "
            f"{replicas} replicas; use a multiple of {replicas}"
        )
    if o["gradient_accumulation_steps"] > 1 and replicas > 1:
        # Keras applies accumulated gradients under a cond, which cannot hold the cross-replica
        # gradient sum of tf.distribute.
        raise UserInputError(
            f"gradient_accumulation_steps={o['gradient_accumulation_steps']} works only with one "
            f"replica; this job has {replicas}: raise batch_size instead (it is the global batch)"
        )
    if o["jit_compile"] and replicas > 1 and not tf.config.list_logical_devices("GPU"):
        raise UserInputError(
            "jit_compile with several CPU replicas is not supported: TensorFlow cannot compile "
            "collectives with XLA on CPU. Drop --jit-compile (on CPU it is usually slower anyway)"
        )
    output_dir = o["output_dir"]
    storage.makedirs(output_dir)
    scratch = tempfile.mkdtemp(prefix="mlm-pretrain-")
    keras.utils.set_random_seed(o["seed"])
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(o["precision"])
    printer = ProgressPrinter(o["steps"], quiet=o["quiet"])
    reporters: list[Any] = []
    tensorboard = pushgateway = keeper = None
    try:
        with strategy.scope():
            model = _build_model(o, info, manifest.seq_length)
            optimizer = _build_optimizer(o, model)
            step_counter = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
            checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step_counter)
        keeper = CheckpointKeeper(
            storage.join(output_dir, "checkpoints"),
            checkpoint,
            is_chief=cluster.is_chief,
            keep=o["keep_checkpoints"],
        )
        tensorboard_dir = (
            os.path.join(scratch, "tensorboard")
            if storage.is_remote(output_dir)
            else os.path.join(output_dir, "tensorboard")
        )
        if cluster.is_chief:
            tensorboard, pushgateway = _chief_reporters(o, tensorboard_dir)
            reporters = [r for r in (printer, tensorboard, pushgateway) if r is not None]
            printer.message(
                f"pretrain: {o['variant']} BERT ({model.count_params():,} parameters), "
                f"{o['steps']} steps of {o['batch_size']} x {manifest.seq_length} tokens on "
                f"{replicas} replica(s) / {cluster.num_workers} worker(s), "
                f"precision {o['precision']}"
            )
        config = LoopConfig(
            total_steps=o["steps"],
            log_every_steps=o["log_every_steps"] or max(1, o["steps"] // 20),
            checkpoint_every_steps=o["checkpoint_every_steps"] or None,
            checkpoint_every_minutes=o["checkpoint_every_minutes"],
            jit_compile=o["jit_compile"],
            seed=o["seed"],
        )
        result = train_loop(
            model,
            optimizer,
            strategy,
            lambda context, start_step: _dataset(o, "train", context).skip(start_step),
            config,
            step_counter=step_counter,
            checkpoints=keeper,
            reporters=reporters,
            log=printer.message if cluster.is_chief else (lambda _text: None),
        )
        validation = _validate_model(o, model, strategy, manifest)
        digest = weights_digest(model)
        summary = {"worker": cluster.worker_id, "step": result.final_step, "weights_sha256": digest}
        storage.write_json(
            storage.join(output_dir, "workers", f"worker-{cluster.worker_id}.json"), summary
        )
        if not cluster.is_chief:
            return PretrainResult(output_dir, "", "", {})

        metrics = {
            "steps": result.final_step,
            "start_step": result.start_step,
            "global_batch_size": o["batch_size"],
            "seq_length": manifest.seq_length,
            "tokens": result.tokens,
            "train_seconds": result.seconds,
            "tokens_per_second": result.tokens_per_second,
            "final_loss": result.final_loss,
            "final_accuracy": result.final_accuracy,
            **{f"validation_{key}": value for key, value in validation.items()},
            "variant": o["variant"],
            "parameters": int(model.count_params()),
            "vocab_size": info.vocab_size,
            "precision": o["precision"],
            "num_workers": cluster.num_workers,
            "num_replicas": replicas,
            "run_id": o["run_id"],
            "weights_sha256": digest,
        }
        final_report = {
            "step": result.final_step,
            "loss": result.final_loss,
            "accuracy": result.final_accuracy,
            "learning_rate": float(optimizer.learning_rate),
            "tokens_per_second": result.tokens_per_second,
        }
        model_path = storage.join(output_dir, "mlm_model.keras")
        encoder_path = storage.join(output_dir, "encoder.keras")
        save_keras(model, model_path)
        save_keras(model.encoder, encoder_path)
        storage.write_json(storage.join(output_dir, "history.json"), result.history)
        if pushgateway is not None:
            pushgateway.report({**final_report, "finished": 1.0})
        if storage.is_remote(output_dir):
            tensorboard.close()
            storage.sync_dir(tensorboard_dir, storage.join(output_dir, "tensorboard"))
        storage.write_json(storage.join(output_dir, "metrics.json"), metrics)  # last: "done"
        printer.message(
            f"pretrain: done at step {result.final_step}: loss {result.final_loss:.4f}, "
            f"accuracy {result.final_accuracy:.4f}, {result.tokens_per_second:.0f} tokens/s; "
            f"wrote {output_dir}"
        )
        return PretrainResult(output_dir, model_path, encoder_path, metrics)
    finally:
        if tensorboard is not None:
            tensorboard.close()
        if keeper is not None:
            keeper.close()
        keras.mixed_precision.set_global_policy(previous_policy)
        shutil.rmtree(scratch, ignore_errors=True)


def _chief_reporters(o: dict[str, Any], tensorboard_dir: str) -> tuple[Any, Any]:
    """The chief's TensorBoard writer and Pushgateway reporter (None when not configured)."""
    from mlm.monitoring import PushgatewayReporter, TensorBoardWriter

    pushgateway = None
    if o["pushgateway_url"]:
        pushgateway = PushgatewayReporter(o["pushgateway_url"], o["run_id"])
    return TensorBoardWriter(tensorboard_dir), pushgateway


def _dataset(o: dict[str, Any], split: str, context: Any) -> Any:
    """One input pipeline's per-replica batches of a split (repeating; shuffled for training)."""
    from mlm.data import pretraining_dataset

    return pretraining_dataset(
        o["shard_dir"],
        context.get_per_replica_batch_size(o["batch_size"]),
        split=split,
        shuffle=split == "train",
        seed=o["seed"],
        input_context=context,
    )


def _validate_model(o: dict[str, Any], model: Any, strategy: Any, manifest: Any) -> dict:
    """Masked-LM metrics on `validation_batches` validation batches ({} when there are none)."""
    from mlm.training.loop import evaluate_loop

    split = manifest.splits.get("validation")
    if not o["validation_batches"] or not split or not split.examples:
        return {}
    return evaluate_loop(
        model,
        strategy,
        lambda context: _dataset(o, "validation", context),
        o["validation_batches"],
        seed=o["seed"],
    )


def _build_model(o: dict[str, Any], info: Any, seq_length: int) -> Any:
    from mlm.encoders.bert import BERT
    from mlm.model import MaskedLanguageModel

    overrides = {"max_position_embeddings": max(512, seq_length), **(o["model_overrides"] or {})}
    try:
        encoder = BERT.from_variant(o["variant"], vocab_size=info.vocab_size, **overrides)
    except TypeError as error:
        raise UserInputError(f"model_overrides: {error}; see BERT's arguments") from None
    model = MaskedLanguageModel(
        encoder=encoder,
        vocab_size=info.vocab_size,
        mask_ratio=o["mask_ratio"],
        mask_token_id=info.mask_token_id,
        special_token_ids=tuple(info.special_token_ids),
        tie_word_embeddings=o["tie_word_embeddings"],
        max_predictions_per_seq=o["max_predictions_per_seq"],
        continuation_token_ids=(
            tuple(info.continuation_token_ids) if o["whole_word_masking"] else None
        ),
    )
    model.build(None)
    return model


def _build_optimizer(o: dict[str, Any], model: Any) -> Any:
    import keras

    from mlm.optimization import learning_rate_schedule_builder, optimizer_builder

    steps = o["steps"]
    # The schedule runs on the optimizer's iterations, which count batches (also when
    # accumulating gradients), so it spans `steps`.
    schedule = learning_rate_schedule_builder(
        {
            "type": o["schedule"],
            "learning_rate": o["learning_rate"],
            "decay_steps": steps,
            "warmup_steps": o["warmup_steps"] if o["warmup_steps"] is not None else steps // 10,
        }
    )
    config: dict[str, Any] = {
        "type": o["optimizer"],
        "gradient_accumulation_steps": o["gradient_accumulation_steps"],
    }
    if o["optimizer"] in ("adamw", "lamb"):
        config["weight_decay"] = o["weight_decay"]
    if o["gradient_clipping"]:
        config["gradient_clipping_by_norm"] = o["gradient_clipping"]
    optimizer = optimizer_builder(config, schedule)
    if o["precision"] == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    return optimizer


def weights_digest(model: Any) -> str:
    """SHA-256 of all of a model's weights (identical on every worker of a synchronous job)."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(weight.tobytes())
    return digest.hexdigest()


def save_keras(model: Any, uri: str) -> None:
    """Saves a Keras model to a local or gs:// `.keras` path atomically."""
    with tempfile.TemporaryDirectory(prefix="mlm-save-") as tmp:
        local = os.path.join(tmp, os.path.basename(uri))
        model.save(local)
        with open(local, "rb") as source, storage.atomic_write(uri) as out:
            shutil.copyfileobj(source, out)


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------


def _json_object(text: str) -> dict[str, Any]:
    """argparse type: a JSON object such as '{"num_layers": 2}'."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error}): {text!r}") from None


# (flag, pretrain() argument, type, help); "bool" flags are switches.
_OPTIONS: list[tuple[str, str, Any, str]] = [
    ("--variant", "variant", str, "BERT size: tiny, small, base, large (default tiny)"),
    (
        "--model-overrides",
        "model_overrides",
        _json_object,
        'JSON of BERT arguments, e.g. \'{"num_layers": 2, "hidden_size": 64}\'',
    ),
    ("--batch-size", "batch_size", int, "global batch size over all workers (default 32)"),
    ("--steps", "steps", int, "training steps to reach (default 1000)"),
    ("--learning-rate", "learning_rate", float, "peak learning rate (default 1e-4)"),
    ("--warmup-steps", "warmup_steps", int, "warm-up steps (default 10%% of --steps)"),
    ("--schedule", "schedule", str, "cosine_decay, polynomial_decay or constant"),
    ("--optimizer", "optimizer", str, "adamw, adam, lamb or sgd (default adamw)"),
    ("--weight-decay", "weight_decay", float, "decoupled weight decay (default 0.01)"),
    ("--gradient-clipping", "gradient_clipping", float, "clip to this global norm (0: off)"),
    (
        "--gradient-accumulation-steps",
        "gradient_accumulation_steps",
        int,
        "apply the optimizer every N steps (default 1)",
    ),
    ("--mask-ratio", "mask_ratio", float, "fraction of tokens to predict (default 0.15)"),
    ("--whole-word-masking", "whole_word_masking", bool, "mask whole words"),
    (
        "--max-predictions-per-seq",
        "max_predictions_per_seq",
        int,
        "fixed predictions per sequence (static shapes)",
    ),
    ("--tie-word-embeddings", "tie_word_embeddings", bool, "tie the output to the embedding"),
    ("--precision", "precision", str, "float32, mixed_float16 or mixed_bfloat16"),
    ("--jit-compile", "jit_compile", bool, "XLA-compile the training step"),
    ("--workers", "workers", int, "local worker processes (default 1)"),
    (
        "--checkpoint-every-steps",
        "checkpoint_every_steps",
        int,
        "checkpoint every N steps (default 1000; 0: off)",
    ),
    (
        "--checkpoint-every-minutes",
        "checkpoint_every_minutes",
        float,
        "also checkpoint every M minutes (default 15)",
    ),
    ("--keep-checkpoints", "keep_checkpoints", int, "checkpoints to keep (default 3)"),
    ("--log-every-steps", "log_every_steps", int, "progress every N steps (default steps/20)"),
    (
        "--validation-batches",
        "validation_batches",
        int,
        "validation batches evaluated at the end (default 20; 0: none)",
    ),
    (
        "--pushgateway",
        "pushgateway_url",
        str,
        "Prometheus Pushgateway URL (default $MLM_PUSHGATEWAY_URL)",
    ),
    ("--run-id", "run_id", str, "grouping key of the pushed metrics (default: unique)"),
    ("--seed", "seed", int, "seed of initialisation, data order and masking (default 0)"),
    ("--quiet", "quiet", bool, "print only start, checkpoint and final lines"),
    ("--worker-timeout", "worker_timeout", float, "seconds a --workers N run may take"),
]

# Options that are on by default: 0 on the command line (None in Python) turns them off.
_ZERO_MEANS_OFF = ("gradient_clipping", "checkpoint_every_steps", "checkpoint_every_minutes")


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the `mlm pretrain` arguments."""
    parser.add_argument("--shards", required=True, help="shard directory (from `mlm shard`)")
    parser.add_argument("--tokenizer", required=True, help="tokenizer directory")
    parser.add_argument("--output", required=True, help="output directory (local or gs://)")
    for flag, name, kind, help_text in _OPTIONS:
        if kind is bool:
            parser.add_argument(flag, dest=name, action="store_true", default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=name, type=kind, default=None, help=help_text)


def to_argv(options: dict[str, Any]) -> list[str]:
    """The `mlm pretrain` arguments that reproduce a `pretrain()` call's options."""
    argv = [
        "--shards", options["shard_dir"],
        "--tokenizer", options["tokenizer_dir"],
        "--output", options["output_dir"],
    ]  # fmt: skip
    for flag, name, kind, _help in _OPTIONS:
        value = options.get(name)
        if value is None or (kind is bool and not value):
            continue
        if kind is bool:
            argv.append(flag)
        elif kind is _json_object:
            argv += [flag, json.dumps(value)]
        else:
            argv += [flag, str(value)]
    for flag, name, _kind, _help in _OPTIONS:
        if name in _ZERO_MEANS_OFF and name in options and options[name] is None:
            argv += [flag, "0"]
    return argv


def options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The `pretrain()` keyword arguments given on the command line (the inverse of `to_argv`)."""
    kwargs = {name: getattr(args, name) for _, name, _, _ in _OPTIONS}
    kwargs = {name: value for name, value in kwargs.items() if value is not None}
    for name in _ZERO_MEANS_OFF:
        if kwargs.get(name) == 0:
            kwargs[name] = None
    return kwargs


def run_cli(args: argparse.Namespace) -> int:
    """Runs `mlm pretrain`; returns the exit status."""
    from mlm.launch.local import WorkersFailedError
    from mlm.training.loop import TrainingDivergedError

    try:
        pretrain(args.shards, args.tokenizer, args.output, **options_from_args(args))
    except WorkersFailedError as error:
        print(f"mlm pretrain: error: {error}", file=sys.stderr)
        return 1
    except TrainingDivergedError as error:
        print(f"mlm pretrain: error: {error}", file=sys.stderr)
        return 3
    return 0
