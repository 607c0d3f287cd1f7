"""Signals, with real `mlm` processes: SIGTERM and SIGINT midway end in one line (status 143 or
130) with nothing left behind; after SIGKILL, which no process can handle, the next `mlm` run
removes what the killed one left in the temporary directory.

Pre-training's own handling of SIGTERM (save a checkpoint, then exit 143) is tried in
tests/training/test_preemption.py.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.training.conftest import worker_env


def _big_corpus(directory: Path, megabytes: int) -> str:
    """Generated text (random words), large enough for `mlm shard` to take seconds."""
    directory.mkdir()
    words = [f"w{i}" for i in range(5000)]
    generator = random.Random(0)
    with open(directory / "train.txt", "w", encoding="utf-8") as file:
        written = 0
        while written < megabytes * 1_000_000:
            line = " ".join(generator.choices(words, k=20)) + "\n"
            file.write(line)
            written += len(line)
    return str(directory)


def _sigint_as_at_a_terminal() -> None:
    # A shell without job control starts background commands with SIGINT ignored, and Python
    # keeps an inherited SIG_IGN; the step runs as a foreground command would, where Ctrl-C
    # arrives.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(argv: list[str], tmpdir: Path) -> subprocess.Popen:
    env = {**worker_env(), "TMPDIR": str(tmpdir)}
    return subprocess.Popen(
        [sys.executable, "-m", "mlm.cli", *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_sigint_as_at_a_terminal,
    )


def _wait_for(predicate, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def _private_dirs(tmpdir: Path, pid: int) -> list[Path]:
    return list(tmpdir.glob(f"mlm-{pid}-*"))


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory) -> str:
    return _big_corpus(tmp_path_factory.mktemp("signals") / "corpus", megabytes=12)


@pytest.mark.parametrize("step", ["tokenize", "shard"])
@pytest.mark.parametrize(("signum", "status", "word"), [
    (signal.SIGTERM, 143, "terminated (SIGTERM)"),
    (signal.SIGINT, 130, "interrupted"),
])  # fmt: skip
def test_a_signal_midway_is_one_line_and_leaves_nothing(
    inputs, big_corpus, tmp_path, step, signum, status, word
):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    argv = [step, "--corpus", big_corpus, "--output", str(work / "out")]
    if step == "shard":
        argv += ["--tokenizer", inputs.tokenizer, "--max-seq-length", "32"]
    process = _start(argv, tmpdir)
    if step == "shard":  # midway: the shard files are being written beside the destination
        _wait_for(lambda: any(work.glob(".out.tmp-*")) or process.poll() is not None)
    else:  # midway: the corpus is being read into the trainer (12 MB take seconds)
        _wait_for(lambda: _private_dirs(tmpdir, process.pid) or process.poll() is not None)
        time.sleep(1.0)
    assert process.poll() is None, f"{step} finished before the signal"
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == status, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == f"mlm {step}: {word}"
    assert list(work.iterdir()) == []  # no output, no temporary sibling
    assert list(tmpdir.iterdir()) == []


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def test_sigterm_stops_the_partition_processes_too(inputs, tmp_path):
    """`mlm shard --processes 2`: the signal reaches the parent; it stops its children and
    leaves no output, no partition and no process behind."""
    corpus = tmp_path / "corpus"
    _big_corpus(corpus, megabytes=12)
    for index in range(3):  # files for 2 partitions
        (corpus / f"more-{index}.txt").write_bytes((corpus / "train.txt").read_bytes())
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    argv = ["shard", "--corpus", str(corpus), "--output", str(work / "out"),
            "--tokenizer", inputs.tokenizer, "--max-seq-length", "32", "--processes", "2"]  # fmt: skip
    process = _start(argv, tmpdir)
    # Midway: both partition processes are writing their shards into the parent's scratch.
    _wait_for(lambda: len(list(tmpdir.rglob("*.tfrecord"))) >= 4 or process.poll() is not None)
    children = _children(process.pid)
    assert process.poll() is None and len(children) >= 2, "shard finished before the signal"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == "mlm shard: terminated (SIGTERM)"
    assert list(work.iterdir()) == []
    assert list(tmpdir.iterdir()) == []
    _wait_for(lambda: not any(Path(f"/proc/{child}").exists() for child in children), 30)


def test_after_sigkill_the_next_run_removes_what_the_killed_one_left(inputs, big_corpus, tmp_path):
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    process = _start(["tokenize", "--corpus", big_corpus, "--output", str(tmp_path / "tok")],
                     tmpdir)  # fmt: skip
    _wait_for(lambda: _private_dirs(tmpdir, process.pid) or process.poll() is not None)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert _private_dirs(tmpdir, process.pid), "the killed process's folder should remain"
    # Any later run of mlm (here one that fails at once) removes it, and its own.
    later = _start(["tokenize", "--corpus", str(tmp_path / "missing"), "--output",
                    str(tmp_path / "tok")], tmpdir)  # fmt: skip
    later.communicate(timeout=120)
    assert later.returncode == 2
    assert list(tmpdir.iterdir()) == []
    assert not (tmp_path / "tok").exists()


def test_a_folder_of_a_running_process_is_kept(tmp_path):
    from mlm.startup import remove_orphaned_tempdirs

    mine = tmp_path / f"mlm-{os.getpid()}-abc"
    gone = tmp_path / "mlm-999999999-abc"  # above any pid_max
    other = tmp_path / "mlm-cache"
    for path in (mine, gone, other):
        path.mkdir()
    assert remove_orphaned_tempdirs(str(tmp_path)) == [gone.name]
    assert mine.exists() and other.exists() and not gone.exists()
