"""Stopping on SIGTERM/SIGINT at a step every worker agrees on, after saving a checkpoint.

Kubernetes sends SIGTERM before it kills a pod (spot reclaim, node drain, eviction) and waits
`terminationGracePeriodSeconds`; Ctrl-C sends SIGINT. While a `StopRequest` is installed, either
signal only sets a flag (a handler that does nothing else cannot interrupt a checkpoint write).
The training loop sums the flag over all workers with the step's own all-reduce, so every worker
sees the request after the same step, saves that step's checkpoint together with the others and
stops with `TrainingInterrupted`, a `SystemExit` whose exit status is 128 + the signal number:
143 for SIGTERM, 130 for SIGINT (the shell's convention for "terminated by signal N").
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def exit_status(signum: int) -> int:
    """The exit status of a run stopped by signal `signum` (128 + signum, e.g. 143 for SIGTERM)."""
    return 128 + int(signum)


class TrainingInterrupted(SystemExit):
    """Training stopped on a signal after saving a checkpoint; a rerun resumes from it.

    A `SystemExit`, so it passes through error handlers for ordinary failures and the process
    exits with `exit_status(signum)`.

    Attributes:
        signum: the signal that asked for the stop.
        step: the step saved (None when not known, e.g. in the local launcher).
    """

    def __init__(self, signum: int, step: int | None = None):
        super().__init__(exit_status(signum))
        self.signum = int(signum)
        self.step = step

    def __str__(self) -> str:
        where = f" at step {self.step}" if self.step is not None else ""
        return f"stopped by {signal.Signals(self.signum).name}{where}"


class StopRequest:
    """A flag that SIGTERM and SIGINT set while this context manager is active.

    The previous handlers come back on exit. Outside the main thread (where Python cannot install
    handlers) nothing is installed and only `request()` sets the flag.

    Attributes:
        signum: the first signal received (None while none was).
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def request(self, signum: int = signal.SIGTERM) -> None:
        """Asks for a stop as if `signum` had arrived."""
        if self.signum is None:
            self.signum = int(signum)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.request(signum)

    def install(self) -> None:
        """Installs the handlers (again: TensorFlow's multi-worker runtime replaces the SIGTERM
        handler when it starts, so call this after creating the strategy)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in STOP_SIGNALS:
            previous = signal.signal(signum, self._handle)
            self._previous.setdefault(signum, previous)

    def __enter__(self) -> StopRequest:
        self.install()
        return self

    def restore(self) -> None:
        """Puts the previous handlers back (signals act as before; the flag keeps its value)."""
        for signum, previous in self._previous.items():
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()

    def __exit__(self, *_exc: object) -> None:
        self.restore()
