"""Evaluation utilities for masked language models: predictions, perplexity, metrics, curves.

The metrics run `MaskedLanguageModel.masked_lm_forward` (the training step's own computation) and
every function masks batch `i` with seed `mask_seed(seed, i)`, so a given seed always masks the
same tokens and gives the same numbers. `masked_lm_metrics` is the one evaluator: the evaluate
step and the pretrain step's validation (on any `tf.distribute` strategy) both use it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from mlm.errors import UserInputError

_RULE_WIDTH = 80
# exp(709.8) overflows a float: larger mean losses report perplexity exp(700).
_MAX_LOG_PERPLEXITY = 700.0


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
    masked_inputs, labels, mask = mlm_model.mask_inputs(inputs, seed=mask_seed(seed, 0))
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
    mlm_model: Any,
    dataset: Any,
    num_batches: int = 100,
    seed: int = 0,
    *,
    strategy: Any = None,
) -> dict[str, float]:
    """Masked-LM loss, accuracy and perplexity over the first batches of a dataset.

    The one evaluator: the evaluate step and the pretrain step's validation both call it, so the
    same model, batches and seed give the same numbers. It sums the cross-entropy, the selected
    tokens and the correct predictions over every batch (and replica) and divides at the end.

    Args:
        mlm_model: A `MaskedLanguageModel`.
        dataset: A `tf.data.Dataset` or any iterable of batch dicts (or `(x, y, ...)` tuples);
            with a `strategy`, also a function `input_context -> dataset` of per-replica batches
            (as `strategy.distribute_datasets_from_function` takes).
        num_batches: Number of (global) batches read (fewer when the dataset is shorter).
        seed: Seed of the masking; batch `i` is masked with seed `[seed, i]` (with several
            replicas, replica `r` of `n` masks its part with `[seed, i * n + r]`).
        strategy: The `tf.distribute` strategy the model was created under (default: the current
            one, TensorFlow's default strategy outside any scope).

    Returns:
        Dict with `loss` (mean cross-entropy over the selected tokens), `accuracy`,
        `perplexity` (exp of the loss, capped at exp(700)) and `num_masked` (number of selected
        tokens).
    """
    import numpy as np
    import tensorflow as tf

    if num_batches < 1:
        raise UserInputError(f"num_batches must be at least 1, got {num_batches}.")
    strategy = strategy or tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync

    def replica_sums(batch, index):
        context = tf.distribute.get_replica_context()
        batch_seed = mask_seed(seed, index, context.replica_id_in_sync_group, replicas)
        out = mlm_model.masked_lm_forward(_features(batch), training=False, seed=batch_seed)
        return tf.stack([out["loss_sum"], out["num_masked"], out["num_correct"]])

    @tf.function(reduce_retracing=True)
    def step(batch, index):
        per_replica = strategy.run(replica_sums, args=(batch, index))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    batches = iter(_distribute(dataset, strategy, num_batches))
    sums = np.zeros(3)  # loss sum, selected tokens, correct predictions (float64)
    for index in range(num_batches):
        batch = next(batches, None)
        if batch is None:
            break
        sums += step(batch, tf.constant(index, tf.int64)).numpy()
    loss_sum, num_masked, num_correct = (float(value) for value in sums)
    if num_masked == 0:
        raise UserInputError(
            f"No token was selected for prediction in the first {num_batches} batches: the "
            "dataset is empty or holds only padding/special tokens."
        )
    loss = loss_sum / num_masked
    return {
        "loss": loss,
        "accuracy": num_correct / num_masked,
        "perplexity": math.exp(min(loss, _MAX_LOG_PERPLEXITY)),
        "num_masked": num_masked,
    }


def mask_seed(seed: Any, index: Any, replica_id: Any = 0, num_replicas: int = 1) -> Any:
    """The masking seed of batch `index` (of replica `replica_id`): int64 `[seed, index * n + r]`.

    Every evaluation masks with it, so a batch gets the same mask wherever it is scored.
    """
    import tensorflow as tf

    position = tf.cast(index, tf.int64) * num_replicas + tf.cast(replica_id, tf.int64)
    return tf.stack([tf.cast(seed, tf.int64), position])


def _distribute(dataset: Any, strategy: Any, num_batches: int) -> Any:
    """The batches of `dataset` as `strategy.run` takes them (per replica when distributed)."""
    import tensorflow as tf

    if isinstance(dataset, tf.data.Dataset):
        return strategy.experimental_distribute_dataset(dataset.take(num_batches))
    if callable(dataset):
        return strategy.distribute_datasets_from_function(dataset)
    if strategy.num_replicas_in_sync > 1:
        raise UserInputError(
            f"dataset: with {strategy.num_replicas_in_sync} replicas pass a tf.data.Dataset or a "
            f"function input_context -> dataset, not a {type(dataset).__name__}."
        )
    return dataset


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
