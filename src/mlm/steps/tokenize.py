"""Step `tokenize`: train a WordPiece tokenizer on a corpus, or adopt an existing one.

Writes a tokenizer directory (see `mlm.data.tokenizer`): what `AutoTokenizer.from_pretrained`
loads, plus `mlm_tokenizer.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Sequence
from typing import Any

DEFAULT_VOCAB_SIZE = 8000


@dataclasses.dataclass
class TokenizeResult:
    """What `tokenize` wrote: the directory, the tokenizer's facts, and corpus counts.

    `info` is the content of `mlm_tokenizer.json` with `continuation_token_ids` given as a count
    (the full list stays in the file); `corpus` is the `CorpusStats` of the training pass.
    """

    output_dir: str
    info: dict[str, Any]
    trained: bool
    corpus: dict[str, int]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def tokenize(
    corpus: str | Sequence[str] | None,
    output_dir: str,
    *,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    lowercase: bool = True,
    tokenizer: str | None = None,
    layout: str = "lines",
    strict_utf8: bool = False,
    clean: bool = False,
    min_frequency: int = 2,
) -> TokenizeResult:
    """Train a BERT WordPiece tokenizer on `corpus` (or load `tokenizer`) into `output_dir`.

    Args:
        corpus: files, directories, globs, `.gz` or `gs://` URIs; None uses the built-in corpus
            (Python standard-library docstrings). Ignored when `tokenizer` is given.
        output_dir: the tokenizer directory to write (local or `gs://`).
        vocab_size: target vocabulary size, special tokens included.
        lowercase: uncased tokenizer (lowercase, strip accents).
        tokenizer: an existing tokenizer to adopt instead of training: a directory saved by
            `transformers` or a `vocab.txt` (local or `gs://`).
        layout: "lines" or "documents" (see `mlm.data.corpus.read_units`).
        strict_utf8: fail on invalid UTF-8 instead of replacing it.
        clean: strip HTML/wiki markup before training.
        min_frequency: minimum count of a merged WordPiece.

    Returns:
        A `TokenizeResult`.
    """
    from mlm.data.corpus import CorpusStats, read_units
    from mlm.data.default_corpus import default_corpus_dir
    from mlm.data.tokenizer import load_existing_tokenizer, save_tokenizer, train_wordpiece

    start = time.perf_counter()
    stats = CorpusStats()
    if tokenizer is not None:
        loaded = load_existing_tokenizer(tokenizer, lowercase=lowercase)
    else:
        texts = read_units(
            corpus if corpus is not None else default_corpus_dir(),
            layout=layout,
            strict_utf8=strict_utf8,
            clean=clean,
            stats=stats,
            progress="tokenize",
        )
        loaded = train_wordpiece(
            texts, vocab_size=vocab_size, lowercase=lowercase, min_frequency=min_frequency
        )
    info = save_tokenizer(loaded, output_dir)
    return TokenizeResult(
        output_dir=output_dir,
        info=info.to_dict() | {"continuation_token_ids": len(info.continuation_token_ids)},
        trained=tokenizer is None,
        corpus=stats.to_dict(),
        seconds=round(time.perf_counter() - start, 3),
    )


def add_corpus_arguments(parser: argparse.ArgumentParser) -> None:
    """Corpus options shared by `mlm tokenize` and `mlm shard`."""
    parser.add_argument(
        "--corpus",
        nargs="+",
        help="text files, directories, globs, .gz files or gs:// prefixes "
        "(default: the built-in corpus of Python standard-library docstrings)",
    )
    parser.add_argument(
        "--layout",
        choices=("lines", "documents"),
        default="lines",
        help="one sentence per line, or documents separated by blank lines",
    )
    parser.add_argument(
        "--strict-utf8", action="store_true", help="fail on invalid UTF-8 instead of replacing it"
    )
    parser.add_argument("--clean", action="store_true", help="strip HTML/wiki markup first")


def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    add_corpus_arguments(parser)
    parser.add_argument("--output", required=True, help="tokenizer directory to write")
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=DEFAULT_VOCAB_SIZE,
        help=f"vocabulary size, special tokens included (default {DEFAULT_VOCAB_SIZE})",
    )
    parser.add_argument(
        "--cased", action="store_true", help="keep case and accents (default: uncased)"
    )
    parser.add_argument(
        "--tokenizer",
        help="adopt an existing tokenizer (transformers directory or vocab.txt) instead of training",
    )
    parser.add_argument(
        "--min-frequency", type=int, default=2, help="minimum count of a merged WordPiece"
    )


def run_cli(args: argparse.Namespace) -> int:
    result = tokenize(
        args.corpus,
        args.output,
        vocab_size=args.vocab_size,
        lowercase=not args.cased,
        tokenizer=args.tokenizer,
        layout=args.layout,
        strict_utf8=args.strict_utf8,
        clean=args.clean,
        min_frequency=args.min_frequency,
    )
    print(json.dumps(result.to_dict(), indent=2))
    return 0
