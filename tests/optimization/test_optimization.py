"""mlm.optimization: schedule values against hand-computed numbers, optimizers, weight decay."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest

from mlm.errors import UserInputError
from mlm.optimization import (
    Adam,
    AdamW,
    LinearWarmup,
    learning_rate_schedule_builder,
    optimizer_builder,
)


def _values(schedule, steps) -> list[float]:
    return [float(schedule(step)) for step in steps]


def _round_trip(schedule):
    """Serializes and deserializes a schedule the way Keras saves an optimizer's."""
    return keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))


# ---------------------------------------------------------------------------------------------
# Learning-rate schedules
# ---------------------------------------------------------------------------------------------

# 10 warmup steps from 1e-5 to 1e-3, then 100 decay steps; the minimum is reached at step 110.
WARM = {"learning_rate": 1e-3, "decay_steps": 110, "warmup_steps": 10, "warmup_start_lr": 1e-5}
STEPS = [0, 5, 10, 35, 60, 110, 500]  # start, mid-warmup, end of warmup, decay, end, after


def test_cosine_decay_with_warmup_reaches_alpha_as_absolute_minimum():
    schedule = learning_rate_schedule_builder({"type": "cosine_decay", **WARM, "alpha": 1e-5})

    def cosine(step):  # the decay phase, by hand
        t = (step - 10) / 100
        return 1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * t))

    expected = [1e-5, 1e-5 + (1e-3 - 1e-5) * 0.5, 1e-3, cosine(35), cosine(60), 1e-5, 1e-5]
    assert _values(schedule, STEPS) == pytest.approx(expected, rel=1e-5)
    assert cosine(60) == pytest.approx(5.05e-4)  # half-way down between peak and minimum
    assert _values(_round_trip(schedule), STEPS) == pytest.approx(expected, rel=1e-5)


def test_cosine_decay_without_warmup_starts_at_the_peak():
    schedule = learning_rate_schedule_builder(
        {"type": "cosine_decay", "learning_rate": 2e-4, "decay_steps": 100}
    )
    assert _values(schedule, [0, 50, 100, 101]) == pytest.approx([2e-4, 1e-4, 0.0, 0.0], abs=1e-9)


def test_polynomial_decay_with_warmup():
    schedule = learning_rate_schedule_builder(
        {"type": "polynomial_decay", **WARM, "power": 2.0, "end_learning_rate": 1e-4}
    )
    assert isinstance(schedule, LinearWarmup)

    def poly(step):
        return (1e-3 - 1e-4) * (1 - (step - 10) / 100) ** 2 + 1e-4

    expected = [1e-5, 1e-5 + (1e-3 - 1e-5) * 0.5, 1e-3, poly(35), poly(60), 1e-4, 1e-4]
    assert _values(schedule, STEPS) == pytest.approx(expected, rel=1e-5)
    assert poly(60) == pytest.approx(3.25e-4)
    restored = _round_trip(schedule)
    assert isinstance(restored, LinearWarmup)
    assert restored.get_config() == schedule.get_config()
    assert _values(restored, STEPS) == pytest.approx(expected, rel=1e-5)


def test_polynomial_decay_defaults_to_linear_decay_to_zero():
    schedule = learning_rate_schedule_builder(
        {"type": "polynomial_decay", "learning_rate": 1e-3, "decay_steps": 100}
    )
    assert _values(schedule, [0, 25, 100]) == pytest.approx([1e-3, 7.5e-4, 0.0], abs=1e-9)


def test_constant_with_and_without_warmup():
    flat = learning_rate_schedule_builder({"type": "constant", "learning_rate": 3e-4})
    assert _values(flat, [0, 1, 10_000]) == pytest.approx([3e-4] * 3, rel=1e-6)
    warm = learning_rate_schedule_builder(
        {"type": "constant", "learning_rate": 3e-4, "warmup_steps": 4}
    )
    assert _values(warm, [0, 1, 4, 10_000]) == pytest.approx([0, 7.5e-5, 3e-4, 3e-4], rel=1e-6)
    assert _values(_round_trip(warm), [1, 4]) == pytest.approx([7.5e-5, 3e-4], rel=1e-6)


def test_schedules_drive_a_real_optimizer():
    schedule = learning_rate_schedule_builder({"type": "cosine_decay", **WARM})
    optimizer = optimizer_builder({"type": "adam"}, schedule)
    variable = keras.Variable(np.ones(2, "float32"))
    optimizer.build([variable])
    for _ in range(5):
        optimizer.apply_gradients([(np.ones(2, "float32"), variable)])
    assert float(optimizer.learning_rate) == pytest.approx(float(schedule(5)), rel=1e-6)


def test_none_values_mean_defaults():
    """None counts as not given, even for keys of another type (a pipeline passes every key)."""
    schedule = learning_rate_schedule_builder(
        {
            "type": "cosine_decay",
            "learning_rate": 1e-3,
            "decay_steps": 10,
            "warmup_steps": None,
            "power": None,
            "end_learning_rate": None,
        }
    )
    assert float(schedule(0)) == pytest.approx(1e-3)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"type": "cosine"}, "unknown type 'cosine'; valid types: cosine_decay, polynomial_decay"),
        ({"learning_rate": 1e-3}, "unknown type None"),
        ({"type": "cosine_decay", "decay_steps": 10}, "missing required key 'learning_rate'"),
        ({"type": "polynomial_decay", "learning_rate": 1e-3}, "missing required key 'decay_steps'"),
        ({"type": "constant", "learning_rate": 1e-3, "decay_steps": 5}, "unknown key.*decay_steps"),
        ({"type": "cosine_decay", "learning_rate": 1e-3, "decay_steps": 9, "min_lr": 0},
         "unknown key.*min_lr.*valid keys: type, learning_rate"),
        ({"type": "constant", "learning_rate": "1e-3"}, "'learning_rate' must be a number"),
        ({"type": "constant", "learning_rate": 0}, "'learning_rate' must be > 0"),
        ({"type": "cosine_decay", "learning_rate": 1e-3, "decay_steps": 10.5},
         "'decay_steps' must be an integer"),
        ({"type": "cosine_decay", "learning_rate": 1e-3, "decay_steps": 10, "warmup_steps": -1},
         "'warmup_steps' must be >= 0"),
        ({"type": "cosine_decay", "learning_rate": 1e-3, "decay_steps": 10, "warmup_steps": 10},
         "must be larger than 'warmup_steps'"),
        ({"type": "cosine_decay", "learning_rate": 1e-3, "decay_steps": 10, "alpha": 0.1},
         "'alpha' is the final .*absolute value"),
        ({"type": "polynomial_decay", "learning_rate": 1e-3, "decay_steps": 10,
          "end_learning_rate": 1.0}, "'end_learning_rate' is the final"),
        ({"type": "constant", "learning_rate": float("nan")}, "must be a number"),
        (["cosine_decay"], "config must be a dict"),
    ],
)  # fmt: skip
def test_bad_schedule_configs(config, message):
    with pytest.raises(UserInputError, match=message):
        learning_rate_schedule_builder(config)


def test_linear_warmup_rejects_zero_steps():
    with pytest.raises(ValueError, match="warmup_steps must be >= 1"):
        LinearWarmup(keras.optimizers.schedules.PolynomialDecay(1e-3, 10), warmup_steps=0)


# ---------------------------------------------------------------------------------------------
# Optimizers
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config, cls, expected",
    [
        ({"type": "adamw"}, AdamW,
         {"weight_decay": 0.01, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-6}),
        ({"type": "adamw", "weight_decay": 0.1, "beta_2": 0.98, "epsilon": 1e-8},
         AdamW, {"weight_decay": 0.1, "beta_2": 0.98, "epsilon": 1e-8}),
        ({"type": "adam", "beta_1": 0.8}, Adam,
         {"beta_1": 0.8, "weight_decay": None}),
        ({"type": "lamb", "weight_decay": 0.01}, keras.optimizers.Lamb,
         {"weight_decay": 0.01, "epsilon": 1e-6}),
        ({"type": "lamb"}, keras.optimizers.Lamb, {"weight_decay": None}),
        ({"type": "sgd", "momentum": 0.9, "nesterov": True}, keras.optimizers.SGD,
         {"momentum": 0.9, "nesterov": True}),
        ({"type": "sgd", "gradient_clipping_by_norm": 1.0, "gradient_accumulation_steps": 4},
         keras.optimizers.SGD, {"global_clipnorm": 1.0, "clipnorm": None,
                                "gradient_accumulation_steps": 4}),
        ({"type": "adam", "gradient_accumulation_steps": 1}, Adam,
         {"gradient_accumulation_steps": None, "global_clipnorm": None}),
    ],
)  # fmt: skip
def test_optimizer_types_and_hyper_parameters(config, cls, expected):
    schedule = learning_rate_schedule_builder({"type": "constant", "learning_rate": 1e-3})
    optimizer = optimizer_builder(config, schedule)
    assert type(optimizer) is cls
    got = optimizer.get_config()
    assert {key: got[key] for key in expected} == pytest.approx(expected)
    assert got["learning_rate"]["class_name"] == "PolynomialDecay"


def test_gradient_accumulation_applies_every_nth_step():
    variable = keras.Variable(np.zeros(2, "float32"))
    optimizer = optimizer_builder({"type": "sgd", "gradient_accumulation_steps": 2}, 0.5)
    optimizer.build([variable])
    optimizer.apply_gradients([(np.array([1.0, 2.0], "float32"), variable)])
    np.testing.assert_array_equal(np.array(variable), [0.0, 0.0])  # accumulated, not applied
    optimizer.apply_gradients([(np.array([3.0, 4.0], "float32"), variable)])
    np.testing.assert_allclose(np.array(variable), [-0.5 * 2.0, -0.5 * 3.0])  # mean gradient


def test_float_learning_rate_is_accepted():
    optimizer = optimizer_builder({"type": "sgd"}, 0.5)
    assert float(optimizer.learning_rate) == 0.5


@pytest.mark.parametrize(
    "config, message",
    [
        ({"type": "rmsprop"}, "unknown type 'rmsprop'; valid types: adamw, adam, lamb, sgd"),
        ({"type": "adam", "weight_decay": 0.01}, r"unknown key\(s\) weight_decay"),
        ({"type": "sgd", "beta_1": 0.9}, r"unknown key\(s\) beta_1"),
        ({"type": "adamw", "beta_1": 1.0}, r"'beta_1' must be in \[0, 1\)"),
        ({"type": "adamw", "weight_decay": -0.1}, "'weight_decay' must be >= 0"),
        ({"type": "adamw", "gradient_clipping_by_norm": 0}, "clipping_by_norm' must be > 0"),
        ({"type": "adamw", "gradient_accumulation_steps": 0}, "must be >= 1"),
        ({"type": "adamw", "gradient_accumulation_steps": 2.5}, "must be an integer"),
        ({"type": "sgd", "nesterov": "yes"}, "'nesterov' must be true or false"),
    ],
)  # fmt: skip
def test_bad_optimizer_configs(config, message):
    with pytest.raises(UserInputError, match=message):
        optimizer_builder(config, 1e-3)


def _decayed_after_zero_gradient_step(model: keras.Model, config: dict) -> dict[str, bool]:
    """Which variables change in one step with all-zero gradients (only weight decay moves them)."""
    optimizer = optimizer_builder(config, 0.1)
    variables = model.trainable_variables
    before = [np.array(v) for v in variables]
    optimizer.apply_gradients([(np.zeros(v.shape, v.dtype), v) for v in variables])
    return {
        v.path: not np.allclose(np.array(v), old, rtol=0, atol=0)
        for v, old in zip(variables, before)
    }


@pytest.mark.parametrize("kind", ["adamw", "lamb"])
def test_weight_decay_skips_biases_and_normalization(kind):
    inputs = keras.Input((6,), dtype="int32")
    x = keras.layers.Embedding(20, 8, name="embed")(inputs)
    x = keras.layers.Dense(8, name="dense")(x)
    x = keras.layers.LayerNormalization(name="layer_norm")(x)
    x = keras.layers.RMSNormalization(name="rms_norm")(x)
    model = keras.Model(inputs, x)

    changed = _decayed_after_zero_gradient_step(model, {"type": kind, "weight_decay": 0.5})
    assert changed == {
        "embed/embeddings": True,
        "dense/kernel": True,
        "dense/bias": False,
        "layer_norm/gamma": False,
        "layer_norm/beta": False,
        "rms_norm/scale": False,
    }


def test_weight_decay_shrinks_a_kernel_by_the_decoupled_factor():
    dense = keras.layers.Dense(3, kernel_initializer="ones")
    dense.build((None, 4))
    optimizer = optimizer_builder({"type": "adamw", "weight_decay": 0.5}, 0.1)
    optimizer.apply_gradients([(np.zeros((4, 3), "float32"), dense.kernel)])
    # AdamW: w <- w - lr * wd * w, and Adam's own update is 0 for a zero gradient.
    np.testing.assert_allclose(np.array(dense.kernel), np.full((4, 3), 1 - 0.1 * 0.5), rtol=1e-6)


def test_weight_decay_on_the_bert_encoder_hits_only_kernels_and_embeddings():
    from mlm.encoders.bert import BERT

    encoder = BERT(
        vocab_size=50, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
        max_position_embeddings=16, normalization_type="rms_norm",
    )  # fmt: skip
    encoder({"input_ids": np.ones((1, 8), "int32")})
    changed = _decayed_after_zero_gradient_step(encoder, {"type": "adamw"})
    for path, was_decayed in changed.items():
        name = path.rsplit("/", 1)[-1]
        assert was_decayed == (name in ("kernel", "embeddings")), path
    assert any(changed.values()) and not all(changed.values())


# ---------------------------------------------------------------------------------------------
# Fused Adam / AdamW update
# ---------------------------------------------------------------------------------------------


def _train_pair(cls, gradients_of, steps=5, **kwargs):
    """Weights after `steps` updates of a [50, 8] embedding-like and an [8] bias variable."""
    import tensorflow as tf

    variables = [
        keras.Variable(np.random.default_rng(0).normal(size=(50, 8)).astype("float32"), name="w"),
        keras.Variable(np.ones(8, "float32"), name="bias"),
    ]
    optimizer = cls(learning_rate=1e-2, epsilon=1e-6, **kwargs)
    if kwargs.get("weight_decay"):
        optimizer.exclude_from_weight_decay(var_names=["bias"])
    optimizer.build(variables)

    @tf.function
    def step(i):
        optimizer.apply(gradients_of(i), variables)

    for i in range(steps):
        step(tf.constant(i))
    return [np.array(v) for v in variables], optimizer


def _slices(indices):
    import tensorflow as tf

    def gradients_of(i):
        values = tf.random.stateless_normal((len(indices), 8), seed=tf.stack([i, 0]))
        rows = tf.IndexedSlices(values, tf.constant(indices), tf.constant([50, 8]))
        return [rows, tf.random.stateless_normal((8,), seed=tf.stack([i, 1]))]

    return gradients_of


def _dense(indices):
    import tensorflow as tf

    def gradients_of(i):
        rows, bias = _slices(indices)(i)
        return [tf.convert_to_tensor(rows), bias]

    return gradients_of


@pytest.mark.parametrize(
    ("fused", "reference", "kwargs"),
    [(AdamW, keras.optimizers.AdamW, {"weight_decay": 0.1}),
     (Adam, keras.optimizers.Adam, {}),
     (AdamW, keras.optimizers.AdamW, {"weight_decay": 0.1, "gradient_accumulation_steps": 2})],
)  # fmt: skip
def test_fused_update_equals_the_keras_optimizer(fused, reference, kwargs):
    for gradients_of in (_dense([1, 3, 3, 7]), _slices([1, 3, 7])):
        got, optimizer = _train_pair(fused, gradients_of, **kwargs)
        want, keras_optimizer = _train_pair(reference, gradients_of, **kwargs)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        assert [v.shape for v in optimizer.variables] == [
            v.shape for v in keras_optimizer.variables
        ]
    # The update moved the weights: the comparison is not between two untouched copies.
    assert not np.allclose(got[0], np.random.default_rng(0).normal(size=(50, 8)))


def test_fused_update_squares_the_summed_gradient_of_repeated_rows():
    # An embedding lookup's gradient repeats a row index once per occurrence of the token. Keras'
    # Adam squares each repeated slice before summing them (sum of squares); the fused update
    # squares the summed gradient, as Adam on the dense gradient does.
    repeated = [1, 3, 3, 7]
    fused_slices, _ = _train_pair(AdamW, _slices(repeated), weight_decay=0.1)
    fused_dense, _ = _train_pair(AdamW, _dense(repeated), weight_decay=0.1)
    keras_dense, _ = _train_pair(keras.optimizers.AdamW, _dense(repeated), weight_decay=0.1)
    keras_slices, _ = _train_pair(keras.optimizers.AdamW, _slices(repeated), weight_decay=0.1)
    np.testing.assert_allclose(fused_slices[0], fused_dense[0], rtol=1e-6)
    np.testing.assert_allclose(fused_slices[0], keras_dense[0], rtol=1e-5, atol=1e-6)
    assert np.abs(keras_slices[0][3] - keras_dense[0][3]).max() > 1e-3  # Keras' row 3 differs


def test_fused_optimizers_serialize_and_train_in_fit(tmp_path):
    optimizer = optimizer_builder({"type": "adamw", "weight_decay": 0.05}, 0.05)
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is AdamW and restored.weight_decay == pytest.approx(0.05)

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss="mse")
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = x @ np.array([[1.0], [-2.0], [0.5], [3.0]], "float32")
    history = model.fit(x, y, epochs=20, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert type(loaded.optimizer) is AdamW
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations)
