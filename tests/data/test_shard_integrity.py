"""The shard manifest records each file's size, CRC32C and examples, and reading checks them first."""

from __future__ import annotations

import base64
import json
import os

import google_crc32c
import pytest
import tensorflow as tf

from mlm.data.dataset import pretraining_dataset
from mlm.data.shards import read_manifest
from mlm.errors import UserInputError
from mlm.steps.shard import shard


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_manifest_records_size_crc32c_and_examples_of_every_file(
    tmp_path, corpus_dir, tokenizer_dir, compression
):
    output = tmp_path / "shards"
    shard(
        str(corpus_dir), str(tokenizer_dir), str(output),
        max_seq_length=16, num_shards=3, validation_fraction=0.2, compression=compression,
    )  # fmt: skip
    manifest = json.loads((output / "manifest.json").read_text())
    recorded = manifest["file_info"]
    names = sorted(p.name for p in output.iterdir() if p.name != "manifest.json")
    assert sorted(recorded) == names and len(names) == 6
    for name in names:
        content = (output / name).read_bytes()
        crc = google_crc32c.value(content).to_bytes(4, "big")  # GCS's crc32c encoding
        examples = sum(1 for _ in tf.data.TFRecordDataset(
            str(output / name), "GZIP" if compression else ""))  # fmt: skip
        assert recorded[name] == {
            "bytes": len(content), "crc32c": base64.b64encode(crc).decode(), "examples": examples
        }  # fmt: skip
    for info in manifest["splits"].values():
        assert sum(recorded[name]["examples"] for name in info["files"]) == info["examples"]


def test_reading_a_truncated_shard_fails_before_any_batch(tmp_path, corpus_dir, tokenizer_dir):
    output = tmp_path / "shards"
    shard(
        str(corpus_dir), str(tokenizer_dir), str(output),
        max_seq_length=16, num_shards=2, validation_fraction=0.2,
    )  # fmt: skip
    victim = read_manifest(str(output)).files("validation")[1]
    size = os.path.getsize(victim)
    os.truncate(victim, size - 1)
    with pytest.raises(UserInputError) as caught:
        pretraining_dataset(str(output), 4, split="validation", repeat=False)
    assert str(caught.value) == (
        f"{victim} is {size - 1} bytes but manifest.json says {size}: the shard is truncated or "
        "was replaced; re-run `mlm shard`"
    )
    pretraining_dataset(str(output), 4, split="train", repeat=False)  # the other split reads
