"""The strategy-aware pre-training loop: set-up, loop, report, checkpoint.

Keras 3 `Model.fit` does not run under MultiWorkerMirroredStrategy (keras-team/keras#20585), so
pre-training uses this plain loop on every strategy (default, Mirrored, MultiWorkerMirrored). Each
step runs `model.masked_lm_forward` (the one masked-LM computation, shared with `fit`) on every
replica inside a GradientTape, scales the replica's loss sum by the *global* number of masked
tokens (the optimizer sums gradients over replicas, so this is exactly the mean over the global
batch), and applies the gradients with the Keras optimizer. Loss and accuracy are aggregated as
sums (loss_sum, num_masked, num_correct) over all replicas, so every worker sees the same numbers
and takes the same decisions (stop on NaN, checkpoint now).

Input: each worker iterates over its own input pipeline (`make_dataset(input_context)`) with a
plain `tf.data` iterator, and each step hands one batch per local replica to the strategy
(`experimental_distribute_values_from_function`). A plain iterator, unlike the strategy's
distributed one, can be checkpointed, so the keeper saves its state with every checkpoint.

Resuming: the step counter, model, optimizer and input position come from the checkpoint; the
input continues where it stopped without reading the consumed batches again, so a resume at step
10,000 starts as fast as one at step 100. Without a saved input position (an older checkpoint,
another worker count) the deterministic pipeline is rebuilt and the consumed batches are skipped,
which costs time in proportion to the step. Masking seeds derive from the step number, so a
resumed run sees the same batches and masks as an uninterrupted one.

Stopping: a `StopRequest` flag (SIGTERM/SIGINT) joins the step's all-reduce like a time-based
save request, so every worker sees it after the same step; they save that step together and the
loop raises `TrainingInterrupted` (exit status 128 + signal number).
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from mlm.training.checkpoints import CheckpointKeeper
from mlm.training.preemption import StopRequest, TrainingInterrupted

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

# Scalars summed over replicas each step, in this order.
_SUMS = ("loss_sum", "num_masked", "num_correct", "tokens", "save_requests", "stop_requests")


class TrainingDivergedError(RuntimeError):
    """The training loss (or the weights) became NaN or infinite; training stopped.

    The last checkpoint saved before it is kept; the diverged state is not saved.
    """


class Reporter(Protocol):
    """Something that takes the metrics of a logging interval (progress, TensorBoard, ...)."""

    def report(self, metrics: Mapping[str, float]) -> Any: ...


@dataclass
class LoopConfig:
    """How long and how to train.

    Attributes:
        total_steps: train until the step counter reaches this (counted in global batches).
        log_every_steps: report metrics every this many steps (and at the last step).
        checkpoint_every_steps: save a checkpoint every this many steps (None: only by time/end).
        checkpoint_every_minutes: also save when this many minutes passed since the last save.
        jit_compile: compile the per-replica step with XLA.
        seed: base seed of the masking randomness.
    """

    total_steps: int
    log_every_steps: int = 10
    checkpoint_every_steps: int | None = None
    checkpoint_every_minutes: float | None = None
    jit_compile: bool = False
    seed: int = 0


@dataclass
class LoopResult:
    """What a call of `train_loop` did.

    Attributes:
        start_step: the step training started from (> 0 after a resume).
        final_step: the step it reached.
        tokens: non-padding tokens trained on since step 0 (restored ones included).
        seconds: wall time of this call's training steps after the first (which traces).
        tokens_per_second: steady-state throughput (the first step left out).
        history: per logging interval: step, loss, accuracy, learning_rate, tokens_per_second
            (lists; includes the history restored from the checkpoint).
        final_loss: mean loss of the last logging interval (nan if no step ran).
        final_accuracy: masked accuracy of the last logging interval (nan if no step ran).
    """

    start_step: int
    final_step: int
    tokens: float
    seconds: float
    tokens_per_second: float = 0.0
    history: dict[str, list[float]] = field(default_factory=dict)
    final_loss: float = math.nan
    final_accuracy: float = math.nan


HISTORY_KEYS = ("step", "loss", "accuracy", "learning_rate", "tokens_per_second")


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    """The optimizer's learning rate now (a schedule evaluated at the optimizer's iterations)."""
    return float(optimizer.learning_rate)


def all_finite(variables: Sequence[tf.Variable]) -> bool:
    """True when no variable holds a NaN or an infinity."""
    import tensorflow as tf

    return bool(tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in variables]))


def make_train_step(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    strategy: tf.distribute.Strategy,
    *,
    seed: int = 0,
    jit_compile: bool = False,
) -> Callable[..., tf.Tensor]:
    """Builds the distributed training step `step_fn(iterator, step, requests) -> sums`.

    Args:
        model: a MaskedLanguageModel (anything with `masked_lm_forward`), built in the scope.
        optimizer: the Keras optimizer, built for the model's trainable variables.
        strategy: the distribution strategy the model was created under.
        seed: base seed; each replica masks with the stateless seed [seed + step, replica id].
        jit_compile: XLA-compile the per-replica computation.

    Returns:
        A tf.function taking this worker's `tf.data` iterator (one element per local replica and
        step), the step number (int64 scalar) and this worker's save and stop requests (float32
        [2] of 0/1), and returning the float32 vector of `_SUMS` summed over all replicas.
    """
    import tensorflow as tf

    from mlm.model import replica_loss

    def replica_step(batch, step, requests):
        context = tf.distribute.get_replica_context()
        replica_seed = tf.stack(
            [tf.cast(seed, tf.int64) + step, tf.cast(context.replica_id_in_sync_group, tf.int64)]
        )
        variables = model.trainable_variables
        with tf.GradientTape() as tape:
            out = model.masked_lm_forward(batch, training=True, seed=replica_seed)
            scaled = optimizer.scale_loss(replica_loss(out, model.losses))
        gradients = tape.gradient(scaled, variables)
        # Variables outside the MLM path (the encoder's pooler) get no gradient: skip them.
        pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
        optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        tokens = tf.reduce_sum(tf.cast(batch["attention_mask"], tf.float32))
        return tf.stack(
            [
                out["loss_sum"],
                out["num_masked"],
                out["num_correct"],
                tokens,
                requests[0],
                requests[1],
            ]
        )

    replica_fn = tf.function(replica_step, jit_compile=jit_compile) if jit_compile else replica_step

    @tf.function
    def train_step(iterator, step, requests):
        # One batch per local replica, in replica order, from this worker's own pipeline.
        batch = strategy.experimental_distribute_values_from_function(lambda _ctx: next(iterator))
        per_replica = strategy.run(replica_fn, args=(batch, step, requests))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return train_step


def train_loop(
    model: keras.Model,
    optimizer: keras.optimizers.Optimizer,
    strategy: tf.distribute.Strategy,
    make_dataset: Callable[[tf.distribute.InputContext], tf.data.Dataset],
    config: LoopConfig,
    *,
    step_counter: tf.Variable,
    checkpoints: CheckpointKeeper | None = None,
    reporters: Sequence[Reporter] = (),
    log: Callable[[str], None] = print,
    stop: StopRequest | None = None,
    first_step: int = 0,
) -> LoopResult:
    """Trains `model` until `step_counter` reaches `config.total_steps`, resuming if it can.

    Every worker of a multi-worker job calls this with the same arguments; only the chief should
    pass `reporters`.

    Args:
        model: a built MaskedLanguageModel created in `strategy.scope()`.
        optimizer: its optimizer, built in the same scope.
        strategy: the distribution strategy.
        make_dataset: `input_context -> dataset` of this worker's input pipeline: per-replica
            batches (dicts of int32 [per_replica_batch, seq_length]), repeating, deterministic.
        config: steps, logging and checkpointing settings.
        step_counter: int64 variable tracked by the checkpoint; holds the restored step.
        checkpoints: where to save and resume from (None: no checkpoints).
        reporters: sinks for the metrics of each logging interval (see `Reporter`).
        log: one-line messages (resume, checkpoint, divergence, stop).
        stop: a flag (set by SIGTERM/SIGINT) that stops training after saving the step reached.
        first_step: the step at which this run's input starts (a run that continues from an
            earlier model's step count reads its data from the beginning).

    Returns:
        The LoopResult.

    Raises:
        TrainingDivergedError: the loss or the weights became NaN or infinite.
        TrainingInterrupted: `stop` was set on some worker; every worker saved the same step.
    """
    history, restored_tokens = _restore_checkpoint(checkpoints, step_counter, log)
    start_step = int(step_counter.numpy())
    _check_same_step(strategy, start_step)
    train_step = make_train_step(
        model, optimizer, strategy, seed=config.seed, jit_compile=config.jit_compile
    )
    iterator = _open_input(strategy, make_dataset, checkpoints, start_step, first_step, log)

    progress = _Progress(start_step, history, restored_tokens)
    step = start_step
    last_save = time.monotonic()
    while step < config.total_steps:
        minutes = config.checkpoint_every_minutes
        time_to_save = minutes is not None and time.monotonic() - last_save >= 60 * minutes
        stop_requested = stop is not None and stop.signum is not None
        values, step_seconds = _run_step(train_step, iterator, step, time_to_save, stop_requested)
        step += 1
        step_counter.assign(step)
        _check_loss(values, reporters, step, config.total_steps)
        progress.add(step, values, step_seconds)
        if step % config.log_every_steps == 0 or step == config.total_steps:
            progress.report(step, config.total_steps, current_learning_rate(optimizer), reporters)

        every = config.checkpoint_every_steps
        stopping = values["stop_requests"] > 0  # the same on every worker
        due = (every and step % every == 0) or values["save_requests"] > 0 or stopping
        if checkpoints is not None and (due or step == config.total_steps):
            _save_checkpoint(model, checkpoints, progress, step, config.total_steps, reporters, log)
            last_save = time.monotonic()
        if stopping:
            _raise_stop(stop, step, checkpoints is not None, log)
    return progress.result(step)


def _restore_checkpoint(
    checkpoints: CheckpointKeeper | None, step_counter: tf.Variable, log: Callable[[str], None]
) -> tuple[dict[str, list[float]], float]:
    """Restores the latest checkpoint, if any: the history up to its step and the tokens so far."""
    history: dict[str, list[float]] = {key: [] for key in HISTORY_KEYS}
    restored_tokens = 0.0
    if checkpoints is not None:
        restored = checkpoints.restore_latest()
        if restored is not None:
            start = int(step_counter.numpy())
            saved = restored.get("history") or {}
            for key in HISTORY_KEYS:
                history[key] = [
                    value
                    for value, step in zip(saved.get(key, []), saved.get("step", []))
                    if step <= start
                ]
            restored_tokens = float(restored.get("tokens", 0.0))
            log(f"resumed from checkpoint at step {start}")
    return history, restored_tokens


def _open_input(
    strategy: tf.distribute.Strategy,
    make_dataset: Callable[[tf.distribute.InputContext], tf.data.Dataset],
    checkpoints: CheckpointKeeper | None,
    start_step: int,
    first_step: int,
    log: Callable[[str], None],
) -> Any:
    """This worker's input iterator, positioned at `start_step` and tracked by the checkpoints."""
    context = input_context(strategy)
    dataset = make_dataset(context)
    iterator = iter(dataset)
    if checkpoints is not None:
        checkpoints.track_input(
            iterator, worker=context.input_pipeline_id, num_workers=context.num_input_pipelines
        )
    consumed = start_step - first_step
    if consumed > 0 and not (checkpoints is not None and checkpoints.restore_input(start_step)):
        # No saved input position: re-read the batches consumed so far (deterministic input).
        local_replicas = strategy.num_replicas_in_sync // context.num_input_pipelines
        log(f"no saved input position for step {start_step}: skipping the consumed batches")
        iterator = iter(dataset.skip(consumed * local_replicas))
        if checkpoints is not None:
            checkpoints.track_input(
                iterator, worker=context.input_pipeline_id, num_workers=context.num_input_pipelines
            )
    return iterator


@dataclass
class _Progress:
    """What `train_loop` accumulates over its steps: the sums of the current logging interval,
    token and time totals for throughput, and the history of reported intervals."""

    start_step: int
    history: dict[str, list[float]]
    restored_tokens: float
    # Sums since the last report.
    interval: dict[str, float] = field(default_factory=lambda: dict.fromkeys(_SUMS, 0.0))
    # Throughput counts steady-state steps only: the first step of a call traces and compiles.
    interval_seconds: float = 0.0
    interval_timed_tokens: float = 0.0
    total_tokens: float = 0.0
    timed_tokens: float = 0.0
    timed_seconds: float = 0.0
    final_loss: float = math.nan
    final_accuracy: float = math.nan

    def __post_init__(self) -> None:
        # A resumed run that has nothing left to do still has a last report.
        if self.history["step"]:
            self.final_loss = self.history["loss"][-1]
            self.final_accuracy = self.history["accuracy"][-1]

    def add(self, step: int, values: Mapping[str, float], step_seconds: float) -> None:
        """Adds one step's sums (`values`) and duration."""
        for key in _SUMS:
            self.interval[key] += values[key]
        self.total_tokens += values["tokens"]
        if step > self.start_step + 1:
            self.interval_seconds += step_seconds
            self.interval_timed_tokens += values["tokens"]

    def report(
        self, step: int, total_steps: int, learning_rate: float, reporters: Sequence[Reporter]
    ) -> None:
        """Reports the interval that ends at `step`, records it in the history, starts the next."""
        self.timed_seconds += self.interval_seconds
        self.timed_tokens += self.interval_timed_tokens
        interval = self.interval
        metrics = {
            "step": step,
            "loss": _ratio(interval["loss_sum"], interval["num_masked"]),
            "accuracy": _ratio(interval["num_correct"], interval["num_masked"]),
            "learning_rate": learning_rate,
            "tokens_per_second": _ratio(self.interval_timed_tokens, self.interval_seconds),
            "eta_seconds": _ratio(self.timed_seconds, step - self.start_step - 1)
            * (total_steps - step),
            "total_steps": total_steps,
            "diverged": 0.0,
        }
        for key in HISTORY_KEYS:
            self.history[key].append(metrics[key])
        for reporter in reporters:
            reporter.report(metrics)
        self.final_loss, self.final_accuracy = metrics["loss"], metrics["accuracy"]
        self.interval = dict.fromkeys(_SUMS, 0.0)
        self.interval_seconds = self.interval_timed_tokens = 0.0

    def tokens(self) -> float:
        """Tokens trained on since step 0, the restored ones included."""
        return self.restored_tokens + self.total_tokens

    def result(self, final_step: int) -> LoopResult:
        """What the loop did, having reached `final_step`."""
        return LoopResult(
            start_step=self.start_step,
            final_step=final_step,
            tokens=self.tokens(),
            seconds=self.timed_seconds,
            tokens_per_second=_ratio(self.timed_tokens, self.timed_seconds),
            history=self.history,
            final_loss=self.final_loss,
            final_accuracy=self.final_accuracy,
        )


def _run_step(
    train_step: Callable[..., tf.Tensor],
    iterator: Any,
    step: int,
    save_requested: bool,
    stop_requested: bool,
) -> tuple[dict[str, float], float]:
    """Runs training step `step` with this worker's requests; the `_SUMS` over all replicas, by
    name, and the step's wall time in seconds."""
    import tensorflow as tf

    started = time.monotonic()
    sums = train_step(
        iterator,
        tf.constant(step, tf.int64),
        tf.constant([float(save_requested), float(stop_requested)], tf.float32),
    ).numpy()
    seconds = time.monotonic() - started
    return dict(zip(_SUMS, (float(v) for v in sums))), seconds


def _check_loss(
    values: Mapping[str, float], reporters: Sequence[Reporter], step: int, total_steps: int
) -> None:
    """Stops training when the step's loss is NaN or infinite."""
    if not math.isfinite(values["loss_sum"]):
        loss = values["loss_sum"] / max(values["num_masked"], 1.0)  # stays NaN / inf
        _report_divergence(reporters, step, total_steps, loss)
        raise TrainingDivergedError(
            f"the training loss became {values['loss_sum']} at step {step}; training stopped "
            "without saving this state. Lower the learning rate, enable gradient clipping, or "
            "use float32 instead of mixed_float16, then rerun (it resumes from the last "
            "checkpoint)"
        )


def _save_checkpoint(
    model: keras.Model,
    checkpoints: CheckpointKeeper,
    progress: _Progress,
    step: int,
    total_steps: int,
    reporters: Sequence[Reporter],
    log: Callable[[str], None],
) -> None:
    """Saves `step` with the history and token count, unless the weights diverged."""
    if not all_finite(model.trainable_variables):
        _report_divergence(reporters, step, total_steps)
        raise TrainingDivergedError(
            f"the weights hold NaN or infinite values after step {step}; training stopped "
            "without saving this state (the last checkpoint is kept). Lower the learning "
            "rate or enable gradient clipping, then rerun"
        )
    sidecar = {"history": progress.history, "tokens": progress.tokens()}
    path = checkpoints.save(step, sidecar)
    if path:
        log(f"saved checkpoint at step {step}: {path}")


def _raise_stop(
    stop: StopRequest | None, step: int, saved: bool, log: Callable[[str], None]
) -> NoReturn:
    """Ends training after a stop request: every worker saved `step` (when it has checkpoints)."""
    signum = stop.signum if stop is not None and stop.signum is not None else signal.SIGTERM
    interrupted = TrainingInterrupted(signum, step)
    what = "saved a checkpoint" if saved else "no checkpoints"
    log(f"{interrupted} ({what}); rerun with the same arguments to resume")
    raise interrupted


def input_context(strategy: tf.distribute.Strategy) -> tf.distribute.InputContext:
    """This worker's input pipeline in a job of `strategy`: one pipeline per worker.

    MultiWorkerMirroredStrategy: pipeline i is worker i of the cluster (a "chief" task first);
    otherwise there is one pipeline.
    """
    import tensorflow as tf

    replicas = strategy.num_replicas_in_sync
    resolver = getattr(strategy, "cluster_resolver", None)
    spec = resolver.cluster_spec().as_dict() if resolver is not None else {}
    if not spec:
        return tf.distribute.InputContext(1, 0, replicas)
    tasks = [(job, index) for job in ("chief", "worker") for index in range(len(spec.get(job, [])))]
    pipeline = tasks.index((resolver.task_type, int(resolver.task_id)))
    return tf.distribute.InputContext(len(tasks), pipeline, replicas)


def _report_divergence(
    reporters: Sequence[Reporter], step: int, total_steps: int, loss: float | None = None
) -> None:
    """Reports `diverged=1` (and the non-finite loss) before the loop stops, so monitoring sees
    why the run ended."""
    metrics = {"step": step, "total_steps": total_steps, "diverged": 1.0}
    if loss is not None:
        metrics["loss"] = loss
    for reporter in reporters:
        reporter.report(metrics)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else 0.0


def _check_same_step(strategy: tf.distribute.Strategy, step: int) -> None:
    """Fails fast when workers resumed from different steps (e.g. a checkpoint dir not shared)."""
    import tensorflow as tf

    if strategy.num_replicas_in_sync == 1:
        return
    value = tf.constant([float(step), float(step) ** 2], tf.float64)

    @tf.function
    def mean_and_square():
        per_replica = strategy.run(lambda: tf.identity(value))
        return strategy.reduce(tf.distribute.ReduceOp.MEAN, per_replica, axis=None)

    mean, mean_square = mean_and_square().numpy()
    if mean_square - mean**2 > 0.25:  # the steps differ between replicas
        raise RuntimeError(
            f"workers restored different steps (this one {step}, mean {mean:g}): every worker "
            "must see the same checkpoint directory (gs:// or a shared volume)"
        )
