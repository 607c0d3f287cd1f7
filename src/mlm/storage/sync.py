"""Directories between local disk and a store: staging, syncing, uploading."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable, Sequence

from mlm.errors import UserInputError
from mlm.storage.local import _checksum_for, _local_files, _temp_sibling, _unlink_quietly
from mlm.storage.objects import (
    _download,
    _list_objects,
    _missing_message,
    _stat,
    _translate_errors,
    _upload,
)
from mlm.storage.ops import _commit_local_file, _parallel, remove
from mlm.storage.stores import _local_crc32c, _ObjectInfo
from mlm.storage.uri import (
    IN_PROGRESS,
    _basename,
    _check_uri,
    _root,
    _store,
    is_remote,
    join,
    split_uri,
)

# --------------------------------------------------------------------------------------------
# Directories: staging, syncing, atomic directories
# --------------------------------------------------------------------------------------------


def stage_to_local(uri: str | os.PathLike[str], local_dir: str | os.PathLike[str]) -> str:
    """Makes an object or prefix available on local disk; local paths pass through.

    An object is downloaded to ``local_dir/<its name>``; a prefix (a "directory") to
    ``local_dir/<last component>/...`` keeping relative paths. Files already there with the same
    size and checksum are not downloaded again, so staging twice is cheap.

    Args:
        uri: local path (returned unchanged) or object-store URI of an object or prefix.
        local_dir: directory to download into (created if missing).

    Returns:
        The local path of the file or directory.

    Raises:
        UserInputError: nothing exists at ``uri``, or an object under it has a name with empty,
            ``.`` or ``..`` segments (it would land elsewhere than under the target).
    """
    uri = _check_uri(uri)
    store = _store(uri)
    if store is None:
        return uri
    local_dir = os.fspath(local_dir)
    bucket, key = split_uri(uri)
    target = os.path.join(local_dir, _basename(uri) if key.strip("/") else bucket)
    info = _stat(uri)
    if info is not None:
        if not _same_file(target, info, store.local_checksum):
            _download(info, uri, target)
        return target
    prefix = uri.rstrip("/") + "/" if key.strip("/") else _root(uri, bucket)
    prefix_key = split_uri(prefix)[1]
    objects = [o for o in _list_objects(prefix) if not o.key.endswith("/")]
    if not objects:
        raise UserInputError(_missing_message(uri))
    paths = {o.key: _staged_path(target, o.key[len(prefix_key) :], uri) for o in objects}
    os.makedirs(target, exist_ok=True)

    def fetch(info: _ObjectInfo) -> None:
        local_path = paths[info.key]
        if not _same_file(local_path, info, store.local_checksum):
            _download(info, _root(uri, bucket) + info.key, local_path)

    _parallel(fetch, objects)
    return target


def _staged_path(target: str, relative: str, uri: str) -> str:
    """``target/relative`` for an object name below ``uri``, refusing names that leave ``target``."""
    segments = relative.split("/")
    if any(segment in ("", ".", "..") for segment in segments) or "\\" in relative:
        raise UserInputError(
            f"refusing to stage {uri}: the object {relative!r} under it has an empty, '.' or "
            "'..' path segment and would be written outside the target directory — rename or "
            "delete that object"
        )
    path = os.path.join(target, *segments)
    real_target = os.path.realpath(target)
    if os.path.commonpath([real_target, os.path.realpath(path)]) != real_target:
        raise UserInputError(
            f"refusing to stage {uri}: {relative!r} would be written outside {target}"
        )
    return path


def _same_file(local_path: str, info: _ObjectInfo, checksum: Callable[[str], str]) -> bool:
    return (
        os.path.isfile(local_path)
        and os.path.getsize(local_path) == info.size
        and info.checksum is not None
        and checksum(local_path) == info.checksum
    )


@dataclasses.dataclass(frozen=True)
class SyncResult:
    """What `sync_dir` / `upload_dir` did, as relative paths under the destination."""

    copied: tuple[str, ...]
    deleted: tuple[str, ...]
    unchanged: tuple[str, ...]


def sync_dir(
    local_dir: str | os.PathLike[str],
    uri: str | os.PathLike[str],
    *,
    delete: bool = False,
    last: Sequence[str] = (),
) -> SyncResult:
    """Copies new and changed files from a local directory to a local or object-store destination.

    A file is unchanged when the destination has the same size and checksum (CRC32C; the MD5
    ETag on S3). Each file is written atomically. ``last`` names marker files (e.g.
    ``manifest.json``) that readers wait for: they are removed from the destination first when
    anything changes, and copied after every other file, so a reader never sees a marker next to
    incomplete content.

    Args:
        local_dir: source directory.
        uri: destination directory (local path or object-store prefix).
        delete: also delete destination files that are not in ``local_dir`` (except an
            `IN_PROGRESS` marker).
        last: relative paths to copy after all other files.

    Returns:
        A `SyncResult` listing copied, deleted and unchanged relative paths.
    """
    return _copy_tree(local_dir, uri, delete=delete, last=last, skip_unchanged=True)


def upload_dir(local_dir: str | os.PathLike[str], uri: str | os.PathLike[str]) -> SyncResult:
    """Copies every file of a local directory to a local or object-store destination.

    Unlike `sync_dir` it does not compare with what is there; destination extras are kept.
    """
    return _copy_tree(local_dir, uri, delete=False, last=(), skip_unchanged=False)


def _copy_tree(
    local_dir: str | os.PathLike[str],
    uri: str | os.PathLike[str],
    *,
    delete: bool,
    last: Sequence[str],
    skip_unchanged: bool,
) -> SyncResult:
    local_dir = os.fspath(local_dir)
    uri = _check_uri(uri)
    if not os.path.isdir(local_dir):
        raise UserInputError(f"no such directory: {local_dir} — nothing to copy to {uri}")
    source = _local_files(local_dir)
    remote = _destination_files(uri)
    checksum = _checksum_for(uri)
    unchanged = {
        rel
        for rel, full in source.items()
        if skip_unchanged
        and rel in remote
        and remote[rel][0] == os.path.getsize(full)
        and remote[rel][1] is not None
        and remote[rel][1] == checksum(full)
    }
    to_copy = sorted(set(source) - unchanged)
    to_delete = sorted(set(remote) - set(source) - {IN_PROGRESS}) if delete else []
    markers = [rel for rel in last if rel in source]
    if to_copy or to_delete:
        # Invalidate markers before touching the content they vouch for.
        stale_markers = [rel for rel in last if rel in remote]
        _parallel(lambda rel: remove(join(uri, rel), missing_ok=True), stale_markers)
        to_copy = sorted(set(to_copy) | set(markers))
    _parallel(
        lambda rel: _copy_file(source[rel], join(uri, rel)),
        [rel for rel in to_copy if rel not in markers],
    )
    _parallel(lambda rel: remove(join(uri, rel), missing_ok=True), to_delete)
    for rel in markers:
        if rel in to_copy:
            _copy_file(source[rel], join(uri, rel))
    return SyncResult(
        copied=tuple(to_copy), deleted=tuple(to_delete), unchanged=tuple(sorted(unchanged))
    )


def _destination_files(uri: str) -> dict[str, tuple[int | None, str | None]]:
    """Relative path -> (size, checksum) of the files already under a destination directory."""
    if not is_remote(uri):
        if not os.path.isdir(uri):
            return {}
        return {
            rel: (os.path.getsize(full), _local_crc32c(full))
            for rel, full in _local_files(uri).items()
        }
    prefix = uri.rstrip("/") + "/"
    prefix_key = split_uri(prefix)[1]
    return {
        info.key[len(prefix_key) :]: (info.size, info.checksum)
        for info in _list_objects(prefix)
        if not info.key.endswith("/")
    }


def _copy_file(local_path: str, uri: str) -> None:
    if is_remote(uri):
        _upload(local_path, uri)
        return
    with _translate_errors(uri, "write"):
        os.makedirs(os.path.dirname(os.path.abspath(uri)), exist_ok=True)
    tmp = _temp_sibling(uri)
    try:
        shutil.copyfile(local_path, tmp)
        _commit_local_file(tmp, uri, overwrite=True)
    finally:
        _unlink_quietly(tmp)
