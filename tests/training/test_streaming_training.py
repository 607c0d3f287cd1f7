"""`mlm pretrain` on shards in an object store (moto's S3 server), streamed: real worker processes
read their own files a few at a time, and stop and resume mid-stream.

The local disk in use is measured from outside the workers (a thread polling their streaming
directories under the `TMPDIR` they get), not taken from their own accounting.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from mlm import storage
from tests.training.conftest import pretrain_argv, worker_env
from tests.training.test_preemption import (
    STEPS,
    check_same_as_uninterrupted,
    check_stop_and_resume,
)

WINDOW = 2


class DiskWatcher:
    """Polls the bytes in each `mlm-stream-*` directory under `root` until stopped; keeps the
    largest total seen per directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.largest: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.005):
            for directory in self.root.glob("mlm-stream-*"):
                total = 0
                for entry in os.scandir(directory) if directory.is_dir() else ():
                    with contextlib.suppress(FileNotFoundError):  # deleted while listed
                        total += entry.stat().st_size
                self.largest[directory.name] = max(self.largest.get(directory.name, 0), total)

    def __enter__(self) -> DiskWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def s3_shards(s3_emulator, many_shard_files) -> str:
    uri = f"s3://{s3_emulator.create_bucket()}/shards"
    storage.upload_dir(many_shard_files, uri)
    return uri


def test_two_workers_stream_only_their_share_within_the_window(
    training_data, many_shard_files, s3_shards, tmp_path
):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    output = tmp_path / "out"
    data = {"tokenizer": training_data["tokenizer"], "shards": s3_shards}
    argv = pretrain_argv(
        data, output, "--steps", "50", "--workers", "2", "--worker-timeout", "600",
        "--input-window-files", str(WINDOW),
    )  # fmt: skip
    with DiskWatcher(scratch) as watcher:
        result = subprocess.run(
            argv, env={**worker_env(), "TMPDIR": str(scratch)}, capture_output=True, text=True,
            timeout=600,
        )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    sizes = {path.name: path.stat().st_size for path in Path(many_shard_files).glob("*.tfrecord")}
    train = {name for name in sizes if name.startswith("train-")}
    summaries = [json.loads((output / "workers" / f"worker-{i}.json").read_text()) for i in (0, 1)]
    shares = [set(summary["streamed_files"]) & train for summary in summaries]
    assert shares[0].isdisjoint(shares[1])
    assert shares[0] | shares[1] == train  # the shuffle buffer (10,000) reads each whole share
    assert all(len(share) == len(train) // 2 for share in shares)

    window_bytes = WINDOW * max(sizes.values())
    assert sum(sizes[name] for name in train) > 4 * window_bytes  # the corpus dwarfs the window
    for summary in summaries:
        assert summary["window_files"] == WINDOW
        assert 0 < summary["local_high_water_bytes"] <= window_bytes
    # Measured on disk: one directory per worker and split, and one per worker for the
    # co-occurrence count before training (the default recipe's token embeddings: each worker
    # counts the same files, in a window of its own), none above the window.
    assert len(watcher.largest) == 6, watcher.largest
    assert 0 < max(watcher.largest.values()) <= window_bytes, watcher.largest
    # Every file was deleted once read: nothing is left behind.
    assert list(scratch.iterdir()) == []
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["steps"] == 50 and metrics["validation_loss"] > 0


def test_sigterm_mid_stream_and_the_rerun_continues_from_the_saved_position(
    training_data, s3_shards, tmp_path
):
    output = tmp_path / "out"
    data = {"tokenizer": training_data["tokenizer"], "shards": s3_shards}
    argv = pretrain_argv(
        data, output, "--steps", str(STEPS), "--log-every-steps", "1",
        "--checkpoint-every-steps", "1000", "--input-window-files", str(WINDOW),
    )  # fmt: skip
    # The rerun restores the input position (not re-reading the batches before it) and ends
    # with the same weights, bit for bit, as a run that was never stopped.
    check_stop_and_resume(output, argv, num_workers=1)
    check_same_as_uninterrupted(output, argv, tmp_path / "reference")
