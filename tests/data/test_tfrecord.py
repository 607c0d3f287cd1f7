"""The TensorFlow-free TFRecord writer against TensorFlow's own serialization and reader."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
import tensorflow as tf

from mlm.data.tfrecord import MLMExampleSerializer, TFRecordWriter, serialize_int64_example


def _tf_bytes(features):
    feature = {
        key: tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        for key, values in features.items()
    }
    example = tf.train.Example(features=tf.train.Features(feature=feature))
    return example.SerializeToString(deterministic=True)


def test_example_bytes_match_tensorflow():
    rng = random.Random(0)
    values = [0, 1, 127, 128, 300, 16383, 16384, 65535, 65536, 2**40, -1, -300]
    for _ in range(200):
        length = rng.randint(0, 12)
        features = {
            "input_ids": [rng.choice(values) for _ in range(length)],
            "attention_mask": [1] * length,
            "token_type_ids": [0] * length,
        }
        assert serialize_int64_example(features) == _tf_bytes(features)


def test_the_pre_training_serializer_writes_the_bytes_tensorflow_writes():
    """The shard step's fast path: padded ids, mask and token types as TensorFlow serializes
    them, for every example length (each has its own cached mask) and ids beyond the varint
    cache."""
    rng = random.Random(1)
    values = [0, 1, 127, 128, 300, 16383, 16384, 65535, 65536, 2**40]
    for seq_length, pad_id in ((8, 0), (16, 3), (128, 0)):
        serialize = MLMExampleSerializer(seq_length, pad_id)
        for _ in range(300):
            length = rng.randint(1, seq_length)
            ids = [rng.choice(values) for _ in range(length)]
            padding = seq_length - length
            features = {
                "input_ids": ids + [pad_id] * padding,
                "attention_mask": [1] * length + [0] * padding,
                "token_type_ids": [0] * seq_length,
            }
            assert serialize(ids) == _tf_bytes(features)


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_tensorflow_reads_the_records(tmp_path, compression):
    path = tmp_path / "records"
    records = [serialize_int64_example({"input_ids": [i, i + 1000]}) for i in range(50)]
    with open(path, "wb") as file:
        writer = TFRecordWriter(file, compression)
        for record in records:
            writer.write(record)
        writer.close()
    read = tf.data.TFRecordDataset(str(path), compression_type="GZIP" if compression else "")
    assert [r.numpy() for r in read] == records


def test_shard_step_runs_without_tensorflow_or_transformers(tmp_path, corpus_dir, tokenizer_dir):
    code = (
        "import sys\n"
        "from mlm.steps.shard import shard\n"
        f"shard({str(corpus_dir)!r}, {str(tokenizer_dir)!r}, {str(tmp_path / 's')!r})\n"
        "print(sorted(m for m in ('tensorflow', 'transformers') if m in sys.modules))\n"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert output.returncode == 0, output.stderr
    assert output.stdout.strip() == "[]"
    assert (tmp_path / "s" / "manifest.json").exists()
