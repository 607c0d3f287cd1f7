"""Directories that appear whole or not at all (`atomic_directory`)."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator, Sequence

from mlm.errors import UserInputError
from mlm.storage.local import _fsync_dir, _remove_stale_temporaries, _temp_sibling
from mlm.storage.objects import _stat, _translate_errors
from mlm.storage.ops import makedirs, remove, write_json
from mlm.storage.sync import sync_dir
from mlm.storage.uri import IN_PROGRESS, _basename, _check_uri, is_remote, join


def is_unfinished(uri: str | os.PathLike[str]) -> bool:
    """Whether ``uri`` is an object-store directory whose writer stopped midway.

    `atomic_directory` puts an `IN_PROGRESS` marker under the prefix before it changes anything
    there and deletes it last; a marker left behind means a rerun may replace the directory.
    Local directories are renamed into place whole, so they are never unfinished.
    """
    uri = _check_uri(uri)
    return is_remote(uri) and _stat(join(uri, IN_PROGRESS)) is not None


@contextlib.contextmanager
def atomic_directory(uri: str | os.PathLike[str], *, last: Sequence[str] = ()) -> Iterator[str]:
    """Yields a local directory whose content replaces ``uri`` only when the block succeeds.

    Local: the directory is built beside the destination and renamed into place; an existing
    destination is first renamed aside and deleted after the swap (restored if the swap fails).
    Temporaries of the same destination left by a killed process are deleted first.
    Object stores: the directory is built in local temporary space and synced to the prefix with
    ``delete=True`` (objects under the prefix that the new directory lacks are removed); a store
    cannot swap many objects at once, so name the marker files readers wait for in ``last``
    (see `sync_dir`). While the upload runs, an `IN_PROGRESS` marker under the prefix tells a
    rerun that the directory is unfinished and may be replaced (`is_unfinished`). If the block
    raises, the destination is untouched and the temporary directory is deleted.

    Args:
        uri: destination directory (local path or object-store prefix).
        last: for object stores, relative paths to upload after everything else.

    Yields:
        The local directory to fill.
    """
    uri = _check_uri(uri)
    remote = is_remote(uri)
    if remote:
        makedirs(uri)  # a missing bucket fails before the work, not after
        tmp = tempfile.mkdtemp(prefix=f"mlm-{_basename(uri)}-")
    else:
        destination = os.path.abspath(uri)
        with _translate_errors(uri, "create"):
            os.makedirs(os.path.dirname(destination), exist_ok=True)
        _remove_stale_temporaries(destination)
        tmp = _temp_sibling(destination)
        os.mkdir(tmp)  # unlike mkdtemp, honours the umask like the final directory should
    try:
        yield tmp
        if remote:
            marker = join(uri, IN_PROGRESS)
            record = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
            write_json(marker, record)
            sync_dir(tmp, uri, delete=True, last=last)
            remove(marker, missing_ok=True)
        else:
            _swap_in_directory(tmp, destination)
    except Exception as error:
        if not _out_of_space(error):
            raise
        # Named after the output, not the temporary file (close() and the Rust and C++ writers
        # of the libraries do not even say which file).
        raise UserInputError(
            f"cannot write {uri}: no space left on its device; free space there or write "
            "somewhere else"
        ) from error
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _out_of_space(error: BaseException) -> bool:
    """Whether `error` says the disk (or the quota) is full, in Python's, Rust's or C++'s words."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    return "No space left on device" in text or "Disk quota exceeded" in text


def _swap_in_directory(tmp: str, destination: str) -> None:
    if not os.path.lexists(destination):
        os.rename(tmp, destination)
    else:
        if not os.path.isdir(destination):
            raise UserInputError(f"{destination} exists and is not a directory — remove it")
        old = _temp_sibling(destination, "old")
        os.rename(destination, old)
        try:
            os.rename(tmp, destination)
        except BaseException:
            os.rename(old, destination)
            raise
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(os.path.dirname(destination))
