"""Object-store shards read as a stream: each input pipeline fetches its own files a few ahead
into a bounded local window and deletes each one once it has been read.

TensorFlow reads the shards from local disk (TensorFlow 2.21 has no ``s3://`` file system and its
``gs://`` one cannot reach an emulator). Copying a whole object-store shard directory to every
worker first would make the corpus's size bound the pod's disk and the time to the first step; a
`ShardWindow` keeps at most `window_files` files of one input pipeline on disk instead.

How the reading goes: file number ``k`` (0, 1, 2, ...) of an input pipeline is file
``order(k)`` of its share, where each pass over the share (an epoch) is a permutation drawn from
``(seed, epoch)`` when shuffling. The `tf.data` pipeline is ``range -> flat_map(TFRecordDataset(
window.path(k)))``: `flat_map` reads one file at a time, so when it asks for file ``k`` every
earlier one has been read to its end. `ShardWindow.path` then lets go of the files outside
``k .. k + window_files - 1``, starts fetching the ones inside it (in background threads) and
waits for file ``k``, checked against the manifest's size and CRC32C. Shard files hold their
split's examples round-robin, so one file is already a sample of the whole corpus; the example
shuffle buffer does the rest.

Checkpoints: `tf.data` saves the ``range`` position, the open file's local path and its offset.
Restoring calls `path(k)` again (which fetches the file in a new pod) and then reopens the saved
path, so a file's local path must not depend on the process: it is
``$TMPDIR/mlm-stream-<uid>-<digest of shard directory, split and pipeline>/<file name>``.
Windows of one process that name the same local file share it (`_LocalCopies` counts its
holders and deletes it after the last). A process killed by SIGKILL leaves at most its window's
files there; the next run with the same inputs reuses the ones that are still intact.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import posixpath
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from mlm import storage
from mlm.data.shards import ShardManifest, verify_files
from mlm.errors import UserInputError


class _LocalCopies:
    """The local shard copies of this process, each fetched once, shared by the windows that
    hold it, and deleted when the last one lets go (or when the process exits)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._copies: dict[str, tuple[Future[str], int]] = {}  # path -> (its fetch, holders)

    def hold(self, path: str, fetch: Callable[[], str]) -> Future[str]:
        """The fetch of `path`, started in a daemon thread unless another holder started it (a
        process that exits while `tf.data` still reads ahead does not wait for it)."""
        with self._lock:
            if path in self._copies:
                future, holders = self._copies[path]
                self._copies[path] = (future, holders + 1)
                return future
            future = Future()
            future.set_running_or_notify_cancel()
            self._copies[path] = (future, 1)

        def run() -> None:
            try:
                future.set_result(fetch())
            except BaseException as error:  # handed to the reader by `ShardWindow.path`
                future.set_exception(error)

        threading.Thread(target=run, name="mlm-shard-fetch", daemon=True).start()
        return future

    def release(self, path: str) -> None:
        """Lets go of `path`; after the last holder it is deleted once its fetch has ended.

        Never waits: a thread that waits here could be waiting on the thread that is destroying
        a `tf.data` iterator, which itself waits for this one (see `ShardWindow.path`).
        """
        with self._lock:
            future, holders = self._copies[path]
            self._copies[path] = (future, holders - 1)
        if holders == 1:
            future.add_done_callback(lambda done: self._delete_unheld(path, done))

    def _delete_unheld(self, path: str, fetch: Future[str]) -> None:
        with self._lock:  # deleted only if nobody took it up again meanwhile
            if self._copies.get(path) == (fetch, 0):
                del self._copies[path]
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)

    def remove_all(self) -> None:
        with self._lock:
            paths, self._copies = list(self._copies), {}
        for path in paths:
            with contextlib.suppress(OSError):
                os.remove(path)
        for directory in {os.path.dirname(path) for path in paths}:
            _remove_if_empty(directory)


def _remove_if_empty(directory: str) -> None:
    with contextlib.suppress(OSError):  # not empty: another window still holds files there
        os.rmdir(directory)


_COPIES = _LocalCopies()
atexit.register(_COPIES.remove_all)


def window_directory(
    shard_dir: str, split: str, pipelines: int, index: int, *, private: bool = False
) -> str:
    """The local directory of one input pipeline's streamed files: the same in every process
    that reads this share (see the module docstring), private to the user; with `private`, to
    this process (a pass that every worker of a run reads whole, such as the co-occurrence
    count before training: local workers must not delete each other's files)."""
    owner = f"\0{os.getpid()}" if private else ""
    key = f"{shard_dir}\0{split}\0{pipelines}\0{index}{owner}"
    key = hashlib.sha256(key.encode()).hexdigest()[:16]
    base = os.environ.get("TMPDIR") or "/tmp"
    return os.path.join(base, f"mlm-stream-{os.getuid()}-{key}")


class ShardWindow:
    """Fetches the files of one input pipeline ahead of their reading, within a bounded window.

    Args:
        uris: the object-store URIs of this pipeline's files.
        manifest: their shard directory's manifest (sizes and CRC32Cs).
        window_files: files held on local disk at most, the one being read included.
        shuffle: a new order of `uris` for every pass.
        seed: the seed of that order (None: drawn once).
        local_dir: where the files are kept (see `window_directory`; created mode 0700).
        passes: how many passes over `uris` are read (None: without end).
    """

    def __init__(
        self,
        uris: Sequence[str],
        manifest: ShardManifest,
        *,
        window_files: int,
        shuffle: bool,
        seed: int | None,
        local_dir: str,
        passes: int | None = None,
    ) -> None:
        import numpy as np

        if window_files < 1:
            raise UserInputError(f"input_window_files={window_files}: need at least 1 file")
        if not uris:
            raise UserInputError(f"{manifest.shard_dir}: no shard files to read")
        self.uris = list(uris)
        self.window_files = window_files
        self.end = None if passes is None else passes * len(self.uris)  # files read in all
        self.local_dir = local_dir
        os.makedirs(local_dir, mode=0o700, exist_ok=True)
        self._manifest = manifest
        self._shuffle = shuffle
        self._seed = int(np.random.SeedSequence().entropy % 2**63) if seed is None else seed
        self._orders: dict[int, Any] = {}
        self._lock = threading.Lock()  # one `path` call at a time
        self._closed = False
        self._held: dict[int, tuple[str, Future[str]]] = {}  # file number -> (local path, fetch)
        self.bytes_on_disk = 0
        self.high_water_bytes = 0
        self.fetched: list[str] = []  # base names, in the order they were fetched
        # The dataset holds the window while it reads; its files go when the window does.
        weakref.finalize(self, _release_all, self._held, local_dir)

    def order(self, k: int) -> int:
        """The index in `uris` of file number `k` (the `k % n`-th file of pass `k // n`)."""
        import numpy as np

        epoch, position = divmod(k, len(self.uris))
        if not self._shuffle:
            return position
        if epoch not in self._orders:
            rng = np.random.default_rng([self._seed, epoch])
            self._orders = {epoch: rng.permutation(len(self.uris))}  # one pass kept at a time
        return int(self._orders[epoch][position])

    def path(self, k: Any) -> str:
        """The local path of file number `k`, once fetched and checked; files before `k` and
        at or after `k + window_files` are let go first, the ones between fetched ahead.

        Runs in a `tf.data` thread, so it waits only on its fetch, and in short slices: when
        `tf.data` destroys an iterator it waits for this call to return, and the thread doing
        the destroying (Python's garbage collector may run in any thread) may be the one the
        fetch needs. A window whose dataset is gone or that is closed ends the wait at once.
        """
        k = int(k)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the shard window of {self._manifest.shard_dir} is closed")
            end = k + self.window_files
            keep = range(k, end if self.end is None else min(end, self.end))
            for number in [n for n in self._held if n not in keep]:
                self._let_go(number)
            for number in keep:
                if number not in self._held:
                    self._hold(number)
            fetch = self._held[k][1]
        while True:
            try:
                return fetch.result(timeout=0.05)
            except TimeoutError:
                if self._closed:
                    raise RuntimeError(
                        f"the shard window of {self._manifest.shard_dir} was closed"
                    ) from None

    def close_with(self, owner: Any) -> None:
        """Closes the window when `owner` (the dataset reading it) is garbage-collected: Python
        clears weak references before it destroys the objects, so the dataset's iterator, if it
        goes in the same collection, finds the window closed."""
        weakref.finalize(owner, self.close)

    def _hold(self, k: int) -> None:
        uri = self.uris[self.order(k)]
        name = posixpath.basename(uri)
        local = os.path.join(self.local_dir, name)
        # Counted from the start of the fetch, so the high-water mark bounds the disk in use.
        self.bytes_on_disk += self._manifest.file_info.get(name, {}).get("bytes", 0)
        self.high_water_bytes = max(self.high_water_bytes, self.bytes_on_disk)
        self.fetched.append(name)
        self._held[k] = (local, _COPIES.hold(local, lambda: self._fetch(uri, local)))

    def _fetch(self, uri: str, local: str) -> str:
        try:
            storage.stage_to_local(uri, self.local_dir)
            verify_files(self._manifest, [local])
        except BaseException as error:
            with contextlib.suppress(FileNotFoundError):
                os.remove(local)
            if isinstance(error, UserInputError):  # name the shard, not its local copy
                raise UserInputError(str(error).replace(local, uri)) from None
            raise
        return local

    def _let_go(self, k: int) -> None:
        local, _ = self._held.pop(k)
        # Reading goes in order, so what is let go has been read (fetched) but after a restore
        # or `close`: a fetch then still under way finishes before its file is deleted.
        _COPIES.release(local)
        name = os.path.basename(local)
        self.bytes_on_disk -= self._manifest.file_info.get(name, {}).get("bytes", 0)

    def close(self) -> None:
        """Stops the reading and lets go of every file (each deleted once no other window of
        this process holds it and its fetch has ended); never waits for a fetch."""
        with self._lock:
            self._closed = True
            for k in list(self._held):
                self._let_go(k)
        _remove_if_empty(self.local_dir)


def _release_all(held: dict[int, tuple[str, Future[str]]], local_dir: str) -> None:
    for local, _ in list(held.values()):
        _COPIES.release(local)
    held.clear()
    _remove_if_empty(local_dir)


def streamed_records(window: ShardWindow, compression: str | None) -> Any:
    """The serialized examples of `window`'s files, one file after the other, for the window's
    passes (a new order each pass when it shuffles)."""
    import tensorflow as tf

    numbers = tf.data.Dataset.counter() if window.end is None else tf.data.Dataset.range(window.end)

    def read(k: tf.Tensor) -> tf.data.Dataset:
        path = tf.py_function(window.path, [k], tf.string)
        path.set_shape([])
        return tf.data.TFRecordDataset(path, compression_type=compression)

    return numbers.flat_map(read)


def stream_summary(windows: Sequence[ShardWindow]) -> dict[str, Any]:
    """What `windows` fetched, for a run's summary: the files (base names, sorted, each once),
    the largest local footprint of one window in bytes, and the window size ({} for none)."""
    if not windows:
        return {}
    return {
        "streamed_files": sorted({name for window in windows for name in window.fetched}),
        "local_high_water_bytes": max(window.high_water_bytes for window in windows),
        "window_files": max(window.window_files for window in windows),
    }
