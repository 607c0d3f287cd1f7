"""Object-store URIs: which store a URI names, and their checks (bucket rules, segments)."""

from __future__ import annotations

import os
import re
from typing import Any

from mlm.errors import UserInputError
from mlm.storage.gcs import _GCSStore
from mlm.storage.s3 import _S3Store
from mlm.storage.stores import _ObjectStore

GCS_PREFIX = "gs://"
SUPPORTED_SCHEMES = ("gs", "s3", "minio")
_SUPPORTED_TEXT = "a local path, gs://BUCKET/PATH, s3://BUCKET/PATH or minio://BUCKET/PATH"
# An object-store directory that holds this object was being written when its writer stopped.
IN_PROGRESS = ".mlm-in-progress"
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_WILDCARD_RE = re.compile(r"[*?\[]")


# --------------------------------------------------------------------------------------------
# URIs
# --------------------------------------------------------------------------------------------


def _scheme(uri: Any) -> str | None:
    """The scheme of a supported object-store URI (``gs``, ``s3``, ``minio``), else None."""
    if not isinstance(uri, str):
        return None
    scheme, sep, _ = uri.partition("://")
    return scheme if sep and scheme in SUPPORTED_SCHEMES else None


def is_remote(uri: str | os.PathLike[str]) -> bool:
    """Whether ``uri`` names an object store (``gs://``, ``s3://``, ``minio://``), not a local path."""
    return _scheme(uri) is not None


def is_gcs(uri: str | os.PathLike[str]) -> bool:
    """Whether ``uri`` is a ``gs://`` URI."""
    return _scheme(uri) == "gs"


def split_uri(uri: str) -> tuple[str, str]:
    """Splits ``gs://bucket/some/key`` (or ``s3://``, ``minio://``) into ``("bucket", "some/key")``.

    Args:
        uri: an object-store URI; the key may be empty (``s3://bucket`` or ``s3://bucket/``).

    Returns:
        The bucket name and the object key (or prefix), without a leading slash.

    Raises:
        UserInputError: not an object-store URI, an invalid bucket name, or a key with empty,
            ``.`` or ``..`` segments.
    """
    scheme = _scheme(uri)
    if scheme is None:
        raise UserInputError(f"not an object-store URI: {uri!r} — write it as {_SUPPORTED_TEXT}")
    store = _STORES[scheme]
    bucket, _, key = uri[len(scheme) + 3 :].partition("/")
    if not store.bucket_re.match(bucket) or ".." in bucket:
        raise UserInputError(
            f"malformed {scheme}:// URI {uri!r}: {bucket!r} is not a valid bucket name — write it "
            f"as {scheme}://BUCKET/PATH with a bucket of {store.bucket_rule}"
        )
    if any(ch in key for ch in "\r\n"):
        raise UserInputError(f"malformed URI {uri!r}: object names cannot contain newlines")
    body = key.rstrip("/")
    if body and any(segment in ("", ".", "..") for segment in body.split("/")):
        raise UserInputError(
            f"malformed URI {uri!r}: object names cannot have empty, '.' or '..' path segments — "
            "name each directory and file explicitly"
        )
    return bucket, key


def split_gcs_uri(uri: str) -> tuple[str, str]:
    """`split_uri` for ``gs://`` URIs only."""
    if not is_gcs(uri):
        raise UserInputError(f"not a gs:// URI: {uri!r} — write it as gs://BUCKET/PATH")
    return split_uri(uri)


def _check_uri(uri: str | os.PathLike[str]) -> str:
    """Returns ``uri`` as a string after rejecting malformed and unsupported URIs."""
    if isinstance(uri, os.PathLike):
        uri = os.fspath(uri)
    if not isinstance(uri, str) or not uri:
        raise UserInputError(f"expected {_SUPPORTED_TEXT}, got {uri!r}")
    if is_remote(uri):
        split_uri(uri)
        return uri
    scheme = _SCHEME_RE.match(uri)
    if scheme:
        raise UserInputError(
            f"unsupported URI scheme {scheme.group(1)!r} in {uri!r} — use {_SUPPORTED_TEXT}"
        )
    return uri


def join(uri: str | os.PathLike[str], *parts: str) -> str:
    """Joins path components onto a local path or an object-store URI (with ``/`` for URIs)."""
    uri = _check_uri(uri)
    if not is_remote(uri):
        return os.path.join(uri, *parts)
    pieces = [uri.rstrip("/")] + [p.strip("/") for p in parts if p.strip("/")]
    return "/".join(pieces)


def _basename(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


def _root(uri: str, bucket: str) -> str:
    """``scheme://bucket/`` of ``uri`` (the scheme as the caller wrote it)."""
    return f"{_scheme(uri)}://{bucket}/"


_STORES: dict[str, _ObjectStore] = {}
_STORES["gs"] = _GCSStore()
_STORES["s3"] = _STORES["minio"] = _S3Store()


def _store(uri: str) -> _ObjectStore | None:
    """The store of an object-store URI; None for a local path."""
    scheme = _scheme(uri)
    return None if scheme is None else _STORES[scheme]
