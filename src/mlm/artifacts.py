"""The artifacts the steps pass around: the one definition of their file names, and reading and
writing their directories.

Keras, TensorFlow and the tokenizer libraries read and write local files only, so a `gs://` input
is staged to local temporary space first (`local_copy`, or `cached_local_copy` for inputs read
again and again), and an output directory is built locally and moved (or uploaded) into place in
one piece by `mlm.storage.atomic_directory` (`output_directory`). Each kind of output directory
has a marker file, written last: a directory without it is unfinished.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

from mlm import storage
from mlm.errors import UserInputError

# tokenize: the Hugging Face fast-tokenizer files plus the package's facts (its marker).
TOKENIZER_INFO_FILE = "mlm_tokenizer.json"
HF_TOKENIZER_FILE = "tokenizer.json"
HF_TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
# shard: the TFRecord files and their manifest (the marker).
SHARD_MANIFEST_FILE = "manifest.json"
# pretrain, evaluate and finetune: metrics.json is each one's marker.
METRICS_FILE = "metrics.json"
MLM_MODEL_FILE = "mlm_model.keras"
ENCODER_FILE = "encoder.keras"
HISTORY_FILE = "history.json"
# export: the encoder, its tokenizer, a SavedModel, a model card and export.json (the marker).
TOKENIZER_DIR = "tokenizer"
SAVED_MODEL_DIR = "saved_model"
MODEL_CARD_FILE = "README.md"
EXPORT_FILE = "export.json"
# finetune
CLASSIFIER_FILE = "classifier.keras"
REPORT_FILE = "report.md"
LABELS_FILE = "labels.json"


def read_step_json(uri: str, step: str) -> dict[str, Any]:
    """The JSON object `mlm STEP` wrote at `uri` (`manifest.json`, `mlm_tokenizer.json`,
    `metrics.json`).

    Raises:
        UserInputError: the file is missing, binary, not valid JSON or not an object; the
            message names it and says to run `mlm STEP` again.
    """
    data = storage.read_bytes(uri)
    cause: Exception | None = None
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        cause, problem = error, f"is binary, not JSON (byte {error.start} is not UTF-8)"
    except json.JSONDecodeError as error:
        cause = error
        problem = f"is not valid JSON ({error.msg} at line {error.lineno}, column {error.colno})"
    else:
        if isinstance(value, dict):
            return value
        problem = f"holds a JSON {type(value).__name__}, not an object"
    raise UserInputError(
        f"{uri} {problem}, so it is corrupt or not an output of `mlm {step}`; run `mlm {step}` "
        "again to write it"
    ) from cause


def check_replaceable(output_dir: str, marker: str, kind: str) -> None:
    """Fail unless `output_dir` is absent, empty, a finished `kind` directory (has `marker`) or
    an object-store output whose upload was cut short (`storage.is_unfinished`).

    The steps replace their output directory as a whole; this keeps them from deleting a
    directory the user meant for something else. A local location must also be writable
    (`storage.check_writable_location`): steps call this before they read their inputs.
    """
    storage.check_writable_location(output_dir)
    if storage.is_remote(output_dir):
        entries = storage.glob(storage.join(output_dir, "*"))
    elif os.path.isdir(output_dir):
        entries = os.listdir(output_dir)
    elif os.path.exists(output_dir):
        raise UserInputError(f"{kind} output {output_dir} is a file; pass a directory path")
    else:
        return
    finished = storage.exists(storage.join(output_dir, marker))
    if entries and not finished and not storage.is_unfinished(output_dir):
        raise UserInputError(
            f"{kind} output {output_dir} is a non-empty directory without {marker}, so it is not "
            f"an earlier {kind} directory; choose a new or empty output directory"
        )


def cached_local_copy(uri: str, kind: str) -> str:
    """A local path for a directory: itself when local, else a staged copy of the object prefix.

    Copies live in the process's private scratch space (`storage.scratch_dir`, removed at exit),
    one folder per URI, so staging again only fetches files that changed.
    """
    if not storage.is_remote(uri):
        return uri
    key = hashlib.sha256(uri.encode("utf-8")).hexdigest()[:16]
    return storage.stage_to_local(uri, storage.scratch_dir(f"{kind}-{key}"))


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


def load_keras(path: str, hint: str = "write it again with the step that made it") -> Any:
    """Loads a `.keras` file of this package's models (registers their classes first).

    The file is checked as what it claims to be first: a zip archive whose members are intact,
    holding `config.json` and the weights. Keras' safe mode stays on, so a file with a `Lambda`
    layer (arbitrary Python code) is refused, not run.

    Raises:
        UserInputError: the file is not a `.keras` archive, is damaged, or Keras cannot rebuild
            the model from it; the message names the file and says `hint`.
    """
    import zipfile

    import keras

    import mlm

    problem = ""
    if not zipfile.is_zipfile(path):
        problem = "is not a .keras file (a zip archive of config.json and weights)"
    else:
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
                damaged = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            names, damaged = set(), str(error)
        if damaged:
            problem = f"is a damaged archive ({damaged} fails its check)"
        elif "config.json" not in names or not names & {"model.weights.h5", "model.weights.npz"}:
            problem = "is a zip archive without a Keras model (no config.json or weights)"
    if problem:
        raise UserInputError(f"{path} {problem}; {hint}")
    mlm.register_serializables()
    try:
        return keras.models.load_model(path)
    except Exception as error:  # a file Keras cannot rebuild: say which and why, in one line
        detail = " ".join(str(error).split())[:300]
        if "Lambda" in detail and "safe_mode" in detail:
            raise UserInputError(
                f"{path} holds a Lambda layer (arbitrary Python code), which mlm does not load; "
                "rebuild the model without Lambda layers"
            ) from error
        raise UserInputError(
            f"{path} cannot be loaded as a Keras model ({type(error).__name__}: {detail}); {hint}"
        ) from error


def copy_tree(source: str, destination: str) -> None:
    """Copies a local directory (or a `gs://` prefix) to a local `destination`."""
    with local_copy(source) as local:
        shutil.copytree(local, destination, dirs_exist_ok=True)
