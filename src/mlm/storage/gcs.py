"""Google Cloud Storage (``gs://``) behind `_ObjectStore`: google-cloud-storage."""

from __future__ import annotations

import contextlib
import mimetypes
import os
import re
import threading
from collections.abc import Iterator
from typing import IO, Any

from mlm.errors import UserInputError
from mlm.storage import stores
from mlm.storage.stores import _local_crc32c, _ObjectInfo, _ObjectStore


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
        with pinned.open("rb", chunk_size=stores._CHUNK_SIZE) as f:
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
