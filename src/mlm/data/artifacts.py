"""Rules shared by the data steps for their directories: replacing outputs, staging inputs."""

from __future__ import annotations

import hashlib
import os
import tempfile

from mlm import storage
from mlm.errors import UserInputError


def check_replaceable(output_dir: str, marker: str, kind: str) -> None:
    """Fail unless `output_dir` is absent, empty, or a finished `kind` directory (has `marker`).

    The steps replace their output directory as a whole; this keeps them from deleting a
    directory the user meant for something else.
    """
    if storage.is_gcs(output_dir):
        entries = storage.glob(storage.join(output_dir, "*"))
    elif os.path.isdir(output_dir):
        entries = os.listdir(output_dir)
    elif os.path.exists(output_dir):
        raise UserInputError(f"{kind} output {output_dir} is a file; pass a directory path")
    else:
        return
    if entries and not storage.exists(storage.join(output_dir, marker)):
        raise UserInputError(
            f"{kind} output {output_dir} is a non-empty directory without {marker}, so it is not "
            f"an earlier {kind} directory; choose a new or empty output directory"
        )


def local_copy(uri: str, kind: str) -> str:
    """A local path for a directory: itself when local, else a staged copy of the `gs://` prefix.

    Copies live in a fixed temporary directory per URI, so staging again only fetches files
    that changed (see `storage.stage_to_local`).
    """
    if not storage.is_gcs(uri):
        return uri
    key = hashlib.sha256(uri.encode("utf-8")).hexdigest()[:16]
    return storage.stage_to_local(uri, os.path.join(tempfile.gettempdir(), f"mlm-{kind}-{key}"))
