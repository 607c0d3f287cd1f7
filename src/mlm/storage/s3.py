"""S3-API stores (``s3://``, ``minio://``) behind `_ObjectStore`: fsspec's s3fs."""

from __future__ import annotations

import contextlib
import errno
import mimetypes
import os
import re
import threading
from collections.abc import Iterator
from typing import IO, Any

from mlm.storage import stores
from mlm.storage.stores import _local_md5, _ObjectInfo, _ObjectStore

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
            default_block_size=stores._CHUNK_SIZE,
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
        with self.fs().open(path, "rb", block_size=stores._CHUNK_SIZE, cache_type="readahead") as f:
            if info.version is not None and f.details.get("ETag") != info.version:
                raise FileExpired(filename=path, e_tag=info.version)
            yield f

    def delete(self, bucket: str, key: str) -> None:
        self.fs().call_s3("delete_object", Bucket=bucket, Key=key)

    def local_checksum(self, path: str) -> str:
        return _local_md5(path)
