"""Step `tokenize`: train a WordPiece tokenizer on a corpus, or adopt an existing one.

Writes a tokenizer directory (see `mlm.data.tokenizer`): what `AutoTokenizer.from_pretrained`
loads, plus `mlm_tokenizer.json`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from mlm.artifacts import TOKENIZER_INFO_FILE, check_replaceable
from mlm.config import TokenizeConfig

# Where `cache_dir` keeps the tokenizer that later runs adopt.
CACHED_TOKENIZER_DIR = "tokenizer"


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
    # The share of the corpus's units the vocabulary was trained on (1: all; see sample_bytes).
    sample_fraction: float = 1.0
    # The tokenizer adopted from `cache_dir` (None: trained or given) / saved there.
    cached_from: str | None = None
    cached_to: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def tokenize(
    corpus: str | Sequence[str] | None, output_dir: str, **settings: Any
) -> TokenizeResult:
    """Train a BERT WordPiece tokenizer on `corpus` (or adopt `tokenizer`) into `output_dir`.

    Args:
        corpus: files, directories, globs, `.gz` or `gs://` URIs; None uses the built-in corpus
            (Python standard-library docstrings). Ignored when `tokenizer` is given.
        output_dir: the tokenizer directory to write (local or `gs://`).
        **settings: `mlm.config.TokenizeConfig` settings by name, e.g. `vocab_size=8000`,
            `lowercase=False`, `tokenizer="path/vocab.txt"` (adopt it instead of training).

    Returns:
        A `TokenizeResult`.
    """
    return tokenize_from_config(
        TokenizeConfig.create(corpus=corpus, output_dir=output_dir, **settings)
    )


def tokenize_from_config(config: TokenizeConfig) -> TokenizeResult:
    """`tokenize` with its settings as a `TokenizeConfig`."""
    from mlm import storage
    from mlm.data.corpus import CorpusStats, corpus_bytes, in_sample, read_units
    from mlm.data.default_corpus import default_corpus_dir
    from mlm.data.tokenizer import (
        check_tokenizer_dir,
        load_existing_tokenizer,
        load_tokenizer,
        save_tokenizer,
        train_wordpiece,
    )

    check_replaceable(config.output_dir, TOKENIZER_INFO_FILE, "tokenizer")
    start = time.perf_counter()
    stats = CorpusStats()
    fraction = 1.0
    cached = (
        storage.join(config.cache_dir, CACHED_TOKENIZER_DIR)
        if config.cache_dir and config.tokenizer is None
        else None
    )
    keep = (
        cached is not None
        and not config.retrain
        and storage.exists(storage.join(cached, TOKENIZER_INFO_FILE))
    )
    if config.tokenizer is not None:
        loaded = load_existing_tokenizer(config.tokenizer, lowercase=config.lowercase)
    elif keep:
        check_tokenizer_dir(cached)
        loaded = load_tokenizer(cached)
        print(f"tokenize: kept the tokenizer cached in {cached} (--retrain: train a new one)",
              file=sys.stderr)  # fmt: skip
    else:
        corpus = config.corpus if config.corpus is not None else default_corpus_dir()
        if config.sample_bytes:
            fraction = min(1.0, config.sample_bytes / max(1, corpus_bytes(corpus)))
        texts = read_units(
            corpus,
            layout=config.layout,
            strict_utf8=config.strict_utf8,
            clean=config.clean,
            stats=stats,
            progress="tokenize",
        )
        loaded = train_wordpiece(
            (text for text in texts if in_sample(text, fraction)),
            vocab_size=config.vocab_size,
            lowercase=config.lowercase,
            min_frequency=config.min_frequency,
        )
    info = save_tokenizer(loaded, config.output_dir)
    if cached is not None and not keep:
        save_tokenizer(loaded, cached)
    return TokenizeResult(
        output_dir=config.output_dir,
        info=info.to_dict() | {"continuation_token_ids": len(info.continuation_token_ids)},
        trained=config.tokenizer is None and not keep,
        corpus=stats.to_dict(),
        seconds=round(time.perf_counter() - start, 3),
        sample_fraction=round(fraction, 6),
        cached_from=cached if keep else None,
        cached_to=cached if cached is not None and not keep else None,
    )


def run_cli(config: TokenizeConfig) -> int:
    """Runs `mlm tokenize` and prints its result as JSON."""
    print(json.dumps(tokenize_from_config(config).to_dict(), indent=2))
    return 0
