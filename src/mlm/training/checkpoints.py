"""Training checkpoints: save every so often, keep the last K, resume from the latest.

A checkpoint is a `tf.train.Checkpoint` of the model, the optimizer and the step counter, plus a
small JSON sidecar (`ckpt-<step>.json`, e.g. the training history so far). Why it is safe to kill a
job at any moment: `tf.train.CheckpointManager` writes the `checkpoint` state file (atomically)
only after a checkpoint's data and index files are complete, and only checkpoints listed there
are restored, so a half-written checkpoint is never picked up.

Under MultiWorkerMirroredStrategy every worker must take part in a save; only the chief writes to
the real directory, the others save into a temporary directory that is deleted right after.

Input position: with `track_input`, every worker also saves the state of its own `tf.data`
iterator (file offsets, shuffle buffer, prefetched batches) under
`input/worker-<i>-of-<n>/ckpt-<step>/`, before the model checkpoint of the same step and as a
directory that appears complete or not at all (a `DONE` marker, written last). A resume restores
it, so the input continues exactly where it stopped without reading the consumed batches again.
Where it is missing (an older checkpoint, another worker count, a save cut short) the caller falls
back to re-reading (`restore_input` returns False).

An object-store directory (`gs://`, `s3://`, `minio://`) is staged: TensorFlow cannot write
there itself (its `gs://` file system cannot reach an emulator, and TensorFlow 2.21 has no `s3://`
one), so checkpoints are written to a local directory and then uploaded through `mlm.storage`,
data files first and the `checkpoint` state file last (the same ordering guarantee); on start the
remote directory is downloaded before restoring.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

from mlm import storage
from mlm.errors import UserInputError

if TYPE_CHECKING:
    import tensorflow as tf

STATE_FILE = "checkpoint"  # tf.train.CheckpointManager's index of the kept checkpoints
INPUT_DIR = "input"  # per-worker input iterator states
_DONE = "DONE"  # written last into an input state's directory
_CKPT_FILE = re.compile(r"^ckpt-(\d+)(\.index|\.data-\d+-of-\d+|\.json)$")


class CheckpointKeeper:
    """Saves and restores a `tf.train.Checkpoint` in a local or object-store directory.

    Args:
        directory: where checkpoints live (local path, gs://, s3:// or minio:// URI).
        checkpoint: what to save (e.g. `tf.train.Checkpoint(model=..., optimizer=..., step=...)`).
        is_chief: whether this process owns `directory` (other workers save to a scratch dir).
        keep: how many of the most recent checkpoints to keep (at least 1).
    """

    def __init__(
        self,
        directory: str,
        checkpoint: tf.train.Checkpoint,
        *,
        is_chief: bool = True,
        keep: int = 3,
    ):
        import tensorflow as tf

        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        self.directory = directory
        self.checkpoint = checkpoint
        self.is_chief = is_chief
        self.keep = keep
        self._remote = storage.is_remote(directory)
        self._scratch = tempfile.mkdtemp(prefix="mlm-ckpt-")
        local = directory
        if is_chief:
            if self._remote:
                local = _download_dir(directory, os.path.join(self._scratch, "staged"))
            os.makedirs(local, exist_ok=True)
        self.local_directory = local
        self._manager = (
            tf.train.CheckpointManager(checkpoint, local, max_to_keep=keep) if is_chief else None
        )
        self._input: tf.train.Checkpoint | None = None
        self._input_dir = ""

    def track_input(self, iterator: Any, *, worker: int = 0, num_workers: int = 1) -> None:
        """Saves `iterator` (this worker's `tf.data` iterator) with every checkpoint from now on.

        Args:
            iterator: a `tf.data` iterator (`iter(dataset)`).
            worker: this worker's input pipeline index.
            num_workers: how many input pipelines the job has (states of another count are not
                restored: the pipelines would differ).
        """
        import tensorflow as tf

        self._input = tf.train.Checkpoint(iterator=iterator)
        self._input_dir = storage.join(
            self.directory, INPUT_DIR, f"worker-{worker}-of-{num_workers}"
        )

    def restore_input(self, step: int) -> bool:
        """Restores the tracked iterator to where it was when checkpoint `step` was saved.

        Returns:
            True when restored; False when this worker has no complete input state for `step`,
            or one of a pipeline defined differently (the iterator must then be replaced).
        """
        import tensorflow as tf

        if self._input is None:
            return False
        uri = storage.join(self._input_dir, f"ckpt-{step}")
        if not storage.exists(storage.join(uri, _DONE)):
            return False
        local = storage.stage_to_local(uri, os.path.join(self._scratch, "input"))
        try:
            self._input.read(os.path.join(local, "input")).assert_consumed()
        except (tf.errors.OpError, AssertionError, ValueError):
            return False  # e.g. "Make sure the dataset definition has not changed"
        return True

    def _save_input(self, step: int) -> None:
        """Writes the tracked iterator's state for `step`, then drops states beyond `keep`."""
        uri = storage.join(self._input_dir, f"ckpt-{step}")
        with storage.atomic_directory(uri, last=(_DONE,)) as tmp:
            self._input.write(os.path.join(tmp, "input"))
            with open(os.path.join(tmp, _DONE), "w", encoding="utf-8") as marker:
                marker.write(f"{step}\n")
        saved = storage.glob(storage.join(self._input_dir, "ckpt-*"))
        steps = sorted(int(path.rsplit("-", 1)[1]) for path in saved if _is_number(path))
        for old in steps[: -self.keep]:
            storage.remove(storage.join(self._input_dir, f"ckpt-{old}"), recursive=True)

    @property
    def latest(self) -> str | None:
        """Path prefix of the newest complete checkpoint (None when there is none)."""
        return self._manager.latest_checkpoint if self.is_chief else None

    def restore_latest(self) -> dict[str, Any] | None:
        """Restores the newest complete checkpoint into the tracked objects.

        Every worker restores the same files, read from `directory` (so all workers must see it:
        an object store or a shared volume).

        Returns:
            The checkpoint's JSON sidecar (an empty dict if it has none), or None when there was
            nothing to restore.

        Raises:
            UserInputError: the checkpoint does not fit the tracked objects.
        """
        path = self._latest_for_restore()
        if not path:
            return None
        try:
            self.checkpoint.restore(path).assert_existing_objects_matched()
        except Exception as error:  # shape or structure mismatch, unreadable files
            raise UserInputError(
                f"cannot resume from checkpoint {path}: {str(error).splitlines()[0]}. It was "
                "written by a different model or optimizer configuration (or is damaged): use "
                f"another output directory, or delete {self.directory} to start over"
            ) from error
        sidecar = path + ".json"
        if os.path.exists(sidecar):
            with open(sidecar, encoding="utf-8") as handle:
                return json.load(handle)
        return {}

    def _latest_for_restore(self) -> str | None:
        """The newest checkpoint as every worker sees it (the chief's directory)."""
        if self.is_chief:
            return self._manager.latest_checkpoint
        import tensorflow as tf

        if storage.is_remote(self.directory):
            staged = _download_dir(self.directory, os.path.join(self._scratch, "restore"))
            return tf.train.latest_checkpoint(staged)
        return tf.train.latest_checkpoint(self.directory)

    def save(self, step: int, sidecar: dict[str, Any] | None = None) -> str | None:
        """Writes a checkpoint numbered `step` (all workers must call this together).

        Args:
            step: the training step the state belongs to; names the files (`ckpt-<step>`).
            sidecar: JSON-serialisable extras written next to it (`ckpt-<step>.json`).

        Returns:
            The chief's checkpoint path prefix (the local staging path for an object store);
            None on other workers.
        """
        if self._input is not None:
            self._save_input(step)  # before the state file can list `step`
        if sidecar is not None and self.is_chief:
            # The sidecar goes first: it is only read for checkpoints the state file lists.
            storage.write_json(os.path.join(self.local_directory, f"ckpt-{step}.json"), sidecar)
        if not self.is_chief:
            scratch = os.path.join(self._scratch, f"worker-{step}")
            self.checkpoint.write(os.path.join(scratch, "ckpt"))
            shutil.rmtree(scratch, ignore_errors=True)
            return None
        path = self._manager.save(checkpoint_number=step)
        self._prune_sidecars()
        if self._remote:
            self._upload()
        return path

    def _kept_numbers(self) -> set[int]:
        return {int(path.rsplit("-", 1)[1]) for path in self._manager.checkpoints}

    def _prune_sidecars(self) -> None:
        kept = self._kept_numbers()
        for name in os.listdir(self.local_directory):
            match = _CKPT_FILE.match(name)
            if match and match[2] == ".json" and int(match[1]) not in kept:
                os.remove(os.path.join(self.local_directory, name))

    def _upload(self) -> None:
        """Mirrors the staged directory to the store: new files, the state file, then deletions.

        Not `storage.sync_dir`: that removes its marker file first, so a job killed mid-upload
        would lose every checkpoint; here the old state file stays valid until it is replaced.
        """
        kept = self._kept_numbers()
        remote_names = {
            uri.rsplit("/", 1)[1] for uri in storage.glob(storage.join(self.directory, "*"))
        }
        local_names = set(os.listdir(self.local_directory))
        for name in sorted(local_names - {STATE_FILE, INPUT_DIR}):
            match = _CKPT_FILE.match(name)
            if name not in remote_names or (match and int(match[1]) == max(kept)):
                _upload_file(os.path.join(self.local_directory, name), self.directory, name)
        _upload_file(os.path.join(self.local_directory, STATE_FILE), self.directory, STATE_FILE)
        for name in remote_names - local_names:
            if _CKPT_FILE.match(name):
                storage.remove(storage.join(self.directory, name))

    def close(self) -> None:
        """Deletes this process's scratch files."""
        shutil.rmtree(self._scratch, ignore_errors=True)


def _is_number(path: str) -> bool:
    return path.rsplit("-", 1)[1].isdigit()


def _upload_file(local_path: str, directory: str, name: str) -> None:
    with (
        open(local_path, "rb") as source,
        storage.atomic_write(storage.join(directory, name)) as out,
    ):
        shutil.copyfileobj(source, out)


def _download_dir(directory: str, local_parent: str) -> str:
    """Stages an object-store checkpoint directory under `local_parent`; returns the local copy."""
    if not storage.exists(directory):
        local = os.path.join(local_parent, directory.rstrip("/").rsplit("/", 1)[1])
        os.makedirs(local, exist_ok=True)
        return local
    return storage.stage_to_local(directory, local_parent)
