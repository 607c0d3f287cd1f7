"""Shard parts kept across runs, one per input file, so a recurring run pays only for new text.

`mlm shard --cache-dir DIR` writes each input file's examples as a partition directory
(`write_shards(part=...)`) at `DIR/shard-parts/<settings>/<file>/`, where `<settings>` digests
what decides the examples (sequence length, packing, validation fraction, compression and how
the text is read) and `<file>` digests the file's URI, size and version (GCS generation, S3 ETag,
local mtime), read from a listing. A later run reuses the part of every unchanged file, shards
only the new or changed files, and joins all parts into its output directory
(`mlm.data.shard_parts.join_manifests`). Since `write_shards` packs within each input file and
splits by content hash, the totals are those of sharding the whole corpus again.

A part records the tokenizer it was made with; a part made with another tokenizer (one trained
again with `mlm tokenize --retrain`) is made again. Parts of files that left the corpus stay
until the directory is deleted (deleting it any time is safe: it only costs the next run).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mlm import storage
from mlm.data.shards import ShardManifest, read_manifest
from mlm.errors import UserInputError

PARTS_DIR = "shard-parts"
# The `ShardConfig` settings that decide a file's examples (`num_shards` only spreads them).
EXAMPLE_SETTINGS = (
    "max_seq_length",
    "line_by_line",
    "validation_fraction",
    "compression",
    "layout",
    "strict_utf8",
    "clean",
    "min_words",
    "max_words",
)
_LOOKUP_THREADS = 8


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode("utf-8")).hexdigest()[:24]


def parts_dir(cache_dir: str, settings: Mapping[str, Any]) -> str:
    """Where the parts made with `settings` (a `ShardConfig`'s, by name) are kept."""
    return storage.join(
        cache_dir, PARTS_DIR, _digest({name: settings[name] for name in EXAMPLE_SETTINGS})
    )


def file_key(uri: str, size: int | None, version: str) -> str:
    """The name of a file's part: a digest of its URI, size and version."""
    return _digest([uri, size, version])


@dataclasses.dataclass
class CacheLookup:
    """What `lookup` found for each file of a corpus (keyed by URI, in the corpus's order)."""

    part_dirs: dict[str, str]
    keys: dict[str, str]
    sizes: dict[str, int | None]
    reused: dict[str, ShardManifest]
    # Files to shard: new, changed, or their part made with another tokenizer or damaged.
    missing: list[str]
    other_tokenizer: int = 0


def lookup(
    cache_dir: str, files: list[str], settings: Mapping[str, Any], tokenizer_hash: str
) -> CacheLookup:
    """The cached parts that `files` can reuse with `settings` and tokenizer `tokenizer_hash`.

    Costs one metadata request per file plus one manifest read per cached part, made in
    parallel; no shard file is read.
    """
    versions = storage.file_versions(files)
    root = parts_dir(cache_dir, settings)
    keys = {uri: file_key(uri, *versions[uri]) for uri in files}
    part_dirs = {uri: storage.join(root, keys[uri]) for uri in files}

    def read(uri: str) -> ShardManifest | None:
        try:
            return read_manifest(part_dirs[uri], allow_part=True)
        except UserInputError:  # not made yet, damaged or half-deleted: made (again)
            return None

    with ThreadPoolExecutor(max_workers=min(_LOOKUP_THREADS, max(1, len(files)))) as pool:
        found = dict(zip(files, pool.map(read, files)))
    reused = {
        uri: manifest
        for uri, manifest in found.items()
        if manifest is not None and manifest.tokenizer_hash == tokenizer_hash
    }
    return CacheLookup(
        part_dirs=part_dirs,
        keys=keys,
        sizes={uri: versions[uri][0] for uri in files},
        reused=reused,
        missing=[uri for uri in files if uri not in reused],
        other_tokenizer=sum(
            1 for m in found.values() if m is not None and m.tokenizer_hash != tokenizer_hash
        ),
    )


def shards_for_file(num_shards: int, size: int | None, total: int) -> int:
    """Files per split for one input file's part: its share of `num_shards` by stored size
    (at least 1), so the first run of a corpus writes about `num_shards` files per split."""
    if not size or total <= 0:
        return 1
    return max(1, min(num_shards, round(num_shards * size / total)))
