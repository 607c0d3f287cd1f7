"""mlm.storage on local disk and on real object-store servers, with the same assertions.

Each test in the first part runs four times through the ``root`` fixture: under a local temporary
directory, under ``gs://<bucket>/`` of the GCS emulator (fake-gcs-server, tests/gcs_emulator.py),
and under ``s3://<bucket>/`` and ``minio://<bucket>/`` of moto's S3 server (tests/s3_emulator.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from mlm import storage
from mlm.errors import UserInputError
from tests.s3_emulator import FlakyProxy


@pytest.fixture(params=["local", "gs", "s3", "minio"])
def root(request: pytest.FixtureRequest, tmp_path) -> str:
    """A directory URI to work under: a local path or a fresh bucket of an object-store server."""
    if request.param == "local":
        return str(tmp_path / "root")
    if request.param == "gs":
        return f"gs://{request.getfixturevalue('gcs_emulator').create_bucket('mlm-test')}"
    return f"{request.param}://{request.getfixturevalue('s3_emulator').create_bucket('mlm-test')}"


def _tree(local_dir) -> dict[str, bytes]:
    """Relative path -> content of every file under a local directory."""
    out = {}
    for dirpath, _, names in os.walk(local_dir):
        for name in names:
            full = os.path.join(dirpath, name)
            with open(full, "rb") as f:
                out[os.path.relpath(full, local_dir)] = f.read()
    return out


def _make_tree(local_dir, files: dict[str, bytes]) -> str:
    for rel, data in files.items():
        path = os.path.join(local_dir, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
    return str(local_dir)


# ---------------------------------------------------------------------------------------------
# Same behaviour on local disk, gs://, s3:// and minio://
# ---------------------------------------------------------------------------------------------


def test_write_read_round_trip(root):
    storage.write_text(storage.join(root, "a", "notes.txt"), "héllo\nworld\n")
    storage.write_bytes(storage.join(root, "a", "blob.bin"), bytes(range(256)))
    storage.write_json(storage.join(root, "meta.json"), {"steps": 3, "loss": [1.5, 0.25]})

    assert storage.read_text(storage.join(root, "a", "notes.txt")) == "héllo\nworld\n"
    assert storage.read_bytes(storage.join(root, "a/blob.bin")) == bytes(range(256))
    assert storage.read_json(storage.join(root, "meta.json")) == {"steps": 3, "loss": [1.5, 0.25]}
    with storage.open_read(storage.join(root, "a", "notes.txt"), "r") as f:
        assert list(f) == ["héllo\n", "world\n"]


def test_overwrite_replaces_content(root):
    uri = storage.join(root, "x.txt")
    storage.write_text(uri, "first")
    storage.write_text(uri, "second")
    assert storage.read_text(uri) == "second"


def test_exists_for_files_directories_and_missing(root):
    storage.write_text(storage.join(root, "dir", "sub", "f.txt"), "x")
    assert storage.exists(storage.join(root, "dir", "sub", "f.txt"))
    assert storage.exists(storage.join(root, "dir"))
    assert storage.exists(storage.join(root, "dir", "sub"))
    assert not storage.exists(storage.join(root, "di"))
    assert not storage.exists(storage.join(root, "dir", "missing.txt"))


def test_glob_matches_one_level_like_glob_glob(root):
    for rel in ["shards/train-0.tfrecord", "shards/train-1.tfrecord", "shards/valid-0.tfrecord",
                "shards/sub/train-9.tfrecord", "other/train-5.tfrecord"]:  # fmt: skip
        storage.write_bytes(storage.join(root, rel), b"x")

    assert storage.glob(storage.join(root, "shards", "train-*.tfrecord")) == [
        storage.join(root, "shards", "train-0.tfrecord"),
        storage.join(root, "shards", "train-1.tfrecord"),
    ]
    assert storage.glob(storage.join(root, "*", "train-?.tfrecord")) == [
        storage.join(root, "other", "train-5.tfrecord"),
        storage.join(root, "shards", "train-0.tfrecord"),
        storage.join(root, "shards", "train-1.tfrecord"),
    ]
    # Directories (implied prefixes on GCS) match too; "*" does not cross "/".
    assert storage.glob(storage.join(root, "shards", "*")) == [
        storage.join(root, "shards", name)
        for name in ["sub", "train-0.tfrecord", "train-1.tfrecord", "valid-0.tfrecord"]
    ]
    assert storage.glob(storage.join(root, "shards", "[tv]*-0.tfrecord")) == [
        storage.join(root, "shards", "train-0.tfrecord"),
        storage.join(root, "shards", "valid-0.tfrecord"),
    ]
    assert storage.glob(storage.join(root, "nothing-*")) == []


def test_remove_file_tree_and_missing(root):
    storage.write_text(storage.join(root, "d", "a.txt"), "a")
    storage.write_text(storage.join(root, "d", "e", "b.txt"), "b")
    storage.write_text(storage.join(root, "keep.txt"), "k")

    storage.remove(storage.join(root, "d", "a.txt"))
    assert not storage.exists(storage.join(root, "d", "a.txt"))
    with pytest.raises(IsADirectoryError, match="recursive=True"):
        storage.remove(storage.join(root, "d"))
    storage.remove(storage.join(root, "d"), recursive=True)
    assert not storage.exists(storage.join(root, "d"))
    assert storage.read_text(storage.join(root, "keep.txt")) == "k"

    with pytest.raises(UserInputError, match="no such file"):
        storage.remove(storage.join(root, "d", "a.txt"))
    storage.remove(storage.join(root, "d", "a.txt"), missing_ok=True)


def test_atomic_write_leaves_nothing_when_the_block_raises(root):
    uri = storage.join(root, "out", "result.json")
    with pytest.raises(RuntimeError, match="boom"), storage.atomic_write(uri, "w") as f:
        f.write('{"half": ')
        raise RuntimeError("boom")
    assert not storage.exists(uri)
    assert storage.glob(storage.join(root, "out", "*")) == []


def test_atomic_write_keeps_the_old_file_when_the_block_raises(root):
    uri = storage.join(root, "model.bin")
    storage.write_bytes(uri, b"old complete content")
    with pytest.raises(RuntimeError), storage.atomic_write(uri) as f:
        f.write(b"new partial")
        raise RuntimeError("interrupted")
    assert storage.read_bytes(uri) == b"old complete content"
    assert storage.glob(storage.join(root, "*")) == [uri]


def test_create_only_write_refuses_to_replace_different_content(root):
    uri = storage.join(root, "manifest.json")
    storage.write_text(uri, "v1", overwrite=False)
    with pytest.raises(FileExistsError, match="already exists"):
        storage.write_text(uri, "v2", overwrite=False)
    assert storage.read_text(uri) == "v1"
    # Identical content counts as done: a retried create-only write (e.g. after a lost reply
    # from GCS) succeeds.
    storage.write_text(uri, "v1", overwrite=False)
    assert storage.glob(storage.join(root, "*")) == [uri]


def test_missing_file_is_a_user_input_error_naming_it(root):
    uri = storage.join(root, "nope", "missing.txt")
    with pytest.raises(UserInputError, match=r"no such file: .*nope/missing\.txt — check"):
        storage.read_text(uri)
    with pytest.raises(UserInputError, match="no such file"), storage.open_read(uri):
        pass


def test_invalid_json_names_the_file_and_position(root):
    uri = storage.join(root, "broken.json")
    storage.write_text(uri, '{"a": 1,\n "b": }')
    with pytest.raises(UserInputError, match=r"broken\.json is not valid JSON .* line 2"):
        storage.read_json(uri)


def test_sync_dir_copies_only_changes_and_optionally_deletes(root, tmp_path):
    source = _make_tree(tmp_path / "src", {"a.txt": b"a", "sub/b.bin": b"bb", "c.txt": b"c"})
    dest = storage.join(root, "run")

    first = storage.sync_dir(source, dest)
    assert first.copied == ("a.txt", "c.txt", "sub/b.bin") and first.unchanged == ()

    second = storage.sync_dir(source, dest)
    assert second.copied == () and second.unchanged == ("a.txt", "c.txt", "sub/b.bin")

    with open(os.path.join(source, "a.txt"), "wb") as f:
        f.write(b"A changed")  # different size and checksum
    os.remove(os.path.join(source, "c.txt"))
    third = storage.sync_dir(source, dest)
    assert third.copied == ("a.txt",) and third.deleted == ()
    assert storage.read_bytes(storage.join(dest, "a.txt")) == b"A changed"
    assert storage.exists(storage.join(dest, "c.txt"))  # extras are kept without delete=True

    fourth = storage.sync_dir(source, dest, delete=True)
    assert fourth.deleted == ("c.txt",) and fourth.copied == ()
    assert not storage.exists(storage.join(dest, "c.txt"))


def test_sync_then_stage_round_trip(root, tmp_path):
    files = {"tokenizer.json": b'{"v": 1}', "vocab/words.txt": b"a\nb\n", "empty.bin": b""}
    storage.upload_dir(_make_tree(tmp_path / "src", files), storage.join(root, "tokenizer"))

    staged = storage.stage_to_local(storage.join(root, "tokenizer"), tmp_path / "stage")
    if storage.is_remote(root):
        assert staged == str(tmp_path / "stage" / "tokenizer")
    assert _tree(staged) == {os.path.normpath(k): v for k, v in files.items()}

    one_file = storage.stage_to_local(storage.join(root, "tokenizer", "vocab", "words.txt"),
                                      tmp_path / "one")  # fmt: skip
    with open(one_file, "rb") as f:
        assert f.read() == b"a\nb\n"


def test_atomic_directory_replaces_content_only_on_success(root):
    uri = storage.join(root, "export")
    with storage.atomic_directory(uri) as tmp:
        _make_tree(tmp, {"encoder.keras": b"v1", "assets/vocab.txt": b"v1"})
    assert storage.read_bytes(storage.join(uri, "encoder.keras")) == b"v1"

    with pytest.raises(RuntimeError), storage.atomic_directory(uri) as tmp:
        _make_tree(tmp, {"encoder.keras": b"v2-partial"})
        raise RuntimeError("export failed")
    assert storage.read_bytes(storage.join(uri, "encoder.keras")) == b"v1"
    assert storage.exists(storage.join(uri, "assets", "vocab.txt"))
    assert not os.path.exists(tmp)

    with storage.atomic_directory(uri) as tmp:
        _make_tree(tmp, {"encoder.keras": b"v2"})
    assert storage.read_bytes(storage.join(uri, "encoder.keras")) == b"v2"
    assert not storage.exists(storage.join(uri, "assets", "vocab.txt"))  # replaced, not merged
    # No temporary or backup directory is left beside the destination.
    assert storage.glob(storage.join(root, "*")) == [uri]


# ---------------------------------------------------------------------------------------------
# URIs
# ---------------------------------------------------------------------------------------------


def test_uri_helpers():
    assert storage.is_gcs("gs://b/x") and not storage.is_gcs("/tmp/gs://x")
    assert storage.split_gcs_uri("gs://my-bucket/a/b.txt") == ("my-bucket", "a/b.txt")
    assert storage.split_gcs_uri("gs://my-bucket") == ("my-bucket", "")
    assert storage.join("gs://bkt/runs/", "/x/", "y.json") == "gs://bkt/runs/x/y.json"
    assert storage.join("gs://bkt", "x") == "gs://bkt/x"
    assert storage.join("/data", "x", "y") == os.path.join("/data", "x", "y")


@pytest.mark.parametrize(
    "uri, message",
    [
        ("gs://", "not a valid bucket name"),
        ("gs:///x", "not a valid bucket name"),
        ("gs://Upper/x", "not a valid bucket name"),
        ("gs://a/x", "not a valid bucket name"),
        ("s3://", "not a valid bucket name"),
        ("minio://ab/x", "not a valid bucket name"),
        ("hdfs://namenode/x", "unsupported URI scheme 'hdfs'"),
        ("azure://container/x", "unsupported URI scheme 'azure'.* gs://.*s3://.*minio://"),
        ("s3://bucket/a/../b", r"'\.\.' path segments"),
        ("gs://bucket/a/./b", r"'\.\.' path segments"),
        ("minio://bucket/a//b", "empty"),
        ("s3://bucket//b", "empty"),
        ("", "expected a local path, gs://BUCKET/PATH, s3://BUCKET/PATH or minio://BUCKET/PATH"),
    ],
)
def test_malformed_uris_are_user_input_errors(uri, message):
    with pytest.raises(UserInputError, match=message):
        storage.read_text(uri)


def test_mode_validation():
    with pytest.raises(ValueError, match="mode"), storage.open_read("/x", "w"):
        pass
    with pytest.raises(ValueError, match="mode"), storage.atomic_write("/x", "a"):
        pass


# ---------------------------------------------------------------------------------------------
# Local specifics
# ---------------------------------------------------------------------------------------------


def test_local_atomic_write_uses_no_visible_temp_and_creates_parents(tmp_path):
    uri = tmp_path / "deep" / "er" / "f.txt"
    with storage.atomic_write(uri, "w") as f:
        f.write("x")
        # While writing, only a hidden temporary exists beside the destination.
        (tmp_name,) = os.listdir(uri.parent)
        assert tmp_name.startswith(".f.txt.tmp-")
    assert os.listdir(uri.parent) == ["f.txt"]
    assert uri.read_text() == "x"


def test_local_paths_pass_through_stage_to_local(tmp_path):
    assert storage.stage_to_local(str(tmp_path / "x"), tmp_path / "stage") == str(tmp_path / "x")
    assert not (tmp_path / "stage").exists()


def test_local_read_of_a_directory_is_an_error(tmp_path):
    with pytest.raises(UserInputError, match="is a directory"):
        storage.read_text(tmp_path)


def test_permission_errors_become_user_input_errors():
    """Translation only: the servers grant everything, so the server-side 403 is raised here."""
    from google.api_core import exceptions as gexc

    local = pytest.raises(UserInputError, match="permission denied to read /x — check")
    with local, storage._translate_errors("/x", "read"):
        raise PermissionError(13, "Permission denied")
    gcs = pytest.raises(UserInputError, match="permission denied to write gs://bkt/x — grant")
    with gcs, storage._translate_errors("gs://bkt/x", "write"):
        raise gexc.Forbidden("storage.objects.create denied")
    # s3fs turns S3's AccessDenied into PermissionError.
    s3 = pytest.raises(UserInputError, match="permission denied to read minio://bkt/x — give")
    with s3, storage._translate_errors("minio://bkt/x", "read"):
        raise PermissionError(13, "Access Denied")


# ---------------------------------------------------------------------------------------------
# GCS specifics (real emulator)
# ---------------------------------------------------------------------------------------------


def test_emulator_honours_if_generation_match_zero(gcs_emulator):
    """The create-only precondition is enforced by the server, not only by mlm.storage."""
    from google.api_core import exceptions as gexc

    bucket = gcs_emulator.client().bucket(gcs_emulator.create_bucket())
    bucket.blob("k").upload_from_string(b"first", if_generation_match=0)
    with pytest.raises(gexc.PreconditionFailed):
        bucket.blob("k").upload_from_string(b"second", if_generation_match=0)
    assert bucket.blob("k").download_as_bytes() == b"first"


def test_missing_bucket_is_named(object_store):
    absent = f"{object_store.split('://')[0]}://absent-bucket"
    with pytest.raises(UserInputError, match=rf"no such bucket: {absent} .*create"):
        storage.read_text(f"{absent}/x.txt")
    with pytest.raises(UserInputError, match="no such bucket"):
        storage.write_text(f"{absent}/x.txt", "x")
    with pytest.raises(UserInputError, match="no such bucket"):
        storage.makedirs(f"{absent}/run")
    with pytest.raises(UserInputError, match="no such bucket"):  # noqa: SIM117
        with storage.atomic_directory(f"{absent}/run"):
            pytest.fail("the block must not run when the bucket is missing")
    assert not storage.exists(f"{absent}/x.txt")
    assert not storage.exists(absent)


def test_bucket_and_prefix_uris_are_not_objects(object_store):
    with pytest.raises(UserInputError, match="not an object"):
        storage.write_text(object_store, "x")
    with pytest.raises(UserInputError, match="not an object"):
        storage.read_text(f"{object_store}/dir/")


def test_gcs_open_read_streams_in_chunks(gcs_emulator, monkeypatch):
    monkeypatch.setattr(storage.stores, "_CHUNK_SIZE", 256 * 1024)
    uri = f"gs://{gcs_emulator.create_bucket()}/big.txt"
    lines = [f"line {i:07d} " + "x" * 80 + "\n" for i in range(40_000)]  # ~3.7 MB
    storage.write_text(uri, "".join(lines))
    with storage.open_read(uri, "rb") as f:
        assert f.readline() == lines[0].encode()
        # Only one chunk has been fetched, not the whole object (BlobReader's read buffer).
        assert len(f._buffer.getvalue()) <= 256 * 1024
    with storage.open_read(uri, "r") as f:
        assert sum(1 for _ in f) == len(lines)


def test_open_read_never_mixes_two_versions(object_store, monkeypatch):
    """An overwrite during a chunked read makes the read fail instead of splicing new bytes:
    the server refuses the next chunk (GCS: the pinned generation is gone; S3: If-Match fails)."""
    from google.api_core import exceptions as gexc
    from s3fs.utils import FileExpired

    monkeypatch.setattr(storage.stores, "_CHUNK_SIZE", 256 * 1024)
    uri = f"{object_store}/data.bin"
    storage.write_bytes(uri, os.urandom(1024 * 1024))
    with storage.open_read(uri) as f:
        f.read(1000)
        storage.write_bytes(uri, b"replaced")
        with pytest.raises(gexc.NotFound if storage.is_gcs(uri) else FileExpired):
            f.read()


def test_stage_to_local_skips_unchanged_files(object_store, tmp_path):
    root = f"{object_store}/tok"
    storage.write_text(f"{root}/vocab.txt", "a\nb\n")
    storage.write_text(f"{root}/config.json", "{}")
    staged = storage.stage_to_local(root, tmp_path)
    vocab = os.path.join(staged, "vocab.txt")
    before = os.stat(vocab).st_mtime_ns
    os.utime(vocab, ns=(before - 10**9, before - 10**9))  # mark the local copy

    storage.stage_to_local(root, tmp_path)
    assert os.stat(vocab).st_mtime_ns == before - 10**9  # not downloaded again

    storage.write_text(f"{root}/vocab.txt", "a\nb\nc\n")
    storage.stage_to_local(root, tmp_path)
    with open(vocab) as f:
        assert f.read() == "a\nb\nc\n"
    with pytest.raises(UserInputError, match="no such file"):
        storage.stage_to_local(f"{root}-missing", tmp_path)


def test_gcs_sync_writes_markers_last_and_invalidates_them_first(gcs_emulator, tmp_path):
    source = _make_tree(
        tmp_path / "shards",
        {f"train-{i:05d}.tfrecord": os.urandom(1000) for i in range(4)} | {"manifest.json": b"{}"},
    )
    uri = f"gs://{gcs_emulator.create_bucket()}/shards"
    storage.sync_dir(source, uri, last=["manifest.json"])

    client = gcs_emulator.client()
    bucket = uri.split("/")[2]

    def generations() -> dict[str, int]:
        return {b.name: b.generation for b in client.list_blobs(bucket, prefix="shards/")}

    gens = generations()
    assert max(gens, key=gens.get) == "shards/manifest.json"  # uploaded after every shard

    with open(os.path.join(source, "train-00001.tfrecord"), "wb") as f:
        f.write(b"new shard")
    storage.sync_dir(source, uri, last=["manifest.json"])
    after = generations()
    # The unchanged manifest was rewritten after the changed shard (readers re-validate).
    assert after["shards/manifest.json"] > after["shards/train-00001.tfrecord"]
    assert after["shards/train-00001.tfrecord"] > gens["shards/train-00001.tfrecord"]
    assert after["shards/train-00000.tfrecord"] == gens["shards/train-00000.tfrecord"]


def test_gcs_uploads_get_a_content_type(gcs_emulator):
    bucket = gcs_emulator.create_bucket()
    storage.write_json(f"gs://{bucket}/m.json", {"a": 1})
    blob = gcs_emulator.client().bucket(bucket).get_blob("m.json")
    assert blob.content_type == "application/json"
    assert json.loads(blob.download_as_bytes()) == {"a": 1}


# ---------------------------------------------------------------------------------------------
# S3 specifics (moto's real S3 HTTP server)
# ---------------------------------------------------------------------------------------------


def test_s3_server_honours_if_none_match(s3_emulator):
    """The create-only precondition is enforced by the server, not only by mlm.storage."""
    from botocore.exceptions import ClientError

    client = s3_emulator.client()
    bucket = s3_emulator.create_bucket()
    client.put_object(Bucket=bucket, Key="k", Body=b"first", IfNoneMatch="*")
    with pytest.raises(ClientError, match="PreconditionFailed"):
        client.put_object(Bucket=bucket, Key="k", Body=b"second", IfNoneMatch="*")
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"first"


def test_s3_and_minio_uris_name_the_same_objects(s3_emulator):
    bucket = s3_emulator.create_bucket()
    storage.write_json(f"minio://{bucket}/runs/m.json", {"a": 1})
    assert storage.read_json(f"s3://{bucket}/runs/m.json") == {"a": 1}
    assert storage.glob(f"minio://{bucket}/runs/*") == [f"minio://{bucket}/runs/m.json"]
    head = s3_emulator.client().head_object(Bucket=bucket, Key="runs/m.json")
    assert head["ContentType"] == "application/json"


def test_s3_endpoint_prefers_aws_endpoint_url_s3(s3_emulator, monkeypatch):
    bucket = s3_emulator.create_bucket()
    storage.write_text(f"s3://{bucket}/x.txt", "via AWS_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_emulator.endpoint)
    assert storage.read_text(f"s3://{bucket}/x.txt") == "via AWS_ENDPOINT_URL"


def test_s3_transient_errors_are_retried(s3_emulator, monkeypatch):
    """Real HTTP 503 SlowDown answers (a proxy in front of moto) are retried until one succeeds."""
    bucket = s3_emulator.create_bucket()
    with FlakyProxy(s3_emulator.endpoint, failures=2) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        storage.write_text(f"s3://{bucket}/x.txt", "survived two 503s")
        assert proxy.failed == 2 and proxy.forwarded >= 1
        assert storage.read_text(f"minio://{bucket}/x.txt") == "survived two 503s"


def test_s3_errors_that_outlast_the_retries_are_one_line(s3_emulator, monkeypatch):
    """A store that keeps answering 503 gets a bounded number of attempts, then one line."""
    monkeypatch.setattr(storage.s3, "_S3_ATTEMPTS", 2)
    monkeypatch.setattr(storage.s3, "_S3_RETRY_ROUNDS", 2)
    bucket = s3_emulator.create_bucket()
    with FlakyProxy(s3_emulator.endpoint, failures=10**6) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
        with pytest.raises(UserInputError, match=r"kept failing for s3://.*up to 4 attempts") as e:
            storage.read_text(f"s3://{bucket}/x.txt")
        assert 2 <= proxy.failed <= 4 and proxy.forwarded == 0
    assert "\n" not in str(e.value)


def test_s3_missing_credentials_are_a_user_input_error(s3_emulator, monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_emulator.endpoint + "/")  # a fresh client
    with pytest.raises(UserInputError, match=r"no AWS credentials for s3://b-1/x\.txt .*Secret"):
        storage.read_text("s3://b-1/x.txt")


def test_s3_unreachable_endpoint_is_one_line(s3_emulator, monkeypatch):
    monkeypatch.setattr(storage.s3, "_S3_ATTEMPTS", 1)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # the discard port: refused
    with pytest.raises(UserInputError, match=r"cannot reach the S3 endpoint http://127\.0\.0\.1:9"):
        storage.write_text("minio://mlpipeline/x.txt", "x")


# ---------------------------------------------------------------------------------------------
# Safe storage: names, staging, unfinished outputs, temporaries, scratch space
# ---------------------------------------------------------------------------------------------


def _put_raw(object_store: str, key: str, data: bytes, request: pytest.FixtureRequest) -> None:
    """Writes an object with the store's own client, bypassing mlm.storage's name checks."""
    bucket = object_store.split("://", 1)[1]
    if storage.is_gcs(object_store):
        client = request.getfixturevalue("gcs_emulator").client()
        client.bucket(bucket).blob(key).upload_from_string(data)
    else:
        client = request.getfixturevalue("s3_emulator").client()
        client.put_object(Bucket=bucket, Key=key, Body=data)


def test_stage_to_local_refuses_objects_that_would_land_outside(object_store, tmp_path, request):
    _put_raw(object_store, "data/ok.txt", b"fine", request)
    _put_raw(object_store, "data/sub/../../../escaped.txt", b"evil", request)
    # The server kept the name as written.
    assert storage.glob(f"{object_store}/data/*") == [
        f"{object_store}/data/{n}" for n in ("ok.txt", "sub")
    ]
    with pytest.raises(UserInputError, match=r"refusing to stage .*/data: .*'\.\.'"):
        storage.stage_to_local(f"{object_store}/data", tmp_path / "stage")
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "stage" / "data").exists()
    with pytest.raises(UserInputError, match="path segments"):
        storage.read_text(f"{object_store}/data/sub/../../../escaped.txt")


def test_an_interrupted_upload_leaves_a_replaceable_unfinished_output(object_store, monkeypatch):
    from mlm.artifacts import check_replaceable

    uri = f"{object_store}/shards"
    copied = []

    def copy_then_die(local_path: str, destination: str) -> None:
        if len(copied) == 2:
            raise KeyboardInterrupt  # the process is stopped mid-upload
        copied.append(destination)
        real_copy(local_path, destination)

    real_copy = storage.sync._copy_file
    monkeypatch.setattr(storage.sync, "_copy_file", copy_then_die)
    with (
        pytest.raises(KeyboardInterrupt),
        storage.atomic_directory(uri, last=["manifest.json"]) as d,
    ):
        _make_tree(
            d, {f"train-{i}.tfrecord": b"x" * i for i in range(5)} | {"manifest.json": b"{}"}
        )
    monkeypatch.setattr(storage.sync, "_copy_file", real_copy)

    assert not storage.exists(f"{uri}/manifest.json")
    assert storage.is_unfinished(uri)
    check_replaceable(uri, "manifest.json", "shard")  # a rerun may replace it
    with storage.atomic_directory(uri, last=["manifest.json"]) as d:
        _make_tree(d, {"train-0.tfrecord": b"new", "manifest.json": b"{}"})
    assert not storage.is_unfinished(uri)
    assert storage.glob(f"{uri}/*") == [f"{uri}/manifest.json", f"{uri}/train-0.tfrecord"]

    # Without the marker, a directory of something else is still refused.
    storage.write_text(f"{object_store}/notes/a.txt", "keep me")
    with pytest.raises(UserInputError, match=r"non-empty directory without manifest\.json"):
        check_replaceable(f"{object_store}/notes", "manifest.json", "shard")


def test_a_killed_writer_s_temporary_directory_is_removed_by_the_next_run(tmp_path):
    """A real process killed (SIGKILL) inside atomic_directory leaves its temporary; the next
    atomic_directory onto the same destination deletes it, but not a live writer's."""
    destination = tmp_path / "shards"
    script = (
        "import os, signal, sys\n"
        "from mlm import storage\n"
        "with storage.atomic_directory(sys.argv[1]) as d:\n"
        "    open(os.path.join(d, 'train-0.tfrecord'), 'wb').write(b'partial')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = subprocess.run([sys.executable, "-c", script, str(destination)], check=False)
    assert killed.returncode == -signal.SIGKILL
    (leftover,) = os.listdir(tmp_path)
    assert leftover.startswith(".shards.tmp-")
    live = tmp_path / f".shards.tmp-{storage._HOST}-{os.getpid()}-0123abcd"
    live.mkdir()
    foreign = tmp_path / f".shards.tmp-other-host-{os.getpid()}-89abcdef"
    foreign.mkdir()

    with storage.atomic_directory(destination) as d:
        _make_tree(d, {"train-0.tfrecord": b"complete"})
    assert sorted(os.listdir(tmp_path)) == sorted(["shards", live.name, foreign.name])
    assert (destination / "train-0.tfrecord").read_bytes() == b"complete"


def test_scratch_dir_is_private_unpredictable_and_removed_at_exit(tmp_path):
    script = (
        "import os\n"
        "from mlm import storage\n"
        "path = storage.scratch_dir('shards-x')\n"
        "open(os.path.join(path, 'f'), 'w').write('x')\n"
        "print(path, oct(os.stat(os.path.dirname(path)).st_mode & 0o777))\n"
    )
    runs = [
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    (first, mode), (second, _) = (run.stdout.split() for run in runs)
    assert first != second and os.path.basename(first) == "shards-x"
    assert mode == "0o700"
    assert not os.path.exists(first) and not os.path.exists(second)
    with pytest.raises(ValueError, match="one path component"):
        storage.scratch_dir("../x")


def test_missing_credentials_are_a_user_input_error(monkeypatch, tmp_path):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing-key.json"))
    with pytest.raises(UserInputError, match=r"no Google Cloud credentials .*Workload Identity"):
        storage.read_text("gs://some-bucket/x.txt")


def test_file_sizes_lists_the_files_directly_in_a_directory(object_store, tmp_path):
    """gs:// on fake-gcs-server, s3:// and minio:// on moto's S3 server, and a local folder."""
    for root in (f"{object_store}/shards", str(tmp_path / "shards")):
        storage.write_bytes(f"{root}/a.tfrecord", b"x" * 3)
        storage.write_bytes(f"{root}/b.tfrecord", b"")
        storage.write_bytes(f"{root}/deeper/c.tfrecord", b"y" * 5)
        assert storage.file_sizes(root) == {"a.tfrecord": 3, "b.tfrecord": 0}
