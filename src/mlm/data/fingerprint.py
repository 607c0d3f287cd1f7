"""The corpus fingerprint: a digest that changes exactly when a corpus does, read from listings.

The pipeline's first task computes it and passes it to tokenize and shard, whose cache keys then
follow the corpus's content instead of its URI (see docs/pipeline.md).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence

from mlm import storage
from mlm.data import default_corpus
from mlm.data.corpus import resolve_corpus
from mlm.errors import UserInputError


def corpus_fingerprint(corpus: str | Sequence[str] | None) -> str:
    """A digest that changes exactly when the corpus does, without reading it.

    Args:
        corpus: as for `mlm.data.corpus.resolve_corpus`; None or "" is the built-in corpus.

    Returns:
        For files: `storage.fingerprint` of the resolved files (names, sizes, generations /
        ETags / mtimes). For the built-in corpus: a digest of what determines its content (the
        Python version, the standard library's location and the source of the module that
        builds it), prefixed "builtin-".

    Raises:
        UserInputError: an entry of the corpus matches no file.
    """
    if not corpus:
        with open(default_corpus.__file__, "rb") as source:
            builder = hashlib.sha256(source.read()).hexdigest()
        key = f"{sys.version}|{default_corpus.stdlib_dir()}|{builder}"
        return "builtin-" + hashlib.sha256(key.encode()).hexdigest()
    return storage.fingerprint(resolve_corpus(corpus))


def partition_count(corpus: str | Sequence[str] | None, requested: int) -> int:
    """How many partitions a corpus is sharded in: `requested`, at most one per file (a file is
    never split; `mlm.data.corpus.partition_files`)."""
    if requested < 1:
        raise UserInputError(f"shard_partitions={requested}: need at least 1")
    files = (
        resolve_corpus(corpus) if corpus else resolve_corpus(default_corpus.default_corpus_dir())
    )
    return min(requested, len(files))
