"""The interface every object store implements (`_ObjectStore`), and local checksums."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import re
import shutil
from collections.abc import Iterator
from typing import IO, Any

# Reads stream in chunks of this size instead of loading whole objects.
_CHUNK_SIZE = 8 * 1024 * 1024


# --------------------------------------------------------------------------------------------
# Object stores: one interface, one implementation per store
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _ObjectInfo:
    """An object as a store describes it.

    Attributes:
        key: the object's name in its bucket.
        size: bytes.
        checksum: comparable with the store's `_ObjectStore.local_checksum` of a local file;
            None when the store has none for this object (then it never counts as unchanged).
        version: what pins a read to this content (GCS generation, S3 ETag).
    """

    key: str
    size: int | None
    checksum: str | None
    version: Any


class _ObjectStore:
    """What this module needs from an object store; keys are names within a bucket."""

    bucket_re: re.Pattern[str]
    bucket_rule: str  # the naming rule, for error messages
    permission_fix: str

    def error_types(
        self,
    ) -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
        """(missing, denied) exception types of the store's client."""
        return (), ()

    def explain(self, error: BaseException, uri: str) -> str | None:
        """A one-line message for a store-specific failure (credentials, endpoint), else None."""
        return None

    def create_bucket_hint(self, scheme: str, bucket: str) -> str:
        raise NotImplementedError

    def bucket_exists(self, bucket: str) -> bool:
        raise NotImplementedError

    def probe(self, bucket: str, prefix: str) -> None:
        """One quick request that reaches the store, with its credentials, under ``prefix`` of
        ``bucket``; raises what the store's client raises (FileNotFoundError: no such bucket)."""
        if not self.bucket_exists(bucket):
            raise FileNotFoundError(bucket)

    def stat(self, bucket: str, key: str) -> _ObjectInfo | None:
        """The object named ``key``; None when there is none."""
        raise NotImplementedError

    def list(self, bucket: str, prefix: str, limit: int | None = None) -> Iterator[_ObjectInfo]:
        """Objects whose name starts with ``prefix`` (a plain string prefix)."""
        raise NotImplementedError

    def upload(self, local_path: str, bucket: str, key: str, *, overwrite: bool) -> None:
        """Writes a local file to one object in one atomic write.

        Raises:
            FileExistsError: ``overwrite`` is False and the object exists (checked by the server).
        """
        raise NotImplementedError

    def open(self, bucket: str, info: _ObjectInfo) -> contextlib.AbstractContextManager[IO[bytes]]:
        """A binary reader of the object pinned to ``info.version``, read in chunks."""
        raise NotImplementedError

    def download(self, bucket: str, info: _ObjectInfo, local_path: str) -> None:
        """Writes the object, pinned to ``info.version``, to ``local_path``."""
        with self.open(bucket, info) as source, open(local_path, "wb") as out:
            shutil.copyfileobj(source, out, _CHUNK_SIZE)

    def delete(self, bucket: str, key: str) -> None:
        """Deletes an object; an object already gone is fine."""
        raise NotImplementedError

    def local_checksum(self, path: str) -> str:
        """The checksum of a local file in the form of `_ObjectInfo.checksum`."""
        raise NotImplementedError


def _local_crc32c(path: str) -> str:
    """CRC32C of a local file, base64-encoded like GCS's ``crc32c`` object field."""
    import google_crc32c

    checksum = google_crc32c.Checksum()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            checksum.update(chunk)
    return base64.b64encode(checksum.digest()).decode("ascii")


def _local_md5(path: str) -> str:
    """Hex MD5 of a local file: the ETag S3 gives an object written in a single PUT."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()
