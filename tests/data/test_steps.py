"""The tokenize and shard steps through the `mlm` CLI, with object-store URIs, and the default corpus."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mlm import storage
from mlm.cli import main
from mlm.data.corpus import is_validation
from mlm.data.dataset import pretraining_dataset
from mlm.data.default_corpus import (
    LABEL_AREAS,
    ROWS_PER_LABEL,
    default_corpus_dir,
    write_default_corpus,
    write_default_labels,
)
from mlm.data.shards import read_manifest
from mlm.data.tokenizer import load_tokenizer, read_tokenizer_info
from mlm.progress import byte_unit

PROGRESS = r"tokenize: read \d+/\d+ (B|KiB) \(\d+%\) \| eta \d+:\d\d:\d\d"


def test_cli_tokenize_and_shard(tmp_path, corpus_dir, capsys):
    tok, shards = tmp_path / "tok", tmp_path / "shards"
    code = main(
        ["tokenize", "--corpus", str(corpus_dir / "a.txt"), str(corpus_dir / "b.txt"),
         "--output", str(tok), "--vocab-size", "120", "--min-frequency", "1"]
    )  # fmt: skip
    assert code == 0
    out, err = capsys.readouterr()
    printed = json.loads(out)
    assert printed["corpus"]["units"] == 300 and printed["info"]["vocab_size"] <= 120
    # Reading progress with an ETA on stderr, every tenth of the corpus and at the end.
    size = sum((corpus_dir / name).stat().st_size for name in ("a.txt", "b.txt"))
    lines = err.splitlines()
    unit, scale = byte_unit(size)
    shown = round(size / scale)
    assert lines[-1] == f"tokenize: read {shown}/{shown} {unit} (100%) | eta 0:00:00"
    assert len(lines) == 10 and all(re.fullmatch(PROGRESS, line) for line in lines), lines
    code = main(
        ["shard", "--corpus", str(corpus_dir), "--tokenizer", str(tok), "--output", str(shards),
         "--max-seq-length", "24", "--num-shards", "2", "--validation-fraction", "0.1",
         "--compression", "gzip"]
    )  # fmt: skip
    assert code == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert err.splitlines()[-1].startswith("shard: read ") and err.endswith(
        "(100%) | eta 0:00:00\n"
    )
    manifest = read_manifest(str(shards), tokenizer_hash=printed["info"]["content_hash"])
    assert manifest.compression == "gzip" and manifest.seq_length == 24
    assert result["manifest"]["splits"]["train"]["examples"] == manifest.splits["train"].examples


def test_step_modules_import_no_heavy_libraries():
    """`mlm --help` imports every step module; the data ones must stay light."""
    code = (
        "import sys, mlm.data, mlm.steps.tokenize, mlm.steps.shard\n"
        "heavy = ('tensorflow', 'transformers', 'tokenizers', 'google.cloud.storage')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert (output.returncode, output.stdout.strip()) == (0, "[]"), output.stderr


def test_cli_reports_bad_input_in_one_line(tmp_path, tokenizer_dir, capsys):
    assert main(["tokenize", "--corpus", str(tmp_path / "none.txt"), "--output", "x"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"mlm tokenize: error: corpus: {str(tmp_path / 'none.txt')!r} matches no file; pass an "
        "existing text file, directory, glob or gs:// / s3:// prefix"
    ]
    (tmp_path / "c.txt").write_text("the model\n")
    assert main(["tokenize", "--corpus", str(tmp_path / "c.txt"), "--output", str(tmp_path / "t"),
                 "--vocab-size", "4"]) == 2  # fmt: skip
    assert "vocab_size=4 is too small" in capsys.readouterr().err
    assert main(["shard", "--corpus", str(tmp_path / "c.txt"), "--tokenizer", str(tmp_path),
                 "--output", str(tmp_path / "s")]) == 2  # fmt: skip
    assert "has no mlm_tokenizer.json" in capsys.readouterr().err
    (tmp_path / "blank.txt").write_text("\n \n")
    # The error is raised inside the Rust trainer's iteration and must surface unchanged.
    assert main(["tokenize", "--corpus", str(tmp_path / "blank.txt"), "--output",
                 str(tmp_path / "t")]) == 2  # fmt: skip
    assert "blank.txt: no text found" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_object_store_corpus_tokenizer_and_shards(object_store, corpus_dir, tmp_path):
    """gs:// on fake-gcs-server, s3:// and minio:// on moto's S3 server."""
    bucket = object_store
    for name in ("a.txt", "b.txt"):
        storage.write_bytes(f"{bucket}/text/part/{name}", (corpus_dir / name).read_bytes())
    from mlm.steps.shard import shard
    from mlm.steps.tokenize import tokenize

    tok = f"{bucket}/run/tokenizer"
    tokenize(f"{bucket}/text", tok, vocab_size=120, min_frequency=1)
    info = read_tokenizer_info(tok)
    assert load_tokenizer(tok)("the model")["input_ids"][0] == info.cls_token_id
    shards = f"{bucket}/run/shards"
    # What a `mlm shard` killed mid-upload leaves: some files, the in-progress marker, no
    # manifest. The rerun replaces it.
    storage.write_bytes(f"{shards}/train-00000-of-00002.tfrecord", b"partial")
    storage.write_json(f"{shards}/{storage.IN_PROGRESS}", {"pid": 1})
    result = shard(f"{bucket}/text", tok, shards, max_seq_length=16, num_shards=2,
                   validation_fraction=0.2)  # fmt: skip
    assert result.corpus["files"] == 2 and result.corpus["units"] == 300
    assert storage.exists(f"{shards}/manifest.json")
    assert not storage.is_unfinished(shards)
    assert len(storage.glob(f"{shards}/*.tfrecord")) == 4
    local = tmp_path / "local"
    shard(str(corpus_dir), tok, str(local), max_seq_length=16, num_shards=2,
          validation_fraction=0.2)  # fmt: skip
    assert (
        storage.read_bytes(f"{shards}/train-00001-of-00002.tfrecord")
        == (local / "train-00001-of-00002.tfrecord").read_bytes()
    )
    batch = next(iter(pretraining_dataset(shards, 4, tokenizer_hash=info.content_hash)))
    assert batch["input_ids"].shape == (4, 16)


@pytest.fixture(scope="module")
def default_corpus(tmp_path_factory):
    return write_default_corpus(str(tmp_path_factory.mktemp("default")))


def test_default_corpus_is_prose_split_by_hash(default_corpus, tmp_path, monkeypatch):
    lines = {split: Path(path).read_text().splitlines() for split, path in default_corpus.items()}
    total = sum(len(v) for v in lines.values())
    assert total > 2000 and sum(map(len, lines["train"])) > 300_000
    assert not set(lines["train"]) & set(lines["validation"])
    assert all(is_validation(t, 0.05) for t in lines["validation"])
    assert not any(is_validation(t, 0.05) for t in lines["train"])
    assert 0.02 < len(lines["validation"]) / total < 0.08
    assert lines["train"] == sorted(lines["train"])
    assert not any(">>>" in t or len(t.split()) < 8 for t in lines["train"])
    monkeypatch.setenv("MLM_CACHE_DIR", str(tmp_path))
    cached = default_corpus_dir()
    assert cached.startswith(str(tmp_path))
    assert Path(cached, "validation.txt").read_text().splitlines() == lines["validation"]


def test_steps_default_to_the_built_in_corpus(tmp_path, monkeypatch, default_corpus):
    from mlm.steps.shard import shard
    from mlm.steps.tokenize import tokenize

    monkeypatch.setenv("MLM_CACHE_DIR", str(tmp_path / "cache"))
    result = tokenize(None, str(tmp_path / "tok"), vocab_size=500)
    assert result.corpus["files"] == 2 and result.corpus["units"] > 2000
    sharded = shard(None, str(tmp_path / "tok"), str(tmp_path / "shards"), max_seq_length=32,
                    num_shards=2)  # fmt: skip
    validation_bytes = Path(default_corpus["validation"]).stat().st_size
    assert sharded.corpus["bytes"] == Path(default_corpus["train"]).stat().st_size + (
        validation_bytes
    )
    assert sharded.manifest["splits"]["validation"]["tokens"] > validation_bytes / 10


def test_default_labels_are_balanced(tmp_path, default_corpus):
    path = write_default_labels(str(tmp_path / "labels.csv"))
    rows = list(csv.DictReader(io.StringIO(Path(path).read_text())))
    counts = Counter(row["label"] for row in rows)
    assert counts == {area: ROWS_PER_LABEL for area in LABEL_AREAS}
    assert len({row["text"] for row in rows}) == len(rows)
    assert write_default_labels(str(tmp_path / "again.csv"))
    assert (tmp_path / "again.csv").read_text() == Path(path).read_text()
    labels = [row["label"] for row in rows[:20]]
    assert len(set(labels)) > 2  # interleaved, not grouped by class
    lengths = np.array([len(row["text"].split()) for row in rows])
    assert lengths.min() >= 8


def _vocabulary_corpus(directory: Path) -> Path:
    """Two files with disjoint words: file a's words start with "al", file b's with "be"."""
    import random

    generator = random.Random(1)
    directory.mkdir()
    for name, stem in (("a.txt", "al"), ("b.txt", "be")):
        words = [f"{stem}{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}q" for i in range(300)]
        lines = (" ".join(generator.choices(words, k=12)) for _ in range(3000))
        (directory / name).write_text("\n".join(lines) + "\n")
    return directory


def test_tokenizer_training_on_a_sample_draws_from_every_file(tmp_path):
    """The sample is a pure function of each unit's content (the same units every run; the
    WordPiece trainer itself may order tied merges differently from run to run)."""
    from mlm.data.corpus import corpus_bytes, in_sample
    from mlm.steps.tokenize import tokenize

    corpus = _vocabulary_corpus(tmp_path / "corpus")
    total = corpus_bytes(str(corpus))
    budget = total // 4
    first = tokenize(str(corpus), str(tmp_path / "t1"), vocab_size=500, sample_bytes=budget)
    assert first.sample_fraction == pytest.approx(budget / total, rel=1e-4)
    assert first.corpus["units"] == 6000  # the whole corpus is read; the trainer sees the sample
    vocab = load_tokenizer(str(tmp_path / "t1")).get_vocab()
    assert any(token.startswith("al") for token in vocab)
    assert any(token.startswith("be") for token in vocab)
    # About the fraction of the lines, and other lines than the validation split's.
    lines = (corpus / "a.txt").read_text().splitlines()
    share = sum(in_sample(line, 0.25) for line in lines) / len(lines)
    assert 0.22 < share < 0.28
    both = sum(in_sample(line, 0.25) and is_validation(line, 0.25) for line in lines) / len(lines)
    assert 0.04 < both < 0.09  # independent draws: about 0.25 * 0.25
    everything = tokenize(str(corpus), str(tmp_path / "t3"), vocab_size=500, sample_bytes=0)
    assert everything.sample_fraction == 1.0
