"""The `pretrain` step: masked-LM pre-training of a BERT encoder on shards, on any strategy.

This module trains one process: alone, or one worker of a multi-worker job that finds its identity
with `resolve_cluster()` (`TF_CONFIG` or the pod's JobSet identity). Starting the workers is the
launchers' job (`mlm.launch.local` for `mlm pretrain --workers N`, `mlm.launch.kubernetes` for
TrainJob/TFJob); each worker runs `mlm pretrain` with the flags of the same `PretrainConfig`. The
output directory receives (chief only):

- `mlm_model.keras` (the whole MaskedLanguageModel) and `encoder.keras`;
- `metrics.json` (steps, tokens, final loss/accuracy, tokens_per_second, validation metrics ...);
- `history.json` (per logging interval: step, loss, accuracy, learning_rate, tokens_per_second);
- `checkpoints/` (the last K checkpoints with every worker's input position under `input/`; a
  rerun with the same arguments resumes from them);
- `tensorboard/` (event files with loss, accuracy, learning_rate, tokens_per_second);
- `workers/worker-<i>.json` (every worker: final step and a digest of its weights; after
  SIGTERM/SIGINT the step it saved and `stopped_by`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import signal
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any

from mlm import storage
from mlm.artifacts import ENCODER_FILE, HISTORY_FILE, METRICS_FILE, MLM_MODEL_FILE, read_step_json
from mlm.config import PretrainConfig
from mlm.errors import UserInputError

if TYPE_CHECKING:
    from mlm.training.preemption import StopRequest


@dataclasses.dataclass
class PretrainResult:
    """What `pretrain` produced.

    Attributes:
        output_dir: the output directory (local path or object-store URI).
        model_path: the saved MaskedLanguageModel (`mlm_model.keras`).
        encoder_path: the saved encoder (`encoder.keras`).
        metrics: the content of `metrics.json`.
    """

    output_dir: str
    model_path: str
    encoder_path: str
    metrics: dict[str, Any]

    @classmethod
    def from_output_dir(cls, output_dir: str) -> PretrainResult:
        """The result a finished run left in `output_dir`."""
        return cls(
            output_dir=output_dir,
            model_path=storage.join(output_dir, MLM_MODEL_FILE),
            encoder_path=storage.join(output_dir, ENCODER_FILE),
            metrics=read_step_json(storage.join(output_dir, METRICS_FILE), "pretrain"),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def pretrain(
    shard_dir: str, tokenizer_dir: str, output_dir: str, **settings: Any
) -> PretrainResult:
    """Pre-trains a BERT encoder with the masked-LM objective in this process; resumes from its
    checkpoints.

    Args:
        shard_dir: shard directory written by `mlm shard` (local or object store).
        tokenizer_dir: the tokenizer directory the shards were made with.
        output_dir: where the model, metrics and checkpoints go (local or object store).
        **settings: `mlm.config.PretrainConfig` settings by name, groups included, e.g.
            `steps=100, batch_size=8, mask_ratio=0.2, model_overrides={"num_layers": 2}`.

    Returns:
        The PretrainResult (on a non-chief worker of a multi-worker job, `metrics` is empty).

    Raises:
        UserInputError: a bad setting or input directory.
        TrainingDivergedError: the loss became NaN or infinite.
    """
    config = PretrainConfig.create(
        shard_dir=shard_dir, tokenizer_dir=tokenizer_dir, output_dir=output_dir, **settings
    )
    return pretrain_from_config(config)


def pretrain_from_config(config: PretrainConfig) -> PretrainResult:
    """`pretrain` with its settings as a `PretrainConfig`."""
    return _train(config.with_run_identity())


# ------------------------------------------------------------------------------------------------
# One process (alone, or one worker of a cluster)
# ------------------------------------------------------------------------------------------------


def _train(config: PretrainConfig) -> PretrainResult:
    """Set-up, train, evaluate, write: one process of a (possibly one-process) job.

    SIGTERM or SIGINT from the start until the last step stops training after the next step,
    which every worker saves; `TrainingInterrupted` (exit status 143 or 130) then ends the run.
    """
    from mlm.training.preemption import StopRequest

    with StopRequest() as stop:
        return _train_until_stopped(config, stop)


def _train_until_stopped(config: PretrainConfig, stop: StopRequest) -> PretrainResult:
    from mlm.training.cluster import resolve_cluster
    from mlm.training.preemption import TrainingInterrupted
    from mlm.training.strategy import make_strategy

    cluster = resolve_cluster()
    strategy = make_strategy(cluster)  # first: MultiWorkerMirroredStrategy configures the runtime
    stop.install()  # again: the multi-worker runtime installs its own SIGTERM handler

    import keras
    import tensorflow as tf

    from mlm.data import read_manifest
    from mlm.data.tokenizer import check_tokenizer_dir
    from mlm.monitoring import ProgressPrinter
    from mlm.training.checkpoints import CheckpointKeeper
    from mlm.training.loop import LoopConfig, train_loop

    storage.check_writable_location(config.output_dir)
    info = check_tokenizer_dir(config.tokenizer_dir)
    manifest = read_manifest(config.shard_dir, tokenizer_hash=info.content_hash)
    _check_shard_files(config, manifest)
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise UserInputError(
            f"batch_size={config.batch_size} is the global batch and must divide evenly over the "
            f"{replicas} replicas; use a multiple of {replicas}"
        )
    if config.gradient_accumulation_steps > 1 and replicas > 1:
        # Keras applies accumulated gradients under a cond, which cannot hold the cross-replica
        # gradient sum of tf.distribute.
        raise UserInputError(
            f"gradient_accumulation_steps={config.gradient_accumulation_steps} works only with one "
            f"replica; this job has {replicas}: raise batch_size instead (it is the global batch)"
        )
    if config.jit_compile and replicas > 1 and not tf.config.list_logical_devices("GPU"):
        raise UserInputError(
            "jit_compile with several CPU replicas is not supported: TensorFlow cannot compile "
            "collectives with XLA on CPU. Drop --jit-compile (on CPU it is no faster anyway)"
        )
    output_dir = config.output_dir
    initial = _initial_model(config, info)
    scratch = tempfile.mkdtemp(prefix="mlm-pretrain-")
    keras.utils.set_random_seed(config.seed)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(config.precision)
    total_steps = config.total_steps(initial.step)
    printer = ProgressPrinter(total_steps, quiet=config.quiet)
    reporters: list[Any] = []
    tensorboard = pushgateway = keeper = None
    created_output = False
    try:
        with strategy.scope():
            model = _build_model(config, info, manifest.seq_length, initial)
            embedding_init, embedding_init_seconds = _init_token_embeddings(config, model, initial)
            optimizer = _build_optimizer(config, model)
            step_counter = tf.Variable(
                initial.step, dtype=tf.int64, trainable=False, name="global_step"
            )
            # The seed generators' states (dropout's random numbers) are Keras variables that
            # TensorFlow's object graph does not reach through the model: saved beside it, a
            # resumed run draws the same dropout masks as one that never stopped.
            checkpoint = tf.train.Checkpoint(
                model=model,
                optimizer=optimizer,
                step=step_counter,
                random=[v for v in model.variables if v.path.endswith("seed_generator_state")],
            )
        # Only now: every input has passed its checks. A new local output that fails before
        # its first checkpoint is removed again (nothing in it could be resumed).
        created_output = not storage.is_remote(output_dir) and not os.path.exists(output_dir)
        storage.makedirs(output_dir)
        keeper = CheckpointKeeper(
            storage.join(output_dir, "checkpoints"),
            checkpoint,
            is_chief=cluster.is_chief,
            keep=config.keep_checkpoints,
        )
        tensorboard_dir = (
            os.path.join(scratch, "tensorboard")
            if storage.is_remote(output_dir)
            else os.path.join(output_dir, "tensorboard")
        )
        if cluster.is_chief:
            tensorboard, pushgateway = _chief_reporters(config, tensorboard_dir)
            reporters = [r for r in (printer, tensorboard, pushgateway) if r is not None]
            printer.message(
                f"pretrain: {config.model.variant} BERT ({model.count_params():,} parameters), "
                f"{config.steps} steps of {config.batch_size} x {manifest.seq_length} tokens on "
                f"{replicas} replica(s) / {cluster.num_workers} worker(s), "
                f"precision {config.precision}"
            )
            if embedding_init:
                printer.message(f"pretrain: {embedding_init}")
        loop_config = LoopConfig(
            total_steps=total_steps,
            log_every_steps=config.log_every_steps or max(1, config.steps // 20),
            checkpoint_every_steps=config.checkpoint_every_steps or None,
            checkpoint_every_minutes=config.checkpoint_every_minutes,
            jit_compile=config.jit_compile,
            seed=config.seed,
        )
        summary_uri = storage.join(output_dir, "workers", f"worker-{cluster.worker_id}.json")
        try:
            result = train_loop(
                model,
                optimizer,
                strategy,
                lambda context: _dataset(config, "train", context),
                loop_config,
                step_counter=step_counter,
                checkpoints=keeper,
                reporters=reporters,
                log=printer.message if cluster.is_chief else (lambda _text: None),
                stop=stop,
                first_step=initial.step,  # continual pre-training: this run's data starts here
            )
        except TrainingInterrupted as interrupted:
            storage.write_json(
                summary_uri,
                {
                    "worker": cluster.worker_id,
                    "step": interrupted.step,
                    "weights_sha256": weights_digest(model),
                    "stopped_by": signal.Signals(interrupted.signum).name,
                },
            )
            print(
                f"mlm pretrain: {interrupted} after saving a checkpoint (worker "
                f"{cluster.worker_id}); exit status {interrupted.code}",
                file=sys.stderr,
            )
            raise
        stop.restore()  # from here on a signal acts as usual: the last checkpoint is saved
        validation = _validate_model(config, model, strategy, manifest)
        digest = weights_digest(model)
        summary = {"worker": cluster.worker_id, "step": result.final_step, "weights_sha256": digest}
        storage.write_json(summary_uri, summary)
        if not cluster.is_chief:
            return PretrainResult(output_dir, "", "", {})

        metrics = {
            "steps": result.final_step,
            "start_step": result.start_step,
            "global_batch_size": config.batch_size,
            "seq_length": manifest.seq_length,
            "tokens": result.tokens,
            "train_seconds": result.seconds,
            "tokens_per_second": result.tokens_per_second,
            "final_loss": result.final_loss,
            "final_accuracy": result.final_accuracy,
            **{f"validation_{key}": value for key, value in validation.items()},
            "variant": config.model.variant,
            "parameters": int(model.count_params()),
            "vocab_size": info.vocab_size,
            "precision": config.precision,
            "num_workers": cluster.num_workers,
            "num_replicas": replicas,
            "run_id": config.run_id,
            "weights_sha256": digest,
            "tokenizer_hash": info.content_hash,
            "init_from": initial.uri or "",
            "token_embedding_init": "" if initial.uri else config.model.token_embedding_init,
            "token_embedding_init_seconds": embedding_init_seconds,
            "initial_step": initial.step,
        }
        final_report = {
            "step": result.final_step,
            "loss": result.final_loss,
            "accuracy": result.final_accuracy,
            "learning_rate": float(optimizer.learning_rate),
            "tokens_per_second": result.tokens_per_second,
        }
        model_path = storage.join(output_dir, MLM_MODEL_FILE)
        encoder_path = storage.join(output_dir, ENCODER_FILE)
        save_keras(model, model_path)
        save_keras(model.encoder, encoder_path)
        storage.write_json(storage.join(output_dir, HISTORY_FILE), result.history)
        if pushgateway is not None:
            pushgateway.report({**final_report, "finished": 1.0})
        if storage.is_remote(output_dir):
            tensorboard.close()
            storage.sync_dir(tensorboard_dir, storage.join(output_dir, "tensorboard"))
        storage.write_json(storage.join(output_dir, METRICS_FILE), metrics)  # last: "done"
        printer.message(
            f"pretrain: done at step {result.final_step}: loss {result.final_loss:.4f}, "
            f"accuracy {result.final_accuracy:.4f}, {result.tokens_per_second:.0f} tokens/s; "
            f"wrote {output_dir}"
        )
        return PretrainResult(output_dir, model_path, encoder_path, metrics)
    except BaseException:
        if created_output and cluster.is_chief and (keeper is None or keeper.latest is None):
            for writer in (tensorboard, keeper):  # before the folder they write to goes
                if writer is not None:
                    writer.close()
            tensorboard = keeper = None
            shutil.rmtree(output_dir, ignore_errors=True)
        raise
    finally:
        if tensorboard is not None:
            tensorboard.close()
        if pushgateway is not None:
            pushgateway.close()  # the last values (finished, or diverged) reach the gateway
        if keeper is not None:
            keeper.close()
        keras.mixed_precision.set_global_policy(previous_policy)
        shutil.rmtree(scratch, ignore_errors=True)


def _chief_reporters(config: PretrainConfig, tensorboard_dir: str) -> tuple[Any, Any]:
    """The chief's TensorBoard writer and Pushgateway reporter (None when not configured)."""
    from mlm.monitoring import PushgatewayReporter, TensorBoardWriter

    pushgateway = None
    if config.pushgateway_url:
        pushgateway = PushgatewayReporter(config.pushgateway_url, config.run_id)
    return TensorBoardWriter(tensorboard_dir), pushgateway


def _check_shard_files(config: PretrainConfig, manifest: Any) -> None:
    """Checks the files training and validation will read against the manifest (sizes,
    CRC32Cs), before anything is created."""
    from mlm.data.dataset import checked_shard_files

    checked_shard_files(manifest, "train")
    validation = manifest.splits.get("validation")
    if config.validation_batches and validation and validation.examples:
        checked_shard_files(manifest, "validation")


def _dataset(config: PretrainConfig, split: str, context: Any) -> Any:
    """One input pipeline's per-replica batches of a split (repeating; shuffled for training)."""
    from mlm.data import pretraining_dataset

    return pretraining_dataset(
        config.shard_dir,
        context.get_per_replica_batch_size(config.batch_size),
        split=split,
        shuffle=split == "train",
        seed=config.seed,
        input_context=context,
    )


def _validate_model(config: PretrainConfig, model: Any, strategy: Any, manifest: Any) -> dict:
    """Masked-LM metrics on `validation_batches` validation batches ({} when there are none)."""
    from mlm.evaluation import masked_lm_metrics

    split = manifest.splits.get("validation")
    if not config.validation_batches or not split or not split.examples:
        return {}
    return masked_lm_metrics(
        model,
        lambda context: _dataset(config, "validation", context),
        config.validation_batches,
        seed=config.seed,
        strategy=strategy,
    )


@dataclasses.dataclass(frozen=True)
class _InitialModel:
    """What training starts from: `uri` None is random weights at step 0; `hugging_face` marks a
    `transformers` BERT checkpoint directory (its own architecture, step 0)."""

    uri: str | None = None
    step: int = 0
    hugging_face: bool = False


def _initial_model(config: PretrainConfig, info: Any) -> _InitialModel:
    """The earlier model `config.init_from` names (already resolved from the registry by
    `with_run_identity`), checked against this run's tokenizer."""
    from mlm.encoders.hf_checkpoint import is_hf_checkpoint
    from mlm.registry import model_metrics

    if not config.init_from:
        return _InitialModel()
    uri = config.init_from
    if is_hf_checkpoint(uri):
        return _InitialModel(uri, 0, hugging_face=True)
    metrics = model_metrics(uri, "init_from")
    tokenizer_hash = metrics.get("tokenizer_hash")
    if tokenizer_hash and tokenizer_hash != info.content_hash:
        raise UserInputError(
            f"init_from: {uri} was trained with another tokenizer (content hash "
            f"{tokenizer_hash[:12]}, this run's is {info.content_hash[:12]}); continue with the "
            "tokenizer it was trained with (pipeline: pretrained_tokenizer_uri)"
        )
    return _InitialModel(uri, int(metrics.get("steps", 0)))


def _build_model(
    config: PretrainConfig, info: Any, seq_length: int, initial: _InitialModel | None = None
) -> Any:
    from mlm.encoders.bert import BERT
    from mlm.model import MaskedLanguageModel

    if initial is not None and initial.hugging_face:
        return _hugging_face_model(config, info, seq_length, initial.uri)
    overrides = {
        "max_position_embeddings": max(512, seq_length),
        **(config.model.model_overrides or {}),
    }
    try:
        encoder = BERT.from_variant(config.model.variant, vocab_size=info.vocab_size, **overrides)
    except (TypeError, ValueError) as error:
        detail = " ".join(str(error).split())
        raise UserInputError(f"model_overrides: {detail}; see BERT's arguments") from None
    if encoder.max_position_embeddings < seq_length:
        raise UserInputError(
            f"model_overrides: max_position_embeddings={encoder.max_position_embeddings} is "
            f"below the shards' sequence length {seq_length}; raise it to at least {seq_length} "
            f"or shard with --max-seq-length {encoder.max_position_embeddings}"
        )
    model = MaskedLanguageModel(
        encoder=encoder,
        vocab_size=info.vocab_size,
        tie_word_embeddings=config.model.tie_word_embeddings,
        **_masking_arguments(config, info),
    )
    model.build(None)
    if initial is not None and initial.uri:
        _load_initial_weights(model, initial.uri, info)
    return model


def _init_token_embeddings(
    config: PretrainConfig, model: Any, initial: _InitialModel
) -> tuple[str, float]:
    """Replaces a new model's random token embeddings with count-based ones when
    `token_embedding_init` is "cooccurrence" (PPMI-SVD vectors of the training shards, at the
    encoder's initializer range); returns what it did ("" when nothing) and the seconds it took.
    A model from `init_from` keeps its own embeddings; a resumed run's checkpoint replaces
    these."""
    import numpy as np

    from mlm.data import pretraining_dataset
    from mlm.training.embedding_init import COUNTED_TOKENS, initial_token_embeddings

    if initial.uri or config.model.token_embedding_init != "cooccurrence":
        return "", 0.0
    start = time.perf_counter()
    batches = pretraining_dataset(
        config.shard_dir, 256, split="train", shuffle=False, repeat=False, drop_remainder=False
    )
    embeddings = model.encoder.token_embedding.embeddings
    table, covered = initial_token_embeddings(
        (batch["input_ids"] for batch in batches.as_numpy_iterator()),
        np.asarray(embeddings),
        model.encoder.initializer_range,
    )
    embeddings.assign(table)
    seconds = time.perf_counter() - start
    return (
        f"token embeddings of {covered:,} of {len(table):,} tokens from the training shards' "
        f"co-occurrence counts (PPMI-SVD, at most {COUNTED_TOKENS:,} tokens counted) in "
        f"{seconds:.1f} s",
        seconds,
    )


def _masking_arguments(config: PretrainConfig, info: Any) -> dict[str, Any]:
    """The `MaskedLanguageModel` masking arguments of a run: its settings, the tokenizer's ids."""
    masking = config.masking
    return {
        "mask_ratio": masking.mask_ratio,
        "random_token_ratio": masking.random_token_ratio,
        "unchanged_ratio": masking.unchanged_ratio,
        "mask_token_id": info.mask_token_id,
        "special_token_ids": tuple(info.special_token_ids),
        "max_predictions_per_seq": masking.max_predictions_per_seq,
        "continuation_token_ids": (
            tuple(info.continuation_token_ids) if masking.whole_word_masking else None
        ),
    }


def _hugging_face_model(config: PretrainConfig, info: Any, seq_length: int, uri: str) -> Any:
    """The MaskedLanguageModel of a Hugging Face BERT checkpoint, masking as `config` says
    (domain adaptation: continue pre-training an imported encoder on new text)."""
    from mlm.encoders.hf_checkpoint import load_hf_bert_checkpoint

    model = load_hf_bert_checkpoint(uri, **_masking_arguments(config, info))
    if model.vocab_size != info.vocab_size:
        raise UserInputError(
            f"init_from: {uri} has a vocabulary of {model.vocab_size} tokens but the tokenizer "
            f"has {info.vocab_size}; make the tokenizer from its vocab.txt (mlm tokenize "
            f"--tokenizer {storage.join(uri, 'vocab.txt')}) and shard with it"
        )
    if model.encoder.max_position_embeddings < seq_length:
        raise UserInputError(
            f"init_from: {uri} takes at most {model.encoder.max_position_embeddings} positions "
            f"but the shards hold {seq_length}; shard with --max-seq-length "
            f"{model.encoder.max_position_embeddings}"
        )
    return model


def _load_initial_weights(model: Any, uri: str, info: Any) -> None:
    """Copies the weights of the model saved in `uri` into `model` (same architecture)."""
    from mlm.data.tokenizer import check_tokenizer_matches
    from mlm.steps.evaluate import load_pretrained_model

    earlier = load_pretrained_model(uri)
    check_tokenizer_matches(info, earlier.vocab_size, earlier.mask_token_id)
    try:
        model.set_weights(earlier.get_weights())
    except ValueError as error:
        raise UserInputError(
            f"init_from: {uri} has another architecture than this run's model ({error}); use "
            "the variant and model_overrides it was trained with"
        ) from None


def _build_optimizer(config: PretrainConfig, model: Any) -> Any:
    import keras

    from mlm.optimization import learning_rate_schedule_builder, optimizer_builder

    # The schedule runs on the optimizer's iterations, which count batches (also when
    # accumulating gradients), so it spans `steps`.
    schedule_config: dict[str, Any] = {
        "type": config.schedule,
        "learning_rate": config.learning_rate,
        "warmup_steps": config.warmup_steps(),
    }
    if config.schedule != "constant":  # the one schedule with nothing to decay
        schedule_config["decay_steps"] = config.steps
    schedule = learning_rate_schedule_builder(schedule_config)
    optimizer_config: dict[str, Any] = {
        "type": config.optimizer,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
    }
    if config.optimizer in ("adamw", "lamb"):
        optimizer_config["weight_decay"] = config.weight_decay
    if config.gradient_clipping:
        optimizer_config["gradient_clipping_by_norm"] = config.gradient_clipping
    optimizer = optimizer_builder(optimizer_config, schedule)
    if config.precision == "mixed_float16":
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
    """Saves a Keras model to a local or object-store `.keras` path atomically."""
    with tempfile.TemporaryDirectory(prefix="mlm-save-") as tmp:
        local = os.path.join(tmp, os.path.basename(uri))
        model.save(local)
        with open(local, "rb") as source, storage.atomic_write(uri) as out:
            shutil.copyfileobj(source, out)
