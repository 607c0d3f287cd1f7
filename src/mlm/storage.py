"""One file layer for local paths and object-store URIs (``gs://``, ``s3://``, ``minio://``).

Every step reads and writes through this module, so the same code runs on a laptop (local paths),
in a Kubeflow pod (``gs://bucket/prefix`` with Workload Identity, or the cluster's S3-API store at
``s3://`` / ``minio://``) and in tests (the same URIs against a GCS emulator and an S3 server).
TensorFlow's own ``gs://`` file system cannot be pointed at an emulator and TensorFlow 2.21 has no
``s3://`` file system, so TensorFlow code works on local disk and uses `stage_to_local` /
`sync_dir` / `atomic_directory` to move artifacts.

Stores:

- ``gs://BUCKET/PATH``: google-cloud-storage, which honours ``STORAGE_EMULATOR_HOST``.
  Credentials: Workload Identity, ``GOOGLE_APPLICATION_CREDENTIALS`` or gcloud's.
- ``s3://BUCKET/PATH`` and ``minio://BUCKET/PATH`` (the same store; KFP writes ``minio://`` for
  the pipeline root of a standard Kubeflow install): fsspec's s3fs. The endpoint is
  ``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``, else ``MLM_STORE_ENDPOINT`` (what a compiled
  pipeline gives its steps; unset: AWS itself); in-cluster Kubeflow serves its store at
  ``http://minio-service.kubeflow:9000`` (MinIO, Kubeflow 1.10) or
  ``http://seaweedfs.kubeflow:8333`` (SeaweedFS, 1.11 and later). Credentials come from the
  standard AWS variables (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, in a compiled
  pipeline from Kubeflow's ``mlpipeline-minio-artifact`` Secret) or botocore's other sources;
  `check_store` tries them with one quick request; the region from
  ``AWS_DEFAULT_REGION`` / ``AWS_REGION``. A custom endpoint is addressed path-style
  (``http://host:9000/BUCKET/KEY``), which every S3-API server accepts.

Both object stores sit behind one interface (`_ObjectStore`: stat, list, upload, download, pinned
open, delete); everything above it is written once.

Guarantees (the same for every store):

- Nothing half-written appears at a destination: `atomic_write` writes a temporary file and then
  renames it (local) or uploads it in one request (an object upload, single or multipart, becomes
  visible only when complete); `atomic_directory` builds a whole directory aside and renames it
  into place (local) or uploads it with marker files last (object stores).
- A half-written object-store directory (a killed upload) carries an in-progress marker
  (`IN_PROGRESS`) that a rerun may replace (`is_unfinished`); stale temporary folders of a local
  output left by a killed process are removed by the next `atomic_directory` onto it.
- Create-only writes (``overwrite=False``) are enforced by the server: ``if_generation_match=0``
  on GCS, ``If-None-Match: *`` on S3, ``os.link`` locally; two writers can never both succeed
  (AWS S3, current MinIO and moto honour the header; an S3-API server that ignores it
  overwrites).
- Reads are pinned to the version seen when the read starts (the GCS generation, the S3 ETag via
  ``If-Match``): an object overwritten during a read makes the read fail instead of mixing two
  versions.
- Transient errors (429, 5xx, throttling, connection resets) are retried with exponential
  back-off for a bounded time: google-cloud-storage's ``DEFAULT_RETRY`` (120 s deadline); for S3
  botocore's standard retry mode (`_S3_ATTEMPTS` attempts, connect/read timeouts) under s3fs's
  own rounds for throttling (`_S3_RETRY_ROUNDS`). An error that outlasts them is one line.
- Object names never have empty, ``.`` or ``..`` segments, and nothing is staged outside its
  target directory.
- Missing files, objects and buckets, malformed URIs, unsupported schemes, missing credentials
  and permission errors raise `mlm.errors.UserInputError` with a one-line message that names the
  URI and says how to fix it.

The store clients are imported on first use, so importing this module stays cheap.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import dataclasses
import errno
import fnmatch
import glob as _glob
import hashlib
import io
import json
import mimetypes
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

from mlm.errors import UserInputError
from mlm.startup import process_running

__all__ = [
    "IN_PROGRESS",
    "SUPPORTED_SCHEMES",
    "SyncResult",
    "atomic_directory",
    "atomic_write",
    "check_store",
    "exists",
    "fingerprint",
    "glob",
    "is_gcs",
    "is_remote",
    "is_unfinished",
    "join",
    "makedirs",
    "open_read",
    "read_bytes",
    "read_json",
    "read_text",
    "remove",
    "scratch_dir",
    "split_gcs_uri",
    "split_uri",
    "stage_to_local",
    "sync_dir",
    "upload_dir",
    "write_bytes",
    "write_json",
    "write_text",
]

GCS_PREFIX = "gs://"
SUPPORTED_SCHEMES = ("gs", "s3", "minio")
_SUPPORTED_TEXT = "a local path, gs://BUCKET/PATH, s3://BUCKET/PATH or minio://BUCKET/PATH"
# An object-store directory that holds this object was being written when its writer stopped.
IN_PROGRESS = ".mlm-in-progress"
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_WILDCARD_RE = re.compile(r"[*?\[]")
# Reads stream in chunks of this size instead of loading whole objects.
_CHUNK_SIZE = 8 * 1024 * 1024
_TRANSFER_THREADS = 8
_READ_MODES = ("r", "rt", "rb")
_WRITE_MODES = ("w", "wt", "wb")
_HOST = re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


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


class _GCSStore(_ObjectStore):
    """Google Cloud Storage through google-cloud-storage (honours ``STORAGE_EMULATOR_HOST``)."""

    # Bucket naming rules: https://cloud.google.com/storage/docs/buckets#naming
    bucket_re = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
    bucket_rule = "3-222 lower-case letters, digits, '-', '_' or '.'"
    permission_fix = (
        "grant the job's service account roles/storage.objectAdmin on the bucket "
        "(roles/storage.objectViewer to read only)"
    )

    def __init__(self) -> None:
        self._clients: dict[tuple[int, str | None], Any] = {}
        self._lock = threading.Lock()

    def client(self) -> Any:
        """The process's google-cloud-storage client (one per process and emulator endpoint).

        With ``STORAGE_EMULATOR_HOST`` set: anonymous credentials and project "test". Otherwise
        the environment's credentials (Workload Identity, ``GOOGLE_APPLICATION_CREDENTIALS``,
        gcloud) and no project: object operations do not need one.
        """
        emulator = os.environ.get("STORAGE_EMULATOR_HOST") or None
        # A client must not cross a fork (its HTTP session would be shared), hence the pid.
        key = (os.getpid(), emulator)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                from google.auth.credentials import AnonymousCredentials
                from google.auth.exceptions import DefaultCredentialsError
                from google.cloud import storage

                if emulator:
                    client = storage.Client(project="test", credentials=AnonymousCredentials())
                else:
                    try:
                        client = storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT"))
                    except DefaultCredentialsError as err:
                        raise UserInputError(
                            f"no Google Cloud credentials for gs:// access ({err}) — run on GKE "
                            "with Workload Identity, set GOOGLE_APPLICATION_CREDENTIALS to a key "
                            "file, or run `gcloud auth application-default login`"
                        ) from err
                self._clients[key] = client
        return client

    def error_types(self):
        from google.api_core import exceptions as gexc

        return (gexc.NotFound,), (gexc.Forbidden, gexc.Unauthorized)

    def explain(self, error: BaseException, uri: str) -> str | None:
        from google.api_core import exceptions as gexc

        # What outlasted DEFAULT_RETRY: its deadline passed, or a 5xx/429 came back last.
        transient = (
            gexc.RetryError,
            gexc.TooManyRequests,
            gexc.InternalServerError,
            gexc.BadGateway,
            gexc.ServiceUnavailable,
            gexc.GatewayTimeout,
        )
        if isinstance(error, transient):
            return (
                f"Cloud Storage kept failing for {uri} after retries ({error}) — check "
                "https://status.cloud.google.com and the bucket's request rate, then rerun"
            )
        return None

    def create_bucket_hint(self, scheme: str, bucket: str) -> str:
        return f"gcloud storage buckets create gs://{bucket}"

    def bucket_exists(self, bucket: str) -> bool:
        # An object listing needs only storage.objects.list, not storage.buckets.get.
        from google.api_core import exceptions as gexc

        try:
            list(self.client().list_blobs(bucket, max_results=1))
        except gexc.NotFound:
            return False
        return True

    @staticmethod
    def _info(blob: Any) -> _ObjectInfo:
        return _ObjectInfo(blob.name, blob.size, blob.crc32c, blob.generation)

    def stat(self, bucket: str, key: str) -> _ObjectInfo | None:
        blob = self.client().bucket(bucket).get_blob(key)
        return None if blob is None else self._info(blob)

    def list(self, bucket: str, prefix: str, limit: int | None = None) -> Iterator[_ObjectInfo]:
        for blob in self.client().list_blobs(bucket, prefix=prefix, max_results=limit):
            yield self._info(blob)

    def upload(self, local_path: str, bucket: str, key: str, *, overwrite: bool) -> None:
        from google.api_core import exceptions as gexc
        from google.cloud.storage.retry import DEFAULT_RETRY

        # Retrying a whole-file upload rewrites the same bytes, so it is safe;
        # `if_generation_match=0` makes the write create-only.
        try:
            self.client().bucket(bucket).blob(key).upload_from_filename(
                local_path,
                content_type=mimetypes.guess_type(key)[0] or "application/octet-stream",
                if_generation_match=None if overwrite else 0,
                retry=DEFAULT_RETRY,
            )
        except gexc.PreconditionFailed as err:
            raise FileExistsError(key) from err

    @contextlib.contextmanager
    def open(self, bucket: str, info: _ObjectInfo) -> Iterator[IO[bytes]]:
        pinned = self.client().bucket(bucket).blob(info.key, generation=info.version)
        with pinned.open("rb", chunk_size=_CHUNK_SIZE) as f:
            yield f

    def download(self, bucket: str, info: _ObjectInfo, local_path: str) -> None:
        # One request (a reader would first fetch metadata, then each chunk).
        blob = self.client().bucket(bucket).blob(info.key, generation=info.version)
        blob.download_to_filename(local_path)

    def delete(self, bucket: str, key: str) -> None:
        from google.api_core import exceptions as gexc

        # A retried delete whose first attempt succeeded sees 404: already gone is fine.
        with contextlib.suppress(gexc.NotFound):
            self.client().bucket(bucket).blob(key).delete()

    def local_checksum(self, path: str) -> str:
        return _local_crc32c(path)


# How a Kubeflow pipeline hands its artifact store to every step and training worker: the
# compiled pipeline puts the store's Secret into each step's environment as the AWS credentials
# (keys `accesskey`/`secretkey`, as in Kubeflow's `mlpipeline-minio-artifact`), and names the
# Secret and the store's endpoint in these variables, which the job launcher hands on to workers.
STORE_SECRET_ENV = "MLM_STORE_SECRET"
STORE_ENDPOINT_ENV = "MLM_STORE_ENDPOINT"
STORE_SECRET_KEYS = {"accesskey": "AWS_ACCESS_KEY_ID", "secretkey": "AWS_SECRET_ACCESS_KEY"}

_S3_ATTEMPTS = 5  # botocore attempts per request (standard mode: 5xx, throttling, resets)
_S3_RETRY_ROUNDS = 3  # s3fs's own rounds of those attempts for throttling ("SlowDown")
# Error codes of keys the store does not know or a secret key that does not match.
_S3_BAD_CREDENTIALS = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidClientTokenId")


def _s3_error_code(error: BaseException) -> str | None:
    """The S3 error code behind an s3fs error (it keeps botocore's ClientError as the cause)."""
    for cause in (error, error.__cause__, error.__context__):
        response = getattr(cause, "response", None)
        if isinstance(response, dict):
            return response.get("Error", {}).get("Code")
    return None


def _store_wiring() -> str:
    """Where a pipeline step's store settings came from, for error messages ("" outside one)."""
    secret = os.environ.get(STORE_SECRET_ENV)
    if not secret:
        return ""
    return (
        f" (keys from the Secret {secret}, {'/'.join(STORE_SECRET_KEYS)}, in this pod's "
        "namespace; `mlm pipeline compile --store-secret/--store-endpoint` set them)"
    )


class _S3Store(_ObjectStore):
    """An S3-API store (AWS S3, MinIO, SeaweedFS, ...) through fsspec's s3fs."""

    # https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html
    bucket_re = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    bucket_rule = "3-63 lower-case letters, digits, '-' or '.'"
    probe_timeout_s = 10.0

    def __init__(self) -> None:
        self._filesystems: dict[tuple[int, str | None], Any] = {}
        self._lock = threading.Lock()

    @property
    def permission_fix(self) -> str:  # type: ignore[override]
        return (
            "give the credentials in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY read and write "
            "access to the bucket (s3:GetObject, s3:PutObject, s3:DeleteObject, s3:ListBucket)"
            + _store_wiring()
        )

    @staticmethod
    def endpoint() -> str | None:
        """The S3 endpoint: AWS's variables first, then the one a pipeline step was compiled
        with (`STORE_ENDPOINT_ENV`), else AWS itself (None)."""
        return (
            os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
            or os.environ.get(STORE_ENDPOINT_ENV)
            or None
        )

    @staticmethod
    def _new_fs(
        endpoint: str | None, attempts: int, rounds: int, connect_s: float, read_s: float
    ) -> Any:
        import s3fs

        config: dict[str, Any] = {
            "retries": {"max_attempts": attempts, "mode": "standard"},
            "connect_timeout": connect_s,
            "read_timeout": read_s,
        }
        if endpoint:
            # MinIO and friends serve buckets as paths, not as DNS names.
            config["s3"] = {"addressing_style": "path"}
        fs = s3fs.S3FileSystem(
            endpoint_url=endpoint,
            config_kwargs=config,
            skip_instance_cache=True,
            use_listings_cache=False,
            default_block_size=_CHUNK_SIZE,
        )
        fs.retries = rounds
        return fs

    def fs(self) -> Any:
        """The process's s3fs file system (one per process and endpoint, no listing cache)."""
        endpoint = self.endpoint()
        key = (os.getpid(), endpoint)
        with self._lock:
            fs = self._filesystems.get(key)
            if fs is None:
                fs = self._new_fs(endpoint, _S3_ATTEMPTS, _S3_RETRY_ROUNDS, 10, 60)
                self._filesystems[key] = fs
        return fs

    def probe(self, bucket: str, prefix: str) -> None:
        # One attempt with short timeouts: an unreachable store fails in seconds, not after
        # the retries that ride out a store's hiccups mid-run.
        timeout = self.probe_timeout_s
        fs = self._new_fs(self.endpoint(), 1, 1, timeout, timeout)
        fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=prefix, MaxKeys=1)

    def explain(self, error: BaseException, uri: str) -> str | None:
        from botocore import exceptions as bexc

        wiring = _store_wiring()
        if isinstance(error, bexc.NoCredentialsError | bexc.PartialCredentialsError):
            if wiring:
                return (
                    f"no store credentials for {uri} ({error}): the Secret "
                    f"{os.environ[STORE_SECRET_ENV]} is missing or lacks the keys "
                    f"{', '.join(STORE_SECRET_KEYS)} in this pod's namespace — create it there, "
                    "or compile the pipeline with --store-secret naming the one that exists"
                )
            return (
                f"no AWS credentials for {uri} ({error}) — set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (in Kubeflow: from the mlpipeline-minio-artifact Secret)"
            )
        if isinstance(error, bexc.EndpointConnectionError | bexc.ConnectTimeoutError):
            return (
                f"cannot reach the S3 endpoint {self.endpoint() or 'of AWS'} for {uri} "
                f"({error}){wiring} — set the store's URL (AWS_ENDPOINT_URL, or compile with "
                "--store-endpoint; in-cluster Kubeflow 1.10: http://minio-service.kubeflow:9000, "
                "1.11 and later: http://seaweedfs.kubeflow:8333) and check that a NetworkPolicy "
                "lets this pod reach it"
            )
        code = _s3_error_code(error)
        if code in _S3_BAD_CREDENTIALS:
            return (
                f"the S3 store at {self.endpoint() or 'AWS'} refuses the credentials for {uri} "
                f"({code}){wiring} — give AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY of a user "
                "of that store"
            )
        # s3fs's OSErrors for 5xx and throttling answers that outlasted every retry.
        transient = (errno.EBUSY, errno.EREMOTEIO, errno.ETIMEDOUT)
        exhausted = isinstance(error, OSError) and error.errno in transient
        if exhausted or isinstance(error, bexc.ReadTimeoutError):
            return (
                f"the S3 store at {self.endpoint() or 'AWS'} kept failing for {uri} after "
                f"retrying (up to {_S3_ATTEMPTS * _S3_RETRY_ROUNDS} attempts; {error}) — check "
                "that the store is up and not overloaded, then rerun"
            )
        return None

    def create_bucket_hint(self, scheme: str, bucket: str) -> str:
        return f"aws s3 mb s3://{bucket}, or mc mb for MinIO"

    def bucket_exists(self, bucket: str) -> bool:
        try:
            self.fs().call_s3("list_objects_v2", Bucket=bucket, MaxKeys=1)
        except FileNotFoundError:
            return False
        return True

    @staticmethod
    def _checksum(etag: str | None) -> str | None:
        etag = (etag or "").strip('"')
        # A multipart upload's ETag ("<md5 of md5s>-<parts>") is no checksum of the content.
        return etag if etag and "-" not in etag else None

    def stat(self, bucket: str, key: str) -> _ObjectInfo | None:
        try:
            head = self.fs().call_s3("head_object", Bucket=bucket, Key=key)
        except FileNotFoundError:
            return None
        etag = head.get("ETag")
        return _ObjectInfo(key, head.get("ContentLength"), self._checksum(etag), etag)

    def list(self, bucket: str, prefix: str, limit: int | None = None) -> Iterator[_ObjectInfo]:
        fs = self.fs()
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if limit is not None:
            kwargs["MaxKeys"] = limit
        while True:
            page = fs.call_s3("list_objects_v2", **kwargs)
            for item in page.get("Contents", []):
                etag = item.get("ETag")
                yield _ObjectInfo(item["Key"], item.get("Size"), self._checksum(etag), etag)
            if limit is not None or not page.get("IsTruncated"):
                return
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def upload(self, local_path: str, bucket: str, key: str, *, overwrite: bool) -> None:
        # One PUT (or a multipart upload for large files, visible only when completed);
        # mode="create" sends `If-None-Match: *`, which the server enforces (AWS S3 and current
        # MinIO do; a server that ignores the header overwrites).
        try:
            self.fs().put_file(
                local_path,
                f"{bucket}/{key}",
                mode="overwrite" if overwrite else "create",
                ContentType=mimetypes.guess_type(key)[0] or "application/octet-stream",
            )
        except OSError as err:
            # The one precondition sent failed: the object exists (s3fs maps a 412 without the
            # `Condition` detail, as some servers send it, to a plain OSError).
            response = getattr(err.__cause__, "response", None) or {}
            code = response.get("Error", {}).get("Code")
            if (
                overwrite
                or isinstance(err, FileExistsError)
                or code not in ("PreconditionFailed", "412")
            ):
                raise
            raise FileExistsError(key) from err

    @contextlib.contextmanager
    def open(self, bucket: str, info: _ObjectInfo) -> Iterator[IO[bytes]]:
        # s3fs pins every ranged GET to the ETag seen at open (If-Match): a replaced object
        # fails the read (s3fs.utils.FileExpired). Check that it is still the listed version.
        from s3fs.utils import FileExpired

        path = f"{bucket}/{info.key}"
        with self.fs().open(path, "rb", block_size=_CHUNK_SIZE, cache_type="readahead") as f:
            if info.version is not None and f.details.get("ETag") != info.version:
                raise FileExpired(filename=path, e_tag=info.version)
            yield f

    def delete(self, bucket: str, key: str) -> None:
        self.fs().call_s3("delete_object", Bucket=bucket, Key=key)

    def local_checksum(self, path: str) -> str:
        return _local_md5(path)


_STORES: dict[str, _ObjectStore] = {}
_STORES["gs"] = _GCSStore()
_STORES["s3"] = _STORES["minio"] = _S3Store()


def _store(uri: str) -> _ObjectStore | None:
    """The store of an object-store URI; None for a local path."""
    scheme = _scheme(uri)
    return None if scheme is None else _STORES[scheme]


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
    names = sorted({_check_uri(uri) for uri in uris})
    entries: dict[str, tuple[int | None, str]] = {}

    def describe(uri: str) -> None:
        entries[uri] = _size_and_version(uri)

    _parallel(describe, names)
    digest = hashlib.sha256()
    for uri in names:
        size, version = entries[uri]
        digest.update(json.dumps([uri, size, version]).encode() + b"\n")
    return digest.hexdigest()


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
