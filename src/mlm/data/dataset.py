"""`tf.data` input for pre-training: batches of int32 `input_ids`/`attention_mask`/`token_type_ids`.

`pretraining_dataset` reads a shard directory (the fast path: tokenized once, offline);
`create_mlm_dataset` keeps the seed README's one-call API for a text file and a tokenizer, but
tokenizes in batches in Python (the Rust tokenizer) instead of one `tf.py_function` per line.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

from mlm import storage
from mlm.artifacts import cached_local_copy
from mlm.data.corpus import batched, read_units
from mlm.data.shards import FEATURES, ShardManifest, read_manifest, verify_files
from mlm.errors import UserInputError


def _workers_from_tf_config() -> int:
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    return max(1, len(cluster.get("chief", [])) + len(cluster.get("worker", [])))


def checked_shard_files(manifest: ShardManifest, split: str) -> list[str]:
    """Local paths of the files of `split` that hold examples, checked against the manifest's
    sizes and CRC32Cs (object-store shards are staged to local scratch first).

    Steps call it before they create their output, so a truncated or corrupted shard is one line
    and leaves nothing behind; the check of a file version is done once per process.
    """
    # Examples go to the files round-robin, so with fewer examples than files only the first
    # ones hold data; leaving out the empty ones keeps file-level sharding from starving a worker.
    files = manifest.files(split)[: manifest.splits[split].examples]
    if storage.is_remote(manifest.shard_dir):
        local_dir = cached_local_copy(manifest.shard_dir, "shards")
        files = [os.path.join(local_dir, os.path.basename(path)) for path in files]
    verify_files(manifest, files)
    return files


def pretraining_dataset(
    shard_dir: str,
    batch_size: int,
    *,
    split: str = "train",
    shuffle: bool = True,
    repeat: bool = True,
    seed: int | None = None,
    drop_remainder: bool = True,
    input_context: Any = None,
    num_workers: int | None = None,
    shuffle_buffer: int = 10_000,
    tokenizer_hash: str | None = None,
) -> Any:
    """A dataset of batches read from a shard directory.

    Files are read interleaved (several at once), examples shuffled in a buffer, repeated,
    batched, parsed in bulk and prefetched.

    Distribution: with `input_context` (from `strategy.distribute_datasets_from_function`) this
    input pipeline keeps whole files `i, i+n, ...` when there are at least as many files as
    pipelines, else every n-th example. Without it, the dataset's auto-shard policy (used by
    `strategy.experimental_distribute_dataset`) is FILE when the split has at least as many
    files as workers and DATA otherwise (FILE would leave some workers without input).

    Args:
        shard_dir: a directory written by `mlm shard` (local or `gs://`; `gs://` shards are
            copied to local temporary space first, as TensorFlow cannot read a GCS emulator;
            a later call for the same URI fetches only files that changed).
        batch_size: examples per batch (per input pipeline when `input_context` is given).
        split: "train" or "validation".
        shuffle: shuffle the file order and the examples.
        repeat: repeat forever.
        seed: makes shuffling (and so the batch order) deterministic.
        drop_remainder: drop a last, smaller batch (keeps shapes static).
        input_context: a `tf.distribute.InputContext`.
        num_workers: worker count for the auto-shard policy (default: from `TF_CONFIG`, else 1).
        shuffle_buffer: examples in the shuffle buffer.
        tokenizer_hash: refuse shards written with another tokenizer (see `read_manifest`).

    Returns:
        A `tf.data.Dataset` of dicts of int32 tensors `[batch_size, seq_length]`.
    """
    import tensorflow as tf

    if batch_size < 1:
        raise UserInputError(f"batch_size={batch_size}: need a positive batch size")
    manifest = read_manifest(shard_dir, tokenizer_hash=tokenizer_hash)
    files = checked_shard_files(manifest, split)
    seq_length = manifest.seq_length
    spec = {name: tf.io.FixedLenFeature([seq_length], tf.int64) for name in FEATURES}

    def parse(records: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = tf.io.parse_example(records, spec)
        return {name: tf.cast(parsed[name], tf.int32) for name in FEATURES}

    dataset = tf.data.Dataset.from_tensor_slices(files)
    example_shard = None
    if input_context is not None and input_context.num_input_pipelines > 1:
        pipelines, index = input_context.num_input_pipelines, input_context.input_pipeline_id
        if len(files) >= pipelines:
            dataset = dataset.shard(pipelines, index)
        else:
            example_shard = (pipelines, index)
    if shuffle:
        dataset = dataset.shuffle(len(files), seed=seed)
    dataset = dataset.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type=manifest.tf_compression),
        cycle_length=min(len(files), 8),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=not shuffle or seed is not None,
    )
    if example_shard:
        dataset = dataset.shard(*example_shard)
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed)
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE)

    options = tf.data.Options()
    policy = tf.data.experimental.AutoShardPolicy
    if input_context is not None:
        options.experimental_distribute.auto_shard_policy = policy.OFF  # sharded above
    else:
        workers = num_workers or _workers_from_tf_config()
        options.experimental_distribute.auto_shard_policy = (
            policy.FILE if len(files) >= workers else policy.DATA
        )
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def _fixed_length_encoder(tokenizer: Any, max_length: int) -> Any:
    """A function encoding a list of texts into int32 arrays `[n, max_length]` (truncated, padded).

    Works on a private copy of the Rust tokenizer, so the caller's tokenizer keeps its settings.
    """
    import numpy as np
    from tokenizers import Tokenizer

    from mlm.data.tokenizer import load_existing_tokenizer

    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = load_existing_tokenizer(os.fspath(tokenizer))
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if not isinstance(backend, Tokenizer):
        raise UserInputError(
            f"tokenizer: {type(tokenizer).__name__} is not a fast tokenizer; pass a tokenizer "
            "directory, a transformers fast tokenizer or a tokenizers.Tokenizer"
        )
    pad_id = backend.token_to_id("[PAD]")
    backend = Tokenizer.from_str(backend.to_str())
    backend.enable_truncation(max_length)
    backend.enable_padding(length=max_length, pad_id=pad_id or 0, pad_token="[PAD]")
    encode_batch = getattr(backend, "encode_batch_fast", backend.encode_batch)

    def encode(texts: list[str]) -> dict[str, Any]:
        encodings = encode_batch(texts)
        return {
            "input_ids": np.array([e.ids for e in encodings], np.int32),
            "attention_mask": np.array([e.attention_mask for e in encodings], np.int32),
            "token_type_ids": np.array([e.type_ids for e in encodings], np.int32),
        }

    return encode


def create_mlm_dataset(
    text_file: str | Sequence[str],
    tokenizer: Any,
    batch_size: int = 32,
    max_length: int = 128,
    buffer_size: int = 10000,
    *,
    layout: str = "lines",
    tokenize_batch_size: int = 1024,
    drop_remainder: bool = True,
) -> Any:
    """A dataset for MLM pre-training straight from text, one example per line (seed API).

    Lines are read in a stream and tokenized `tokenize_batch_size` at a time by the Rust
    tokenizer (`encode_batch`: truncated to `max_length` with `[CLS]`/`[SEP]`, padded), then
    shuffled and batched by `tf.data`. The corpus is counted first (one extra read, no
    tokenizing), so the dataset has a known length: `len(dataset)` is the number of batches.
    For large corpora prefer `mlm shard` + `pretraining_dataset` (tokenized once, packed).

    Args:
        text_file: a corpus (file, `.gz`, directory, glob or `gs://` URI; one sentence per line).
        tokenizer: a `transformers` fast tokenizer, a `tokenizers.Tokenizer`, or the path of a
            tokenizer directory / `vocab.txt`.
        batch_size: examples per batch.
        max_length: tokens per example.
        buffer_size: shuffle buffer size.
        layout: "lines" or "documents" (see `mlm.data.corpus.read_units`).
        tokenize_batch_size: lines per tokenizer call.
        drop_remainder: drop a last, smaller batch.

    Returns:
        A `tf.data.Dataset` of dicts of int32 tensors `[batch_size, max_length]`.
    """
    import tensorflow as tf

    encode = _fixed_length_encoder(tokenizer, max_length)

    def generate() -> Iterator[dict[str, Any]]:
        for lines in batched(read_units(text_file, layout=layout), tokenize_batch_size):
            yield encode(lines)

    num_examples = sum(1 for _ in read_units(text_file, layout=layout))
    signature = {name: tf.TensorSpec([None, max_length], tf.int32) for name in FEATURES}
    dataset = tf.data.Dataset.from_generator(generate, output_signature=signature).unbatch()
    # A generator's length is unknown to tf.data; stating it makes `len()` work (the seed
    # README sizes its schedule with `len(train_dataset)`).
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(num_examples))
    dataset = dataset.shuffle(buffer_size)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)
