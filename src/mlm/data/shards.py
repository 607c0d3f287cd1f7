"""Packed TFRecord shards: token ids cut into fixed-length BERT examples, and their manifest.

A shard directory holds `train-00000-of-00008.tfrecord[.gz]` ... and `validation-...` files of
`tf.train.Example`s with int64 features `input_ids`, `attention_mask`, `token_type_ids` (each
`seq_length` long), and `manifest.json` describing them. The directory is assembled aside and
moved into place with `manifest.json` last, so a directory with a manifest is always complete.
The manifest records each file's size and CRC32C (computed while writing); `verify_files` checks
them before the files are read, so a truncated or corrupted shard is one clear error, not a
`DataLossError` in the middle of training.

Two ways to form examples:

- packed (default, like Hugging Face's `group_texts`): the token ids of consecutive texts of one
  input file are concatenated, with `[SEP]` between texts, and cut into `[CLS] ... [SEP]` blocks
  of exactly `seq_length` tokens (only a file's last block of a split is padded; packing stops
  at file ends so that partitions of a corpus, `mlm.data.shard_parts`, give the same examples);
- `line_by_line` (like `run_mlm --line_by_line`): each text gives `[CLS] ... [SEP]` padded to
  `seq_length`; a text longer than that is split into several examples, never dropped.

Examples go to the K shard files of their split round-robin, so shards differ in size by at most
one example, and the output is a pure function of the input: re-running gives identical bytes.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
import posixpath
from collections.abc import Iterable, Iterator
from typing import Any

from mlm import schema, storage
from mlm.artifacts import SHARD_MANIFEST_FILE, check_replaceable, read_step_json
from mlm.data.corpus import batched, is_validation
from mlm.data.tfrecord import MLMExampleSerializer, TFRecordWriter, framing_problem
from mlm.data.tokenizer import TokenizerInfo
from mlm.errors import UserInputError

logger = logging.getLogger(__name__)

FEATURES = ("input_ids", "attention_mask", "token_type_ids")
SPLITS = ("train", "validation")
COMPRESSIONS = (None, "gzip")


@dataclasses.dataclass
class SplitInfo:
    """One split of a shard directory: its files (relative names) and what they hold."""

    files: list[str]
    examples: int = 0
    tokens: int = 0  # non-padding tokens, [CLS]/[SEP] included


@dataclasses.dataclass
class ShardManifest:
    """The content of `manifest.json`; `shard_dir` is where it was read from (not stored)."""

    seq_length: int
    tokenizer_hash: str
    vocab_size: int
    compression: str | None
    splits: dict[str, SplitInfo]
    line_by_line: bool = False
    # file name -> {"bytes": size, "crc32c": base64 of the big-endian CRC32C, as GCS writes it,
    # "examples": count}; empty in manifests written before these were recorded (their files
    # are not verified), without "examples" in those written before that was.
    file_info: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    # Set in one partition's directory (`write_shards(part=...)`): {"number": p, "count": P,
    # "files": digest of the corpus's file list}; `merge_shard_parts` joins the P parts.
    part: dict[str, Any] | None = None
    shard_dir: str = ""

    def files(self, split: str) -> list[str]:
        """Full paths/URIs of the files of `split`."""
        if split not in self.splits:
            raise UserInputError(
                f"shard directory {self.shard_dir} has no {split!r} split (it has "
                f"{', '.join(self.splits)}); re-run `mlm shard` with a validation fraction > 0"
            )
        return [storage.join(self.shard_dir, name) for name in self.splits[split].files]

    @property
    def tf_compression(self) -> str:
        """The `compression_type` argument for `tf.data.TFRecordDataset`."""
        return "GZIP" if self.compression == "gzip" else ""

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        del data["shard_dir"]
        if data["part"] is None:
            del data["part"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], shard_dir: str = "") -> ShardManifest:
        """The manifest in `data` (checked against `MANIFEST_SCHEMA` by `read_manifest`); keys
        older versions did not write take their defaults, keys newer ones add are ignored."""
        known = {field.name for field in dataclasses.fields(cls)}
        splits = {
            name: SplitInfo(
                **{key: split[key] for key in ("files", "examples", "tokens") if key in split}
            )
            for name, split in data["splits"].items()
        }
        values = {key: value for key, value in data.items() if key in known}
        return cls(**{"compression": None, **values, "splits": splits, "shard_dir": shard_dir})


# What `manifest.json` holds. `compression`, `line_by_line`, `file_info` and a split's `tokens`
# are absent from manifests of older versions, which still load.
MANIFEST_SCHEMA = schema.Record(
    {
        "seq_length": schema.integer(at_least=3),
        "tokenizer_hash": schema.string,
        "vocab_size": schema.integer(at_least=1),
        "splits": schema.mapping_of(
            schema.Record(
                {"files": schema.list_of(schema.string), "examples": schema.integer(at_least=0)},
                {"tokens": schema.integer(at_least=0)},
            )
        ),
    },
    {
        "compression": schema.one_of(None, "gzip"),
        "line_by_line": schema.boolean,
        "file_info": schema.mapping_of(
            schema.Record(
                {"bytes": schema.integer(at_least=0), "crc32c": schema.string},
                {"examples": schema.integer(at_least=0)},
            )
        ),
        "part": schema.Record(
            {
                "number": schema.integer(at_least=1),
                "count": schema.integer(at_least=1),
                "files": schema.string,
            }
        ),
    },
)


def shard_file_name(split: str, index: int, num_shards: int, compression: str | None) -> str:
    """`train-00003-of-00008.tfrecord` (`.gz` appended when gzip-compressed)."""
    suffix = ".tfrecord.gz" if compression == "gzip" else ".tfrecord"
    return f"{split}-{index:05d}-of-{num_shards:05d}{suffix}"


def read_manifest(
    shard_dir: str, *, tokenizer_hash: str | None = None, allow_part: bool = False
) -> ShardManifest:
    """Read and check `manifest.json` of a shard directory (local or `gs://`).

    Args:
        shard_dir: the shard directory.
        tokenizer_hash: when given, the `content_hash` of the tokenizer the caller uses; a
            manifest written with another tokenizer is refused.
        allow_part: accept one partition of a corpus (for `merge_shard_parts`); otherwise a
            partition is refused, since training on it would see only part of the corpus.

    Raises:
        UserInputError: no manifest (missing or unfinished directory), a listed file is missing,
            the tokenizer hash differs, or the directory is a partition (without `allow_part`).
    """
    uri = storage.join(shard_dir, SHARD_MANIFEST_FILE)
    if not storage.exists(uri):
        raise UserInputError(
            f"shard directory {shard_dir} has no {SHARD_MANIFEST_FILE} (missing or unfinished); "
            "create it with `mlm shard`"
        )
    data = read_step_json(uri, "shard")
    schema.validate(data, MANIFEST_SCHEMA, uri, "shard")
    manifest = ShardManifest.from_dict(data, shard_dir)
    if manifest.part is not None and not allow_part:
        raise UserInputError(
            f"shard directory {shard_dir} is partition {manifest.part['number']} of "
            f"{manifest.part['count']} of a corpus; join the partitions with `mlm merge-shards` "
            "and use its output"
        )
    if tokenizer_hash is not None and manifest.tokenizer_hash != tokenizer_hash:
        raise UserInputError(
            f"shard directory {shard_dir} was written with tokenizer {manifest.tokenizer_hash[:12]}"
            f" but tokenizer {tokenizer_hash[:12]} is in use; re-run `mlm shard` with this "
            "tokenizer or pass the tokenizer the shards were made with"
        )
    # An object store answers for all files in one listing (not a request per file).
    listed = storage.file_sizes(shard_dir) if storage.is_remote(shard_dir) else None
    for split in manifest.splits:
        for path in manifest.files(split):
            found = (
                posixpath.basename(path) in listed if listed is not None else os.path.exists(path)
            )
            if not found:
                raise UserInputError(
                    f"shard directory {shard_dir} is incomplete: {path} is listed in "
                    f"{SHARD_MANIFEST_FILE} but missing; re-run `mlm shard`"
                )
            # Local files: `verify_files` compares them as they are read.
            recorded = manifest.file_info.get(posixpath.basename(path), {}).get("bytes")
            size = listed[posixpath.basename(path)] if listed is not None else recorded
            if recorded is not None and size != recorded:
                raise UserInputError(
                    f"{path} is {size} bytes but its manifest records {recorded} (truncated "
                    "or rewritten); re-run `mlm shard` for this directory"
                )
    return manifest


# (path, size, mtime in ns) of local shard files whose CRC32C matched their manifest: each file
# is checksummed once per process (and again when staging replaces it), sizes every time.
_VERIFIED: set[tuple[str, int, int]] = set()


def _crc32c_base64(checksum: Any) -> str:
    return base64.b64encode(checksum.digest()).decode("ascii")


def file_crc32c(path: str) -> str:
    """CRC32C of a local file, base64-encoded like GCS's `crc32c` object field."""
    import google_crc32c

    checksum = google_crc32c.Checksum()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            checksum.update(chunk)
    return _crc32c_base64(checksum)


def verify_files(manifest: ShardManifest, paths: Iterable[str]) -> None:
    """Checks local copies of shard files against the sizes and CRC32Cs in their manifest.

    A file's name (its base name) is looked up in `manifest.file_info`; the size is compared
    on every call, the CRC32C once per process for each (path, size, mtime). Manifests without
    `file_info` (written by older versions) record nothing to compare with: the record framing
    of their uncompressed files is checked instead, which finds a truncated file.

    Raises:
        UserInputError: a file is shorter or longer than recorded (truncated) or its content
            differs (corrupted); the message names the file and says to re-run `mlm shard`.
    """
    if not manifest.file_info:
        logger.info(
            "%s records no file sizes or checksums; checking the framing", manifest.shard_dir
        )
        if manifest.compression is None:
            for path in paths:
                with open(path, "rb") as file:
                    problem = framing_problem(file)
                if problem:
                    raise UserInputError(
                        f"{path} is not a complete TFRecord file: {problem}; re-run `mlm shard`"
                    )
        return
    for path in paths:
        recorded = manifest.file_info.get(os.path.basename(path))
        if recorded is None:
            continue
        stat = os.stat(path)
        if stat.st_size != recorded["bytes"]:
            raise UserInputError(
                f"{path} is {stat.st_size} bytes but {SHARD_MANIFEST_FILE} says "
                f"{recorded['bytes']}: the shard is truncated or was replaced; re-run `mlm shard`"
            )
        key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
        if key in _VERIFIED:
            continue
        actual = file_crc32c(path)
        if actual != recorded["crc32c"]:
            raise UserInputError(
                f"{path} has CRC32C {actual} but {SHARD_MANIFEST_FILE} says "
                f"{recorded['crc32c']}: the shard is corrupted; re-run `mlm shard`"
            )
        _VERIFIED.add(key)


class _ChecksummedFile:
    """A binary file being written that counts its bytes and their CRC32C."""

    def __init__(self, path: str):
        import google_crc32c

        self._file = open(path, "wb")  # noqa: SIM115 (closed by close())
        self._checksum = google_crc32c.Checksum()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._checksum.update(data)
        self.size += len(data)
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def info(self) -> dict[str, Any]:
        return {"bytes": self.size, "crc32c": _crc32c_base64(self._checksum)}


class ExamplePacker:
    """Turns the token ids of successive texts into example token lists (unpadded).

    Args:
        seq_length: length of an example, `[CLS]` and `[SEP]` included (at least 3).
        cls_id: id of `[CLS]`.
        sep_id: id of `[SEP]`.
        line_by_line: one text per example (split when too long) instead of packing.
    """

    def __init__(self, seq_length: int, cls_id: int, sep_id: int, line_by_line: bool = False):
        if seq_length < 3:
            raise UserInputError(f"max_seq_length={seq_length} is too short; use at least 3")
        self.body = seq_length - 2
        self.cls_id, self.sep_id = cls_id, sep_id
        self.line_by_line = line_by_line
        self._buffer: list[int] = []

    def _example(self, body: list[int]) -> list[int]:
        return [self.cls_id, *body, self.sep_id]

    def add(self, ids: list[int]) -> Iterator[list[int]]:
        """Add one text's ids; yields the examples that became complete."""
        if not ids:
            return
        if self.line_by_line:
            for start in range(0, len(ids), self.body):
                yield self._example(ids[start : start + self.body])
            return
        buffer = self._buffer
        if buffer:
            buffer.append(self.sep_id)
        buffer.extend(ids)
        start = 0  # cut blocks by index: a very long text costs linear, not quadratic, time
        while len(buffer) - start >= self.body:
            body = buffer[start : start + self.body]
            start += self.body
            if buffer[start : start + 1] == [self.sep_id]:
                start += 1  # a text ended exactly at the block's end
            yield self._example(body)
        del buffer[:start]

    def flush(self) -> Iterator[list[int]]:
        """Yields the last, shorter example (packed mode) and resets."""
        if self._buffer:
            yield self._example(self._buffer)
        self._buffer = []


class _SplitWriter:
    """The K TFRecord files of one split, filled round-robin; a partition's files are numbered
    after the earlier partitions' (`first` of `total` in the split)."""

    def __init__(
        self,
        directory: str,
        split: str,
        num_shards: int,
        compression: str | None,
        first: int = 0,
        total: int | None = None,
    ):
        total = total or num_shards
        self.info = SplitInfo(
            files=[shard_file_name(split, first + i, total, compression) for i in range(num_shards)]
        )
        self._files = [_ChecksummedFile(os.path.join(directory, name)) for name in self.info.files]
        self._writers = [TFRecordWriter(file, compression) for file in self._files]
        self._examples = [0] * num_shards

    def write(self, record: bytes, tokens: int) -> None:
        index = self.info.examples % len(self._writers)
        self._writers[index].write(record)
        self._examples[index] += 1
        self.info.examples += 1
        self.info.tokens += tokens

    def close(self) -> None:
        for writer, file in zip(self._writers, self._files):
            writer.close()
            file.close()

    def file_info(self) -> dict[str, dict[str, Any]]:
        """Size, CRC32C and example count of each file (after `close`)."""
        return {
            name: file.info() | {"examples": examples}
            for name, file, examples in zip(self.info.files, self._files, self._examples)
        }


def _numbered_units(files_units: Iterable[Iterable[str]]) -> Iterator[tuple[int, str]]:
    for number, units in enumerate(files_units):
        for unit in units:
            yield number, unit


def _check_settings(compression: str | None, num_shards: int, validation_fraction: float) -> None:
    if compression not in COMPRESSIONS:
        raise UserInputError(f"compression: {compression!r} is not one of None, 'gzip'")
    if num_shards < 1:
        raise UserInputError(f"num_shards={num_shards}: need at least one shard per split")
    if not 0 <= validation_fraction < 1:
        raise UserInputError(f"validation_fraction={validation_fraction}: need 0 <= value < 1")


def _pack(
    files_units: Iterable[Iterable[str]],
    tokenizer: Any,
    info: TokenizerInfo,
    writers: dict[str, _SplitWriter],
    packers: dict[str, ExamplePacker],
    seq_length: int,
    validation_fraction: float,
    batch_size: int,
) -> None:
    """Tokenizes the units in batches and writes each split's examples, file by file."""
    encode = getattr(tokenizer, "encode_batch_fast", tokenizer.encode_batch)  # no offsets: faster
    serialize = MLMExampleSerializer(seq_length, info.pad_token_id)

    def emit(split: str, examples: Iterable[list[int]]) -> None:
        for ids in examples:
            writers[split].write(serialize(ids), len(ids))

    def file_ended() -> None:
        for split, packer in packers.items():
            emit(split, packer.flush())

    current = 0
    for batch in batched(_numbered_units(files_units), batch_size):
        encodings = encode([text for _, text in batch], add_special_tokens=False)
        for (number, text), encoding in zip(batch, encodings):
            if number != current:
                file_ended()
                current = number
            split = "validation" if is_validation(text, validation_fraction) else "train"
            emit(split, packers[split].add(encoding.ids))
    file_ended()


def write_shards(
    files_units: Iterable[Iterable[str]],
    tokenizer: Any,
    info: TokenizerInfo,
    output_dir: str,
    *,
    max_seq_length: int = 128,
    num_shards: int = 8,
    validation_fraction: float = 0.05,
    line_by_line: bool = False,
    compression: str | None = None,
    batch_size: int = 1024,
    part: dict[str, Any] | None = None,
) -> ShardManifest:
    """Tokenize a stream of texts and write a shard directory (see the module docstring).

    Texts are packed within their input file: each file's last example of a split is flushed
    (shorter) when the file ends. So the examples do not depend on how files are grouped, and
    partitions of a corpus written apart (`part`) merge into what one writer gives, up to the
    files' order.

    Args:
        files_units: the corpus units of each input file, file by file (streamed once;
            `mlm.data.corpus.read_units_by_file`).
        tokenizer: the `tokenizers.Tokenizer` described by `info` (`load_backend_tokenizer`).
        info: its `TokenizerInfo` (special ids, content hash recorded in the manifest).
        output_dir: local directory or object-store prefix; replaced when it is an earlier
            shard directory, refused when it holds anything else.
        max_seq_length: tokens per example.
        num_shards: files per split (a multiple of the worker count: whole files per worker).
        validation_fraction: share of texts (by content hash) in the validation split; 0 writes
            no validation split.
        line_by_line: one text per example instead of packing.
        compression: None or "gzip".
        batch_size: texts per call to the Rust tokenizer (`encode_batch`, all cores).
        part: this directory is partition `number` (1 to `count`) of the corpus whose file
            list has the digest `files` (`files_digest`): its files are numbered from
            `(number - 1) * num_shards`, of `count * num_shards`, a split may be empty, and
            `mlm.data.shard_parts.merge_shard_parts` joins it with the other partitions.

    Returns:
        The manifest that was written.
    """
    _check_settings(compression, num_shards, validation_fraction)
    check_replaceable(output_dir, SHARD_MANIFEST_FILE, "shard")
    splits = SPLITS if validation_fraction > 0 else SPLITS[:1]
    first, total = (
        ((part["number"] - 1) * num_shards, part["count"] * num_shards) if part else (0, None)
    )
    with storage.atomic_directory(output_dir, last=[SHARD_MANIFEST_FILE]) as staging:
        writers = {
            split: _SplitWriter(staging, split, num_shards, compression, first, total)
            for split in splits
        }
        packers = {
            split: ExamplePacker(max_seq_length, info.cls_token_id, info.sep_token_id, line_by_line)
            for split in splits
        }
        try:
            _pack(
                files_units, tokenizer, info, writers, packers,
                max_seq_length, validation_fraction, batch_size,
            )  # fmt: skip
        finally:
            for writer in writers.values():
                writer.close()
        manifest = _manifest(
            writers, info, output_dir, max_seq_length, compression, line_by_line, part
        )
        if part is None:
            check_splits(manifest, validation_fraction)
        storage.write_json(os.path.join(staging, SHARD_MANIFEST_FILE), manifest.to_dict())
    return manifest


def _manifest(
    writers: dict[str, _SplitWriter],
    info: TokenizerInfo,
    output_dir: str,
    seq_length: int,
    compression: str | None,
    line_by_line: bool,
    part: dict[str, Any] | None,
) -> ShardManifest:
    """The manifest of the shards that `writers` wrote (and closed)."""
    return ShardManifest(
        seq_length=seq_length,
        tokenizer_hash=info.content_hash,
        vocab_size=info.vocab_size,
        compression=compression,
        splits={split: writer.info for split, writer in writers.items()},
        line_by_line=line_by_line,
        file_info={
            name: file for writer in writers.values() for name, file in writer.file_info().items()
        },
        part=part,
        shard_dir=output_dir,
    )


def check_splits(manifest: ShardManifest, validation_fraction: float) -> None:
    """Raises when a split of a whole shard directory has no example."""
    for split, info in manifest.splits.items():
        if info.examples == 0:
            raise UserInputError(
                f"shard: the {split} split is empty (the corpus is too small for "
                f"validation_fraction={validation_fraction}); add text or change the fraction"
            )
