"""Queries, reads and writes of one file or object."""

from __future__ import annotations

import contextlib
import fnmatch
import glob as _glob
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

from mlm.errors import UserInputError
from mlm.storage.local import _fsync_dir, _temp_sibling, _unlink_quietly
from mlm.storage.objects import (
    _bucket_exists,
    _list_objects,
    _missing_message,
    _object_key,
    _stat,
    _translate_errors,
    _upload,
)
from mlm.storage.stores import _local_crc32c
from mlm.storage.uri import _WILDCARD_RE, _basename, _check_uri, _root, _store, is_remote, split_uri

_TRANSFER_THREADS = 8
_READ_MODES = ("r", "rt", "rb")
_WRITE_MODES = ("w", "wt", "wb")


# --------------------------------------------------------------------------------------------
# Queries
# --------------------------------------------------------------------------------------------


def check_store(uri: str | os.PathLike[str]) -> None:
    """Fails with one line when the object store of ``uri`` cannot be used from here: it cannot be
    reached, refuses the credentials, or lacks the bucket. A local path passes.

    One quick request under ``uri`` (for S3: one attempt, 10 s timeouts), so a pipeline step
    that calls it first ends within a minute of starting on a misconfigured store, naming the
    endpoint and, in a compiled pipeline, the Secret the credentials came from.
    """
    uri = _check_uri(uri)
    store = _store(uri)
    if store is None:
        return
    bucket, key = split_uri(uri)
    with _translate_errors(uri, "list"):
        store.probe(bucket, key)


def exists(uri: str | os.PathLike[str]) -> bool:
    """Whether a file or directory exists at ``uri``.

    For an object store a URI exists when an object has that name or objects exist under
    ``uri/`` (object stores have no directories); ``gs://bucket`` exists when the bucket does.
    """
    uri = _check_uri(uri)
    if not is_remote(uri):
        return os.path.exists(uri)
    _, key = split_uri(uri)
    if not key.strip("/"):
        return _bucket_exists(uri)
    return _stat(uri) is not None or _any_object_under(uri)


def _any_object_under(uri: str) -> bool:
    """Whether objects exist under ``uri/`` (False, not an error, when the bucket is missing)."""
    store = _store(uri)
    bucket, key = split_uri(uri.rstrip("/") + "/")
    missing, _ = store.error_types()  # type: ignore[union-attr]
    with _translate_errors(uri, "list"):
        try:
            return any(True for _ in store.list(bucket, key, limit=1))  # type: ignore[union-attr]
        except (FileNotFoundError, *missing):
            return False


def glob(pattern: str | os.PathLike[str]) -> list[str]:
    """Sorted paths or URIs matching a shell pattern (``*``, ``?``, ``[...]``).

    As with `glob.glob`, wildcards do not cross ``/``. For object stores a pattern matches names
    and the implied directories above them (``gs://b/runs/*`` lists ``gs://b/runs/a`` when an
    object ``runs/a/x`` exists). The bucket name cannot contain wildcards.
    """
    pattern = _check_uri(pattern)
    if not is_remote(pattern):
        return sorted(_glob.glob(pattern))
    bucket, key_pattern = split_uri(pattern)
    root = _root(pattern, bucket)
    key_pattern = key_pattern.rstrip("/")
    wildcard = _WILDCARD_RE.search(key_pattern)
    literal_prefix = key_pattern[: wildcard.start()] if wildcard else key_pattern
    segments = key_pattern.split("/")
    matches = set()
    for info in _list_objects(f"{root}{literal_prefix}"):
        parts = info.key.split("/")
        candidate = parts[: len(segments)]
        if len(parts) < len(segments) or not all(p not in ("", ".", "..") for p in candidate):
            continue  # too short, or a name no URI can address (see `split_uri`)
        if all(fnmatch.fnmatchcase(p, s) for p, s in zip(candidate, segments)):
            matches.add(root + "/".join(candidate))
    return sorted(matches)


def fingerprint(uris: Iterable[str | os.PathLike[str]]) -> str:
    """A SHA-256 over the names, sizes and versions of files, read from listings only.

    The version is what changes when a file is written again: the GCS generation, the S3 ETag
    (an MD5 of the content for single-part uploads) or the local ``mtime_ns``. No content is
    read, so this costs one metadata request per object (made in parallel) however large the
    files are. The same files give the same digest; a file added, removed, resized or rewritten
    gives another one.

    Args:
        uris: files (local paths or object URIs); order does not matter.

    Raises:
        UserInputError: a file or object does not exist.
    """
    digest = hashlib.sha256()
    for uri, (size, version) in sorted(file_versions(uris).items()):
        digest.update(json.dumps([uri, size, version]).encode() + b"\n")
    return digest.hexdigest()


def file_versions(uris: Iterable[str | os.PathLike[str]]) -> dict[str, tuple[int | None, str]]:
    """(size, version) of each file by URI, from its metadata only (see `fingerprint`).

    Raises:
        UserInputError: a file or object does not exist.
    """
    names = sorted({_check_uri(uri) for uri in uris})
    entries: dict[str, tuple[int | None, str]] = {}

    def describe(uri: str) -> None:
        entries[uri] = _size_and_version(uri)

    _parallel(describe, names)
    return {uri: entries[uri] for uri in names}


def _size_and_version(uri: str) -> tuple[int | None, str]:
    """(size, version) of one file, from its metadata only (see `fingerprint`)."""
    if not is_remote(uri):
        with _translate_errors(uri, "read"):
            stat = os.stat(uri)
        return stat.st_size, f"mtime_ns:{stat.st_mtime_ns}"
    info = _stat(uri)
    if info is None:
        raise UserInputError(_missing_message(uri))
    return info.size, str(info.version)


def file_sizes(directory: str | os.PathLike[str]) -> dict[str, int]:
    """The sizes of the files directly in ``directory``, by base name, from one listing.

    For an object store: the objects named ``directory/<name>`` (none deeper). Costs one listing
    however many files there are, so a step can check a large shard directory against its
    manifest without reading it.
    """
    directory = _check_uri(directory)
    if not is_remote(directory):
        with _translate_errors(directory, "list"):
            names = os.listdir(directory)
        paths = {name: os.path.join(directory, name) for name in names}
        return {name: os.path.getsize(path) for name, path in paths.items() if os.path.isfile(path)}
    prefix = directory.rstrip("/") + "/"
    prefix_key = split_uri(prefix)[1]
    sizes = {}
    for info in _list_objects(prefix):
        name = info.key[len(prefix_key) :]
        if name and "/" not in name:
            sizes[name] = info.size
    return sizes


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def open_read(
    uri: str | os.PathLike[str], mode: str = "rb", *, encoding: str = "utf-8"
) -> Iterator[IO[Any]]:
    """Opens a local file or an object for streaming reads.

    Objects are read in chunks (never loaded whole), pinned to the version seen at open time
    (GCS generation, S3 ETag): if the object is overwritten during the read, the next chunk fails
    (GCS: NotFound, S3: s3fs's FileExpired) instead of mixing two versions.

    Args:
        uri: local path or object-store URI of a file.
        mode: "rb" (bytes) or "r"/"rt" (text).
        encoding: text encoding for text mode.

    Yields:
        A readable file object (iterating a text one yields lines).

    Raises:
        UserInputError: the file, object or bucket does not exist or cannot be read.
    """
    if mode not in _READ_MODES:
        raise ValueError(f"open_read mode must be one of {_READ_MODES}, got {mode!r}")
    uri = _check_uri(uri)
    binary = "b" in mode
    store = _store(uri)
    if store is not None:
        bucket, _ = split_uri(uri)
        info = _stat(uri) if _object_key(uri) else None
        if info is None:
            raise UserInputError(_missing_message(uri))
        with contextlib.ExitStack() as stack:
            # Only opening is translated: errors of the caller's block pass through unchanged.
            with _translate_errors(uri, "read"):
                f = stack.enter_context(store.open(bucket, info))
            yield f if binary else io.TextIOWrapper(f, encoding=encoding)
        return
    if os.path.isdir(uri):
        raise UserInputError(f"{uri} is a directory, expected a file")
    with _translate_errors(uri, "read"):
        f = open(uri, mode, encoding=None if binary else encoding)  # noqa: SIM115
    with f:
        yield f


def read_bytes(uri: str | os.PathLike[str]) -> bytes:
    """The whole content of a local file or an object."""
    with open_read(uri, "rb") as f:
        return f.read()


def read_text(uri: str | os.PathLike[str], *, encoding: str = "utf-8") -> str:
    """The whole content of a local file or an object as text.

    Raises:
        UserInputError: the bytes are not `encoding` (the file named, with the offset).
    """
    with open_read(uri, "r", encoding=encoding) as f:
        try:
            return f.read()
        except UnicodeDecodeError as error:
            raise UserInputError(
                f"{os.fspath(uri)} is not {encoding} text ({error.reason} at byte {error.start}); "
                "it is binary or damaged: write it again, or re-encode it as UTF-8"
            ) from error


def read_json(uri: str | os.PathLike[str]) -> Any:
    """Parses a JSON file; invalid JSON raises `UserInputError` naming the file and position."""
    text = read_text(uri)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserInputError(
            f"{os.fspath(uri)} is not valid JSON ({err.msg} at line {err.lineno}, column "
            f"{err.colno}) — fix the file or write it again"
        ) from err


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_write(
    uri: str | os.PathLike[str],
    mode: str = "wb",
    *,
    encoding: str = "utf-8",
    overwrite: bool = True,
) -> Iterator[IO[Any]]:
    """Opens a file for writing that appears at ``uri`` only when the block succeeds.

    Local: a temporary file in the same directory, fsync, then `os.replace` (missing parent
    directories are created). Object stores: a local temporary file, uploaded in one request at
    the end. If the block raises, nothing appears at ``uri`` and an existing file is left
    untouched.

    Args:
        uri: destination local path or object-store URI.
        mode: "wb" (bytes) or "w"/"wt" (text).
        encoding: text encoding for text mode.
        overwrite: if False, the write is create-only: it raises `FileExistsError` when a file
            with different content already exists at ``uri`` (``os.link`` locally,
            ``if_generation_match=0`` on GCS, ``If-None-Match: *`` on S3: race-free). Finding identical content counts as
            success, so a retried create-only write is idempotent.

    Yields:
        A writable file object.
    """
    if mode not in _WRITE_MODES:
        raise ValueError(f"atomic_write mode must be one of {_WRITE_MODES}, got {mode!r}")
    uri = _check_uri(uri)
    if is_remote(uri):
        _object_key(uri)  # reject bucket-only and prefix URIs before the block runs
        fd, tmp = tempfile.mkstemp(prefix=f"mlm-{_basename(uri)}-")
        os.close(fd)
    else:
        with _translate_errors(uri, "write"):
            os.makedirs(os.path.dirname(os.path.abspath(uri)), exist_ok=True)
        tmp = _temp_sibling(uri)
    try:
        with _translate_errors(uri, "write"):
            f = open(tmp, mode, encoding=None if "b" in mode else encoding)  # noqa: SIM115
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if is_remote(uri):
            _upload(tmp, uri, overwrite=overwrite)
        else:
            _commit_local_file(tmp, uri, overwrite=overwrite)
    finally:
        _unlink_quietly(tmp)


def _commit_local_file(tmp: str, path: str, *, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, path)
    else:
        try:
            os.link(tmp, path)  # fails if `path` exists, unlike rename
        except FileExistsError as err:
            if _local_crc32c(path) != _local_crc32c(tmp):
                raise FileExistsError(f"{path} already exists (create-only write)") from err
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def write_bytes(uri: str | os.PathLike[str], data: bytes, *, overwrite: bool = True) -> None:
    """Writes bytes atomically (see `atomic_write`)."""
    with atomic_write(uri, "wb", overwrite=overwrite) as f:
        f.write(data)


def write_text(
    uri: str | os.PathLike[str], text: str, *, encoding: str = "utf-8", overwrite: bool = True
) -> None:
    """Writes text atomically (see `atomic_write`)."""
    with atomic_write(uri, "w", encoding=encoding, overwrite=overwrite) as f:
        f.write(text)


def write_json(
    uri: str | os.PathLike[str], obj: Any, *, indent: int | None = 2, overwrite: bool = True
) -> None:
    """Writes ``obj`` as JSON atomically (see `atomic_write`), with a trailing newline."""
    write_text(uri, json.dumps(obj, indent=indent) + "\n", overwrite=overwrite)


def check_writable_location(uri: str | os.PathLike[str], setting: str = "--output") -> None:
    """Refuses a local output location that cannot be written, before any work is done.

    The location must be a directory or not exist yet; its nearest existing parent must be a
    writable directory on a writable file system. Object-store locations are checked when they
    are first used (`makedirs`, `check_store`).

    Raises:
        UserInputError: naming the location, `setting` and the fix.
    """
    uri = _check_uri(uri)
    if is_remote(uri):
        return
    path = os.path.abspath(uri)
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserInputError(
            f"{setting} {uri} is a file, not a directory; remove it or choose another {setting}"
        )
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise UserInputError(
            f"{setting} {uri}: {parent} is a file, not a directory; choose another {setting}"
        )
    if os.statvfs(parent).f_flag & os.ST_RDONLY:
        raise UserInputError(
            f"{setting} {uri}: {parent} is on a read-only file system; choose a writable "
            f"{setting} (in a container: a mounted volume)"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserInputError(
            f"{setting} {uri}: no permission to write in {parent}; fix its permissions or choose "
            f"another {setting}"
        )


def makedirs(uri: str | os.PathLike[str]) -> None:
    """Creates a local directory and its parents; for object stores checks the bucket exists.

    Object stores have no directories (a name implies its prefixes), so only the bucket matters.
    """
    uri = _check_uri(uri)
    if is_remote(uri):
        if not _bucket_exists(uri):
            raise UserInputError(_missing_message(uri))
        return
    with _translate_errors(uri, "create"):
        os.makedirs(uri, exist_ok=True)


def remove(
    uri: str | os.PathLike[str], *, recursive: bool = False, missing_ok: bool = False
) -> None:
    """Deletes a file or object; with ``recursive`` also a directory / everything under a prefix.

    Raises:
        UserInputError: nothing exists at ``uri`` (unless ``missing_ok``).
        IsADirectoryError: ``uri`` is a directory (or a prefix with objects) and not ``recursive``.
    """
    uri = _check_uri(uri)
    store = _store(uri)
    if store is None:
        if not os.path.lexists(uri):
            if not missing_ok:
                raise UserInputError(_missing_message(uri))
            return
        with _translate_errors(uri, "delete"):
            if not os.path.isdir(uri) or os.path.islink(uri):
                os.unlink(uri)
            elif recursive:
                shutil.rmtree(uri)
            else:
                raise IsADirectoryError(f"{uri} is a directory: pass recursive=True to delete it")
        return
    obj = _stat(uri)
    targets = [obj.key] if obj is not None else []
    if recursive:
        targets += [info.key for info in _list_objects(uri.rstrip("/") + "/")]
    elif not targets and _any_object_under(uri):
        raise IsADirectoryError(f"{uri} is a prefix: pass recursive=True to delete under it")
    if not targets:
        if not missing_ok:
            raise UserInputError(_missing_message(uri))
        return
    bucket, _ = split_uri(uri)

    def delete(key: str) -> None:
        with _translate_errors(uri, "delete"):
            store.delete(bucket, key)

    _parallel(delete, targets)


def _parallel(fn: Callable[[Any], None], items: Iterable[Any]) -> None:
    """Runs ``fn`` on each item on a small thread pool (transfers are I/O bound)."""
    items = list(items)
    if len(items) <= 1:
        for item in items:
            fn(item)
        return
    with ThreadPoolExecutor(max_workers=min(_TRANSFER_THREADS, len(items))) as pool:
        for future in [pool.submit(fn, item) for item in items]:
            future.result()
