"""Rules shared by the data steps for their directories: replacing outputs, staging inputs."""

from __future__ import annotations

import hashlib
import os

from mlm import storage
from mlm.errors import UserInputError


def check_replaceable(output_dir: str, marker: str, kind: str) -> None:
    """Fail unless `output_dir` is absent, empty, a finished `kind` directory (has `marker`) or
    an object-store output whose upload was cut short (`storage.is_unfinished`).

    The steps replace their output directory as a whole; this keeps them from deleting a
    directory the user meant for something else.
    """
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


def local_copy(uri: str, kind: str) -> str:
    """A local path for a directory: itself when local, else a staged copy of the object prefix.

    Copies live in the process's private scratch space (`storage.scratch_dir`, removed at exit),
    one folder per URI, so staging again only fetches files that changed.
    """
    if not storage.is_remote(uri):
        return uri
    key = hashlib.sha256(uri.encode("utf-8")).hexdigest()[:16]
    return storage.stage_to_local(uri, storage.scratch_dir(f"{kind}-{key}"))
