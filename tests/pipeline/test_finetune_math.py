"""Fine-tune helpers without a model: label file readers, splits and the numpy metrics."""

import json

import numpy as np
import pytest

from mlm.data.labelled import (
    random_split,
    read_conll,
    read_labelled_texts,
    stratified_split,
)
from mlm.errors import UserInputError
from mlm.metrics import (
    classification_metrics,
    confusion_matrix,
    entity_metrics,
    entity_spans,
)


def test_confusion_matrix_and_metrics_by_hand():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 2, 2]
    np.testing.assert_array_equal(
        confusion_matrix(y_true, y_pred, 3), [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    )
    metrics = classification_metrics(y_true, y_pred, 3)
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    # precision: 2/2, 1/2, 1/2; recall: 2/3, 1/2, 1/1
    f1 = [2 * 1 * (2 / 3) / (1 + 2 / 3), 0.5, 2 * 0.5 / 1.5]
    assert metrics["f1"] == pytest.approx(f1)
    assert metrics["macro_f1"] == pytest.approx(np.mean(f1))
    assert metrics["support"] == [3, 2, 1]


def test_macro_f1_skips_classes_absent_from_truth_and_predictions():
    metrics = classification_metrics([0, 1, 0], [0, 1, 1], 4)
    # classes 2 and 3 never occur: averaged over classes 0 and 1 only.
    assert metrics["macro_f1"] == pytest.approx(np.mean([2 / 3, 2 / 3]))
    assert metrics["confusion_matrix"][2] == [0, 0, 0, 0]


def test_entity_spans_iob2_iob1_and_type_changes():
    assert entity_spans(["B-PER", "I-PER", "O", "B-LOC"]) == {("PER", 0, 2), ("LOC", 3, 4)}
    # IOB1: an entity may start with I-; a B- splits two adjacent entities of one type.
    assert entity_spans(["I-ORG", "I-ORG", "B-ORG", "O"]) == {("ORG", 0, 2), ("ORG", 2, 3)}
    assert entity_spans(["B-PER", "I-LOC"]) == {("PER", 0, 1), ("LOC", 1, 2)}
    assert entity_spans(["O", "O"]) == set()


def test_entity_metrics_count_exact_matches():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "B-LOC"]]
    metrics = entity_metrics(gold, pred)
    # gold: 3 entities; predicted: 3 (PER, ORG, LOC-wrong); correct: 2.
    assert metrics["entity_precision"] == pytest.approx(2 / 3)
    assert metrics["entity_recall"] == pytest.approx(2 / 3)
    assert metrics["entity_f1"] == pytest.approx(2 / 3)
    assert metrics["accuracy"] == pytest.approx(4 / 6)


def test_stratified_split_is_deterministic_and_keeps_every_label():
    labels = ["a"] * 10 + ["b"] * 5 + ["c"] * 2
    train, validation = stratified_split(labels, 0.2, seed=3)
    again = stratified_split(labels, 0.2, seed=3)
    np.testing.assert_array_equal(train, again[0])
    np.testing.assert_array_equal(validation, again[1])
    assert sorted([*train, *validation]) == list(range(len(labels)))
    held = [labels[i] for i in validation]
    assert held.count("a") == 2 and held.count("b") == 1 and held.count("c") == 1
    assert not np.array_equal(validation, stratified_split(labels, 0.2, seed=4)[1])
    with pytest.raises(UserInputError, match="only one example"):
        stratified_split(["a", "a", "b"], 0.2, seed=0)
    with pytest.raises(UserInputError, match="validation_fraction"):
        stratified_split(labels, 1.0, seed=0)


def test_random_split_holds_out_at_least_one():
    train, validation = random_split(3, 0.1, seed=0)
    assert len(validation) == 1 and len(train) == 2


def test_readers_accept_csv_tsv_and_jsonl(tmp_path):
    (tmp_path / "a.csv").write_text('text,label\n"hello, world",pos\nbad day,neg\n')
    (tmp_path / "a.tsv").write_text("label\ttext\npos\thello\nneg\tbad day\n")
    rows = [{"text": "hello", "label": "pos"}, {"text": "bad", "label": "neg"}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    assert read_labelled_texts(str(tmp_path / "a.csv")) == (
        ["hello, world", "bad day"],
        ["pos", "neg"],
    )
    assert read_labelled_texts(str(tmp_path / "a.tsv")) == (["hello", "bad day"], ["pos", "neg"])
    assert read_labelled_texts(str(tmp_path / "a.jsonl")) == (["hello", "bad"], ["pos", "neg"])


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("x.csv", "sentence,label\nhello,pos\n", "'text'"),
        ("x.csv", "text,label\nhello,\n", "line 2: empty label"),
        ("x.csv", "", r"the header row \[\] lacks the column\(s\) \['text', 'label'\]"),
        ("x.csv", "text,label\n", "the header is there but no rows follow it"),
        ("x.jsonl", '{"text": "a", "label": "b"}\nnot json\n', "line 2: not a JSON object"),
        ("x.jsonl", '{"text": "a"}\n', "line 1: expected an object"),
        ("x.parquet", "", "unknown format .parquet"),
    ],
)
def test_bad_label_files_are_user_errors(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(UserInputError, match=message):
        read_labelled_texts(str(path))


def test_missing_label_file(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        read_labelled_texts(str(tmp_path / "none.csv"))


def test_read_conll(tmp_path):
    path = tmp_path / "train.conll"
    path.write_text("-DOCSTART- O\n\nAlice NNP B-PER\nruns VBZ O\n\n\nParis NNP B-LOC\n")
    assert read_conll(str(path)) == ([["Alice", "runs"], ["Paris"]], [["B-PER", "O"], ["B-LOC"]])
    path.write_text("Alice B-PER\nruns\n")
    with pytest.raises(UserInputError, match="line 2"):
        read_conll(str(path))
