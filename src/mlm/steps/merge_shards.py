"""Step `merge-shards`: join the partitions that `mlm shard --partition` wrote into one shard
directory (one pod per partition, then this)."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from typing import Any

from mlm.artifacts import SHARD_MANIFEST_FILE, check_replaceable
from mlm.config import MergeShardsConfig


@dataclasses.dataclass
class MergeResult:
    """What `merge_shards` wrote: the directory, its manifest, how many partitions it joined."""

    output_dir: str
    manifest: dict[str, Any]
    parts: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def merge_shards(parts: Sequence[str], output_dir: str, **settings: Any) -> MergeResult:
    """Joins the partitions written by `shard(..., partition=i, partitions=n)` into one shard
    directory (see `mlm.data.shards.merge_shard_parts`).

    Args:
        parts: every partition's directory (local or object store), in any order.
        output_dir: the shard directory to write (local or object store).
        **settings: further `mlm.config.MergeShardsConfig` settings by name (none yet).
    """
    return merge_shards_from_config(
        MergeShardsConfig.create(parts=list(parts), output_dir=output_dir, **settings)
    )


def merge_shards_from_config(config: MergeShardsConfig) -> MergeResult:
    """`merge_shards` with its settings as a `MergeShardsConfig`."""
    from mlm.data.shard_parts import merge_shard_parts

    check_replaceable(config.output_dir, SHARD_MANIFEST_FILE, "merge-shards")
    start = time.perf_counter()
    manifest = merge_shard_parts(config.parts, config.output_dir)
    return MergeResult(
        output_dir=config.output_dir,
        manifest=manifest.to_dict(),
        parts=len(config.parts),
        seconds=round(time.perf_counter() - start, 3),
    )


def run_cli(config: MergeShardsConfig) -> int:
    """Runs `mlm merge-shards` and prints its result as JSON."""
    print(json.dumps(merge_shards_from_config(config).to_dict(), indent=2))
    return 0
