"""Evaluation utilities for masked language models: predictions, perplexity, metrics, curves.

The metrics run `MaskedLanguageModel.masked_lm_forward` (the training step's own computation) and
every function masks with a seed per batch, so a given seed always masks the same tokens and
gives the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from mlm.errors import UserInputError

_RULE_WIDTH = 80


def _batch_seed(seed: int, index: int) -> list[int]:
    return [int(seed), int(index)]


def _features(batch: Any) -> Any:
    """The inputs of a dataset element: a dict, or the first item of an (x, y, ...) tuple."""
    if isinstance(batch, (tuple, list)):
        return batch[0]
    return batch


def visualize_mlm_predictions(
    mlm_model: Any,
    inputs: Mapping[str, Any],
    tokenizer: Any,
    num_samples: int = 4,
    seed: int = 0,
) -> str:
    """Prints and returns, for a few sequences, the original, masked and predicted text.

    The prediction is the original sequence with each selected token replaced by the model's
    most likely id. Positions holding padding or special tokens in the original are left out.

    Args:
        mlm_model: A `MaskedLanguageModel`.
        inputs: A batch dict with `input_ids` (and `attention_mask`).
        tokenizer: Anything with `decode(list_of_ids) -> str` (e.g. a transformers tokenizer).
        num_samples: Number of sequences shown (at most the batch size).
        seed: Seed of the masking.

    Returns:
        The printed text.
    """
    import numpy as np

    if num_samples < 1:
        raise UserInputError(f"num_samples must be at least 1, got {num_samples}.")
    inputs = _features(inputs)
    masked_inputs, labels, mask = mlm_model._mask_tokens(inputs, seed=_batch_seed(seed, 0))
    logits = mlm_model(masked_inputs, training=False)
    predicted = np.argmax(np.asarray(logits), axis=-1)
    labels = np.asarray(labels)
    mask = np.asarray(mask)
    masked_ids = np.asarray(masked_inputs["input_ids"])
    attention = inputs.get("attention_mask")
    attention = np.ones_like(labels) if attention is None else np.asarray(attention)
    # Shown positions: real tokens of the original text (not padding, [CLS], [SEP], ...), so a
    # prediction of a special id at a selected position still shows.
    shown = (attention != 0) & ~np.isin(labels, list(mlm_model.special_token_ids))

    def text(ids: np.ndarray, row: int) -> str:
        return tokenizer.decode([int(t) for t in ids[shown[row]]])

    rule = "-" * _RULE_WIDTH
    lines = ["=" * _RULE_WIDTH, "MLM Prediction Visualization", "=" * _RULE_WIDTH]
    for row in range(min(num_samples, labels.shape[0])):
        prediction = np.where(mask[row], predicted[row], labels[row])
        lines += [
            rule,
            f"Sample {row + 1}",
            f"Original:     {text(labels[row], row)}",
            f"Masked Input: {text(masked_ids[row], row)}",
            f"Prediction:   {text(prediction, row)}",
        ]
    lines.append(rule)
    report = "\n".join(lines)
    print(report)
    return report


def masked_lm_metrics(
    mlm_model: Any, dataset: Any, num_batches: int = 100, seed: int = 0
) -> dict[str, float]:
    """Masked-LM loss, accuracy and perplexity over the first batches of a dataset.

    Args:
        mlm_model: A `MaskedLanguageModel`.
        dataset: A `tf.data.Dataset` (or any iterable) of batch dicts.
        num_batches: Number of batches read (fewer when the dataset is shorter).
        seed: Seed of the masking; batch `i` is masked with seed `[seed, i]`.

    Returns:
        Dict with `loss` (mean cross-entropy over the selected tokens), `accuracy`,
        `perplexity` (exp of the loss) and `num_masked` (number of selected tokens).
    """
    import tensorflow as tf

    if num_batches < 1:
        raise UserInputError(f"num_batches must be at least 1, got {num_batches}.")
    step = tf.function(
        lambda batch, batch_seed: mlm_model.masked_lm_forward(
            batch, training=False, seed=batch_seed
        ),
        reduce_retracing=True,
    )
    loss_sum = num_masked = num_correct = 0.0
    batches = dataset.take(num_batches) if hasattr(dataset, "take") else dataset
    for index, batch in enumerate(batches):
        if index >= num_batches:
            break
        out = step(_features(batch), tf.constant(_batch_seed(seed, index), tf.int64))
        loss_sum += float(out["loss_sum"])
        num_masked += float(out["num_masked"])
        num_correct += float(out["num_correct"])
    if num_masked == 0:
        raise UserInputError(
            f"No token was selected for prediction in the first {num_batches} batches: the "
            "dataset is empty or holds only padding/special tokens."
        )
    loss = loss_sum / num_masked
    return {
        "loss": loss,
        "accuracy": num_correct / num_masked,
        "perplexity": math.exp(loss),
        "num_masked": num_masked,
    }


def calculate_perplexity(
    mlm_model: Any, dataset: Any, num_batches: int = 100, seed: int = 0
) -> float:
    """Perplexity: exp of the mean cross-entropy over the masked tokens of the first batches.

    Args:
        mlm_model: A `MaskedLanguageModel`.
        dataset: A `tf.data.Dataset` (or any iterable) of batch dicts.
        num_batches: Number of batches read.
        seed: Seed of the masking (the same seed gives the same value).

    Returns:
        The perplexity.
    """
    return masked_lm_metrics(mlm_model, dataset, num_batches=num_batches, seed=seed)["perplexity"]


def plot_training_curves(history: Any, path: str) -> str:
    """Draws loss and accuracy curves (training and `val_` series) into a PNG file.

    Args:
        history: A dict of metric name -> list of values (`History.history`, or
            `history.json` of a pre-training run), or a `keras.callbacks.History`.
        path: Output PNG path (local or `gs://`); written atomically.

    Returns:
        `path`.
    """
    # A Figure on an Agg canvas, not pyplot: no display needed, the user's backend untouched.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from mlm import storage

    history = getattr(history, "history", history)
    if not isinstance(history, Mapping):
        raise UserInputError(
            f"history must be a dict of metric name -> values, got {type(history).__name__}."
        )
    series = {
        name: list(values)
        for name, values in history.items()
        if isinstance(values, Sequence) and not isinstance(values, str) and len(values) > 0
    }
    panels = [
        ("Loss", [n for n in series if n.removeprefix("val_") == "loss"]),
        ("MLM Accuracy", [n for n in series if "accuracy" in n]),
    ]
    panels = [(title, names) for title, names in panels if names]
    if not panels:
        raise UserInputError(
            f"history has no 'loss' or accuracy series to plot; got keys {sorted(history)}."
        )
    figure = Figure(figsize=(6 * len(panels), 4))
    FigureCanvasAgg(figure)
    for index, (title, names) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), index)
        for name in names:
            values = series[name]
            axes.plot(range(1, len(values) + 1), values, label=name)
        axes.set_title(title)
        axes.set_xlabel("Epoch")
        axes.set_ylabel(title)
        axes.grid(True)
        axes.legend()
    figure.tight_layout()
    with storage.atomic_write(path, "wb") as output:
        figure.savefig(output, format="png")
    return path
