"""Local helpers: temporary names beside a destination, stale temporaries, the process's scratch space."""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable

from mlm.startup import process_running
from mlm.storage.stores import _local_crc32c
from mlm.storage.uri import _store

_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


# --------------------------------------------------------------------------------------------
# Local helpers: temporary names, stale temporaries, scratch space
# --------------------------------------------------------------------------------------------

# `.<name>.<kind>-<host>-<pid>-<8 hex>`; names written before the host was added lack it.
_TEMP_NAME_RE = re.compile(
    r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?:(?P<host>.+)-)?(?P<pid>\d+)-[0-9a-f]{8}$"
)
# A temporary of another machine (a shared volume) is left alone until it is this old.
_FOREIGN_TEMP_AGE_S = 24 * 3600


def _temp_sibling(path: str, kind: str = "tmp") -> str:
    """A fresh hidden name in the same directory as ``path`` (so a rename stays on one disk).

    The name carries the host and process id, so a later run can tell whether its writer is gone
    (`_remove_stale_temporaries`).
    """
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.{kind}-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}")


def _remove_stale_temporaries(path: str) -> list[str]:
    """Deletes temporaries of ``path`` (`_temp_sibling` names) whose writer is gone.

    A writer is gone when it ran on this host and its process no longer exists, or when the
    temporary is older than a day (written from another machine onto a shared volume).

    Returns:
        The deleted paths.
    """
    directory, name = os.path.split(os.path.abspath(path))
    try:
        entries = os.listdir(directory)
    except OSError:
        return []
    removed = []
    for entry in entries:
        match = _TEMP_NAME_RE.match(entry)
        if not match or match["name"] != name:
            continue
        full = os.path.join(directory, entry)
        host = match["host"]
        if host is None or host == _HOST:
            stale = not process_running(int(match["pid"]))
        else:
            with contextlib.suppress(OSError):
                stale = time.time() - os.lstat(full).st_mtime > _FOREIGN_TEMP_AGE_S
        if stale:
            if os.path.isdir(full) and not os.path.islink(full):
                shutil.rmtree(full, ignore_errors=True)
            else:
                _unlink_quietly(full)
            removed.append(full)
    return removed


_scratch_root: tuple[int, str] | None = None
_scratch_lock = threading.Lock()


def scratch_dir(kind: str) -> str:
    """A private local directory for this process's temporary copies, removed when it exits.

    Directories live under one `tempfile.mkdtemp` folder per process (an unpredictable name,
    mode 0700), deleted at interpreter exit. ``kind`` names a subdirectory, so callers can keep a
    staged copy for the process's lifetime (re-staging it only fetches changed files).
    """
    global _scratch_root
    if "/" in kind or kind in ("", ".", ".."):
        raise ValueError(f"scratch_dir kind must be one path component, got {kind!r}")
    with _scratch_lock:
        # A forked child gets its own; so does a process whose temporary folder was removed
        # (`mlm.startup.private_tempdir` ended).
        if (
            _scratch_root is None
            or _scratch_root[0] != os.getpid()
            or not os.path.isdir(_scratch_root[1])
        ):
            root = tempfile.mkdtemp(prefix="mlm-")
            _scratch_root = (os.getpid(), root)
            atexit.register(_remove_scratch, os.getpid(), root)
        root = _scratch_root[1]
    path = os.path.join(root, kind)
    os.makedirs(path, exist_ok=True)
    return path


def _remove_scratch(owner: int, root: str) -> None:
    if os.getpid() == owner:  # never the parent's folder from a forked child
        shutil.rmtree(root, ignore_errors=True)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _fsync_dir(directory: str) -> None:
    """Makes a rename inside ``directory`` durable (best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _local_files(local_dir: str) -> dict[str, str]:
    """Relative POSIX path -> absolute path of every file under ``local_dir``."""
    files = {}
    for root, _, names in os.walk(local_dir):
        for name in names:
            full = os.path.join(root, name)
            files[os.path.relpath(full, local_dir).replace(os.sep, "/")] = full
    return files


def _checksum_for(uri: str) -> Callable[[str], str]:
    """How to checksum a local file for comparison with what is stored at ``uri``."""
    store = _store(uri)
    return _local_crc32c if store is None else store.local_checksum
