"""The built-in corpus: English prose from the docstrings of the installed Python standard library.

It needs no download and exists wherever Python does, so the pipeline, the CLI and the tests can
run end to end on any machine. Module, class and function docstrings are read with `ast` (nothing
is imported), split into paragraphs, filtered to prose (no doctests, tables or code), de-duplicated
and sorted, then split into train and validation by a hash of each paragraph — the same split rule
`mlm shard` applies, so sharding the whole corpus reproduces the files' split.

A second, labelled set serves the fine-tuning demo: paragraphs labelled with the standard-library
area they document (e.g. `email`, `asyncio`), balanced across classes.
"""

from __future__ import annotations

import ast
import csv
import functools
import hashlib
import io
import os
import re
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

from mlm import storage
from mlm.data.corpus import DEFAULT_VALIDATION_FRACTION, is_validation

# Areas of the standard library used as classes of the labelled set: each has enough prose to give
# a balanced set, and their vocabularies differ (mail headers vs. event loops vs. test cases ...).
LABEL_AREAS: tuple[str, ...] = ("asyncio", "email", "http", "unittest", "xml")
ROWS_PER_LABEL = 80

_MIN_WORDS = 8
_SKIP_DIRS = {
    "test",
    "tests",
    "idlelib",
    "lib2to3",
    "site-packages",
    "dist-packages",
    "__pycache__",
}
_WORD = re.compile(r"[A-Za-z][a-z]+")
_CODE_HINT = re.compile(
    r"(>>>|\.\.\. |::\s*$|^\s*[-=~*]{3,}|\w+\(.*\)\s*->|\{\s*$|^\s*[$%#] )", re.M
)


def stdlib_dir() -> Path:
    """The directory of the running interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def _module_files(root: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        files.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py"))
    return files


def _docstrings(path: Path) -> Iterator[str]:
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, UnicodeDecodeError):
        return  # a few stdlib files are deliberately invalid (test data, templates)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and (
            doc := ast.get_docstring(node, clean=True)
        ):
            yield doc


def _is_prose(paragraph: str) -> bool:
    """True for a paragraph of running English text (not code, a table or an option list)."""
    words = paragraph.split()
    if len(words) < _MIN_WORDS or _CODE_HINT.search(paragraph):
        return False
    wordlike = sum(1 for w in words if _WORD.fullmatch(w.strip(".,;:()'\"!?")))
    return wordlike >= 0.7 * len(words) and paragraph[0].isupper()


def paragraphs(path: Path) -> Iterator[str]:
    """Prose paragraphs of one module's docstrings, each joined onto one line."""
    for doc in _docstrings(path):
        for block in re.split(r"\n\s*\n", doc):
            lines = block.splitlines()
            if any(line.startswith((" ", "\t")) for line in lines):
                continue  # indented blocks are examples, signatures or option tables
            text = " ".join(line.strip() for line in lines)
            if _is_prose(text):
                yield text


def _area(root: Path, path: Path) -> str:
    return path.relative_to(root).parts[0].removesuffix(".py")


@functools.lru_cache(maxsize=2)
def collect(root: Path | None = None) -> tuple[tuple[str, str], ...]:
    """All distinct prose paragraphs as sorted `(area, paragraph)` pairs (cached per process).

    A paragraph found in several modules is kept once, under the first area in sorted order.
    """
    root = root or stdlib_dir()
    seen: dict[str, str] = {}
    for path in _module_files(root):
        area = _area(root, path)
        for text in paragraphs(path):
            seen.setdefault(text, area)
    return tuple(sorted((area, text) for text, area in seen.items()))


def write_default_corpus(
    output_dir: str, *, validation_fraction: float = DEFAULT_VALIDATION_FRACTION
) -> dict[str, str]:
    """Write the default corpus as `train.txt` and `validation.txt`, one paragraph per line.

    Args:
        output_dir: local directory or `gs://` prefix.
        validation_fraction: share of paragraphs (by hash) that go to `validation.txt`.

    Returns:
        `{"train": uri, "validation": uri}`.
    """
    texts = sorted(text for _, text in collect())
    splits: dict[str, list[str]] = {"train": [], "validation": []}
    for text in texts:
        splits["validation" if is_validation(text, validation_fraction) else "train"].append(text)
    storage.makedirs(output_dir)
    paths = {}
    for split, lines in splits.items():
        paths[split] = storage.join(output_dir, f"{split}.txt")
        storage.write_text(paths[split], "".join(line + "\n" for line in lines))
    return paths


def default_corpus_dir() -> str:
    """A cached copy of the default corpus for this interpreter, written on first use.

    Lives under `$MLM_CACHE_DIR` (default `$XDG_CACHE_HOME/mlm` or `~/.cache/mlm`), keyed by the
    Python version and standard-library path, so it is extracted once per installation.
    """
    cache = os.environ.get("MLM_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mlm"
    )
    key = hashlib.sha256(f"{sys.version}|{stdlib_dir()}".encode()).hexdigest()[:12]
    target = os.path.join(cache, f"default-corpus-{key}")
    if not os.path.exists(os.path.join(target, "validation.txt")):
        write_default_corpus(target)  # each file is written atomically; validation.txt last
    return target


def default_labels() -> list[tuple[str, str]]:
    """The labelled set as `(text, label)` rows: `ROWS_PER_LABEL` paragraphs per area.

    The rows of each area are chosen by hash order (deterministic, spread over the area's modules)
    and the result is sorted by hash, so labels are interleaved.
    """
    by_area: dict[str, list[str]] = {area: [] for area in LABEL_AREAS}
    for area, text in collect():
        if area in by_area:
            by_area[area].append(text)

    def key(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    rows = []
    for area, texts in by_area.items():
        rows.extend((text, area) for text in sorted(texts, key=key)[:ROWS_PER_LABEL])
    return sorted(rows, key=lambda row: key(row[0]))


def write_default_labels(path: str) -> str:
    """Write the labelled set as a CSV with header `text,label`; returns `path`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["text", "label"])
    writer.writerows(default_labels())
    storage.write_text(path, buffer.getvalue())
    return path
