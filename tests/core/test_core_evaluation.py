"""Tests of mlm.evaluation: prediction visualization, perplexity, metrics and training curves."""

from __future__ import annotations

import math
import os
from pathlib import Path

import keras
import matplotlib
import numpy as np
import pytest
import tensorflow as tf
from core_helpers import SENTENCES, CustomEncoder, encode, text_dataset

from mlm import storage
from mlm.errors import UserInputError
from mlm.evaluation import (
    calculate_perplexity,
    masked_lm_metrics,
    plot_training_curves,
    visualize_mlm_predictions,
)
from mlm.model import MaskedLanguageModel


@pytest.fixture(scope="module")
def tokenizer(toy_tokenizer):
    return toy_tokenizer


@pytest.fixture(scope="module")
def model(tokenizer):
    keras.utils.set_random_seed(1)
    return MaskedLanguageModel(
        CustomEncoder(len(tokenizer), 32),
        vocab_size=len(tokenizer),
        mask_token_id=tokenizer.mask_token_id,
        special_token_ids=tokenizer.all_special_ids,
        mask_ratio=0.3,
    )


def test_visualization_prints_the_seed_format_and_returns_it(model, tokenizer, capsys):
    batch = encode(tokenizer, SENTENCES[:3], length=48)
    text = visualize_mlm_predictions(model, batch, tokenizer, num_samples=2, seed=4)
    assert capsys.readouterr().out == text + "\n"
    lines = text.split("\n")
    rule, double = "-" * 80, "=" * 80
    assert lines[:3] == [double, "MLM Prediction Visualization", double]
    assert lines[3] == rule and lines[4] == "Sample 1" and lines[9] == "Sample 2"
    assert lines[8] == rule and lines[-1] == rule and len(lines) == 14
    # By hand: the same seeded masking, the model's argmax at the selected positions.
    masked_inputs, labels, mask = model.mask_inputs(batch, seed=[4, 0])
    predicted = np.argmax(model(masked_inputs).numpy(), axis=-1)
    for sample, first in ((0, 5), (1, 10)):
        real = batch["attention_mask"][sample] == 1
        ids = batch["input_ids"][sample][real][1:-1]  # drop [CLS] and [SEP]
        masked = masked_inputs["input_ids"].numpy()[sample][real][1:-1]
        filled = np.where(mask.numpy()[sample], predicted[sample], labels.numpy()[sample])
        filled = filled[real][1:-1]
        assert lines[first] == f"Original:     {SENTENCES[sample]}"
        assert lines[first] == f"Original:     {tokenizer.decode(ids.tolist())}"
        assert lines[first + 1] == f"Masked Input: {tokenizer.decode(masked.tolist())}"
        assert lines[first + 2] == f"Prediction:   {tokenizer.decode(filled.tolist())}"
    assert "[MASK]" in text
    shown_inputs = [line for line in lines if line.startswith(("Original:", "Masked Input:"))]
    assert not any(tag in line for line in shown_inputs for tag in ("[CLS]", "[SEP]", "[PAD]"))


def _perplexity_by_hand(model, dataset, num_batches, seed) -> tuple[float, float, float]:
    total = count = correct = 0.0
    for index, batch in enumerate(dataset.take(num_batches)):
        masked_inputs, labels, mask = model.mask_inputs(batch, seed=[seed, index])
        logits = model(masked_inputs).numpy().astype(np.float64)
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        labels, mask = labels.numpy(), mask.numpy()
        picked = np.take_along_axis(log_probs, labels[..., None], -1)[..., 0]
        total -= (picked * mask).sum()
        count += mask.sum()
        correct += ((logits.argmax(-1) == labels) & mask).sum()
    return math.exp(total / count), count, correct / count


def test_perplexity_matches_a_hand_computation_and_is_deterministic(model, tokenizer):
    dataset = text_dataset(tokenizer, batch_size=4, repeat=2)
    value = calculate_perplexity(model, dataset, num_batches=3, seed=7)
    expected, count, accuracy = _perplexity_by_hand(model, dataset, 3, seed=7)
    assert value == pytest.approx(expected, rel=1e-5)
    assert calculate_perplexity(model, dataset, num_batches=3, seed=7) == value
    assert calculate_perplexity(model, dataset, num_batches=3, seed=8) != value
    metrics = masked_lm_metrics(model, dataset, num_batches=3, seed=7)
    assert set(metrics) == {"perplexity", "accuracy", "loss", "num_masked"}
    assert metrics["num_masked"] == count
    assert metrics["accuracy"] == pytest.approx(accuracy)
    assert metrics["loss"] == pytest.approx(math.log(expected), rel=1e-5)
    # An untrained model is near-uniform: perplexity close to the vocabulary size.
    assert 0.5 * len(tokenizer) < value < 2 * len(tokenizer)


def test_metrics_accept_x_y_tuples_and_reject_empty_input(model, tokenizer):
    dataset = text_dataset(tokenizer, batch_size=4)
    plain = masked_lm_metrics(model, dataset, num_batches=2, seed=0)
    tupled = masked_lm_metrics(model, dataset.map(lambda x: (x, 0)), num_batches=2, seed=0)
    assert plain == tupled
    with pytest.raises(UserInputError, match="No token was selected"):
        masked_lm_metrics(model, dataset.take(0), num_batches=2)
    only_special = tf.data.Dataset.from_tensor_slices(
        {"input_ids": np.array([[2, 3, 0, 0]] * 4, np.int32), "attention_mask": np.ones((4, 4))}
    ).batch(2)
    with pytest.raises(UserInputError, match="padding/special"):
        calculate_perplexity(model, only_special)
    with pytest.raises(UserInputError, match="num_batches"):
        calculate_perplexity(model, dataset, num_batches=0)


def _is_png(path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_training_curves_png_is_written_atomically(tmp_path):
    history = {
        "loss": [4.0, 3.0, 2.5],
        "mlm_accuracy": [0.1, 0.2, 0.3],
        "val_loss": [4.1, 3.2, 2.9],
        "val_mlm_accuracy": [0.1, 0.15, 0.2],
    }
    path = str(tmp_path / "plots" / "curves.png")
    backend = matplotlib.get_backend()
    assert plot_training_curves(history, path) == path
    assert matplotlib.get_backend() == backend  # the user's backend is left alone
    assert _is_png(path)
    assert os.listdir(tmp_path / "plots") == ["curves.png"]
    # A keras History works too; a rejected history leaves the old file and no temp files.
    callback = keras.callbacks.History()
    callback.history = {"loss": [1.0, 0.5]}
    plot_training_curves(callback, path)
    before = Path(path).read_bytes()
    with pytest.raises(UserInputError, match="no 'loss' or accuracy"):
        plot_training_curves({"learning_rate": [1e-3]}, path)
    with pytest.raises(UserInputError, match="dict"):
        plot_training_curves([1.0, 2.0], path)
    assert Path(path).read_bytes() == before
    assert os.listdir(tmp_path / "plots") == ["curves.png"]


def test_training_curves_to_gcs(gcs_emulator, tmp_path):
    bucket = gcs_emulator.create_bucket()
    uri = f"gs://{bucket}/runs/curves.png"
    plot_training_curves({"loss": [2.0, 1.0]}, uri)
    local = storage.stage_to_local(uri, str(tmp_path))
    assert _is_png(local)
