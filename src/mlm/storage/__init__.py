"""One file layer for local paths and object-store URIs (``gs://``, ``s3://``, ``minio://``).

Every step reads and writes through this package, so the same code runs on a laptop (local paths),
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

The package: `uri` (URIs and which store they name), `stores` (the `_ObjectStore` interface),
`gcs` and `s3` (the stores), `objects` (object operations and error translation), `local`
(temporary names, scratch space), `ops` (queries, reads and writes of one file), `sync` (staging
and syncing directories) and `atomic` (`atomic_directory`). Import from `mlm.storage`.
"""

from __future__ import annotations

from mlm.storage.atomic import atomic_directory, is_unfinished
from mlm.storage.local import _HOST, scratch_dir  # noqa: F401
from mlm.storage.objects import _translate_errors  # noqa: F401
from mlm.storage.ops import (
    atomic_write,
    check_store,
    check_writable_location,
    exists,
    file_sizes,
    file_versions,
    fingerprint,
    glob,
    makedirs,
    open_read,
    read_bytes,
    read_json,
    read_text,
    remove,
    write_bytes,
    write_json,
    write_text,
)
from mlm.storage.s3 import STORE_ENDPOINT_ENV, STORE_SECRET_ENV, STORE_SECRET_KEYS  # noqa: F401
from mlm.storage.sync import SyncResult, stage_to_local, sync_dir, upload_dir
from mlm.storage.uri import (  # noqa: F401
    GCS_PREFIX,
    IN_PROGRESS,
    SUPPORTED_SCHEMES,
    is_gcs,
    is_remote,
    join,
    split_gcs_uri,
    split_uri,
)

__all__ = [
    "IN_PROGRESS",
    "SUPPORTED_SCHEMES",
    "SyncResult",
    "atomic_directory",
    "atomic_write",
    "check_store",
    "check_writable_location",
    "exists",
    "file_sizes",
    "file_versions",
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
