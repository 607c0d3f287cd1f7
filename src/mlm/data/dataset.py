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
from mlm.config.data import INPUT_WINDOW_FILES
from mlm.data.corpus import batched, read_units
from mlm.data.shards import FEATURES, ShardManifest, read_manifest, verify_files
from mlm.data.streaming import ShardWindow, streamed_records, window_directory
from mlm.errors import UserInputError


def _workers_from_tf_config() -> int:
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    return max(1, len(cluster.get("chief", [])) + len(cluster.get("worker", [])))


def streams(shard_dir: str, window_files: int) -> bool:
    """Whether `pretraining_dataset` streams this shard directory (see its `window_files`)."""
    return storage.is_remote(shard_dir) and window_files > 0


def checked_shard_files(manifest: ShardManifest, split: str, *, stage: bool = True) -> list[str]:
    """The files of `split` that hold examples, checked against the manifest.

    Local files are checked for size and CRC32C. Object-store files are, with `stage`, copied
    to local scratch space with their directory (the copies are returned and checked the same
    way; a later call fetches only files that changed); without it their URIs are returned
    (`read_manifest` compared their listed sizes; their content is checked when streamed).

    Steps call it before they create their output, so a missing, truncated or corrupted shard is
    one line and leaves nothing behind; the check of a file version is done once per process.
    """
    # Examples go to the files round-robin, so with fewer examples than files only the first
    # ones hold data; leaving out the empty ones keeps file-level sharding from starving a worker.
    files = manifest.files(split)[: manifest.splits[split].examples]
    if not storage.is_remote(manifest.shard_dir):
        verify_files(manifest, files)
        return files
    if not stage:  # `read_manifest` compared their listed sizes
        return files
    local_dir = cached_local_copy(manifest.shard_dir, "shards")
    local = [os.path.join(local_dir, os.path.basename(path)) for path in files]
    verify_files(manifest, local)
    return local


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
    window_files: int = INPUT_WINDOW_FILES,
    windows: list[ShardWindow] | None = None,
    private_window: bool = False,
) -> Any:
    """A dataset of batches read from a shard directory: examples shuffled in a buffer, repeated,
    batched, parsed in bulk and prefetched.

    Local files are read interleaved (several at once). Object-store files are streamed
    (`mlm.data.streaming`): fetched `window_files` at a time, in a new order each pass when
    shuffling, and deleted once read (`window_files=0`: all are copied to local scratch first).

    Distribution: with `input_context` (from `strategy.distribute_datasets_from_function`) this
    input pipeline keeps files `i, i+n, ...` (with fewer files than pipelines: every n-th
    example). Without it, `strategy.experimental_distribute_dataset` auto-shards (see `_options`).

    Args:
        shard_dir: a directory written by `mlm shard` (a local path or object-store URI).
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
        window_files: object-store files kept on local disk at once, per input pipeline.
        windows: receives the streaming window this call creates (for its fetch statistics).
        private_window: stream into this process's own directory (see `window_directory`).

    Returns:
        A `tf.data.Dataset` of dicts of int32 tensors `[batch_size, seq_length]`.
    """
    import tensorflow as tf

    _check_sizes(batch_size, window_files)
    manifest = read_manifest(shard_dir, tokenizer_hash=tokenizer_hash)
    streaming = streams(shard_dir, window_files)
    files = checked_shard_files(manifest, split, stage=not streaming)
    files, pipelines, index, whole_files = _share(files, input_context)
    if streaming:
        window = ShardWindow(
            files, manifest, window_files=window_files, shuffle=shuffle, seed=seed,
            local_dir=window_directory(shard_dir, split, pipelines, index, private=private_window),
            passes=None if repeat else 1,
        )  # fmt: skip
        if windows is not None:
            windows.append(window)
        dataset = streamed_records(window, manifest.tf_compression)
    else:
        dataset = _interleaved_records(files, manifest.tf_compression, shuffle, seed)
    if not whole_files:
        dataset = dataset.shard(pipelines, index)
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed)
    if repeat and not streaming:
        dataset = dataset.repeat()
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    dataset = dataset.map(_parser(manifest.seq_length), num_parallel_calls=tf.data.AUTOTUNE)
    options = _options(input_context, num_workers, 0 if streaming else len(files))
    dataset = dataset.with_options(options).prefetch(tf.data.AUTOTUNE)
    if streaming:
        window.close_with(dataset)
    return dataset


def _check_sizes(batch_size: int, window_files: int) -> None:
    if batch_size < 1:
        raise UserInputError(f"batch_size={batch_size}: need a positive batch size")
    if window_files < 0:
        raise UserInputError(f"window_files={window_files}: use 0 (copy first) or more files")


def _share(files: list[str], input_context: Any) -> tuple[list[str], int, int, bool]:
    """This input pipeline's files, the number of pipelines, its index, and whether it has
    whole files (files `i, i+n, ...`; else all of them, of which it keeps every n-th example)."""
    if input_context is None:
        return files, 1, 0, True
    pipelines, index = input_context.num_input_pipelines, input_context.input_pipeline_id
    if len(files) >= pipelines:
        return files[index::pipelines], pipelines, index, True
    return files, pipelines, index, False


def _options(input_context: Any, num_workers: int | None, local_files: int) -> Any:
    """The dataset's options: its auto-shard policy (OFF with `input_context`: sharded already;
    else FILE for at least as many local files as workers, DATA otherwise), and no complaint
    about a streaming window's state, which lives outside `tf.data` (an iterator checkpoint
    keeps the file number and offset, all a restore needs)."""
    import tensorflow as tf

    options = tf.data.Options()
    policy = tf.data.experimental.AutoShardPolicy
    if input_context is not None:
        options.experimental_distribute.auto_shard_policy = policy.OFF
    else:
        workers = num_workers or _workers_from_tf_config()
        file_sharding = local_files >= workers
        options.experimental_distribute.auto_shard_policy = (
            policy.FILE if file_sharding else policy.DATA
        )
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    return options


def _interleaved_records(files: list[str], compression: str, shuffle: bool, seed: Any) -> Any:
    """Serialized examples of local files, read several at once (in a shuffled order)."""
    import tensorflow as tf

    dataset = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        dataset = dataset.shuffle(len(files), seed=seed)
    return dataset.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type=compression),
        cycle_length=min(len(files), 8),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=not shuffle or seed is not None,
    )


def _parser(seq_length: int) -> Any:
    """Parses a batch of serialized examples into int32 `[batch, seq_length]` features."""
    import tensorflow as tf

    spec = {name: tf.io.FixedLenFeature([seq_length], tf.int64) for name in FEATURES}

    def parse(records: tf.Tensor) -> dict[str, tf.Tensor]:
        parsed = tf.io.parse_example(records, spec)
        return {name: tf.cast(parsed[name], tf.int32) for name in FEATURES}

    return parse


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
