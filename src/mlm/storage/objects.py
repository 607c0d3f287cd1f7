"""Object operations on a URI (stat, list, upload, download) and the translation of store errors into one-line `UserInputError`s."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from mlm.errors import UserInputError
from mlm.storage.local import _temp_sibling, _unlink_quietly
from mlm.storage.stores import _ObjectInfo
from mlm.storage.uri import _root, _scheme, _store, split_uri

# --------------------------------------------------------------------------------------------
# Error translation
# --------------------------------------------------------------------------------------------


def _missing_message(uri: str) -> str:
    store = _store(uri)
    if store is None:
        return f"no such file: {uri} — check the path"
    bucket, _ = split_uri(uri)
    with contextlib.suppress(Exception):  # can't probe: keep the generic message
        if not store.bucket_exists(bucket):
            root = _root(uri, bucket).rstrip("/")
            return (
                f"no such bucket: {root} (in {uri}) — check the URI or create the bucket "
                f"({store.create_bucket_hint(_scheme(uri) or '', bucket)})"
            )
    return f"no such file: {uri} — check the URI and that the object exists"


@contextlib.contextmanager
def _translate_errors(uri: str, action: str) -> Iterator[None]:
    """Turns missing-file, permission and store set-up errors from the block into `UserInputError`."""
    store = _store(uri)
    missing: tuple[type[BaseException], ...] = (FileNotFoundError,)
    denied: tuple[type[BaseException], ...] = (PermissionError,)
    fix = "check the file's permissions"
    if store is not None:  # store clients are slow to import: only for remote work
        store_missing, store_denied = store.error_types()
        missing += store_missing
        denied += store_denied
        fix = store.permission_fix
    try:
        yield
    except missing as err:
        raise UserInputError(_missing_message(uri)) from err
    except denied as err:
        # Unknown keys are a set-up error of their own, not a missing grant.
        message = store.explain(err, uri) if store is not None else None
        raise UserInputError(message or f"permission denied to {action} {uri} — {fix}") from err
    except NotADirectoryError as err:
        raise UserInputError(f"cannot {action} {uri}: a parent is a file, not a directory") from err
    except Exception as err:
        message = store.explain(err, uri) if store is not None else None
        if message is None:
            raise
        raise UserInputError(message) from err


def _stat(uri: str) -> _ObjectInfo | None:
    """The object at ``uri``; None if there is none or ``uri`` is a bucket or prefix."""
    bucket, key = split_uri(uri)
    if not key or key.endswith("/"):
        return None
    with _translate_errors(uri, "read"):
        return _store(uri).stat(bucket, key)  # type: ignore[union-attr]


def _object_key(uri: str) -> str:
    """The key of an object URI; bucket-only and prefix URIs are refused."""
    _, key = split_uri(uri)
    if not key or key.endswith("/"):
        raise UserInputError(f"{uri} names a bucket or a prefix, not an object — add a file name")
    return key


def _list_objects(uri_prefix: str, limit: int | None = None) -> Iterator[_ObjectInfo]:
    """Every object whose name starts with the key of ``uri_prefix`` (a plain string prefix)."""
    bucket, prefix = split_uri(uri_prefix)
    with _translate_errors(uri_prefix, "list"):
        yield from _store(uri_prefix).list(bucket, prefix, limit)  # type: ignore[union-attr]


def _bucket_exists(uri: str) -> bool:
    bucket, _ = split_uri(uri)
    with _translate_errors(_root(uri, bucket), "list"):
        return _store(uri).bucket_exists(bucket)  # type: ignore[union-attr]


def _upload(local_path: str, uri: str, *, overwrite: bool = True) -> None:
    """Uploads one local file to ``uri`` in a single (atomic) object write."""
    store = _store(uri)
    bucket, _ = split_uri(uri)
    key = _object_key(uri)
    with _translate_errors(uri, "write"):
        try:
            store.upload(local_path, bucket, key, overwrite=overwrite)  # type: ignore[union-attr]
        except FileExistsError as err:
            # A retry after a lost reply sees its own first attempt: same content, not a conflict.
            existing = _stat(uri)
            if existing is None or existing.checksum != store.local_checksum(local_path):  # type: ignore[union-attr]
                raise FileExistsError(f"{uri} already exists (create-only write)") from err


def _download(info: _ObjectInfo, uri: str, local_path: str) -> None:
    """Downloads an object to ``local_path`` through a temporary name (never a partial file)."""
    bucket, _ = split_uri(uri)
    os.makedirs(os.path.dirname(local_path) or ".", exist_ok=True)
    tmp = _temp_sibling(local_path)
    try:
        with _translate_errors(uri, "read"):
            _store(uri).download(bucket, info, tmp)  # type: ignore[union-attr]
        os.replace(tmp, local_path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
