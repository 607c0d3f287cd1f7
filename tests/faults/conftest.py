"""Fixtures of the fault suite: good inputs of every kind (made by the real steps, tiny sizes),
small filesystems for the read-only and disk-full cases, and the suite's tally."""

from __future__ import annotations

import collections
import contextlib
import subprocess
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pipeline.conftest import (  # noqa: F401 (fixtures)
    SEQ_LENGTH,
    exported,
    tiny_run,
    write_labels,
)

# Outcomes of every case run, by kind: printed at the end of the session (see the README's fault
# table).
TALLY: collections.Counter[str] = collections.Counter()
# (seconds, case id) of every case run: the slowest are printed with the tally.
DURATIONS: list[tuple[float, str]] = []


@pytest.fixture(scope="session")
def inputs(tiny_run, exported, tmp_path_factory):  # noqa: F811 (fixtures)
    """Good inputs of every kind the steps read."""
    from mlm.steps.shard import shard

    root = tmp_path_factory.mktemp("fault_inputs")
    parts = str(root / "part-1-of-1")
    shard(
        tiny_run.corpus, tiny_run.tokenizer, parts,
        max_seq_length=SEQ_LENGTH, num_shards=2, partition=1, partitions=1,
    )  # fmt: skip
    return types.SimpleNamespace(
        parts=parts,
        corpus=tiny_run.corpus,
        tokenizer=tiny_run.tokenizer,
        shards=tiny_run.shards,
        model=tiny_run.model,
        encoder=exported.output_dir,
        labels=write_labels(root / "labels.csv", 6),
    )


@contextlib.contextmanager
def small_filesystem(path: Path, kind: str) -> Iterator[Path]:
    """A tmpfs at `path`: read-only ("ro"), or one page (4 KiB) that fills up ("full").

    A real filesystem, so errors come from the kernel (EROFS, ENOSPC) as on a cluster volume.
    Mounting needs root, as CI runs; a failed mount fails the case with the reason.
    """
    path.mkdir(parents=True, exist_ok=True)
    options = "ro,size=64k" if kind == "ro" else "size=4k"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def pytest_terminal_summary(terminalreporter) -> None:
    if TALLY:
        kinds = ("tracebacks", "partial outputs", "scratch leaks", "hangs", "wrong exits or lines")
        parts = ", ".join(f"{TALLY[kind]} {kind}" for kind in kinds)
        terminalreporter.write_line(f"fault suite: {TALLY['cases']} cases: {parts}")
        slowest = ", ".join(f"{case} {seconds:.1f} s" for seconds, case in sorted(DURATIONS)[-5:])
        terminalreporter.write_line(f"fault suite: slowest cases: {slowest}")
