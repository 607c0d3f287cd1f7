"""Labelled data for fine-tuning: readers for CSV/TSV/JSONL and CoNLL/IOB files, and splits.

Sequence tasks read a CSV or TSV file with a header naming the text and label columns, or JSONL
(one `{"text": ..., "label": ...}` object per line). Token tasks read CoNLL/IOB: one token per
line with its tag in the last column, blank lines between sentences. Files may be local or in an object store.
Every problem with a file raises `UserInputError` naming the file, the line and the fix.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence

import numpy as np

from mlm import storage
from mlm.errors import UserInputError

_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
_DELIMITERS = {".csv": ",", ".tsv": "\t"}


def read_labelled_texts(
    uri: str, *, text_column: str = "text", label_column: str = "label"
) -> tuple[list[str], list[str]]:
    """Reads `(texts, labels)` from a CSV, TSV or JSONL file (local or `gs://`).

    Raises:
        UserInputError: unknown format, bytes that are not UTF-8, missing columns, empty texts or
            labels.
    """
    suffix = os.path.splitext(uri.lower())[1]
    if suffix not in _DELIMITERS and suffix not in _JSONL_SUFFIXES:
        raise UserInputError(
            f"labelled data {uri}: unknown format {suffix or '(no suffix)'}; use .csv or .tsv "
            f"(header with {text_column},{label_column}) or .jsonl"
        )
    if not storage.exists(uri):
        raise UserInputError(f"labelled data {uri} does not exist; check the path")
    content = read_utf8(uri, "labelled data")
    if suffix in _DELIMITERS:
        reader = csv.DictReader(io.StringIO(content), delimiter=_DELIMITERS[suffix])
        rows = list(reader)
        header = reader.fieldnames or []
        missing = [c for c in (text_column, label_column) if c not in header]
        if missing:
            raise UserInputError(
                f"labelled data {uri}: the header row {header} lacks the column(s) {missing}; "
                "name the columns with --text-column and --label-column"
            )
        if not rows:
            raise UserInputError(
                f"labelled data {uri}: the header is there but no rows follow it; add labelled rows"
            )
        line_numbers = range(2, len(rows) + 2)
    else:
        rows, line_numbers = [], []
        for number, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserInputError(
                    f"labelled data {uri}, line {number}: not a JSON object ({error.msg})"
                ) from None
            if not isinstance(row, dict) or text_column not in row or label_column not in row:
                raise UserInputError(
                    f"labelled data {uri}, line {number}: expected an object with "
                    f"{text_column!r} and {label_column!r}"
                )
            rows.append(row)
            line_numbers.append(number)
    texts, labels = [], []
    for number, row in zip(line_numbers, rows):
        text = str(row[text_column] or "").strip()
        label = str(row[label_column] if row[label_column] is not None else "").strip()
        if not text or not label:
            raise UserInputError(
                f"labelled data {uri}, line {number}: empty {text_column if not text else label_column}"
            )
        texts.append(text)
        labels.append(label)
    if not texts:
        raise UserInputError(f"labelled data {uri} has no rows")
    return texts, labels


def read_conll(uri: str) -> tuple[list[list[str]], list[list[str]]]:
    """Reads `(sentences, tags)` from a CoNLL/IOB file: `token ... tag` per line, blank lines
    between sentences, `-DOCSTART-` lines ignored.

    Raises:
        UserInputError: bytes that are not UTF-8, a line without a tag, or no sentences.
    """
    if not storage.exists(uri):
        raise UserInputError(f"labelled data {uri} does not exist; check the path")
    sentences, tags = [], []
    words: list[str] = []
    word_tags: list[str] = []
    for number, line in enumerate([*read_utf8(uri, "CoNLL file").splitlines(), ""], start=1):
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if words:
                sentences.append(words)
                tags.append(word_tags)
                words, word_tags = [], []
            continue
        if len(fields) < 2:
            raise UserInputError(
                f"CoNLL file {uri}, line {number}: {line.strip()!r} has no tag; write "
                "`token tag` (tag in the last column, e.g. B-PER, I-PER, O)"
            )
        words.append(fields[0])
        word_tags.append(fields[-1])
    if not sentences:
        raise UserInputError(f"CoNLL file {uri} has no sentences")
    return sentences, tags


def read_utf8(uri: str, what: str) -> str:
    """The content of a UTF-8 text file; other bytes raise `UserInputError` naming the file, the
    line and the byte offset of the first bad byte."""
    data = storage.read_bytes(uri)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise UserInputError(
            f"{what} {uri}, line {line} (byte offset {error.start}): not UTF-8 text "
            f"({error.reason}); re-encode the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from error


def stratified_split(
    labels: Sequence[str], validation_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split: each label keeps `validation_fraction` of its rows (at
    least one) for validation. Returns sorted (train indices, validation indices)."""
    _check_fraction(validation_fraction)
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    train, validation = [], []
    for label in sorted(set(labels.tolist())):
        rows = np.flatnonzero(labels == label)
        if len(rows) < 2:
            raise UserInputError(
                f"label {label!r} has only one example, so none can be held out for validation; "
                "add examples or pass a separate validation file"
            )
        rows = rng.permutation(rows)
        count = min(len(rows) - 1, max(1, round(validation_fraction * len(rows))))
        validation.extend(rows[:count])
        train.extend(rows[count:])
    return np.sort(train), np.sort(validation)


def random_split(
    count: int, validation_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic random split of `count` rows (at least one on each side)."""
    _check_fraction(validation_fraction)
    if count < 2:
        raise UserInputError("need at least 2 examples to hold one out for validation")
    rows = np.random.default_rng(seed).permutation(count)
    held_out = min(count - 1, max(1, round(validation_fraction * count)))
    return np.sort(rows[held_out:]), np.sort(rows[:held_out])


def _check_fraction(fraction: float) -> None:
    if not 0 < fraction < 1:
        raise UserInputError(f"validation_fraction={fraction}: need 0 < value < 1")
