"""One file layer for local paths and ``gs://`` URIs.

Every step reads and writes through this module, so the same code runs on a laptop (local paths),
in a Kubeflow pod (``gs://bucket/prefix`` with Workload Identity) and in tests (the same ``gs://``
URIs against a GCS emulator). ``gs://`` goes through google-cloud-storage, which honours
``STORAGE_EMULATOR_HOST``; TensorFlow's own ``gs://`` file system cannot be pointed at an emulator,
so TensorFlow code works on local disk and uses `stage_to_local` / `sync_dir` / `atomic_directory`
to move artifacts.

Guarantees:

- Nothing half-written appears at a destination: `atomic_write` writes a temporary file and then
  renames it (local) or uploads it in one request (an object upload is atomic); `atomic_directory`
  builds a whole directory aside and renames it into place (local) or uploads it (``gs://``).
- Transient GCS errors (429, 5xx, connection resets) are retried with google-cloud-storage's
  ``DEFAULT_RETRY`` (exponential back-off). Whole-file uploads are safe to retry: a repeated upload
  writes the same bytes. Create-only writes (``overwrite=False``) use the ``if_generation_match=0``
  precondition, so two writers can never both succeed.
- Missing files, objects and buckets, malformed URIs and permission errors raise
  `mlm.errors.UserInputError` with a message that names the URI and says how to fix it.

google-cloud-storage is imported on first ``gs://`` use, so importing this module stays cheap.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fnmatch
import glob as _glob
import json
import mimetypes
import os
import re
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import IO, TYPE_CHECKING, Any

from mlm.errors import UserInputError

if TYPE_CHECKING:
    from google.cloud.storage import Blob, Client

__all__ = [
    "SyncResult",
    "atomic_directory",
    "atomic_write",
    "exists",
    "glob",
    "is_gcs",
    "join",
    "makedirs",
    "open_read",
    "read_bytes",
    "read_json",
    "read_text",
    "remove",
    "split_gcs_uri",
    "stage_to_local",
    "sync_dir",
    "upload_dir",
    "write_bytes",
    "write_json",
    "write_text",
]

GCS_PREFIX = "gs://"
# Bucket naming rules: https://cloud.google.com/storage/docs/buckets#naming
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_WILDCARD_RE = re.compile(r"[*?\[]")
# Reads stream in chunks of this size instead of loading whole objects.
_CHUNK_SIZE = 8 * 1024 * 1024
_TRANSFER_THREADS = 8
_READ_MODES = ("r", "rt", "rb")
_WRITE_MODES = ("w", "wt", "wb")


# --------------------------------------------------------------------------------------------
# URIs
# --------------------------------------------------------------------------------------------


def is_gcs(uri: str | os.PathLike[str]) -> bool:
    """Whether ``uri`` is a ``gs://`` URI (anything else is treated as a local path)."""
    return isinstance(uri, str) and uri.startswith(GCS_PREFIX)


def split_gcs_uri(uri: str) -> tuple[str, str]:
    """Splits ``gs://bucket/some/key`` into ``("bucket", "some/key")``.

    Args:
        uri: a ``gs://`` URI; the key may be empty (``gs://bucket`` or ``gs://bucket/``).

    Returns:
        The bucket name and the object key (or prefix), without a leading slash.

    Raises:
        UserInputError: the URI is not ``gs://`` or the bucket name is not valid.
    """
    if not is_gcs(uri):
        raise UserInputError(f"not a gs:// URI: {uri!r} — write it as gs://BUCKET/PATH")
    bucket, _, key = uri[len(GCS_PREFIX) :].partition("/")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise UserInputError(
            f"malformed gs:// URI {uri!r}: {bucket!r} is not a valid bucket name — write it as "
            "gs://BUCKET/PATH with a bucket of 3-222 lower-case letters, digits, '-', '_' or '.'"
        )
    if any(ch in key for ch in "\r\n"):
        raise UserInputError(f"malformed gs:// URI {uri!r}: object names cannot contain newlines")
    return bucket, key


def _check_uri(uri: str | os.PathLike[str]) -> str:
    """Returns ``uri`` as a string after rejecting malformed and unsupported URIs."""
    if isinstance(uri, os.PathLike):
        uri = os.fspath(uri)
    if not isinstance(uri, str) or not uri:
        raise UserInputError(f"expected a local path or a gs:// URI, got {uri!r}")
    if is_gcs(uri):
        split_gcs_uri(uri)
        return uri
    scheme = _SCHEME_RE.match(uri)
    if scheme:
        raise UserInputError(
            f"unsupported URI scheme {scheme.group(1)!r} in {uri!r} — use a local path or "
            "gs://BUCKET/PATH"
        )
    return uri


def join(uri: str | os.PathLike[str], *parts: str) -> str:
    """Joins path components onto a local path or a ``gs://`` URI (with ``/`` for ``gs://``)."""
    uri = _check_uri(uri)
    if not is_gcs(uri):
        return os.path.join(uri, *parts)
    pieces = [uri.rstrip("/")] + [p.strip("/") for p in parts if p.strip("/")]
    return "/".join(pieces)


def _basename(uri: str) -> str:
    return uri.rstrip("/").rsplit("/", 1)[-1]


# --------------------------------------------------------------------------------------------
# GCS client and error translation
# --------------------------------------------------------------------------------------------

_clients: dict[tuple[int, str | None], Client] = {}
_clients_lock = threading.Lock()


def _client() -> Client:
    """The process's google-cloud-storage client (one per process and emulator endpoint).

    With ``STORAGE_EMULATOR_HOST`` set: anonymous credentials and project "test". Otherwise the
    environment's credentials (Workload Identity, ``GOOGLE_APPLICATION_CREDENTIALS``, gcloud) and
    no project: object operations do not need one.
    """
    emulator = os.environ.get("STORAGE_EMULATOR_HOST") or None
    # A client must not cross a fork (its HTTP session would be shared), hence the pid.
    key = (os.getpid(), emulator)
    with _clients_lock:
        client = _clients.get(key)
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
                        f"no Google Cloud credentials for gs:// access ({err}) — run on GKE with "
                        "Workload Identity, set GOOGLE_APPLICATION_CREDENTIALS to a key file, or "
                        "run `gcloud auth application-default login`"
                    ) from err
            _clients[key] = client
    return client


def _bucket_exists(bucket: str) -> bool:
    """Probes a bucket with an object listing (needs only storage.objects.list, not buckets.get)."""
    from google.api_core import exceptions as gexc

    with _translate_errors(f"gs://{bucket}", "list"):
        try:
            list(_client().list_blobs(bucket, max_results=1))
        except gexc.NotFound:
            return False
    return True


def _missing_message(uri: str) -> str:
    if not is_gcs(uri):
        return f"no such file: {uri} — check the path"
    bucket, _ = split_gcs_uri(uri)
    with contextlib.suppress(UserInputError):  # can't probe: keep the generic message
        if not _bucket_exists(bucket):
            return (
                f"no such bucket: gs://{bucket} (in {uri}) — check the URI or create the "
                f"bucket (gcloud storage buckets create gs://{bucket})"
            )
    return f"no such file: {uri} — check the URI and that the object exists"


@contextlib.contextmanager
def _translate_errors(uri: str, action: str) -> Iterator[None]:
    """Turns missing-file and permission errors from the block into `UserInputError`."""
    missing: tuple[type[BaseException], ...] = (FileNotFoundError,)
    denied: tuple[type[BaseException], ...] = (PermissionError,)
    fix = "check the file's permissions"
    if is_gcs(uri):  # google.api_core costs ~0.2 s to import: only for gs:// work
        from google.api_core import exceptions as gexc

        missing += (gexc.NotFound,)
        denied += (gexc.Forbidden, gexc.Unauthorized)
        fix = (
            "grant the job's service account roles/storage.objectAdmin on the bucket "
            "(roles/storage.objectViewer to read only)"
        )
    try:
        yield
    except missing as err:
        raise UserInputError(_missing_message(uri)) from err
    except denied as err:
        raise UserInputError(f"permission denied to {action} {uri} — {fix}") from err
    except NotADirectoryError as err:
        raise UserInputError(f"cannot {action} {uri}: a parent is a file, not a directory") from err


def _blob(uri: str) -> Blob:
    bucket, key = split_gcs_uri(uri)
    if not key or key.endswith("/"):
        raise UserInputError(f"{uri} names a bucket or a prefix, not an object — add a file name")
    return _client().bucket(bucket).blob(key)


def _existing_blob(uri: str) -> Blob:
    """The blob at ``uri`` with its metadata (generation, size, crc32c) loaded."""
    blob = _blob(uri)
    with _translate_errors(uri, "read"):
        blob.reload()
    return blob


def _get_blob(uri: str) -> Blob | None:
    """The object at ``uri`` with its metadata; None if there is none or ``uri`` is a prefix."""
    bucket, key = split_gcs_uri(uri)
    if not key or key.endswith("/"):
        return None
    with _translate_errors(uri, "read"):
        return _client().bucket(bucket).get_blob(key)


def _list_objects(uri_prefix: str) -> Iterator[Blob]:
    """Every object whose name starts with the key of ``uri_prefix`` (a plain string prefix)."""
    bucket, prefix = split_gcs_uri(uri_prefix)
    with _translate_errors(uri_prefix, "list"):
        yield from _client().list_blobs(bucket, prefix=prefix)


def _upload(local_path: str, uri: str, *, overwrite: bool = True) -> None:
    """Uploads one local file to ``uri`` in a single (atomic) object write."""
    from google.api_core import exceptions as gexc
    from google.cloud.storage.retry import DEFAULT_RETRY

    blob = _blob(uri)
    content_type = mimetypes.guess_type(uri)[0] or "application/octet-stream"
    # Retrying a whole-file upload rewrites the same bytes, so it is safe; `if_generation_match=0`
    # makes the write create-only.
    with _translate_errors(uri, "write"):
        try:
            blob.upload_from_filename(
                local_path,
                content_type=content_type,
                if_generation_match=None if overwrite else 0,
                retry=DEFAULT_RETRY,
            )
        except gexc.PreconditionFailed as err:
            # A retry after a lost reply sees its own first attempt: same content, not a conflict.
            existing = _get_blob(uri)
            if existing is None or existing.crc32c != _local_crc32c(local_path):
                raise FileExistsError(f"{uri} already exists (create-only write)") from err


def _download(blob: Blob, uri: str, local_path: str) -> None:
    """Downloads ``blob`` to ``local_path`` through a temporary name (never a partial file)."""
    os.makedirs(os.path.dirname(local_path) or ".", exist_ok=True)
    tmp = _temp_sibling(local_path)
    try:
        with _translate_errors(uri, "read"):
            blob.download_to_filename(tmp)
        os.replace(tmp, local_path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _local_crc32c(path: str) -> str:
    """CRC32C of a local file, base64-encoded like GCS's ``crc32c`` object field."""
    import google_crc32c

    checksum = google_crc32c.Checksum()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1024 * 1024), b""):
            checksum.update(chunk)
    return base64.b64encode(checksum.digest()).decode("ascii")


# --------------------------------------------------------------------------------------------
# Local helpers
# --------------------------------------------------------------------------------------------


def _temp_sibling(path: str, kind: str = "tmp") -> str:
    """A fresh hidden name in the same directory as ``path`` (so a rename stays on one disk)."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}")


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


# --------------------------------------------------------------------------------------------
# Queries
# --------------------------------------------------------------------------------------------


def exists(uri: str | os.PathLike[str]) -> bool:
    """Whether a file or directory exists at ``uri``.

    For ``gs://`` a URI exists when an object has that name or objects exist under ``uri/``
    (GCS has no directories); ``gs://bucket`` exists when the bucket does.
    """
    uri = _check_uri(uri)
    if not is_gcs(uri):
        return os.path.exists(uri)
    bucket, key = split_gcs_uri(uri)
    if not key.strip("/"):
        return _bucket_exists(bucket)
    return _get_blob(uri) is not None or _any_object_under(uri)


def _any_object_under(uri: str) -> bool:
    """Whether objects exist under ``uri/`` (False, not an error, when the bucket is missing)."""
    from google.api_core import exceptions as gexc

    bucket, key = split_gcs_uri(uri.rstrip("/") + "/")
    with _translate_errors(uri, "list"):
        try:
            return any(True for _ in _client().list_blobs(bucket, prefix=key, max_results=1))
        except gexc.NotFound:
            return False


def glob(pattern: str | os.PathLike[str]) -> list[str]:
    """Sorted paths or URIs matching a shell pattern (``*``, ``?``, ``[...]``).

    As with `glob.glob`, wildcards do not cross ``/``. For ``gs://`` a pattern matches object names
    and the implied directories above them (``gs://b/runs/*`` lists ``gs://b/runs/a`` when an
    object ``runs/a/x`` exists). The bucket name cannot contain wildcards.
    """
    pattern = _check_uri(pattern)
    if not is_gcs(pattern):
        return sorted(_glob.glob(pattern))
    bucket, key_pattern = split_gcs_uri(pattern)
    key_pattern = key_pattern.rstrip("/")
    wildcard = _WILDCARD_RE.search(key_pattern)
    literal_prefix = key_pattern[: wildcard.start()] if wildcard else key_pattern
    segments = key_pattern.split("/")
    matches = set()
    for blob in _list_objects(f"gs://{bucket}/{literal_prefix}"):
        parts = blob.name.split("/")
        if len(parts) < len(segments) or not all(parts[: len(segments)]):
            continue
        candidate = parts[: len(segments)]
        if all(fnmatch.fnmatchcase(p, s) for p, s in zip(candidate, segments)):
            matches.add(f"gs://{bucket}/" + "/".join(candidate))
    return sorted(matches)


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def open_read(
    uri: str | os.PathLike[str], mode: str = "rb", *, encoding: str = "utf-8"
) -> Iterator[IO[Any]]:
    """Opens a local file or a ``gs://`` object for streaming reads.

    ``gs://`` objects are read in chunks (never loaded whole), pinned to the object's generation
    at open time: if the object is overwritten during the read, the next chunk fails (NotFound)
    instead of mixing two versions.

    Args:
        uri: local path or ``gs://`` URI of a file.
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
    if is_gcs(uri):
        blob = _existing_blob(uri)
        pinned = blob.bucket.blob(blob.name, generation=blob.generation)
        with pinned.open(
            "rb" if binary else "rt", chunk_size=_CHUNK_SIZE, encoding=None if binary else encoding
        ) as f:
            yield f
        return
    if os.path.isdir(uri):
        raise UserInputError(f"{uri} is a directory, expected a file")
    with _translate_errors(uri, "read"):
        f = open(uri, mode, encoding=None if binary else encoding)  # noqa: SIM115
    with f:
        yield f


def read_bytes(uri: str | os.PathLike[str]) -> bytes:
    """The whole content of a local file or ``gs://`` object."""
    with open_read(uri, "rb") as f:
        return f.read()


def read_text(uri: str | os.PathLike[str], *, encoding: str = "utf-8") -> str:
    """The whole content of a local file or ``gs://`` object as text."""
    with open_read(uri, "r", encoding=encoding) as f:
        return f.read()


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
    directories are created). ``gs://``: a local temporary file, uploaded in one request at the
    end. If the block raises, nothing appears at ``uri`` and an existing file is left untouched.

    Args:
        uri: destination local path or ``gs://`` URI.
        mode: "wb" (bytes) or "w"/"wt" (text).
        encoding: text encoding for text mode.
        overwrite: if False, the write is create-only: it raises `FileExistsError` when a file
            with different content already exists at ``uri`` (``os.link`` locally,
            ``if_generation_match=0`` on GCS: race-free). Finding identical content counts as
            success, so a retried create-only write is idempotent.

    Yields:
        A writable file object.
    """
    if mode not in _WRITE_MODES:
        raise ValueError(f"atomic_write mode must be one of {_WRITE_MODES}, got {mode!r}")
    uri = _check_uri(uri)
    if is_gcs(uri):
        _blob(uri)  # reject bucket-only and prefix URIs before the block runs
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
        if is_gcs(uri):
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


def makedirs(uri: str | os.PathLike[str]) -> None:
    """Creates a local directory and its parents; for ``gs://`` checks that the bucket exists.

    GCS has no directories (an object name implies its prefixes), so only the bucket matters.
    """
    uri = _check_uri(uri)
    if is_gcs(uri):
        bucket, _ = split_gcs_uri(uri)
        if not _bucket_exists(bucket):
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
    if not is_gcs(uri):
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
    obj = _get_blob(uri)
    targets = [obj] if obj is not None else []
    if recursive:
        targets += _list_objects(uri.rstrip("/") + "/")
    elif not targets and _any_object_under(uri):
        raise IsADirectoryError(f"{uri} is a prefix: pass recursive=True to delete under it")
    if not targets:
        if not missing_ok:
            raise UserInputError(_missing_message(uri))
        return
    _parallel(lambda blob: _delete_blob(blob, uri), targets)


def _delete_blob(blob: Blob, uri: str) -> None:
    from google.api_core import exceptions as gexc

    with _translate_errors(uri, "delete"), contextlib.suppress(gexc.NotFound):
        # A retried delete whose first attempt succeeded sees 404: already gone is fine.
        blob.delete()


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
    """Makes a ``gs://`` file or prefix available on local disk; local paths pass through.

    A ``gs://`` object is downloaded to ``local_dir/<its name>``; a prefix (a "directory") to
    ``local_dir/<last component>/...`` keeping relative paths. Files already there with the same
    size and CRC32C are not downloaded again, so staging twice is cheap.

    Args:
        uri: local path (returned unchanged) or ``gs://`` URI of an object or prefix.
        local_dir: directory to download into (created if missing).

    Returns:
        The local path of the file or directory.

    Raises:
        UserInputError: nothing exists at ``uri``.
    """
    uri = _check_uri(uri)
    if not is_gcs(uri):
        return uri
    local_dir = os.fspath(local_dir)
    bucket, key = split_gcs_uri(uri)
    target = os.path.join(local_dir, _basename(uri) if key.strip("/") else bucket)
    blob = _get_blob(uri)
    if blob is not None:
        if not _same_file(target, blob.size, blob.crc32c):
            _download(blob, uri, target)
        return target
    prefix = uri.rstrip("/") + "/" if key.strip("/") else f"gs://{bucket}/"
    prefix_key = split_gcs_uri(prefix)[1]
    blobs = [b for b in _list_objects(prefix) if not b.name.endswith("/")]
    if not blobs:
        raise UserInputError(_missing_message(uri))
    os.makedirs(target, exist_ok=True)

    def fetch(blob: Blob) -> None:
        local_path = os.path.join(target, *blob.name[len(prefix_key) :].split("/"))
        if not _same_file(local_path, blob.size, blob.crc32c):
            _download(blob, f"gs://{bucket}/{blob.name}", local_path)

    _parallel(fetch, blobs)
    return target


def _same_file(local_path: str, size: int | None, crc32c: str | None) -> bool:
    return (
        os.path.isfile(local_path)
        and os.path.getsize(local_path) == size
        and crc32c is not None
        and _local_crc32c(local_path) == crc32c
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
    """Copies new and changed files from a local directory to a local or ``gs://`` destination.

    A file is unchanged when the destination has the same size and CRC32C. Each file is written
    atomically. ``last`` names marker files (e.g. ``manifest.json``) that readers wait for: they
    are removed from the destination first when anything changes, and copied after every other
    file, so a reader never sees a marker next to incomplete content.

    Args:
        local_dir: source directory.
        uri: destination directory (local path or ``gs://`` prefix).
        delete: also delete destination files that are not in ``local_dir``.
        last: relative paths to copy after all other files.

    Returns:
        A `SyncResult` listing copied, deleted and unchanged relative paths.
    """
    return _copy_tree(local_dir, uri, delete=delete, last=last, skip_unchanged=True)


def upload_dir(local_dir: str | os.PathLike[str], uri: str | os.PathLike[str]) -> SyncResult:
    """Copies every file of a local directory to a local or ``gs://`` destination.

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
    unchanged = {
        rel
        for rel, full in source.items()
        if skip_unchanged
        and rel in remote
        and remote[rel][0] == os.path.getsize(full)
        and remote[rel][1] == _local_crc32c(full)
    }
    to_copy = sorted(set(source) - unchanged)
    to_delete = sorted(set(remote) - set(source)) if delete else []
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
    """Relative path -> (size, crc32c) of the files already under a destination directory."""
    if not is_gcs(uri):
        if not os.path.isdir(uri):
            return {}
        return {
            rel: (os.path.getsize(full), _local_crc32c(full))
            for rel, full in _local_files(uri).items()
        }
    prefix = uri.rstrip("/") + "/"
    prefix_key = split_gcs_uri(prefix)[1]
    return {
        blob.name[len(prefix_key) :]: (blob.size, blob.crc32c)
        for blob in _list_objects(prefix)
        if not blob.name.endswith("/")
    }


def _copy_file(local_path: str, uri: str) -> None:
    if is_gcs(uri):
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


@contextlib.contextmanager
def atomic_directory(uri: str | os.PathLike[str], *, last: Sequence[str] = ()) -> Iterator[str]:
    """Yields a local directory whose content replaces ``uri`` only when the block succeeds.

    Local: the directory is built beside the destination and renamed into place; an existing
    destination is first renamed aside and deleted after the swap (restored if the swap fails).
    ``gs://``: the directory is built in local temporary space and synced to the prefix with
    ``delete=True`` (objects under the prefix that the new directory lacks are removed); GCS
    cannot swap many objects at once, so name the marker files readers wait for in ``last``
    (see `sync_dir`). If the block raises, the destination is untouched and the temporary
    directory is deleted.

    Args:
        uri: destination directory (local path or ``gs://`` prefix).
        last: for ``gs://``, relative paths to upload after everything else.

    Yields:
        The local directory to fill.
    """
    uri = _check_uri(uri)
    if is_gcs(uri):
        makedirs(uri)  # a missing bucket fails before the work, not after
        tmp = tempfile.mkdtemp(prefix=f"mlm-{_basename(uri)}-")
    else:
        destination = os.path.abspath(uri)
        with _translate_errors(uri, "create"):
            os.makedirs(os.path.dirname(destination), exist_ok=True)
        tmp = _temp_sibling(destination)
        os.mkdir(tmp)  # unlike mkdtemp, honours the umask like the final directory should
    try:
        yield tmp
        if is_gcs(uri):
            sync_dir(tmp, uri, delete=True, last=last)
        else:
            _swap_in_directory(tmp, destination)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
