"""Reading and writing the directories the evaluate, export and fine-tune steps pass around.

Keras and TensorFlow read and write local files only, so a `gs://` input is staged to local
temporary space first, and an output directory is built locally and moved (or uploaded) into place
in one piece by `mlm.storage.atomic_directory`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

from mlm import storage
from mlm.data.artifacts import check_replaceable
from mlm.errors import UserInputError

MLM_MODEL_FILE = "mlm_model.keras"
ENCODER_FILE = "encoder.keras"
TOKENIZER_DIR = "tokenizer"


@contextlib.contextmanager
def local_copy(uri: str) -> Iterator[str]:
    """Yields a local path for a file or directory: itself when local, else a temporary copy."""
    if not storage.is_remote(uri):
        if not os.path.exists(uri):
            raise UserInputError(f"{uri} does not exist; check the path")
        yield uri
        return
    workdir = tempfile.mkdtemp(prefix="mlm-stage-")
    try:
        yield storage.stage_to_local(uri, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def output_directory(uri: str, marker: str, kind: str, last: Sequence[str] = ()) -> Iterator[str]:
    """Yields a local staging directory that replaces `uri` when the block succeeds.

    Refuses a non-empty `uri` that is not an earlier `kind` output (it lacks `marker`).
    """
    check_replaceable(uri, marker, kind)
    with storage.atomic_directory(uri, last=[*last, marker]) as staging:
        yield staging


def find_file(directory: str, name: str, what: str, hint: str) -> str:
    """The path of `name` in a local `directory` (or `directory` itself when it is that file)."""
    if os.path.isfile(directory) and os.path.basename(directory) == name:
        return directory
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        raise UserInputError(f"{directory} has no {name}, so it is not {what}; {hint}")
    return path


def load_keras(path: str) -> Any:
    """Loads a `.keras` file of this package's models (registers their classes first)."""
    import keras

    import mlm

    mlm.register_serializables()
    return keras.models.load_model(path)


def copy_tree(source: str, destination: str) -> None:
    """Copies a local directory (or a `gs://` prefix) to a local `destination`."""
    with local_copy(source) as local:
        shutil.copytree(local, destination, dirs_exist_ok=True)
