"""Tests of mlm.model.MaskedLanguageModel with a tiny custom encoder and a tiny BERT."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from core_helpers import CustomEncoder

from mlm.encoders.bert import BERT
from mlm.errors import UserInputError
from mlm.model import MLM_PRESETS, MaskedLanguageModel, create_mlm_training_model

VOCAB, HIDDEN, LENGTH = 120, 32, 16
SPECIAL = [0, 1, 2, 3, 4]
MASK = 4


def _ids(batch: int = 8, seed: int = 0) -> dict:
    """[CLS] + ids from a few fixed sequences over ids 5..34 + [SEP] + padding."""
    patterns = np.random.default_rng(0).integers(5, 35, size=(4, LENGTH)).astype(np.int32)
    ids = patterns[np.random.default_rng(seed).integers(0, 4, size=batch)]
    attention = np.ones_like(ids)
    attention[:, LENGTH - 3 :] = 0
    ids[:, 0], ids[:, LENGTH - 4] = 2, 3
    ids[attention == 0] = 0
    return {"input_ids": ids, "attention_mask": attention}


def _dataset(batches: int = 4, batch: int = 8) -> tf.data.Dataset:
    features = _ids(batches * batch, seed=1)
    return tf.data.Dataset.from_tensor_slices(features).batch(batch, drop_remainder=True)


def _model(**kwargs) -> MaskedLanguageModel:
    args = {"vocab_size": VOCAB, "mask_token_id": MASK, "special_token_ids": SPECIAL}
    args.update(kwargs)
    encoder = args.pop("encoder", None) or CustomEncoder(VOCAB, HIDDEN)
    return MaskedLanguageModel(encoder, **args)


def _tiny_bert() -> BERT:
    return BERT.from_variant(
        "tiny",
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        num_layers=2,
        num_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    )


def _dense_loss(model: MaskedLanguageModel, batch: dict, seed) -> tuple[float, float, float]:
    """Loss from full [B, L, V] logits, computed with numpy."""
    masked_inputs, labels, mask = model.mask_inputs(batch, seed=seed)
    logits = model(masked_inputs, training=False).numpy().astype(np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    labels, mask = labels.numpy(), mask.numpy()
    picked = np.take_along_axis(log_probs, labels[..., None], axis=-1)[..., 0]
    correct = (logits.argmax(-1) == labels) & mask
    return -(picked * mask).sum() / mask.sum(), mask.sum(), correct.sum()


@pytest.mark.parametrize("max_predictions", [None, 16])
def test_sparse_loss_equals_the_dense_full_logits_computation(max_predictions):
    model = _model(max_predictions_per_seq=max_predictions, mask_ratio=0.3)
    batch = _ids()
    out = model.masked_lm_forward(batch, training=False, seed=5)
    loss, count, correct = _dense_loss(model, batch, seed=5)
    assert count > 0
    np.testing.assert_allclose(float(out["loss"]), loss, rtol=1e-5)
    np.testing.assert_allclose(float(out["loss_sum"]), loss * count, rtol=1e-5)
    assert float(out["num_masked"]) == count
    assert float(out["num_correct"]) == correct
    # compute_loss (the seed README's API) gives the same value from full logits.
    masked_inputs, labels, mask = model.mask_inputs(batch, seed=5)
    same = model.compute_loss(y=labels, y_pred=model(masked_inputs), sample_weight=mask)
    np.testing.assert_allclose(float(same), loss, rtol=1e-5)


def test_batch_without_maskable_tokens_gives_zero_loss_and_zero_gradients():
    model = _model()
    batch = {"input_ids": np.array([[2, 3, 0, 0]] * 2, np.int32), "attention_mask": np.ones((2, 4))}
    with tf.GradientTape() as tape:
        out = model.masked_lm_forward(batch, training=True)
    grads = tape.gradient(out["loss"], model.trainable_variables)
    assert float(out["loss"]) == 0.0 and float(out["num_masked"]) == 0.0
    assert all(g is None or np.isfinite(tf.convert_to_tensor(g).numpy()).all() for g in grads)


def test_fit_and_evaluate_on_a_dataset_of_dicts_reduce_the_loss():
    keras.utils.set_random_seed(0)
    model = _model(mlm_head_dropout=0.0)
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate=1e-2))
    history = model.fit(_dataset(), epochs=4, verbose=0).history
    assert set(history) == {"loss", "mlm_accuracy"}
    assert history["loss"][-1] < history["loss"][0] - 0.3
    result = model.evaluate(_dataset(), verbose=0, return_dict=True)
    assert set(result) == {"loss", "mlm_accuracy"}
    assert np.isfinite(result["loss"]) and 0.0 <= result["mlm_accuracy"] <= 1.0
    # (x, y) tuples (as some pipelines yield) work too: y is ignored.
    model.fit(_dataset().map(lambda x: (x, x["input_ids"])), epochs=1, verbose=0)


def test_user_accuracy_metric_replaces_the_built_in_one_without_double_counting():
    model = _model(mlm_head_dropout=0.0, mask_ratio=1.0)  # every maskable token is selected
    accuracy = keras.metrics.SparseCategoricalAccuracy(name="mlm_accuracy")
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), metrics=[accuracy, "accuracy"])
    assert [m.name for m in model.metrics] == ["loss", "mlm_accuracy", "accuracy"]
    data = _dataset(batches=1)
    result = model.evaluate(data, verbose=0, return_dict=True)
    assert set(result) == {"loss", "mlm_accuracy", "accuracy"}
    assert result["mlm_accuracy"] == pytest.approx(result["accuracy"])
    batch = next(iter(data))
    maskable = int(np.sum((batch["attention_mask"].numpy() == 1) & (batch["input_ids"] > 4)))
    # Each selected token counted once, by the user's metric only.
    assert float(accuracy.count) == maskable
    assert float(model.accuracy_tracker.count) == 0.0


def test_compile_rejects_an_external_loss_and_bad_loss_scale():
    model = _model()
    with pytest.raises(UserInputError, match="loss"):
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with pytest.raises(UserInputError, match="loss_scale"):
        model.compile(optimizer="adam", loss_scale="static")
    with pytest.raises(UserInputError, match="max_predictions_per_seq"):
        model.compile(optimizer="adam", jit_compile=True)


def test_save_and_load_round_trip_whole_model_and_encoder(tmp_path):
    model = _model(tie_word_embeddings=True, continuation_token_ids=[100, 101])
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="mlm_accuracy")],
        loss_scale="dynamic",
    )
    model.fit(_dataset(batches=2), epochs=1, verbose=0)
    batch = _ids(2, seed=4)
    model.save(tmp_path / "mlm.keras")
    model.encoder.save(tmp_path / "encoder.keras")
    loaded = keras.models.load_model(tmp_path / "mlm.keras")
    encoder = keras.models.load_model(tmp_path / "encoder.keras")
    np.testing.assert_array_equal(loaded(batch).numpy(), model(batch).numpy())
    np.testing.assert_array_equal(
        encoder(batch)["last_hidden_state"].numpy(),
        model.encoder(batch)["last_hidden_state"].numpy(),
    )
    assert json.dumps(loaded.get_config(), sort_keys=True) == json.dumps(
        model.get_config(), sort_keys=True
    )
    assert loaded.mlm_output.kernel is None  # still tied
    # The compile settings come back too: loss scaling around AdamW, the user's metric.
    assert isinstance(loaded.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(loaded.optimizer.inner_optimizer, keras.optimizers.AdamW)
    assert [m.name for m in loaded.metrics] == ["loss", "mlm_accuracy"]
    assert isinstance(loaded.metrics[1], keras.metrics.SparseCategoricalAccuracy)
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) > 0
    # Loaded models keep training (continual pre-training).
    loaded.fit(_dataset(batches=1), epochs=1, verbose=0)


def test_settings_changed_after_loading_take_effect(tmp_path):
    model = _model()
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    model.fit(_dataset(batches=1), epochs=1, verbose=0)
    model.save(tmp_path / "mlm.keras")
    loaded = keras.models.load_model(tmp_path / "mlm.keras")
    batch = _ids(64, seed=2)
    before = float(loaded.masked_lm_forward(batch, training=False, seed=1)["num_masked"])
    loaded.mask_ratio = 0.5
    loaded.mlm_head_dropout = 0.05
    after = float(loaded.masked_lm_forward(batch, training=False, seed=1)["num_masked"])
    assert after > 2.5 * before
    assert loaded.mlm_dropout.rate == 0.05
    assert loaded.get_config()["mask_ratio"] == 0.5
    # The traced training step is rebuilt with the new ratio.
    loaded.compile(optimizer=keras.optimizers.AdamW(1e-5, weight_decay=0.001))
    loaded.fit(_dataset(batches=1), epochs=1, verbose=0)
    loaded.mask_ratio = 0.0
    assert loaded.train_function is None
    assert loaded.evaluate(_dataset(batches=1), verbose=0, return_dict=True)["loss"] == 0.0
    with pytest.raises(ValueError, match="mask_ratio"):
        loaded.mask_ratio = 1.2


def test_tied_projection_needs_no_transposed_copy_of_the_embedding():
    """The tied vocabulary projection multiplies by the embedding with `transpose_b`: neither the
    forward pass nor its gradient transposes the [vocab, hidden] table (a copy every step)."""
    model = _model(tie_word_embeddings=True)
    model.build()
    table = model.encoder.token_embedding.embeddings
    hidden = tf.random.normal((6, HIDDEN))

    @tf.function
    def logits_and_gradient(hidden):
        with tf.GradientTape() as tape:
            logits = model.mlm_output(hidden, embeddings=table)
            loss = tf.reduce_sum(logits * logits)
        return logits, tape.gradient(loss, table)

    logits, gradient = logits_and_gradient(hidden)
    graph = logits_and_gradient.get_concrete_function(hidden).graph
    assert not [op.name for op in graph.get_operations() if op.type == "Transpose"]
    expected = hidden.numpy() @ tf.convert_to_tensor(table).numpy().T
    expected += model.mlm_output.bias.numpy()
    np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert tuple(tf.convert_to_tensor(gradient).shape) == (VOCAB, HIDDEN)


def test_tied_output_projection_uses_the_encoder_embedding():
    model = _model(tie_word_embeddings=True)
    model.build()
    assert model.mlm_output.kernel is None
    assert tuple(model.mlm_output.bias.shape) == (VOCAB,)
    embedding_vars = {id(v) for v in model.encoder.token_embedding.weights}
    assert embedding_vars <= {id(v) for v in model.trainable_variables}
    batch = _ids(2)
    with tf.GradientTape() as tape:
        loss = model.masked_lm_forward(batch, training=False, seed=0)["loss"]
    grad = tape.gradient(loss, model.encoder.token_embedding.embeddings)
    # The gradient reaches embedding rows of predicted-vocabulary ids that are not in the input.
    unused = sorted(set(range(5, VOCAB)) - set(batch["input_ids"].ravel().tolist()))
    assert np.abs(tf.convert_to_tensor(grad).numpy()[unused]).sum() > 0
    untied = _model()
    untied.build()
    assert tuple(untied.mlm_output.kernel.shape) == (HIDDEN, VOCAB)
    # `call` also takes a plain tensor of ids (no padding then).
    ids = tf.constant(batch["input_ids"])
    np.testing.assert_allclose(
        untied(ids).numpy(), untied({"input_ids": ids}).numpy(), rtol=1e-6, atol=1e-6
    )
    assert tuple(untied(ids).shape) == (2, LENGTH, VOCAB)


def test_static_shape_training_with_max_predictions_per_seq():
    model = _model(max_predictions_per_seq=4)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    history = model.fit(_dataset(batches=2), epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
    out = model.masked_lm_forward(_ids(8), training=False, seed=0, return_predictions=True)
    assert tuple(out["logits"].shape) == (8, 4, VOCAB)
    assert float(out["num_masked"]) <= 8 * 4


def test_mixed_float16_with_dynamic_loss_scaling_and_bfloat16():
    previous = keras.config.dtype_policy()
    try:
        for policy, loss_scale in (("mixed_float16", "dynamic"), ("mixed_bfloat16", None)):
            keras.mixed_precision.set_global_policy(policy)
            model = _model()
            model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss_scale=loss_scale)
            if loss_scale:
                assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
            history = model.fit(_dataset(batches=2), epochs=2, verbose=0).history
            assert all(np.isfinite(history["loss"]))
            out = model.masked_lm_forward(_ids(2), training=False, seed=0, return_predictions=True)
            assert out["logits"].dtype == tf.float32 and out["loss"].dtype == tf.float32
            assert model.mlm_dense.compute_dtype == policy.split("_")[1]
            assert model.mlm_output.bias.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy(previous)


def test_gradient_accumulation_applies_updates_every_n_steps():
    model = _model()
    optimizer = keras.optimizers.AdamW(1e-3, gradient_accumulation_steps=2)
    model.compile(optimizer=optimizer)
    model.build()
    kernel = model.mlm_dense.kernel
    model.fit(_dataset(batches=1), epochs=1, verbose=0)
    first = kernel.numpy().copy()
    model.fit(_dataset(batches=1), epochs=1, verbose=0)
    second = kernel.numpy().copy()
    model.fit(_dataset(batches=1), epochs=1, verbose=0)
    assert int(optimizer.iterations) == 1  # one real update after two accumulated steps
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(second, kernel.numpy())


def test_bert_encoder_trains_and_round_trips(tmp_path):
    model = _model(encoder=_tiny_bert(), tie_word_embeddings=True)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    model.fit(_dataset(batches=2), epochs=1, verbose=0)
    model.save(tmp_path / "bert_mlm.keras")
    loaded = keras.models.load_model(tmp_path / "bert_mlm.keras")
    batch = _ids(2)
    np.testing.assert_allclose(loaded(batch).numpy(), model(batch).numpy(), atol=1e-6)
    assert isinstance(loaded.encoder, BERT)


def test_presets_and_factory():
    assert set(MLM_PRESETS) == {"standard", "low_resource", "domain_adaptation"}
    model = create_mlm_training_model(
        CustomEncoder(VOCAB, HIDDEN), VOCAB, MASK, preset="low_resource", special_token_ids=SPECIAL
    )
    assert model.mask_ratio == 0.20 and model.mlm_head_dropout == 0.15
    assert model.random_token_ratio == 0.05 and model.unchanged_ratio == 0.05
    assert isinstance(model.optimizer, keras.optimizers.AdamW)
    model.fit(_dataset(batches=1), epochs=1, verbose=0)
    adapted = create_mlm_training_model(
        CustomEncoder(VOCAB, HIDDEN), VOCAB, MASK, preset="domain_adaptation", mask_ratio=0.12
    )
    assert adapted.mask_ratio == 0.12 and adapted.mlm_head_dropout == 0.05
    with pytest.raises(UserInputError, match="domain_adaptation, low_resource, standard"):
        create_mlm_training_model(CustomEncoder(VOCAB, HIDDEN), VOCAB, MASK, preset="huge")


class _NoHidden(keras.Model):
    def call(self, inputs):
        return {"last_hidden_state": inputs}


class _WrongOutput(keras.Model):
    hidden_size = HIDDEN

    def __init__(self):
        super().__init__()
        self.embedding = keras.layers.Embedding(VOCAB, HIDDEN)

    def call(self, inputs, training=None):
        return {"hidden": self.embedding(inputs["input_ids"])}


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: _model(encoder=_NoHidden()), "hidden_size"),
        (lambda: _model(vocab_size=VOCAB + 1), "vocab_size=121 does not match"),
        (lambda: _model(mask_token_id=VOCAB), "mask_token_id"),
        (lambda: _model(special_token_ids=[1, 500]), "special_token_ids contains 500"),
        (lambda: _model(mask_ratio=1.1), "mask_ratio"),
        (lambda: _model(random_token_ratio=0.7, unchanged_ratio=0.7), "unchanged_ratio"),
        (lambda: _model(mlm_head_activation="swishy"), "relu.*"),
        (lambda: _model(mlm_head_dropout=1.0), "mlm_head_dropout"),
        (lambda: _model(encoder=_NoHidden(), tie_word_embeddings=True), "hidden_size"),
    ],
)
def test_bad_construction_arguments_are_clear_user_errors(build, message):
    with pytest.raises(UserInputError, match=message):
        build()


def test_bad_inputs_are_clear_user_errors():
    with pytest.raises(UserInputError, match=r"last_hidden_state.*'hidden'"):
        _model(encoder=_WrongOutput(), vocab_size=VOCAB)(_ids(1))
    model = _model()
    with pytest.raises(UserInputError, match=r"input_ids.*\['attention_mask', 'ids'\]"):
        model.masked_lm_forward({"ids": np.ones((1, 4)), "attention_mask": np.ones((1, 4))}, False)

    class _Plain(keras.Model):
        hidden_size = HIDDEN

    with pytest.raises(UserInputError, match="token_embedding"):
        _model(encoder=_Plain(), tie_word_embeddings=True)
