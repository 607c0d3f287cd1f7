"""Small real corpora and a tokenizer trained on them, shared by the data tests."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

_WORDS = [
    "the",
    "a",
    "model",
    "reads",
    "text",
    "and",
    "learns",
    "which",
    "word",
    "fits",
    "each",
    "masked",
    "position",
    "in",
    "a",
    "sentence",
    "while",
    "training",
    "on",
    "many",
    "examples",
    "from",
    "books",
    "letters",
    "news",
    "reports",
    "stories",
    "papers",
    "notes",
    "quickly",
    "slowly",
    "carefully",
    "every",
    "token",
    "gets",
    "an",
    "id",
    "from",
    "the",
    "vocabulary",
    "built",
    "by",
    "wordpiece",
    "unbelievable",
    "transformation",
    "tokenization",
    "international",
    "representation",
]


def make_lines(count: int, seed: int = 0, min_words: int = 4, max_words: int = 14) -> list[str]:
    """Deterministic sentences over a small vocabulary (so a ~200-token vocabulary covers them)."""
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        words = rng.choices(_WORDS, k=rng.randint(min_words, max_words))
        lines.append(" ".join(words).capitalize() + ".")
    return lines


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two text files of 150 sentences each, one sentence per line."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "a.txt").write_text("\n".join(make_lines(150, seed=1)) + "\n")
    (root / "b.txt").write_text("\n".join(make_lines(150, seed=2)) + "\n")
    return root


@pytest.fixture(scope="session")
def tokenizer_dir(corpus_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A WordPiece tokenizer (vocabulary ~150) trained on `corpus_dir` by the tokenize step."""
    from mlm.steps.tokenize import tokenize

    output = tmp_path_factory.mktemp("tok") / "tokenizer"
    tokenize(str(corpus_dir), str(output), vocab_size=150, min_frequency=1)
    return output
