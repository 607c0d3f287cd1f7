"""Partitions of a shard directory: written apart (a process or a pod each), joined into one.

`mlm shard --partition P --partitions N` writes partition P of the corpus's files
(`mlm.data.corpus.partition_files`) with `write_shards(part=...)`: its files are numbered after
the earlier partitions' (`train-00008-of-00024.tfrecord` ...) and its manifest says which
partition it is. `merge_shard_parts` checks that it has every partition of one corpus, written
with the same settings, and writes one shard directory whose manifest sums theirs, its files
numbered again across the partitions (`join_manifests`, which also joins the per-file parts of
`mlm.data.shard_cache`; files holding no example are left out). Since
`write_shards` packs within each input file and splits by content hash, the totals (examples,
tokens per split) are the same for any number of partitions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import posixpath
import shutil
from collections.abc import Sequence

from mlm import storage
from mlm.artifacts import SHARD_MANIFEST_FILE, check_replaceable
from mlm.data.shards import (
    ShardManifest,
    SplitInfo,
    check_splits,
    file_crc32c,
    read_manifest,
    shard_file_name,
)
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
    return join_manifests(_partitions_in_order(parts))[0]


def _partitions_in_order(parts: Sequence[ShardManifest]) -> list[ShardManifest]:
    """`parts` ordered by partition number, checked to be every partition of one corpus once."""
    if not parts:
        raise UserInputError("merge-shards: no partitions given; pass the partitions' directories")
    for manifest in parts:
        if manifest.part is None:
            raise UserInputError(
                f"merge-shards: {manifest.shard_dir} is a whole shard directory, not a partition "
                "(written by `mlm shard --partition`); use it as it is"
            )
    first = parts[0]
    _check_same_settings(parts)
    for manifest in parts[1:]:
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
    return [by_number[number] for number in range(1, count + 1)]


def _check_same_settings(parts: Sequence[ShardManifest]) -> None:
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


# A file of a joined directory: (where it is now, its name in the joined directory, the
# manifest that records it).
Placement = tuple[str, str, ShardManifest]


def join_manifests(
    ordered: Sequence[ShardManifest], part: dict | None = None
) -> tuple[ShardManifest, list[Placement]]:
    """One directory's manifest over the files of `ordered` (parts written with the same
    settings), and where each file goes.

    The files are numbered again across the parts, in their order (`train-00000-of-00012` ...);
    files that a manifest records as holding no example are left out. The counts are summed.
    `part`: the joined directory is itself a partition (empty splits allowed).
    """
    _check_same_settings(ordered)
    first = ordered[0]
    splits, file_info, placements = {}, {}, []
    for split in sorted({split for manifest in ordered for split in manifest.splits}):
        kept = [
            (source, name, manifest)
            for manifest in ordered
            if split in manifest.splits
            for source, name in zip(manifest.files(split), manifest.splits[split].files)
            if manifest.file_info.get(name, {}).get("examples") != 0
        ]
        names = [
            shard_file_name(split, index, len(kept), first.compression)
            for index in range(len(kept))
        ]
        for (source, name, manifest), new_name in zip(kept, names):
            placements.append((source, new_name, manifest))
            if name in manifest.file_info:
                file_info[new_name] = manifest.file_info[name]
        splits[split] = SplitInfo(
            files=names,
            examples=sum(m.splits[split].examples for m in ordered if split in m.splits),
            tokens=sum(m.splits[split].tokens for m in ordered if split in m.splits),
        )
    joined = dataclasses.replace(first, splits=splits, file_info=file_info, part=part, shard_dir="")
    if part is None:
        check_splits(joined, validation_fraction=0)
    return joined, placements


def merge_shard_parts(
    part_dirs: Sequence[str], output_dir: str, *, move: bool = False
) -> ShardManifest:
    """Joins the partitions written by `write_shards(part=...)` into one shard directory.

    The parts' files are numbered again across the partitions in partition order and checked
    against the part's sizes and CRC32Cs; the manifest sums the parts' counts and keeps those.
    Local files are hard-linked (`move`: renamed, and not checksummed again) into place where
    the file system allows, copied otherwise.

    Args:
        part_dirs: the partitions' directories (local or object store), in any order.
        output_dir: the shard directory to write; replaced when it is an earlier shard directory.
        move: the parts are local scratch that may be emptied (renames instead of links).

    Returns:
        The manifest written.
    """
    parts = [read_manifest(part_dir, allow_part=True) for part_dir in part_dirs]
    merged, placements = join_manifests(_partitions_in_order(parts))
    return write_joined(merged, placements, output_dir, move=move)


def write_joined(
    joined: ShardManifest, placements: Sequence[Placement], output_dir: str, *, move: bool = False
) -> ShardManifest:
    """Writes the directory `join_manifests` described at `output_dir` (atomically, manifest
    last); see `merge_shard_parts` for `move`."""
    check_replaceable(output_dir, SHARD_MANIFEST_FILE, "merge-shards")
    with storage.atomic_directory(output_dir, last=[SHARD_MANIFEST_FILE]) as staging:
        for source, name, manifest in placements:
            _place(source, os.path.join(staging, name), manifest, move)
        joined.shard_dir = output_dir
        storage.write_json(os.path.join(staging, SHARD_MANIFEST_FILE), joined.to_dict())
    return joined


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
    recorded = manifest.file_info.get(posixpath.basename(source))
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
