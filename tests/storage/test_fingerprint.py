"""The corpus fingerprint: it changes exactly when the corpus does, on every store.

Local directories, ``gs://`` (fake-gcs-server) and ``s3://`` / ``minio://`` (moto's S3 server),
the servers the `gcs_emulator` / `s3_emulator` fixtures start; nothing is mocked.
"""

from __future__ import annotations

import os

import pytest

from mlm import storage
from mlm.data.fingerprint import corpus_fingerprint
from mlm.errors import UserInputError


@pytest.fixture(params=["local", "gs", "s3", "minio"])
def corpus_root(request: pytest.FixtureRequest, tmp_path) -> str:
    """A corpus directory: local, or a prefix in a fresh bucket of the GCS emulator or moto."""
    if request.param == "local":
        return str(tmp_path / "corpus")
    emulator = request.getfixturevalue("gcs_emulator" if request.param == "gs" else "s3_emulator")
    return f"{request.param}://{emulator.create_bucket()}/corpus"


def test_unchanged_corpus_keeps_its_fingerprint_and_a_grown_one_changes_it(corpus_root):
    storage.write_text(storage.join(corpus_root, "week-01.txt"), "the first week\n")
    storage.write_text(storage.join(corpus_root, "week-02.txt"), "the second week\n")
    first = corpus_fingerprint(corpus_root)
    assert len(first) == 64
    # Nothing written: the same digest, also when the corpus is named by a glob of its files.
    assert corpus_fingerprint(corpus_root) == first
    assert corpus_fingerprint(storage.join(corpus_root, "week-*.txt")) == first

    storage.write_text(storage.join(corpus_root, "week-03.txt"), "the third week\n")
    grown = corpus_fingerprint(corpus_root)
    assert grown != first
    assert corpus_fingerprint(corpus_root) == grown

    # A file rewritten with other content (same name) is a change too.
    storage.write_text(storage.join(corpus_root, "week-01.txt"), "the first week, revised\n")
    assert corpus_fingerprint(corpus_root) not in (first, grown)


def test_a_rewritten_local_file_of_the_same_size_changes_the_fingerprint(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("aaaa\n")
    before = corpus_fingerprint(str(path))
    path.write_text("bbbb\n")  # same size: only the mtime tells them apart
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert corpus_fingerprint(str(path)) != before


def test_fingerprint_reads_no_content(tmp_path):
    """Unreadable files can be fingerprinted: only their metadata is used."""
    path = tmp_path / "secret.txt"
    path.write_text("not for reading\n")
    digest = storage.fingerprint([str(path)])
    path.chmod(0)
    try:
        assert storage.fingerprint([str(path)]) == digest
    finally:
        path.chmod(0o644)


def test_builtin_corpus_has_a_stable_fingerprint_of_its_own():
    assert corpus_fingerprint("") == corpus_fingerprint(None)
    assert corpus_fingerprint("").startswith("builtin-")


def test_missing_corpus_is_a_one_line_error(tmp_path):
    with pytest.raises(UserInputError, match="matches no file"):
        corpus_fingerprint(str(tmp_path / "nothing-here"))
