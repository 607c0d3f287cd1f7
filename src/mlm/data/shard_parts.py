"""Partitions of a shard directory: written apart (a process or a pod each), joined into one.

`mlm shard --partition P --partitions N` writes partition P of the corpus's files
(`mlm.data.corpus.partition_files`) with `write_shards(part=...)`: its files are numbered after
the earlier partitions' (`train-00008-of-00024.tfrecord` ...) and its manifest says which
partition it is. `merge_shard_parts` checks that it has every partition of one corpus, written
with the same settings, and writes one shard directory whose manifest sums theirs. Since
`write_shards` packs within each input file and splits by content hash, the totals (examples,
tokens per split) are the same for any number of partitions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from collections.abc import Sequence

from mlm import storage
from mlm.artifacts import SHARD_MANIFEST_FILE, check_replaceable
from mlm.data.shards import ShardManifest, SplitInfo, check_splits, file_crc32c, read_manifest
from mlm.errors import UserInputError


def files_digest(files: Sequence[str]) -> str:
    """A digest of a corpus's resolved file list: the partitions of one corpus share it."""
    return hashlib.sha256("\n".join(files).encode("utf-8")).hexdigest()[:16]


def merge_manifests(parts: Sequence[ShardManifest]) -> ShardManifest:
    """The manifest of the shard directory that joins partitions `parts` (any order).

    Raises:
        UserInputError: the parts are not all the partitions of one corpus written with the same
            settings (a partition missing or repeated, another corpus's file list, another
            tokenizer, sequence length, compression or packing).
    """
    if not parts:
        raise UserInputError("merge-shards: no partitions given; pass the partitions' directories")
    for manifest in parts:
        if manifest.part is None:
            raise UserInputError(
                f"merge-shards: {manifest.shard_dir} is a whole shard directory, not a partition "
                "(written by `mlm shard --partition`); use it as it is"
            )
    first = parts[0]
    for manifest in parts[1:]:
        for field in ("seq_length", "tokenizer_hash", "compression", "line_by_line"):
            if getattr(manifest, field) != getattr(first, field):
                raise UserInputError(
                    f"merge-shards: {manifest.shard_dir} has {field} "
                    f"{getattr(manifest, field)!r} but {first.shard_dir} has "
                    f"{getattr(first, field)!r}; re-run `mlm shard` for every partition with "
                    "the same settings"
                )
        if manifest.part["files"] != first.part["files"] or set(manifest.splits) != set(
            first.splits
        ):
            raise UserInputError(
                f"merge-shards: {manifest.shard_dir} and {first.shard_dir} are partitions of "
                "different corpora or validation settings; pass the partitions of one run"
            )
    count = first.part["count"]
    by_number = {manifest.part["number"]: manifest for manifest in parts}
    if (
        len(by_number) != len(parts)
        or sorted(by_number) != list(range(1, count + 1))
        or any(manifest.part["count"] != count for manifest in parts)
    ):
        missing = sorted(set(range(1, count + 1)) - set(by_number))
        raise UserInputError(
            f"merge-shards: need each of the {count} partitions once, got partitions "
            f"{sorted(manifest.part['number'] for manifest in parts)}"
            + (f" (missing {missing})" if missing else "")
            + "; pass every partition's directory once"
        )
    ordered = [by_number[number] for number in range(1, count + 1)]
    splits = {
        split: SplitInfo(
            files=[name for manifest in ordered for name in manifest.splits[split].files],
            examples=sum(manifest.splits[split].examples for manifest in ordered),
            tokens=sum(manifest.splits[split].tokens for manifest in ordered),
        )
        for split in first.splits
    }
    merged = dataclasses.replace(
        first,
        splits=splits,
        file_info={name: info for manifest in ordered for name, info in manifest.file_info.items()},
        part=None,
        shard_dir="",
    )
    check_splits(merged, validation_fraction=0)
    return merged


def merge_shard_parts(
    part_dirs: Sequence[str], output_dir: str, *, move: bool = False
) -> ShardManifest:
    """Joins the partitions written by `write_shards(part=...)` into one shard directory.

    Each part's files keep their names (they are already numbered across the partitions) and are
    checked against the part's sizes and CRC32Cs; the manifest sums the parts' counts and keeps
    those. Local files are hard-linked (`move`: renamed, and not checksummed again) into place
    where the file system allows, copied otherwise.

    Args:
        part_dirs: the partitions' directories (local or object store), in any order.
        output_dir: the shard directory to write; replaced when it is an earlier shard directory.
        move: the parts are local scratch that may be emptied (renames instead of links).

    Returns:
        The manifest written.
    """
    parts = [read_manifest(part_dir, allow_part=True) for part_dir in part_dirs]
    merged = merge_manifests(parts)
    check_replaceable(output_dir, SHARD_MANIFEST_FILE, "merge-shards")
    with storage.atomic_directory(output_dir, last=[SHARD_MANIFEST_FILE]) as staging:
        for manifest in parts:
            for split in manifest.splits:
                for source, name in zip(manifest.files(split), manifest.splits[split].files):
                    _place(source, os.path.join(staging, name), manifest, move)
        merged.shard_dir = output_dir
        storage.write_json(os.path.join(staging, SHARD_MANIFEST_FILE), merged.to_dict())
    return merged


def _place(source: str, destination: str, manifest: ShardManifest, move: bool) -> None:
    """Puts one part file at `destination` and checks its size against the part's manifest."""
    if storage.is_remote(source):
        with storage.open_read(source, "rb") as reader, open(destination, "wb") as writer:
            shutil.copyfileobj(reader, writer, 1 << 20)
    elif move:
        os.replace(source, destination)
    else:
        try:
            os.link(source, destination)
        except OSError:  # another file system, or one without hard links
            shutil.copyfile(source, destination)
    recorded = manifest.file_info.get(os.path.basename(destination))
    if recorded is None:
        return
    size = os.path.getsize(destination)
    if size != recorded["bytes"]:
        problem = (
            f"is {size} bytes but its partition's {SHARD_MANIFEST_FILE} says {recorded['bytes']}"
        )
    elif not move and file_crc32c(destination) != recorded["crc32c"]:
        # Files this process just wrote (`move`) are not read again; others may have changed.
        problem = f"does not have the CRC32C its partition's {SHARD_MANIFEST_FILE} records"
    else:
        return
    raise UserInputError(f"{source} {problem}: the partition is damaged; re-run `mlm shard` for it")
