"""Step `shard`: tokenize a corpus with a tokenizer directory into packed TFRecord shards."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Sequence
from typing import Any

from mlm.steps.tokenize import add_corpus_arguments


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
    corpus: str | Sequence[str] | None,
    tokenizer_dir: str,
    output_dir: str,
    *,
    max_seq_length: int = 128,
    num_shards: int = 8,
    validation_fraction: float = 0.05,
    line_by_line: bool = False,
    compression: str | None = None,
    layout: str = "lines",
    strict_utf8: bool = False,
    clean: bool = False,
    min_words: int = 1,
    max_words: int | None = None,
) -> ShardResult:
    """Write a shard directory for `corpus` (see `mlm.data.shards`).

    Args:
        corpus: files, directories, globs, `.gz` or `gs://` URIs; None uses the built-in corpus.
        tokenizer_dir: a directory written by `tokenize` (local or `gs://`).
        output_dir: the shard directory (local or `gs://`).
        max_seq_length: tokens per example, `[CLS]`/`[SEP]` included.
        num_shards: TFRecord files per split.
        validation_fraction: share of lines/documents (by content hash) held out.
        line_by_line: one padded example per line instead of packing.
        compression: None or "gzip".
        layout: "lines" or "documents".
        strict_utf8: fail on invalid UTF-8 instead of replacing it.
        clean: strip HTML/wiki markup first.
        min_words: skip lines/documents with fewer words.
        max_words: skip lines/documents with more words.

    Returns:
        A `ShardResult`.
    """
    from mlm.data.corpus import CorpusStats, read_units
    from mlm.data.default_corpus import default_corpus_dir
    from mlm.data.shards import write_shards
    from mlm.data.tokenizer import load_backend_tokenizer, read_tokenizer_info

    start = time.perf_counter()
    info = read_tokenizer_info(tokenizer_dir)
    tokenizer = load_backend_tokenizer(tokenizer_dir)
    stats = CorpusStats()
    texts = read_units(
        corpus if corpus is not None else default_corpus_dir(),
        layout=layout,
        strict_utf8=strict_utf8,
        clean=clean,
        min_words=min_words,
        max_words=max_words,
        stats=stats,
        progress="shard",
    )
    manifest = write_shards(
        texts,
        tokenizer,
        info,
        output_dir,
        max_seq_length=max_seq_length,
        num_shards=num_shards,
        validation_fraction=validation_fraction,
        line_by_line=line_by_line,
        compression=compression,
    )
    seconds = time.perf_counter() - start
    return ShardResult(
        output_dir=output_dir,
        manifest=manifest.to_dict(),
        corpus=stats.to_dict(),
        seconds=round(seconds, 3),
        megabytes_per_second=round(stats.bytes / 1e6 / seconds, 3),
    )


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    add_corpus_arguments(parser)
    parser.add_argument("--tokenizer", required=True, help="tokenizer directory (mlm tokenize)")
    parser.add_argument("--output", required=True, help="shard directory to write")
    parser.add_argument(
        "--max-seq-length", type=int, default=128, help="tokens per example with [CLS]/[SEP]"
    )
    parser.add_argument(
        "--num-shards", type=int, default=8, help="TFRecord files per split (default 8)"
    )
    parser.add_argument(
        "--validation-fraction",
        type=float,
        default=0.05,
        help="share of lines/documents held out, chosen by content hash (0: no validation)",
    )
    parser.add_argument(
        "--line-by-line", action="store_true", help="one padded example per line (no packing)"
    )
    parser.add_argument("--compression", choices=("gzip",), default=None, help="gzip the shards")
    parser.add_argument(
        "--min-words", type=int, default=1, help="skip lines/documents with fewer words"
    )
    parser.add_argument(
        "--max-words", type=int, default=None, help="skip lines/documents with more words"
    )


def run_cli(args: argparse.Namespace) -> int:
    result = shard(
        args.corpus,
        args.tokenizer,
        args.output,
        max_seq_length=args.max_seq_length,
        num_shards=args.num_shards,
        validation_fraction=args.validation_fraction,
        line_by_line=args.line_by_line,
        compression=args.compression,
        layout=args.layout,
        strict_utf8=args.strict_utf8,
        clean=args.clean,
        min_words=args.min_words,
        max_words=args.max_words,
    )
    print(json.dumps(result.to_dict(), indent=2))
    return 0
