"""Training observability: console progress, TensorBoard scalars and Prometheus Pushgateway gauges.

All three take the same dict of scalars per logging step (`loss`, `accuracy`, `learning_rate`,
`tokens_per_second`, ...), so the training loop reports once and each sink picks what it shows.
Nothing here may stop or slow training: Pushgateway pushes run on their own thread, and a gateway
that is down costs one warning per failure streak.
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
from collections.abc import Mapping
from typing import TextIO

logger = logging.getLogger(__name__)

PUSHGATEWAY_JOB = "mlm_pretrain"
PUSHGATEWAY_ENV = "MLM_PUSHGATEWAY_URL"

# Prometheus gauge name -> (key in the metrics dict, help text)
GAUGES: dict[str, tuple[str, str]] = {
    "mlm_train_loss": ("loss", "Masked-LM cross-entropy of the last logging interval."),
    "mlm_train_accuracy": ("accuracy", "Masked-token accuracy of the last logging interval."),
    "mlm_learning_rate": ("learning_rate", "Optimizer learning rate at the current step."),
    "mlm_tokens_per_second": ("tokens_per_second", "Non-padding tokens trained per second."),
    "mlm_global_step": ("step", "Training steps completed."),
    "mlm_last_success_timestamp": ("timestamp", "Unix time of the last successful report."),
    # 0 while training; 1 once the outputs are written, so alerts can tell a finished run from a
    # stalled one without deleting the run's group (its final values stay visible).
    "mlm_training_finished": ("finished", "1 once the run has written its outputs, else 0."),
    "mlm_total_steps": ("total_steps", "The step count the run stops at."),
    "mlm_eta_seconds": ("eta_seconds", "Estimated seconds until the last step."),
    # 1 when the loss or the weights became NaN or infinite: pushed before training stops, so
    # the alert fires although the run never reports again.
    "mlm_training_diverged": ("diverged", "1 once training stopped on a NaN/inf loss, else 0."),
}


TENSORBOARD_SCALARS = ("loss", "accuracy", "learning_rate", "tokens_per_second")


def format_duration(seconds: float) -> str:
    """Formats seconds as H:MM:SS (the ETA column)."""
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ProgressPrinter:
    """Plain progress lines a person can read in a terminal or a pod log.

    `step 40/200 (20%) | loss 4.8123 | acc 0.1034 | lr 9.80e-05 | 5120 tok/s | eta 0:01:12`

    Args:
        total_steps: the step count training stops at.
        quiet: print only the first and the final line (for logs of long runs).
        stream: where to print; stdout when None.
        label: what is counted, written before the count (e.g. "finetune: step").
        unit: written after the count (e.g. "MiB" for `read 3/12 MiB`); none by default.
    """

    def __init__(
        self,
        total_steps: int,
        quiet: bool = False,
        stream: TextIO | None = None,
        label: str = "step",
        unit: str = "",
    ):
        self.total_steps = total_steps
        self.quiet = quiet
        self.stream = stream
        self.label = label
        self.unit = unit

    def line(self, metrics: Mapping[str, float], eta_seconds: float | None) -> str:
        """Formats one progress line from a metrics dict (see the class docstring)."""
        step = int(metrics["step"])
        count = f"{self.label} {step}/{self.total_steps}" + (f" {self.unit}" if self.unit else "")
        parts = [f"{count} ({100 * step // max(self.total_steps, 1)}%)"]
        if "loss" in metrics:
            parts.append(f"loss {metrics['loss']:.4f}")
        if "accuracy" in metrics:
            parts.append(f"acc {metrics['accuracy']:.4f}")
        if "learning_rate" in metrics:
            parts.append(f"lr {metrics['learning_rate']:.2e}")
        if "tokens_per_second" in metrics:
            parts.append(f"{metrics['tokens_per_second']:.0f} tok/s")
        if eta_seconds is not None:
            parts.append(f"eta {format_duration(eta_seconds)}")
        return " | ".join(parts)

    def report(self, metrics: Mapping[str, float]) -> None:
        """Prints a progress line (in quiet mode only for the last step).

        `metrics` holds `step` and any of loss, accuracy, learning_rate, tokens_per_second and
        eta_seconds.
        """
        if self.quiet and int(metrics["step"]) < self.total_steps:
            return
        line = self.line(metrics, metrics.get("eta_seconds"))
        print(line, file=self.stream or sys.stdout, flush=True)

    def message(self, text: str) -> None:
        """Prints a one-off line (start, resume, checkpoint), even in quiet mode."""
        print(text, file=self.stream or sys.stdout, flush=True)


class TensorBoardWriter:
    """Writes training scalars as TensorBoard event files under `logdir`.

    The scalars are written with `tf.summary.write` and the "scalars" plugin metadata (what
    `tf.summary.scalar` does), so writing needs no TensorBoard installation; viewing them does.

    Args:
        logdir: a local directory (TensorFlow's file systems; gs:// works on GCP).
    """

    def __init__(self, logdir: str):
        import tensorflow as tf
        from tensorflow.core.framework import summary_pb2

        self._tf = tf
        self._writer = tf.summary.create_file_writer(logdir)
        plugin = summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
        self._metadata = summary_pb2.SummaryMetadata(plugin_data=plugin).SerializeToString()
        self._closed = False

    def report(self, metrics: Mapping[str, float]) -> None:
        """Records the training scalars at `metrics["step"]` and flushes the event file."""
        tf = self._tf
        with self._writer.as_default(step=int(metrics["step"])):
            for name in TENSORBOARD_SCALARS:
                if name in metrics:
                    value = tf.constant(float(metrics[name]), tf.float32)
                    tf.summary.write(name, value, metadata=self._metadata)
        self._writer.flush()

    def close(self) -> None:
        """Flushes and closes the event file (again: no-op)."""
        if not self._closed:
            self._writer.close()
            self._closed = True


class PushgatewayReporter:
    """Pushes the training gauges to a Prometheus Pushgateway from a background thread.

    `report` only records the values and returns: a thread of this reporter does the HTTP push, so
    a gateway that is down, slow or hanging costs the training loop nothing. The queue holds one
    entry: values reported while a push is in flight are merged into it (newer values win), and
    since each push replaces the whole group, only the newest state matters. Between reports the
    thread re-pushes the newest values every `heartbeat` seconds, so `push_time_seconds` shows
    the process is alive even when the step does not advance (a hung collective). `close` (also
    run at interpreter exit) pushes what is left, waiting at most its timeout.

    Each push replaces the group `job=<job>, run_id=<run_id>` on the gateway. Failures (gateway
    down, timeout, HTTP error) are logged as one warning per streak of failures, then one info line
    when pushes work again.

    Args:
        url: the gateway, e.g. "http://pushgateway.monitoring:9091" (scheme optional).
        run_id: the grouping key that tells runs apart.
        job: the Prometheus job label.
        timeout: seconds one push may take.
        heartbeat: seconds between re-pushes of unchanged values (None: never).
    """

    def __init__(
        self,
        url: str,
        run_id: str,
        job: str = PUSHGATEWAY_JOB,
        timeout: float = 5.0,
        heartbeat: float | None = 60.0,
    ):
        from prometheus_client import CollectorRegistry, Gauge

        self.url = url
        self.run_id = run_id
        self.job = job
        self.timeout = timeout
        self.heartbeat = heartbeat
        self.registry = CollectorRegistry()
        self._gauges = {
            name: (key, Gauge(name, help_text, registry=self.registry))
            for name, (key, help_text) in GAUGES.items()
        }
        self._failing = False
        self._condition = threading.Condition()
        self._pending: dict[str, float] | None = None  # reported, not yet pushed (merged)
        self._pushing = False
        self._pushed_any = False
        self._last_ok = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="mlm-pushgateway", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    def report(self, metrics: Mapping[str, float]) -> None:
        """Queues the values in `metrics` for the next push and returns at once.

        Ignored after `close`.
        """
        values = {key: float(metrics[key]) for key, _ in self._gauges.values() if key in metrics}
        values["timestamp"] = time.time()
        with self._condition:
            if self._closed:
                return
            self._pending = {**(self._pending or {}), **values}
            self._condition.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Waits until every reported value was pushed (or failed to be), at most `timeout` s.

        Returns:
            Whether the last push succeeded; False when the wait ran out first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while self._pending is not None or self._pushing:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._condition.wait(remaining)
            return self._last_ok

    def close(self, timeout: float | None = None) -> bool:
        """Pushes what is left (again, if the last push failed) and stops the thread, waiting at
        most `timeout` s (default: the push timeout).

        Returns:
            Whether the last push succeeded within the wait.
        """
        timeout = self.timeout if timeout is None else timeout
        atexit.unregister(self.close)
        with self._condition:
            already_closed, self._closed = self._closed, True
            retry = not already_closed and self._pushed_any and not self._last_ok
            if retry and self._pending is None:
                self._pending = {}  # the last push failed: one more try with the same values
            self._condition.notify_all()
        delivered = self.flush(timeout)
        if not delivered and not already_closed:
            logger.warning(
                "Pushgateway %s: the last metrics were not delivered within %gs", self.url, timeout
            )
        return delivered

    def _run(self) -> None:
        """The push thread: pushes each queued state, re-pushes it as a heartbeat when idle."""
        while True:
            with self._condition:
                while self._pending is None and not self._closed:
                    if not self._condition.wait(self.heartbeat) and self._pushed_any:
                        break  # idle for a heartbeat: push the same values again
                if self._pending is None and self._closed:
                    return
                values, self._pending = self._pending or {}, None
                self._pushing = True
            ok = self._push(values)
            with self._condition:
                self._pushing = False
                self._pushed_any = True
                self._last_ok = ok
                self._condition.notify_all()

    def _push(self, values: Mapping[str, float]) -> bool:
        """Sets the gauges present in `values` and pushes the registry; whether it worked."""
        from prometheus_client import push_to_gateway

        for key, gauge in self._gauges.values():
            if key in values:
                gauge.set(values[key])
        try:
            push_to_gateway(
                self.url,
                job=self.job,
                registry=self.registry,
                grouping_key={"run_id": self.run_id},
                timeout=self.timeout,
            )
        except Exception as error:  # any failure of a side channel must not stop training
            if not self._failing:
                logger.warning(
                    "Pushgateway %s: push failed (%s); training goes on", self.url, error
                )
            self._failing = True
            return False
        if self._failing:
            logger.info("Pushgateway %s: pushes work again", self.url)
        self._failing = False
        return True
