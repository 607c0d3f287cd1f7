"""Shards: packing, line-by-line, round trip to text, determinism, manifest checks, tf.data input."""

from __future__ import annotations

import filecmp
import json

import numpy as np
import pytest
import tensorflow as tf

from mlm.data.dataset import create_mlm_dataset, pretraining_dataset
from mlm.data.shards import ExamplePacker, read_manifest
from mlm.data.tokenizer import load_tokenizer, read_tokenizer_info
from mlm.errors import UserInputError
from mlm.steps.shard import shard

SEQ = 16


@pytest.fixture(scope="module")
def packed(corpus_dir, tokenizer_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("packed") / "shards"
    shard(
        str(corpus_dir), str(tokenizer_dir), str(output),
        max_seq_length=SEQ, num_shards=4, validation_fraction=0.2,
    )  # fmt: skip
    return output


def _all_examples(shard_dir, split):
    dataset = pretraining_dataset(
        str(shard_dir), 7, split=split, shuffle=False, repeat=False, drop_remainder=False
    )
    batches = list(dataset.as_numpy_iterator())
    return {key: np.concatenate([b[key] for b in batches]) for key in batches[0]}


def test_packer_packs_splits_and_never_drops():
    packer = ExamplePacker(6, cls_id=2, sep_id=3)
    out = [*packer.add([10, 11]), *packer.add([12, 13, 14]), *packer.add([15]), *packer.flush()]
    assert out == [[2, 10, 11, 3, 12, 3], [2, 13, 14, 3, 15, 3]]
    by_line = ExamplePacker(4, cls_id=2, sep_id=3, line_by_line=True)
    assert list(by_line.add([5, 6, 7, 8, 9])) == [[2, 5, 6, 3], [2, 7, 8, 3], [2, 9, 3]]
    assert list(by_line.add([])) == []
    with pytest.raises(UserInputError, match="max_seq_length=2"):
        ExamplePacker(2, 0, 1)


def test_round_trip_text_to_batches_recovers_tokens(packed, corpus_dir, tokenizer_dir):
    from mlm.data.corpus import is_validation, read_units

    info = read_tokenizer_info(str(tokenizer_dir))
    tokenizer = load_tokenizer(str(tokenizer_dir))
    manifest = read_manifest(str(packed), tokenizer_hash=info.content_hash)
    for split in ("train", "validation"):
        arrays = _all_examples(packed, split)
        ids, mask = arrays["input_ids"], arrays["attention_mask"]
        assert ids.dtype == np.int32 and ids.shape == (manifest.splits[split].examples, SEQ)
        assert (arrays["token_type_ids"] == 0).all()
        assert int(mask.sum()) == manifest.splits[split].tokens
        assert (ids[:, 0] == info.cls_token_id).all()
        assert (ids[mask == 0] == info.pad_token_id).all()
        # Packed within each input file: only a file's last example of the split is padded.
        padded = np.flatnonzero(~mask.astype(bool).all(axis=1))
        assert len(padded) <= 2 and padded[-1] == len(mask) - 1
        lengths = mask.sum(axis=1)
        assert (ids[np.arange(len(ids)), lengths - 1] == info.sep_token_id).all()
        tokens = [t for row, n in zip(ids, lengths) for t in row[1 : n - 1]]
        expected = []
        for text in read_units(str(corpus_dir)):
            if is_validation(text, 0.2) == (split == "validation"):
                expected += [*tokenizer(text, add_special_tokens=False)["input_ids"], -1]
        expected = [info.sep_token_id if t == -1 else t for t in expected[:-1]]
        # Separators that fell on a block boundary are not repeated at the next block's start.
        assert [t for t in tokens if t != info.sep_token_id] == [
            t for t in expected if t != info.sep_token_id
        ]
        decoded = tokenizer.decode(tokens, skip_special_tokens=True)
        assert (
            decoded.split()[:5] == tokenizer.decode(expected, skip_special_tokens=True).split()[:5]
        )


def test_line_by_line_splits_long_lines(tmp_path, tokenizer_dir):
    corpus = tmp_path / "c.txt"
    long_line = " ".join(["international representation"] * 20)
    corpus.write_text(f"the model\n{long_line}\n")
    result = shard(
        str(corpus), str(tokenizer_dir), str(tmp_path / "s"),
        max_seq_length=SEQ, num_shards=2, validation_fraction=0, line_by_line=True,
    )  # fmt: skip
    tokenizer = load_tokenizer(str(tokenizer_dir))
    long_ids = tokenizer(long_line, add_special_tokens=False)["input_ids"]
    assert result.manifest["splits"]["train"]["examples"] == 1 + -(-len(long_ids) // (SEQ - 2))
    assert "validation" not in result.manifest["splits"]
    with pytest.raises(UserInputError, match=r"no 'validation' split"):
        pretraining_dataset(str(tmp_path / "s"), 2, split="validation")
    arrays = _all_examples(tmp_path / "s", "train")
    lengths = arrays["attention_mask"].sum(axis=1)
    tokens = [t for row, n in zip(arrays["input_ids"], lengths) for t in row[1 : n - 1]]
    assert sorted(tokens) == sorted(
        long_ids + tokenizer("the model", add_special_tokens=False)["input_ids"]
    )


def test_empty_shard_files_are_left_out_of_file_sharding(tmp_path, tokenizer_dir):
    corpus = tmp_path / "c.txt"
    corpus.write_text("the model reads text\nnotes and papers\nevery token\n")
    shard(str(corpus), str(tokenizer_dir), str(tmp_path / "s"), max_seq_length=SEQ,
          num_shards=8, validation_fraction=0, line_by_line=True)  # fmt: skip
    context = tf.distribute.InputContext(2, 1, 2)
    rows = pretraining_dataset(
        str(tmp_path / "s"), 1, shuffle=False, repeat=False, input_context=context
    )
    assert len(list(rows)) == 1  # files 0-2 hold the 3 examples; pipeline 1 of 2 reads file 1
    policy = pretraining_dataset(str(tmp_path / "s"), 1, num_workers=4).options()
    assert policy.experimental_distribute.auto_shard_policy == (
        tf.data.experimental.AutoShardPolicy.DATA
    )


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_rerun_gives_byte_identical_shards(tmp_path, corpus_dir, tokenizer_dir, compression):
    dirs = [tmp_path / "one", tmp_path / "two"]
    for target in dirs:
        shard(
            str(corpus_dir), str(tokenizer_dir), str(target),
            max_seq_length=SEQ, num_shards=3, validation_fraction=0.2, compression=compression,
        )  # fmt: skip
    names = sorted(p.name for p in dirs[0].iterdir())
    assert names == sorted(p.name for p in dirs[1].iterdir()) and len(names) == 7
    _match, mismatch, errors = filecmp.cmpfiles(dirs[0], dirs[1], names, shallow=False)
    assert (mismatch, errors) == ([], [])
    if compression:
        assert all(n.endswith(".tfrecord.gz") for n in names if n != "manifest.json")
        assert _all_examples(dirs[0], "validation")["input_ids"].shape[1] == SEQ


def test_manifest_checks(tmp_path, packed, tokenizer_dir):
    with pytest.raises(UserInputError, match=r"has no manifest.json"):
        read_manifest(str(tmp_path))
    with pytest.raises(UserInputError, match=r"written with tokenizer .* re-run `mlm shard`"):
        pretraining_dataset(str(packed), 4, tokenizer_hash="0" * 64)
    broken = tmp_path / "broken"
    broken.mkdir()
    data = json.loads((packed / "manifest.json").read_text())
    (broken / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(UserInputError, match=r"incomplete: .*train-00000-of-00004"):
        read_manifest(str(broken))


def test_failed_run_leaves_no_output_and_foreign_dirs_are_kept(tmp_path, tokenizer_dir):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("the model reads text\n" * 50)
    (corpus / "b.bin").write_bytes(b"\x00\x01")
    output = tmp_path / "out"
    with pytest.raises(UserInputError, match="NUL bytes"):
        shard(str(corpus), str(tokenizer_dir), str(output), max_seq_length=SEQ)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]
    (corpus / "b.bin").unlink()
    with pytest.raises(UserInputError, match="validation split is empty"):
        shard(str(corpus), str(tokenizer_dir), str(output), validation_fraction=0.01)
    assert not output.exists()
    (output / "keep").mkdir(parents=True)
    with pytest.raises(UserInputError, match="not an earlier shard directory"):
        shard(str(corpus), str(tokenizer_dir), str(output), validation_fraction=0)
    with pytest.raises(UserInputError, match="compression"):
        shard(str(corpus), str(tokenizer_dir), str(tmp_path / "x"), compression="zstd")


def test_pretraining_dataset_batches_shuffles_and_shards(packed):
    manifest = read_manifest(str(packed))
    dataset = pretraining_dataset(str(packed), 8, seed=1)
    policy = dataset.options().experimental_distribute.auto_shard_policy
    assert policy == tf.data.experimental.AutoShardPolicy.FILE
    batches = [b["input_ids"] for b in dataset.take(3).as_numpy_iterator()]
    assert all(b.shape == (8, SEQ) and b.dtype == np.int32 for b in batches)
    again = [b["input_ids"] for b in pretraining_dataset(str(packed), 8, seed=1).take(3)]
    np.testing.assert_array_equal(np.concatenate(batches), np.concatenate(again))
    ordered = _all_examples(packed, "train")["input_ids"]
    assert not np.array_equal(np.concatenate(batches), ordered[:24])  # shuffled

    policy = pretraining_dataset(str(packed), 8, num_workers=5).options()
    assert (
        policy.experimental_distribute.auto_shard_policy
        == tf.data.experimental.AutoShardPolicy.DATA
    )

    def pipeline_rows(pipelines, index):
        context = tf.distribute.InputContext(pipelines, index, pipelines)
        data = pretraining_dataset(
            str(packed), 1, shuffle=False, repeat=False, input_context=context
        )
        return {tuple(b["input_ids"][0]) for b in data.as_numpy_iterator()}

    for pipelines in (2, 6):  # whole files (4 files >= 2) / every n-th example (4 < 6)
        parts = [pipeline_rows(pipelines, i) for i in range(pipelines)]
        assert sum(len(p) for p in parts) == manifest.splits["train"].examples
        assert set().union(*parts) == {tuple(row) for row in ordered}


def test_create_mlm_dataset_from_text(corpus_dir, tokenizer_dir):
    dataset = create_mlm_dataset(str(corpus_dir / "a.txt"), str(tokenizer_dir), 16, 12, 100)
    batches = list(dataset.as_numpy_iterator())
    assert len(batches) == 150 // 16
    info = read_tokenizer_info(str(tokenizer_dir))
    for batch in batches:
        assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"}
        assert batch["input_ids"].shape == (16, 12) and batch["input_ids"].dtype == np.int32
        assert (batch["input_ids"][:, 0] == info.cls_token_id).all()
    lengths = np.concatenate([b["attention_mask"].sum(1) for b in batches])
    assert lengths.max() == 12 and lengths.min() < 12
