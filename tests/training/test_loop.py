"""The training loop in one process (default strategy): resume equivalence and divergence stops."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlm.evaluation import masked_lm_metrics
from mlm.training.checkpoints import CheckpointKeeper
from mlm.training.loop import LoopConfig, TrainingDivergedError, train_loop
from tests.training.conftest import TINY_MODEL


def build(data: dict[str, str], learning_rate=3e-3):
    """A tiny, dropout-free MaskedLanguageModel with AdamW, seeded, plus its checkpoint."""
    import keras
    import tensorflow as tf

    from mlm.data import read_tokenizer_info
    from mlm.encoders.bert import BERT
    from mlm.model import MaskedLanguageModel

    info = read_tokenizer_info(data["tokenizer"])
    keras.utils.set_random_seed(0)
    encoder = BERT.from_variant(
        "tiny",
        vocab_size=info.vocab_size,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        **TINY_MODEL,
    )
    model = MaskedLanguageModel(
        encoder,
        vocab_size=info.vocab_size,
        mask_token_id=info.mask_token_id,
        special_token_ids=tuple(info.special_token_ids),
        mlm_head_dropout=0.0,
    )
    model.build(None)
    optimizer = keras.optimizers.AdamW(learning_rate=learning_rate)
    optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)
    return model, optimizer, step, checkpoint


def dataset_fn(data: dict[str, str], split: str = "train"):
    from mlm.data import pretraining_dataset

    def make(context):
        return pretraining_dataset(
            data["shards"], context.get_per_replica_batch_size(8), split=split, seed=0,
            input_context=context,
        )  # fmt: skip

    return make


class Collect:
    def __init__(self):
        self.reports = []

    def report(self, metrics):
        self.reports.append(dict(metrics))


def test_resumed_run_ends_with_the_same_weights_as_an_uninterrupted_one(training_data, tmp_path):
    """Resuming repeats and loses no optimizer step: the weights match an uninterrupted run."""
    import tensorflow as tf

    strategy = tf.distribute.get_strategy()
    make = dataset_fn(training_data)

    model, optimizer, step, _ = build(training_data)
    straight = train_loop(
        model, optimizer, strategy, make, LoopConfig(total_steps=6, log_every_steps=2),
        step_counter=step,
    )  # fmt: skip
    expected = [w.copy() for w in model.get_weights()]
    assert straight.final_step == 6 and straight.history["step"] == [2, 4, 6]

    directory = str(tmp_path / "ckpt")
    model, optimizer, step, checkpoint = build(training_data)
    first = train_loop(
        model, optimizer, strategy, make,
        LoopConfig(total_steps=3, log_every_steps=2, checkpoint_every_steps=2),
        step_counter=step, checkpoints=CheckpointKeeper(directory, checkpoint),
    )  # fmt: skip
    assert (first.start_step, first.final_step) == (0, 3)
    assert first.history["step"] == [2, 3]

    model, optimizer, step, checkpoint = build(training_data)  # a new process, in effect
    collect = Collect()
    messages = []
    second = train_loop(
        model, optimizer, strategy, make,
        LoopConfig(total_steps=6, log_every_steps=2, checkpoint_every_steps=2),
        step_counter=step, checkpoints=CheckpointKeeper(directory, checkpoint),
        reporters=[collect], log=messages.append,
    )  # fmt: skip
    assert messages[0] == "resumed from checkpoint at step 3"
    assert (second.start_step, second.final_step) == (3, 6)
    assert int(optimizer.iterations.numpy()) == 6
    assert [r["step"] for r in collect.reports] == [4, 6]
    assert second.history["step"] == [2, 3, 4, 6]
    assert second.history["loss"][-1] == pytest.approx(straight.history["loss"][-1], rel=1e-4)
    for got, want in zip(model.get_weights(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert second.tokens == straight.tokens  # counted since step 0, across the resume

    # Rerunning a finished run trains nothing and still reports its last numbers.
    model, optimizer, step, checkpoint = build(training_data)
    third = train_loop(
        model, optimizer, strategy, make, LoopConfig(total_steps=6, log_every_steps=2),
        step_counter=step, checkpoints=CheckpointKeeper(directory, checkpoint), log=print,
    )  # fmt: skip
    assert (third.start_step, third.final_step) == (6, 6)
    assert third.final_loss == second.final_loss and third.history == second.history

    report = collect.reports[-1]
    assert set(report) >= {"loss", "accuracy", "learning_rate", "tokens_per_second"}
    assert 0 < report["loss"] < 10 and 0 <= report["accuracy"] <= 1
    assert report["learning_rate"] == pytest.approx(3e-3)
    assert report["tokens_per_second"] > 0 and report["eta_seconds"] == 0

    metrics = masked_lm_metrics(
        model, dataset_fn(training_data, "validation"), 2, strategy=strategy
    )
    assert metrics["num_masked"] > 0
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]))


class NaNAfter:
    """A learning-rate schedule that turns NaN at a given optimizer iteration."""

    def __init__(self, iteration: int):
        import keras

        class Schedule(keras.optimizers.schedules.LearningRateSchedule):
            def __call__(self, step):
                import tensorflow as tf

                return tf.where(step < iteration, 1e-3, float("nan"))

        self.schedule = Schedule()


@pytest.mark.parametrize(
    ("checkpoint_every", "message"),
    [(2, "the weights hold NaN"), (10, "the training loss became nan at step 5")],
)
def test_nan_stops_training_and_keeps_the_last_good_checkpoint(
    training_data, tmp_path, checkpoint_every, message
):
    """Iteration 3 (the 4th step) writes NaN weights; step 5's loss is NaN."""
    import tensorflow as tf

    model, _, step, _ = build(training_data)
    import keras

    optimizer = keras.optimizers.AdamW(learning_rate=NaNAfter(3).schedule)
    optimizer.build(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)
    keeper = CheckpointKeeper(str(tmp_path / "ckpt"), checkpoint)
    with pytest.raises(TrainingDivergedError, match=message):
        train_loop(
            model, optimizer, tf.distribute.get_strategy(), dataset_fn(training_data),
            LoopConfig(total_steps=10, log_every_steps=1, checkpoint_every_steps=checkpoint_every),
            step_counter=step, checkpoints=keeper, log=lambda _m: None,
        )  # fmt: skip
    expected_latest = "ckpt-2" if checkpoint_every == 2 else None
    latest = keeper.latest
    assert (latest and latest.rsplit("/", 1)[1]) == expected_latest


def test_time_based_checkpoints(training_data, tmp_path):
    import tensorflow as tf

    model, optimizer, step, checkpoint = build(training_data)
    keeper = CheckpointKeeper(str(tmp_path / "ckpt"), checkpoint, keep=5)
    train_loop(
        model, optimizer, tf.distribute.get_strategy(), dataset_fn(training_data),
        LoopConfig(total_steps=3, checkpoint_every_steps=None, checkpoint_every_minutes=1e-9),
        step_counter=step, checkpoints=keeper, log=lambda _m: None,
    )  # fmt: skip
    assert sorted(p.rsplit("-", 1)[1] for p in keeper._manager.checkpoints) == ["1", "2", "3"]


def test_a_stop_request_saves_the_step_reached_and_raises(training_data, tmp_path):
    """A stop flag (as SIGTERM sets it) during training: the next step is saved with its input
    position, TrainingInterrupted carries exit status 143, and a resume continues there."""
    import signal

    import tensorflow as tf

    from mlm.training.preemption import StopRequest, TrainingInterrupted

    class StopAt(Collect):
        def __init__(self, stop, at):
            super().__init__()
            self.stop, self.at = stop, at

        def report(self, metrics):
            super().report(metrics)
            if metrics["step"] == self.at:
                self.stop.request(signal.SIGTERM)

    directory = str(tmp_path / "ckpt")
    model, optimizer, step, checkpoint = build(training_data)
    stop = StopRequest()
    messages = []
    with pytest.raises(TrainingInterrupted) as caught:
        train_loop(
            model, optimizer, tf.distribute.get_strategy(), dataset_fn(training_data),
            LoopConfig(total_steps=10, log_every_steps=1, checkpoint_every_steps=100),
            step_counter=step, checkpoints=CheckpointKeeper(directory, checkpoint),
            reporters=[StopAt(stop, 2)], log=messages.append, stop=stop,
        )  # fmt: skip
    # Requested after step 2: step 3 carries the request through the all-reduce and is saved.
    assert (caught.value.code, caught.value.step) == (143, 3)
    assert messages[-2].startswith("saved checkpoint at step 3")
    assert messages[-1] == (
        "stopped by SIGTERM at step 3 (saved a checkpoint); rerun with the same arguments to resume"
    )
    assert (tmp_path / "ckpt" / "input" / "worker-0-of-1" / "ckpt-3" / "DONE").exists()

    model, optimizer, step, checkpoint = build(training_data)
    resumed = train_loop(
        model, optimizer, tf.distribute.get_strategy(), dataset_fn(training_data),
        LoopConfig(total_steps=4, log_every_steps=1),
        step_counter=step, checkpoints=CheckpointKeeper(directory, checkpoint),
        log=messages.append,
    )  # fmt: skip
    assert (resumed.start_step, resumed.final_step) == (3, 4)
    assert resumed.history["step"] == [1, 2, 3, 4]


def counting(make):
    """`make` with a count of the batches its pipeline hands out (read through `.count`)."""
    import tensorflow as tf

    produced = []

    def count(batch):
        tick = tf.py_function(lambda: produced.append(1) or 0, [], tf.int32)
        with tf.control_dependencies([tick]):
            return {name: tf.identity(value) for name, value in batch.items()}

    def make_counted(context):
        options = tf.data.Options()
        options.experimental_external_state_policy = (
            tf.data.experimental.ExternalStatePolicy.IGNORE  # the counter is not input state
        )
        return make(context).map(count).with_options(options)

    make_counted.produced = produced
    return make_counted


@pytest.mark.parametrize("input_saved", [True, False])
def test_a_resume_does_not_read_the_consumed_batches_again(training_data, tmp_path, input_saved):
    """Structural: after a resume at step 20, the pipeline hands out the batches of the steps
    still to run (plus what tf.data reads ahead), not the 20 consumed ones; only without a saved
    input position are they read again (the fallback)."""
    import shutil

    import tensorflow as tf

    directory = tmp_path / "ckpt"
    model, optimizer, step, checkpoint = build(training_data)
    train_loop(
        model, optimizer, tf.distribute.get_strategy(), counting(dataset_fn(training_data)),
        LoopConfig(total_steps=20, log_every_steps=10),
        step_counter=step, checkpoints=CheckpointKeeper(str(directory), checkpoint),
        log=lambda _m: None,
    )  # fmt: skip
    if not input_saved:
        shutil.rmtree(directory / "input")

    make = counting(dataset_fn(training_data))
    model, optimizer, step, checkpoint = build(training_data)
    messages = []
    result = train_loop(
        model, optimizer, tf.distribute.get_strategy(), make,
        LoopConfig(total_steps=22, log_every_steps=1),
        step_counter=step, checkpoints=CheckpointKeeper(str(directory), checkpoint),
        log=messages.append,
    )  # fmt: skip
    assert (result.start_step, result.final_step) == (20, 22)
    skipped = [m for m in messages if m.startswith("no saved input position")]
    if input_saved:
        assert not skipped
        assert len(make.produced) < 20  # 2 steps and the read-ahead of the pipeline's prefetch
    else:
        assert skipped == ["no saved input position for step 20: skipping the consumed batches"]
        assert len(make.produced) >= 22


def test_an_input_position_of_another_pipeline_falls_back_to_skipping(training_data, tmp_path):
    """A saved input state that does not fit the pipeline (its definition changed) is not an
    error: the consumed batches are skipped instead."""
    import tensorflow as tf

    directory = str(tmp_path / "ckpt")
    model, optimizer, step, checkpoint = build(training_data)
    train_loop(
        model, optimizer, tf.distribute.get_strategy(), counting(dataset_fn(training_data)),
        LoopConfig(total_steps=2), step_counter=step,
        checkpoints=CheckpointKeeper(directory, checkpoint), log=lambda _m: None,
    )  # fmt: skip
    model, optimizer, step, checkpoint = build(training_data)
    messages = []
    result = train_loop(
        model, optimizer, tf.distribute.get_strategy(), dataset_fn(training_data),
        LoopConfig(total_steps=3), step_counter=step,
        checkpoints=CheckpointKeeper(directory, checkpoint), log=messages.append,
    )  # fmt: skip
    assert result.final_step == 3
    assert messages[1] == "no saved input position for step 2: skipping the consumed batches"
