"""Step `shard`: tokenize a corpus with a tokenizer directory into packed TFRecord shards."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from typing import Any

from mlm.artifacts import SHARD_MANIFEST_FILE, check_replaceable
from mlm.config import ShardConfig


@dataclasses.dataclass
class ShardResult:
    """What `shard` wrote: the directory, its manifest, corpus counts and throughput."""

    output_dir: str
    manifest: dict[str, Any]
    corpus: dict[str, int]
    seconds: float
    megabytes_per_second: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def shard(
    corpus: str | Sequence[str] | None, tokenizer_dir: str, output_dir: str, **settings: Any
) -> ShardResult:
    """Write a shard directory for `corpus` (see `mlm.data.shards`).

    Args:
        corpus: files, directories, globs, `.gz` or `gs://` URIs; None uses the built-in corpus.
        tokenizer_dir: a directory written by `tokenize` (local or `gs://`).
        output_dir: the shard directory (local or `gs://`).
        **settings: `mlm.config.ShardConfig` settings by name, e.g. `max_seq_length=128`,
            `num_shards=8`, `validation_fraction=0.05`, `compression="gzip"`.

    Returns:
        A `ShardResult`.
    """
    return shard_from_config(
        ShardConfig.create(
            corpus=corpus, tokenizer_dir=tokenizer_dir, output_dir=output_dir, **settings
        )
    )


def shard_from_config(config: ShardConfig) -> ShardResult:
    """`shard` with its settings as a `ShardConfig`."""
    from mlm.data.corpus import CorpusStats, read_units
    from mlm.data.default_corpus import default_corpus_dir
    from mlm.data.shards import write_shards
    from mlm.data.tokenizer import check_tokenizer_dir, load_backend_tokenizer

    check_replaceable(config.output_dir, SHARD_MANIFEST_FILE, "shard")
    start = time.perf_counter()
    info = check_tokenizer_dir(config.tokenizer_dir)
    tokenizer = load_backend_tokenizer(config.tokenizer_dir)
    stats = CorpusStats()
    texts = read_units(
        config.corpus if config.corpus is not None else default_corpus_dir(),
        layout=config.layout,
        strict_utf8=config.strict_utf8,
        clean=config.clean,
        min_words=config.min_words,
        max_words=config.max_words,
        stats=stats,
        progress="shard",
    )
    manifest = write_shards(
        texts,
        tokenizer,
        info,
        config.output_dir,
        max_seq_length=config.max_seq_length,
        num_shards=config.num_shards,
        validation_fraction=config.validation_fraction,
        line_by_line=config.line_by_line,
        compression=config.compression,
    )
    seconds = time.perf_counter() - start
    return ShardResult(
        output_dir=config.output_dir,
        manifest=manifest.to_dict(),
        corpus=stats.to_dict(),
        seconds=round(seconds, 3),
        megabytes_per_second=round(stats.bytes / 1e6 / seconds, 3),
    )


def run_cli(config: ShardConfig) -> int:
    """Runs `mlm shard` and prints its result as JSON."""
    print(json.dumps(shard_from_config(config).to_dict(), indent=2))
    return 0
