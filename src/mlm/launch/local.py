"""Runs N training workers as local processes, wired together the way a TFJob would wire pods.

Each worker gets `TF_CONFIG` with `cluster.worker = ["localhost:<port>", ...]` (free loopback
ports) and its own task index; worker 0 is the chief. Their output is streamed line by line with a
`[worker i]` prefix. If any worker fails, the others are stopped (SIGTERM, then SIGKILL after a
grace period) and the failure is reported with that worker's last lines. A timeout bounds the run.

SIGTERM or SIGINT sent to the launcher is forwarded to every worker, which then save a checkpoint
of the same step and exit (see `mlm.training.preemption`); the launcher waits up to
`save_grace_period` seconds for them and raises `TrainingInterrupted` (exit status 143 or 130).

`run_pretraining` is what `mlm pretrain` and the KFP pretrain component call: one process, or
`--workers N` local processes each running `mlm pretrain` with the same settings.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from mlm.errors import UserInputError
from mlm.run_identity import with_run_identity
from mlm.training.preemption import StopRequest, TrainingInterrupted

if TYPE_CHECKING:
    from mlm.config import PretrainLaunchConfig
    from mlm.steps.pretrain import PretrainResult

TAIL_LINES = 30


class WorkersFailedError(RuntimeError):
    """A local multi-worker run failed: a worker exited non-zero or the run timed out.

    Attributes:
        worker: index of the first failing worker (None on timeout).
        returncode: its exit status (None on timeout).
        tail: its last output lines.
    """

    def __init__(self, message: str, worker: int | None, returncode: int | None, tail: list[str]):
        super().__init__(message)
        self.worker = worker
        self.returncode = returncode
        self.tail = tail


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen
    tail: collections.deque
    reader: threading.Thread


def free_ports(count: int) -> list[int]:
    """Returns `count` distinct TCP ports that are free on the loopback interface right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("localhost", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def worker_tf_configs(num_workers: int, ports: Sequence[int] | None = None) -> list[dict]:
    """The TF_CONFIG of each local worker (as the Training Operator sets it for a TFJob)."""
    ports = list(ports) if ports is not None else free_ports(num_workers)
    hosts = [f"localhost:{port}" for port in ports]
    return [
        {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
        for index in range(num_workers)
    ]


def _pump(stream: TextIO, prefix: str, out: TextIO, tail: collections.deque, lock) -> None:
    for line in iter(stream.readline, ""):
        tail.append(line.rstrip("\n"))
        with lock:
            out.write(prefix + line)
            out.flush()
    stream.close()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)  # the worker leads its own group (start_new_session)


def run_local_workers(
    command: Sequence[str],
    num_workers: int,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    grace_period: float = 10.0,
    save_grace_period: float = 300.0,
    output: TextIO | None = None,
    poll_interval: float = 0.2,
) -> None:
    """Starts `num_workers` copies of `command` with TF_CONFIG set and waits for all of them.

    Args:
        command: the worker's argv (e.g. `[sys.executable, "-m", "mlm.cli", "pretrain", ...]`).
        num_workers: how many processes to start (at least 1).
        env: the environment for the workers (their TF_CONFIG is added); `os.environ` when None.
        timeout: seconds the whole run may take; None waits as long as the workers run.
        grace_period: seconds between SIGTERM and SIGKILL when stopping workers.
        save_grace_period: after forwarding SIGTERM/SIGINT, seconds the workers get to save and
            exit before they are killed.
        output: where the prefixed worker output goes; stdout when None.
        poll_interval: seconds between checks of the workers' state.

    Raises:
        WorkersFailedError: a worker exited non-zero (the others were stopped) or the run timed out.
        TrainingInterrupted: the launcher got SIGTERM/SIGINT, forwarded it, and not every worker
            finished its run (they saved a checkpoint and stopped).
        ValueError: num_workers < 1.
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, got {num_workers}")
    out = output or sys.stdout
    base_env = dict(os.environ if env is None else env)
    workers: list[_Worker] = []
    with StopRequest() as stop:
        try:
            _start(command, num_workers, base_env, out, workers)
            _watch(
                workers, stop, timeout=timeout, grace_period=grace_period,
                save_grace_period=save_grace_period, poll_interval=poll_interval,
            )  # fmt: skip
        finally:
            _forward_and_wait(
                workers, signal.SIGTERM, grace_period
            )  # no-op when all exited; covers KeyboardInterrupt
            for worker in workers:
                worker.reader.join(timeout=5)


def _start(
    command: Sequence[str],
    num_workers: int,
    base_env: dict[str, str],
    out: TextIO,
    workers: list[_Worker],
) -> None:
    """Starts the workers, appending each to `workers` as soon as it runs."""
    lock = threading.Lock()
    for index, tf_config in enumerate(worker_tf_configs(num_workers)):
        worker_env = {**base_env, "TF_CONFIG": json.dumps(tf_config), "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            list(command),
            env=worker_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        tail: collections.deque = collections.deque(maxlen=TAIL_LINES)
        reader = threading.Thread(
            target=_pump,
            args=(process.stdout, f"[worker {index}] ", out, tail, lock),
            daemon=True,
        )
        reader.start()
        workers.append(_Worker(index, process, tail, reader))


def _watch(
    workers: Sequence[_Worker],
    stop: StopRequest,
    *,
    timeout: float | None,
    grace_period: float,
    save_grace_period: float,
    poll_interval: float,
) -> None:
    """Waits for the workers; stops them all when one fails, the time is up or a signal came."""
    started = time.monotonic()
    num_workers = len(workers)
    while True:
        if stop.signum is not None:
            _forward_and_wait(workers, stop.signum, save_grace_period)
            if any(w.process.returncode != 0 for w in workers):
                interrupted = TrainingInterrupted(stop.signum)
                print(
                    f"mlm pretrain: {interrupted}: the workers saved a checkpoint of the same step "
                    "and stopped; rerun with the same arguments to resume",
                    file=sys.stderr,
                )
                raise interrupted
            return  # the workers had finished their run anyway
        codes = [w.process.poll() for w in workers]
        failed = [w for w, code in zip(workers, codes) if code not in (None, 0)]
        if failed:
            worker = failed[0]
            _forward_and_wait(workers, signal.SIGTERM, grace_period)
            worker.reader.join(timeout=5)
            raise WorkersFailedError(
                f"worker {worker.index} exited with status {worker.process.returncode}; "
                f"the other workers were stopped. Its last lines:\n  " + "\n  ".join(worker.tail),
                worker=worker.index,
                returncode=worker.process.returncode,
                tail=list(worker.tail),
            )
        if all(code == 0 for code in codes):
            break
        if timeout is not None and time.monotonic() - started > timeout:
            _forward_and_wait(workers, signal.SIGTERM, grace_period)
            raise WorkersFailedError(
                f"the {num_workers} workers did not finish within {timeout:g} s; stopped them",
                worker=None,
                returncode=None,
                tail=[],
            )
        time.sleep(poll_interval)


def _forward_and_wait(workers: Sequence[_Worker], signum: int, grace_period: float) -> None:
    """Sends `signum` to every live worker and waits for all to exit (SIGKILL after the grace)."""
    for worker in workers:
        if worker.process.poll() is None:
            _signal_group(worker.process, signum)
    deadline = time.monotonic() + grace_period
    for worker in workers:
        try:
            worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(worker.process, signal.SIGKILL)
            worker.process.wait(timeout=30)


def run_pretraining(config: PretrainLaunchConfig) -> PretrainResult:
    """Runs a pretrain config on this machine: in this process when `config.workers` is 1, else
    as that many local worker processes (`mlm pretrain` with the config's flags, TF_CONFIG set).

    Raises:
        UserInputError: workers > 1 inside a cluster (TF_CONFIG already set).
        WorkersFailedError: a worker failed, or the run took longer than `worker_timeout`.
    """
    from mlm.config import to_argv
    from mlm.steps.pretrain import PretrainResult, pretrain_from_config

    # Resolved once, so that every worker reports under the same run.
    training = with_run_identity(config.pretrain_config())
    if config.workers == 1:
        return pretrain_from_config(training)
    if os.environ.get("TF_CONFIG"):
        raise UserInputError(
            "workers > 1 starts local worker processes, but TF_CONFIG is already set (this "
            "process is a worker of a cluster): drop --workers or unset TF_CONFIG"
        )
    command = [sys.executable, "-m", "mlm.cli", "pretrain", *to_argv(training)]
    run_local_workers(command, config.workers, timeout=config.worker_timeout)
    return PretrainResult.from_output_dir(training.output_dir)
