"""Progress lines with an ETA for work of known size: reading a corpus, fine-tuning a classifier.

`ProgressMeter` turns "this much is done" into `mlm.monitoring.ProgressPrinter` lines (the format
the pretrain step prints) with an ETA from the rate so far. It prints each time another tenth of
the work is done and once at the end, so a log gets about a dozen lines however large the job.
`keras_progress` is the same meter as a Keras callback, counting training batches.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from mlm.monitoring import ProgressPrinter

_BYTE_UNITS = (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))


def byte_unit(total_bytes: float) -> tuple[str, int]:
    """(unit name, bytes per unit) that shows `total_bytes` as at least 10 units."""
    for name, size in _BYTE_UNITS:
        if total_bytes >= 10 * size:
            return name, size
    return "B", 1


class ProgressMeter:
    """Prints progress through `total` units of work, with an ETA, at every `every` of it.

    Args:
        total: the size of the work (bytes, steps, ...).
        label: what is counted, written before the count (see `ProgressPrinter`).
        unit: written after the count; with `scale`, counts are shown in units of `scale`.
        scale: how many units of `total` one shown unit is (e.g. 2**20 for MiB).
        quiet: print only the final line.
        stream: where to print (default: stderr, so a step's stdout keeps only its result).
        every: the share of the work between two lines (whole percents: 0.1 is 10%).
        clock: seconds, for the rate (tests pass a fake).
    """

    def __init__(
        self,
        total: float,
        *,
        label: str = "step",
        unit: str = "",
        scale: float = 1,
        quiet: bool = False,
        stream: TextIO | None = None,
        every: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.scale = scale
        self.every = every
        self.clock = clock
        self.done = 0.0
        self.started = clock()
        self._printed_tenth = 0
        self._printed_step: int | None = None  # the count on the last line printed
        self._metrics: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None
        self.printer = ProgressPrinter(
            self._shown(total),
            quiet=quiet,
            stream=stream or sys.stderr,
            label=label,
            unit=unit,
        )

    def _shown(self, amount: float) -> int:
        return round(amount / self.scale)

    def eta_seconds(self) -> float | None:
        """Seconds left at the rate so far (None before anything is done)."""
        if self.done <= 0:
            return None
        elapsed = self.clock() - self.started
        return max(self.total - self.done, 0) * elapsed / self.done

    def update(
        self,
        done: float,
        metrics: Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        """Records that `done` units are finished; prints when another `every` is complete.

        `metrics` (loss, accuracy, ...) go on the line; a callable is only called when a line is
        printed (e.g. to read values off an accelerator only then).
        """
        self.done = done
        self._metrics = metrics
        # By the counts as shown, so a line's percentage is never below the share it reports.
        total = self.printer.total_steps
        percent = 100 * self._shown(done) // total if total > 0 else 0
        tenth = percent // max(round(100 * self.every), 1)
        if tenth > self._printed_tenth:
            self._printed_tenth = tenth
            self._print(self.eta_seconds())

    def finish(self) -> None:
        """Prints the final line (unless the last update printed it), even when quiet."""
        if self.total > 0 and self._printed_step != self._shown(self.done):
            self.printer.message(self.printer.line(self._line_metrics(), 0.0))
            self._printed_step = self._shown(self.done)

    def _line_metrics(self) -> dict[str, Any]:
        metrics = self._metrics() if callable(self._metrics) else self._metrics
        return {**{k: float(v) for k, v in (metrics or {}).items()}, "step": self._shown(self.done)}

    def _print(self, eta: float | None) -> None:
        line_metrics = self._line_metrics()
        if self.printer.quiet and line_metrics["step"] < self.printer.total_steps:
            return
        self.printer.report({**line_metrics, **({"eta_seconds": eta} if eta is not None else {})})
        self._printed_step = line_metrics["step"]


def keras_progress(
    total_steps: int, *, label: str = "step", quiet: bool = False, stream: TextIO | None = None
) -> Any:
    """A Keras callback printing `ProgressMeter` lines (loss, accuracy, ETA) over `total_steps`
    training batches: `model.fit(..., callbacks=[keras_progress(epochs * steps_per_epoch)])`.

    Early stopping ends the count sooner; the final line shows where it stopped.
    """
    import keras

    class KerasProgress(keras.callbacks.Callback):
        def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
            self.meter = ProgressMeter(total_steps, label=label, quiet=quiet, stream=stream)
            self.step = 0

        def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
            self.step += 1
            logs = dict(logs or {})
            self.meter.update(
                self.step, lambda: {k: logs[k] for k in ("loss", "accuracy") if k in logs}
            )

        def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
            self.meter.finish()

    return KerasProgress()
