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
- `workers/worker-<i>.json` (every worker: final step and a digest of its weights; for streamed
  object-store shards the files it fetched and its local disk high-water mark; after
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
from typing import TYPE_CHECKING, Any

from mlm import storage
from mlm.artifacts import ENCODER_FILE, HISTORY_FILE, METRICS_FILE, MLM_MODEL_FILE, read_step_json
from mlm.config import PretrainConfig
from mlm.errors import UserInputError
from mlm.run_identity import with_run_identity
from mlm.steps.pretrain_model import (
    InitialModel,
    build_model,
    build_optimizer,
    init_token_embeddings,
    initial_model,
)

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
    return _train(with_run_identity(config))


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
    """Checks, set-up, training and the outputs of one process: `_check_inputs` (nothing is
    created before it passes), `_set_up`, `_run_training`, `_write_outputs`."""
    import keras

    from mlm.training.cluster import resolve_cluster
    from mlm.training.strategy import make_strategy

    cluster = resolve_cluster()
    strategy = make_strategy(cluster)  # first: MultiWorkerMirroredStrategy configures the runtime
    stop.install()  # again: the multi-worker runtime installs its own SIGTERM handler
    info, manifest = _check_inputs(config, strategy)
    initial = initial_model(config, info)
    run = _Run(config, cluster, strategy, info, manifest, initial)
    previous_policy = keras.mixed_precision.global_policy()
    try:
        _set_up(run)
        result = _run_training(run, stop)
        stop.restore()  # from here on a signal acts as usual: the last checkpoint is saved
        return _write_outputs(run, result)
    except BaseException:
        run.remove_new_output_without_checkpoint()
        raise
    finally:
        run.close()
        keras.mixed_precision.set_global_policy(previous_policy)


def _check_inputs(config: PretrainConfig, strategy: Any) -> tuple[Any, Any]:
    """The tokenizer's facts and the manifest, once every input and the output location passed
    their checks (shard files verified, batch and replicas compatible)."""
    import tensorflow as tf

    from mlm.data import read_manifest
    from mlm.data.tokenizer import check_tokenizer_dir

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
    return info, manifest


@dataclasses.dataclass
class _Run:
    """One process's training run: its inputs, what `_set_up` builds, and what must be closed."""

    config: PretrainConfig
    cluster: Any
    strategy: Any
    info: Any
    manifest: Any
    initial: InitialModel
    scratch: str = dataclasses.field(
        default_factory=lambda: tempfile.mkdtemp(prefix="mlm-pretrain-")
    )
    model: Any = None
    optimizer: Any = None
    step_counter: Any = None
    embedding_init_seconds: float = 0.0
    printer: Any = None
    reporters: list[Any] = dataclasses.field(default_factory=list)
    tensorboard: Any = None
    tensorboard_dir: str = ""
    pushgateway: Any = None
    keeper: Any = None
    created_output: bool = False
    # The object-store streaming windows of this run's input pipelines (`mlm.data.streaming`).
    stream_windows: list[Any] = dataclasses.field(default_factory=list)

    @property
    def summary_uri(self) -> str:
        name = f"worker-{self.cluster.worker_id}.json"
        return storage.join(self.config.output_dir, "workers", name)

    def remove_new_output_without_checkpoint(self) -> None:
        """After a failure: a new local output without a complete checkpoint holds nothing that
        could be resumed, so it goes (its writers first)."""
        if not (self.created_output and self.cluster.is_chief):
            return
        if self.keeper is None or self.keeper.latest is None:
            self.close()
            shutil.rmtree(self.config.output_dir, ignore_errors=True)

    def close(self) -> None:
        for window in self.stream_windows:  # first: the input iterators may go any time now
            window.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.pushgateway is not None:
            self.pushgateway.close()  # the last values (finished, or diverged) reach the gateway
        if self.keeper is not None:
            self.keeper.close()
        self.tensorboard = self.pushgateway = self.keeper = None
        shutil.rmtree(self.scratch, ignore_errors=True)


def _set_up(run: _Run) -> None:
    """Builds the model, optimizer and checkpointing; creates the output; starts the reporters."""
    import keras
    import tensorflow as tf

    from mlm.monitoring import ProgressPrinter
    from mlm.training.checkpoints import CheckpointKeeper

    config, output_dir = run.config, run.config.output_dir
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy(config.precision)
    run.printer = ProgressPrinter(config.total_steps(run.initial.step), quiet=config.quiet)
    with run.strategy.scope():
        run.model = build_model(config, run.info, run.manifest.seq_length, run.initial)
        embedding_init, run.embedding_init_seconds = init_token_embeddings(
            config, run.model, run.initial
        )
        run.optimizer = build_optimizer(config, run.model)
        run.step_counter = tf.Variable(
            run.initial.step, dtype=tf.int64, trainable=False, name="global_step"
        )
        # The seed generators' states (dropout's random numbers) are Keras variables that
        # TensorFlow's object graph does not reach through the model: saved beside it, a
        # resumed run draws the same dropout masks as one that never stopped.
        checkpoint = tf.train.Checkpoint(
            model=run.model,
            optimizer=run.optimizer,
            step=run.step_counter,
            random=[v for v in run.model.variables if v.path.endswith("seed_generator_state")],
        )
    # Only now: every input has passed its checks and the model is built.
    run.created_output = not storage.is_remote(output_dir) and not os.path.exists(output_dir)
    storage.makedirs(output_dir)
    run.keeper = CheckpointKeeper(
        storage.join(output_dir, "checkpoints"),
        checkpoint,
        is_chief=run.cluster.is_chief,
        keep=config.keep_checkpoints,
    )
    run.tensorboard_dir = (
        os.path.join(run.scratch, "tensorboard")
        if storage.is_remote(output_dir)
        else os.path.join(output_dir, "tensorboard")
    )
    if run.cluster.is_chief:
        run.tensorboard, run.pushgateway = _chief_reporters(config, run.tensorboard_dir)
        run.reporters = [
            r for r in (run.printer, run.tensorboard, run.pushgateway) if r is not None
        ]
        run.printer.message(
            f"pretrain: {config.model.variant} BERT ({run.model.count_params():,} parameters), "
            f"{config.steps} steps of {config.batch_size} x {run.manifest.seq_length} tokens on "
            f"{run.strategy.num_replicas_in_sync} replica(s) / {run.cluster.num_workers} "
            f"worker(s), precision {config.precision}"
        )
        if embedding_init:
            run.printer.message(f"pretrain: {embedding_init}")


def _run_training(run: _Run, stop: StopRequest) -> Any:
    """The training loop; on a stop request, the worker's summary and one line, then re-raised."""
    from mlm.training.loop import LoopConfig, train_loop
    from mlm.training.preemption import TrainingInterrupted

    config, cluster = run.config, run.cluster
    loop_config = LoopConfig(
        total_steps=config.total_steps(run.initial.step),
        log_every_steps=config.log_every_steps or max(1, config.steps // 20),
        checkpoint_every_steps=config.checkpoint_every_steps or None,
        checkpoint_every_minutes=config.checkpoint_every_minutes,
        jit_compile=config.jit_compile,
        seed=config.seed,
    )
    try:
        return train_loop(
            run.model,
            run.optimizer,
            run.strategy,
            lambda context: _dataset(config, "train", context, run.stream_windows),
            loop_config,
            step_counter=run.step_counter,
            checkpoints=run.keeper,
            reporters=run.reporters,
            log=run.printer.message if cluster.is_chief else (lambda _text: None),
            stop=stop,
            first_step=run.initial.step,  # continual pre-training: this run's data starts here
        )
    except TrainingInterrupted as interrupted:
        storage.write_json(
            run.summary_uri,
            {
                "worker": cluster.worker_id,
                "step": interrupted.step,
                "weights_sha256": weights_digest(run.model),
                "stopped_by": signal.Signals(interrupted.signum).name,
            },
        )
        print(
            f"mlm pretrain: {interrupted} after saving a checkpoint (worker "
            f"{cluster.worker_id}); exit status {interrupted.code}",
            file=sys.stderr,
        )
        raise


def _write_outputs(run: _Run, result: Any) -> PretrainResult:
    """Validation, the worker's summary and (chief) the model files, history and metrics.json,
    written last: the output's marker of a finished run."""
    from mlm.data.streaming import stream_summary

    config, output_dir, model, initial = run.config, run.config.output_dir, run.model, run.initial
    validation = _validate_model(config, model, run.strategy, run.manifest, run.stream_windows)
    digest = weights_digest(model)
    storage.write_json(
        run.summary_uri,
        {
            "worker": run.cluster.worker_id,
            "step": result.final_step,
            "weights_sha256": digest,
            **stream_summary(run.stream_windows),
        },
    )
    if not run.cluster.is_chief:
        return PretrainResult(output_dir, "", "", {})
    metrics = {
        "steps": result.final_step,
        "start_step": result.start_step,
        "global_batch_size": config.batch_size,
        "seq_length": run.manifest.seq_length,
        "tokens": result.tokens,
        "train_seconds": result.seconds,
        "tokens_per_second": result.tokens_per_second,
        "final_loss": result.final_loss,
        "final_accuracy": result.final_accuracy,
        **{f"validation_{key}": value for key, value in validation.items()},
        "variant": config.model.variant,
        "parameters": int(model.count_params()),
        "vocab_size": run.info.vocab_size,
        "precision": config.precision,
        "num_workers": run.cluster.num_workers,
        "num_replicas": run.strategy.num_replicas_in_sync,
        "run_id": config.run_id,
        "weights_sha256": digest,
        "tokenizer_hash": run.info.content_hash,
        "init_from": initial.uri or "",
        "token_embedding_init": "" if initial.uri else config.model.token_embedding_init,
        "token_embedding_init_seconds": run.embedding_init_seconds,
        "initial_step": initial.step,
    }
    model_path = storage.join(output_dir, MLM_MODEL_FILE)
    encoder_path = storage.join(output_dir, ENCODER_FILE)
    save_keras(model, model_path)
    save_keras(model.encoder, encoder_path)
    storage.write_json(storage.join(output_dir, HISTORY_FILE), result.history)
    if run.pushgateway is not None:
        final_report = {
            "step": result.final_step,
            "loss": result.final_loss,
            "accuracy": result.final_accuracy,
            "learning_rate": float(run.optimizer.learning_rate),
            "tokens_per_second": result.tokens_per_second,
        }
        run.pushgateway.report({**final_report, "finished": 1.0})
    if storage.is_remote(output_dir):
        run.tensorboard.close()
        run.tensorboard = None
        storage.sync_dir(run.tensorboard_dir, storage.join(output_dir, "tensorboard"))
    storage.write_json(storage.join(output_dir, METRICS_FILE), metrics)  # last: "done"
    run.printer.message(
        f"pretrain: done at step {result.final_step}: loss {result.final_loss:.4f}, "
        f"accuracy {result.final_accuracy:.4f}, {result.tokens_per_second:.0f} tokens/s; "
        f"wrote {output_dir}"
    )
    return PretrainResult(output_dir, model_path, encoder_path, metrics)


def _chief_reporters(config: PretrainConfig, tensorboard_dir: str) -> tuple[Any, Any]:
    """The chief's TensorBoard writer and Pushgateway reporter (None when not configured)."""
    from mlm.monitoring import PushgatewayReporter, TensorBoardWriter

    pushgateway = None
    if config.pushgateway_url:
        pushgateway = PushgatewayReporter(config.pushgateway_url, config.run_id)
    return TensorBoardWriter(tensorboard_dir), pushgateway


def _check_shard_files(config: PretrainConfig, manifest: Any) -> None:
    """Checks the files training and validation will read against the manifest before anything
    is created: sizes and CRC32Cs (streamed object-store files: their listed sizes; their
    content as they arrive)."""
    from mlm.data.dataset import checked_shard_files, streams

    stage = not streams(config.shard_dir, config.input_window_files)
    checked_shard_files(manifest, "train", stage=stage)
    validation = manifest.splits.get("validation")
    if config.validation_batches and validation and validation.examples:
        checked_shard_files(manifest, "validation", stage=stage)


def _dataset(config: PretrainConfig, split: str, context: Any, windows: list[Any]) -> Any:
    """One input pipeline's per-replica batches of a split (repeating; shuffled for training);
    a streaming window it opens joins `windows`."""
    from mlm.data import pretraining_dataset

    return pretraining_dataset(
        config.shard_dir,
        context.get_per_replica_batch_size(config.batch_size),
        split=split,
        shuffle=split == "train",
        seed=config.seed,
        input_context=context,
        window_files=config.input_window_files,
        windows=windows,
    )


def _validate_model(
    config: PretrainConfig, model: Any, strategy: Any, manifest: Any, windows: list[Any]
) -> dict:
    """Masked-LM metrics on `validation_batches` validation batches ({} when there are none)."""
    from mlm.evaluation import masked_lm_metrics

    split = manifest.splits.get("validation")
    if not config.validation_batches or not split or not split.examples:
        return {}
    return masked_lm_metrics(
        model,
        lambda context: _dataset(config, "validation", context, windows),
        config.validation_batches,
        seed=config.seed,
        strategy=strategy,
    )


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
