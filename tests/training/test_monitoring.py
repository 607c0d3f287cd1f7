"""Progress lines, TensorBoard event files and a real Prometheus Pushgateway."""

from __future__ import annotations

import contextlib
import io
import logging
import math
import socket
import threading
from collections.abc import Iterator

import pytest

from mlm.monitoring import (
    ProgressPrinter,
    PushgatewayReporter,
    TensorBoardWriter,
    format_duration,
)
from tests.training.conftest import _free_port, scrape

METRICS = {
    "step": 40,
    "loss": 4.81234,
    "accuracy": 0.10341,
    "learning_rate": 9.8e-5,
    "tokens_per_second": 5120.4,
    "eta_seconds": 72.0,
}


def read_scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    """All scalars of the event files under `logdir`: {tag: [(step, value), ...]}."""
    import tensorflow as tf

    scalars: dict[str, list[tuple[int, float]]] = {}
    for path in tf.io.gfile.glob(f"{logdir}/events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                number = (
                    float(tf.make_ndarray(value.tensor))
                    if value.HasField("tensor")
                    else value.simple_value
                )
                scalars.setdefault(value.tag, []).append((event.step, number))
    return scalars


def test_format_duration():
    assert format_duration(0) == "0:00:00"
    assert format_duration(72.4) == "0:01:12"
    assert format_duration(3 * 3600 + 61) == "3:01:01"
    assert format_duration(-5) == "0:00:00"


def test_progress_line_has_every_column():
    out = io.StringIO()
    ProgressPrinter(200, stream=out).report(METRICS)
    assert out.getvalue() == (
        "step 40/200 (20%) | loss 4.8123 | acc 0.1034 | lr 9.80e-05 | 5120 tok/s | eta 0:01:12\n"
    )


def test_quiet_progress_prints_only_the_last_step_and_messages():
    out = io.StringIO()
    printer = ProgressPrinter(200, quiet=True, stream=out)
    printer.report(METRICS)
    printer.message("saved checkpoint")
    printer.report({**METRICS, "step": 200})
    assert out.getvalue().splitlines()[0] == "saved checkpoint"
    assert out.getvalue().splitlines()[1].startswith("step 200/200 (100%) | loss 4.8123")
    assert len(out.getvalue().splitlines()) == 2


def test_tensorboard_events_hold_the_scalars(tmp_path):
    writer = TensorBoardWriter(str(tmp_path))
    writer.report(METRICS)
    writer.report({**METRICS, "step": 80, "loss": 3.5})
    writer.close()
    scalars = read_scalars(tmp_path)
    assert set(scalars) == {"loss", "accuracy", "learning_rate", "tokens_per_second"}
    assert scalars["loss"] == [(40, pytest.approx(4.81234)), (80, pytest.approx(3.5))]
    assert scalars["learning_rate"][0] == (40, pytest.approx(9.8e-5))


LABELS = "instance=,job=mlm_pretrain,run_id={}"


@pytest.fixture
def hanging_server() -> Iterator[dict]:
    """A TCP server on loopback that accepts connections and never answers them."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve():
        server.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(server.accept()[0])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield {"url": f"http://127.0.0.1:{server.getsockname()[1]}", "accepted": accepted}
    stop.set()
    thread.join()
    for connection in accepted:  # the reporter's blocked push fails now, and its thread ends
        connection.close()
    server.close()


def test_pushgateway_receives_the_gauges(pushgateway):
    reporter = PushgatewayReporter(pushgateway, run_id="monitoring-test")
    reporter.report({**METRICS, "total_steps": 200, "diverged": 0.0})
    assert reporter.flush()
    metrics = scrape(pushgateway)
    labels = LABELS.format("monitoring-test")
    assert metrics["mlm_train_loss"][labels] == pytest.approx(4.81234)
    assert metrics["mlm_train_accuracy"][labels] == pytest.approx(0.10341)
    assert metrics["mlm_learning_rate"][labels] == pytest.approx(9.8e-5)
    assert metrics["mlm_tokens_per_second"][labels] == pytest.approx(5120.4)
    assert metrics["mlm_global_step"][labels] == 40
    assert metrics["mlm_total_steps"][labels] == 200
    assert metrics["mlm_eta_seconds"][labels] == 72
    assert metrics["mlm_training_diverged"][labels] == 0
    assert metrics["mlm_last_success_timestamp"][labels] > 1.7e9
    assert metrics["push_time_seconds"][labels] > 1.7e9
    # The next push replaces the group's values.
    reporter.report({**METRICS, "step": 41, "loss": 4.5})
    assert reporter.close()
    assert scrape(pushgateway)["mlm_global_step"][labels] == 41


def test_close_delivers_the_newest_values_and_merges_skipped_ones(pushgateway):
    reporter = PushgatewayReporter(pushgateway, run_id="newest")
    reporter.report({**METRICS, "total_steps": 200})
    for step in range(41, 60):
        reporter.report({"step": step, "loss": 1.0 / step})
    reporter.report({"step": 60, "finished": 1.0})
    assert reporter.close()
    metrics = scrape(pushgateway)
    labels = LABELS.format("newest")
    assert metrics["mlm_global_step"][labels] == 60
    assert metrics["mlm_training_finished"][labels] == 1
    assert metrics["mlm_train_loss"][labels] == pytest.approx(1.0 / 59)  # from a merged report
    assert metrics["mlm_total_steps"][labels] == 200
    reporter.report({"step": 61})  # after close: ignored
    assert reporter.close() and scrape(pushgateway)["mlm_global_step"][labels] == 60


def test_a_hanging_gateway_never_blocks_report(hanging_server, caplog):
    """Every push to this server hangs (for the 60 s push timeout): reports still return at once.

    One push is in flight on the reporter's thread; the reports behind it merge into one pending
    entry instead of queueing pushes. `close` gives up after its own timeout.
    """
    reporter = PushgatewayReporter(hanging_server["url"], "hangs", timeout=60.0)
    reporter.report(METRICS)
    while not hanging_server["accepted"]:  # the first push has connected and now waits
        threading.Event().wait(0.01)
    for step in range(41, 241):
        reporter.report({**METRICS, "step": step})
    # 200 reports returned while the first push still waits for an answer that never comes.
    assert len(hanging_server["accepted"]) == 1
    assert reporter.flush(timeout=0.1) is False
    with caplog.at_level(logging.WARNING, logger="mlm.monitoring"):
        assert reporter.close(timeout=0.1) is False
    assert "not delivered within 0.1s" in caplog.text
    assert len(hanging_server["accepted"]) == 1


def test_heartbeat_repushes_unchanged_values(pushgateway):
    """With no new report the thread pushes again, so push_time_seconds shows a live process."""
    reporter = PushgatewayReporter(pushgateway, run_id="heartbeat", heartbeat=0.05)
    reporter.report(METRICS)
    assert reporter.flush()
    labels = LABELS.format("heartbeat")
    first = scrape(pushgateway)["push_time_seconds"][labels]
    while scrape(pushgateway)["push_time_seconds"][labels] == first:
        threading.Event().wait(0.05)
    after = scrape(pushgateway)
    assert after["mlm_global_step"][labels] == 40
    assert after["mlm_last_success_timestamp"][labels] < after["push_time_seconds"][labels]
    assert reporter.close()


def test_pushgateway_down_warns_once_per_streak_and_never_raises(caplog):
    reporter = PushgatewayReporter(f"http://127.0.0.1:{_free_port()}", "down", timeout=1.0)
    with caplog.at_level(logging.INFO, logger="mlm.monitoring"):
        for _ in range(3):
            reporter.report(METRICS)
            assert reporter.flush() is False
        reporter.close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "push failed" in warnings[0].getMessage()
    assert "not delivered" in warnings[1].getMessage()


def test_pushgateway_recovery_is_logged(pushgateway, caplog):
    reporter = PushgatewayReporter(pushgateway, "recovers", timeout=1.0)
    good_url = reporter.url
    reporter.url = f"http://127.0.0.1:{_free_port()}"
    with caplog.at_level(logging.INFO, logger="mlm.monitoring"):
        reporter.report(METRICS)
        assert not reporter.flush()
        reporter.url = good_url
        reporter.report(METRICS)
        assert reporter.flush()
        reporter.url = f"http://127.0.0.1:{_free_port()}"
        reporter.report(METRICS)
        assert not reporter.flush()
        reporter.url = good_url
        assert reporter.close()
    messages = [r.getMessage() for r in caplog.records]
    assert sum("push failed" in m for m in messages) == 2
    assert sum("work again" in m for m in messages) == 2


@pytest.mark.parametrize(
    ("checkpoint_every", "message", "step", "loss_is_nan"),
    [
        (10, "the training loss became nan at step 5", 5, True),
        (2, "the weights hold NaN", 4, False),
    ],
    ids=["nan-loss", "nan-weights"],
)
def test_divergence_is_pushed_before_the_loop_stops(
    training_data, pushgateway, tmp_path, checkpoint_every, message, step, loss_is_nan
):
    """A real loop whose 4th update writes NaN weights: the gateway holds diverged=1 and the
    step it stopped at (the NaN loss of step 5, or the last finite loss when the checkpoint-time
    weight check stops it at step 4)."""
    import keras
    import tensorflow as tf

    from mlm.training.checkpoints import CheckpointKeeper
    from mlm.training.loop import LoopConfig, TrainingDivergedError, train_loop
    from tests.training.test_loop import NaNAfter, build, dataset_fn

    model, _, counter, _ = build(training_data)
    optimizer = keras.optimizers.AdamW(learning_rate=NaNAfter(3).schedule)
    optimizer.build(model.trainable_variables)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, step=counter)
    keeper = CheckpointKeeper(str(tmp_path / "ckpt"), checkpoint)
    run_id = f"diverges-{checkpoint_every}"
    reporter = PushgatewayReporter(pushgateway, run_id)
    config = LoopConfig(total_steps=10, log_every_steps=1, checkpoint_every_steps=checkpoint_every)
    with pytest.raises(TrainingDivergedError, match=message):
        train_loop(
            model, optimizer, tf.distribute.get_strategy(), dataset_fn(training_data), config,
            step_counter=counter, checkpoints=keeper, reporters=[reporter], log=lambda _m: None,
        )  # fmt: skip
    assert reporter.close()
    metrics = scrape(pushgateway)
    labels = LABELS.format(run_id)
    assert metrics["mlm_training_diverged"][labels] == 1
    assert math.isnan(metrics["mlm_train_loss"][labels]) == loss_is_nan
    assert metrics["mlm_global_step"][labels] == step
    assert metrics["mlm_total_steps"][labels] == 10
