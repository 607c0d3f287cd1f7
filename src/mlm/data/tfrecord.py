"""Writing `tf.train.Example` TFRecord files without TensorFlow (fast and byte-stable).

The shard step serializes hundreds of thousands of fixed-shape int64 examples. Encoding the
protobuf directly (three packed int64 features, keys in sorted order, exactly what
`Example.SerializeToString(deterministic=True)` produces) is several times faster than building
`tf.train.Example` objects, and the TFRecord framing is a few lines (length, CRC32C, data,
CRC32C). Without TensorFlow, sharding starts in a fraction of the time and memory.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Mapping, Sequence
from typing import BinaryIO

import google_crc32c

_VARINT_CACHE_SIZE = 1 << 16  # covers the ids of any WordPiece vocabulary in use


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 two's complement, as protobuf encodes negative int64
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_VARINTS = [_varint(i) for i in range(_VARINT_CACHE_SIZE)]


def _packed(values: Sequence[int]) -> bytes:
    low, high = min(values), max(values)
    if low >= 0 and high < 0x80:
        return bytes(values)  # one byte per value: masks, type ids, small ids
    if low >= 0 and high < _VARINT_CACHE_SIZE:
        cache = _VARINTS
        return b"".join([cache[v] for v in values])
    return b"".join([_varint(v) for v in values])


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    size = len(payload)
    length = _VARINTS[size] if size < _VARINT_CACHE_SIZE else _varint(size)
    return _VARINTS[number << 3 | 2] + length + payload


def serialize_int64_example(features: Mapping[str, Sequence[int]]) -> bytes:
    """The bytes of a `tf.train.Example` whose features are int64 lists.

    Identical to `tf.train.Example(...).SerializeToString(deterministic=True)`: map entries in
    sorted key order; each `Feature` holds `int64_list` (field 3) with packed values.
    """
    entries = []
    for key in sorted(features):
        int64_list = _field(1, _packed(features[key])) if len(features[key]) else b""
        feature = _field(3, int64_list)
        entries.append(_field(1, _field(1, key.encode("utf-8")) + _field(2, feature)))
    return _field(1, b"".join(entries))


def _feature_entry(key: str, values: Sequence[int]) -> bytes:
    """One entry of the `features` map of `serialize_int64_example`."""
    int64_list = _field(1, _packed(values)) if len(values) else b""
    return _field(1, _field(1, key.encode("utf-8")) + _field(2, _field(3, int64_list)))


class MLMExampleSerializer:
    """`serialize_int64_example` for the pre-training examples, fast: `input_ids` padded to
    `seq_length` with `pad_id`, `attention_mask` ones then zeros, `token_type_ids` zeros.

    The same bytes, with the per-token Python left only in joining the ids' cached varints:
    the token-type entry is one constant, the mask entry one per example length, the padding
    one per padding length (`bench/bench_data.py` measures the shard step).
    """

    def __init__(self, seq_length: int, pad_id: int):
        self.seq_length = seq_length
        self._pad = _varint(pad_id)
        self._types = _feature_entry("token_type_ids", [0] * seq_length)
        self._masks: dict[int, bytes] = {}
        self._ids_key = _field(1, b"input_ids")

    def __call__(self, ids: Sequence[int]) -> bytes:
        length = len(ids)
        padding = self.seq_length - length
        mask = self._masks.get(length)
        if mask is None:
            mask = _feature_entry("attention_mask", [1] * length + [0] * padding)
            self._masks[length] = mask
        try:
            packed = b"".join([_VARINTS[v] for v in ids]) if min(ids) >= 0 else None
        except IndexError:
            packed = None
        if packed is None:  # ids beyond the cache (or negative): the general encoder
            packed = _packed(ids)
        packed += self._pad * padding
        feature = _field(3, _field(1, packed))
        entry = _field(1, self._ids_key + _field(2, feature))
        return _field(1, mask + entry + self._types)


def _masked_crc(data: bytes) -> bytes:
    crc = google_crc32c.value(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def framing_problem(file: BinaryIO) -> str | None:
    """What is wrong with the TFRecord framing of an uncompressed file (None: nothing).

    Walks the record headers only (length, and the CRC of the length), seeking over the
    payloads: a truncated file or one that is not TFRecord is found without reading it all.
    """
    size = file.seek(0, 2)
    offset = file.seek(0)
    while offset < size:
        header = file.read(12)
        if len(header) < 12:
            return f"it ends inside the header of the record at byte {offset} (truncated)"
        if _masked_crc(header[:8]) != header[8:]:
            return f"the record header at byte {offset} fails its checksum (not TFRecord data)"
        end = offset + 12 + struct.unpack("<Q", header[:8])[0] + 4
        if end > size:
            return f"it ends inside the record at byte {offset} (truncated)"
        offset = file.seek(end)
    return None


class TFRecordWriter:
    """Writes TFRecord framing to a binary file object (optionally gzip, readable by TF's GZIP).

    Args:
        file: an open binary file; it is not closed by `close()`.
        compression: None or "gzip" (written with mtime 0, so output is byte-stable).
    """

    def __init__(self, file: BinaryIO, compression: str | None = None):
        self._gzip = (
            gzip.GzipFile(fileobj=file, mode="wb", mtime=0, filename="") if compression else None
        )
        self._out = self._gzip or file

    def write(self, record: bytes) -> None:
        length = struct.pack("<Q", len(record))
        self._out.write(length + _masked_crc(length) + record + _masked_crc(record))

    def close(self) -> None:
        if self._gzip is not None:
            self._gzip.close()
