"""Held-out scores of classifiers, computed with numpy: accuracy, macro-F1, the confusion matrix,
and entity-level precision/recall/F1 of IOB tag sequences (as conlleval counts them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """`[num_classes, num_classes]` counts; rows are true classes, columns predictions."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return matrix


def classification_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], num_classes: int
) -> dict[str, Any]:
    """Accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix.

    Macro-F1 averages the F1 of every class that occurs in `y_true` or `y_pred` (a class that is
    never right scores 0), as scikit-learn's `f1_score(average="macro")` does.
    """
    matrix = confusion_matrix(y_true, y_pred, num_classes)
    true_positive = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0)
    actual = matrix.sum(axis=1)
    precision = np.divide(true_positive, predicted, out=np.zeros(num_classes), where=predicted > 0)
    recall = np.divide(true_positive, actual, out=np.zeros(num_classes), where=actual > 0)
    denominator = precision + recall
    f1 = np.divide(
        2 * precision * recall, denominator, out=np.zeros(num_classes), where=denominator > 0
    )
    present = (predicted + actual) > 0
    total = matrix.sum()
    return {
        "accuracy": float(true_positive.sum() / total) if total else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "support": actual.tolist(),
        "confusion_matrix": matrix.tolist(),
    }


def entity_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """Entities `(type, start, end_exclusive)` of one IOB1/IOB2 tag sequence.

    An entity starts at `B-X`, or at `I-X` after `O` or another type (IOB1 and stray `I-`, as
    conlleval reads them), and ends before `O`, a `B-` or a change of type.
    """
    spans = set()
    start, kind = None, None
    for index, tag in enumerate([*tags, "O"]):
        prefix, _, tag_type = tag.partition("-") if tag != "O" else ("O", "", "")
        continues = prefix == "I" and kind == tag_type
        if start is not None and not continues:
            spans.add((kind, start, index))
            start, kind = None, None
        if prefix in ("B", "I") and not continues:
            start, kind = index, tag_type
    return spans


def entity_metrics(
    true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Entity-level micro precision, recall and F1 (an entity counts when type and span match),
    plus token accuracy."""
    found = correct = expected = 0
    tokens = right = 0
    for true, pred in zip(true_tags, pred_tags):
        gold, guess = entity_spans(true), entity_spans(pred)
        expected += len(gold)
        found += len(guess)
        correct += len(gold & guess)
        tokens += len(true)
        right += sum(t == p for t, p in zip(true, pred))
    precision = correct / found if found else 0.0
    recall = correct / expected if expected else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "entity_precision": precision,
        "entity_recall": recall,
        "entity_f1": f1,
        "accuracy": right / tokens if tokens else 0.0,
        "num_entities": float(expected),
    }
