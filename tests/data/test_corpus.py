"""Corpus reading (files, dirs, globs, .gz, layouts, bad input), cleaning and augmentation."""

from __future__ import annotations

import gzip
import re

import pytest

from mlm.data.cleaning import augment_text_dataset, clean_text
from mlm.data.corpus import (
    CorpusStats,
    batched,
    file_size,
    is_validation,
    preprocess_wiki_dump,
    read_units,
    resolve_corpus,
)
from mlm.errors import UserInputError
from mlm.progress import byte_unit


def test_resolve_files_directories_globs_and_gz(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("alpha\n")
    (tmp_path / "sub" / "b.txt").write_text("beta\n")
    (tmp_path / ".hidden").write_text("x\n")
    with gzip.open(tmp_path / "c.txt.gz", "wt") as f:
        f.write("gamma line\n")
    everything = resolve_corpus(str(tmp_path))
    assert [p.removeprefix(str(tmp_path)) for p in everything] == [
        "/a.txt",
        "/c.txt.gz",
        "/sub/b.txt",
    ]
    assert resolve_corpus(str(tmp_path / "*.txt")) == [str(tmp_path / "a.txt")]
    assert list(read_units([str(tmp_path / "c.txt.gz"), str(tmp_path / "a.txt")])) == [
        "alpha",
        "gamma line",
    ]


def test_missing_and_empty_corpus(tmp_path):
    with pytest.raises(UserInputError, match=r"nope\.txt.*matches no file"):
        resolve_corpus(str(tmp_path / "nope.txt"))
    (tmp_path / "empty.txt").write_text("\n\n  \n")
    with pytest.raises(UserInputError, match=r"empty\.txt: no text found"):
        list(read_units(str(tmp_path / "empty.txt")))
    with pytest.raises(UserInputError, match="matches no file"):
        resolve_corpus(str(tmp_path / "*.md"))


def test_layouts_lines_and_documents(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("First doc line one.\nline two.\n\n\nSecond doc.\n")
    assert list(read_units(str(path))) == ["First doc line one.", "line two.", "Second doc."]
    assert list(read_units(str(path), layout="documents")) == [
        "First doc line one.\nline two.",
        "Second doc.",
    ]
    with pytest.raises(UserInputError, match="layout"):
        list(read_units(str(path), layout="pages"))


def test_invalid_utf8_is_replaced_and_counted_or_refused(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("good line\ncaf\xe9 au lait\n".encode("latin-1"))
    stats = CorpusStats()
    units = list(read_units(str(path), stats=stats))
    assert units == ["good line", "caf\ufffd au lait"]
    assert (stats.invalid_utf8_lines, stats.lines, stats.units) == (1, 2, 2)
    with pytest.raises(UserInputError, match=r"latin1\.txt: line 2 is not valid UTF-8"):
        list(read_units(str(path), strict_utf8=True))


def test_binary_file_is_refused(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"text\n\x00\x01\x02\x00binary\n")
    with pytest.raises(UserInputError, match=r"model\.bin: line 2 contains NUL bytes"):
        list(read_units(str(path)))


def test_word_filter_and_no_line_long_enough(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("one two\nthree four five six\nseven\n")
    stats = CorpusStats()
    assert list(read_units(str(path), min_words=3, stats=stats)) == ["three four five six"]
    assert stats.filtered_units == 2
    with pytest.raises(UserInputError, match="no line has between 10 and"):
        list(read_units(str(path), min_words=10))


def test_progress_counts_stored_bytes_of_plain_and_gzip_files(tmp_path, capsys):
    lines = [f"sentence number {i} of a corpus read with progress" for i in range(2000)]
    (tmp_path / "a.txt").write_text("\n".join(lines[:1000]) + "\n")
    with gzip.open(tmp_path / "b.txt.gz", "wt") as f:
        f.write("\n".join(lines[1000:]) + "\n")
    stored = (tmp_path / "a.txt").stat().st_size + (tmp_path / "b.txt.gz").stat().st_size
    assert stored == sum(map(file_size, resolve_corpus(str(tmp_path))))
    assert list(read_units(str(tmp_path), progress="test")) == lines
    printed = capsys.readouterr().err.splitlines()
    unit, scale = byte_unit(stored)
    shown = [int(re.fullmatch(rf"test: read (\d+)/(\d+) {unit} \(\d+%\) \| eta \S+", line)[1])
             for line in printed]  # fmt: skip
    # One line per tenth (the small compressed file covers several), ending at the total.
    assert shown == sorted(shown) and 5 <= len(shown) <= 10
    assert shown[-1] == round(stored / scale) and printed[-1].endswith("(100%) | eta 0:00:00")
    list(read_units(str(tmp_path)))
    assert capsys.readouterr().err == ""  # no progress unless asked for


def test_validation_split_is_stable_and_proportional():
    texts = [f"sentence number {i}" for i in range(4000)]
    chosen = [t for t in texts if is_validation(t, 0.1)]
    assert 320 < len(chosen) < 480
    assert chosen == [t for t in texts if is_validation(t, 0.1)]
    assert not any(is_validation(t, 0.0) for t in texts)
    assert list(batched(range(5), 2)) == [[0, 1], [2, 3], [4]]


def test_clean_text_removes_markup():
    raw = "<p>The '''[[Fox (animal)|fox]]''' {{cite web}} jumps<ref>x</ref> over &nbsp; dogs.</p>"
    assert clean_text(raw) == "The fox jumps over dogs."
    assert clean_text("== History ==") == "History"


def test_preprocess_wiki_dump_filters_by_words(tmp_path):
    source = tmp_path / "dump.xml"
    source.write_text(
        "<page><title>X</title>\n"
        "<text>The quick brown fox jumps over the lazy dog today.</text>\n"
        "<b>too short</b>\n"
    )
    target = tmp_path / "out" / "clean.txt"
    stats = preprocess_wiki_dump(str(source), str(target), min_length=5, max_length=20)
    assert target.read_text() == "The quick brown fox jumps over the lazy dog today.\n"
    assert (stats.units, stats.filtered_units) == (1, 2)


def test_augment_text_dataset_drops_words_deterministically():
    import tensorflow as tf

    texts = [" ".join(f"w{i}_{j}" for j in range(20)) for i in range(50)]
    dataset = tf.data.Dataset.from_tensor_slices(texts)

    def run(**kwargs):
        return [t.decode() for t in augment_text_dataset(dataset, **kwargs).as_numpy_iterator()]

    assert run(augmentation_prob=0.0) == texts
    first = run(augmentation_prob=1.0, word_dropout=0.5, seed=3)
    assert first == run(augmentation_prob=1.0, word_dropout=0.5, seed=3)
    kept = [len(t.split()) for t in first]
    assert 0.35 < sum(kept) / (20 * 50) < 0.65
    for original, augmented in zip(texts, first):  # words keep their order
        words = original.split()
        positions = [words.index(w) for w in augmented.split()]
        assert positions == sorted(positions)
    some = run(augmentation_prob=0.5, word_dropout=0.5, seed=1)
    unchanged = sum(a == b for a, b in zip(some, texts))
    assert 10 < unchanged < 40
    with pytest.raises(UserInputError, match="augmentation_prob"):
        augment_text_dataset(dataset, augmentation_prob=1.5)


def test_a_corpus_on_one_huge_line_is_refused_before_tokenizing(tmp_path):
    from mlm.data.corpus import MAX_UNIT_CHARACTERS, read_units

    path = tmp_path / "one-line.txt"
    path.write_text("word " * (MAX_UNIT_CHARACTERS // 5 + 1) + "\n")
    with pytest.raises(UserInputError, match=rf"corpus {path}: a line of 4\.0 million characters"):
        list(read_units(str(path)))
