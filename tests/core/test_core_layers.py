"""mlm.layers.Dropout: the 16-bit dropout keeps the Keras layer's statistics and contract."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from mlm.layers import Dropout, LayerNormalization
from tests.precision import rounding_tolerance


@pytest.mark.parametrize(
    ("shape", "scale_of"),
    [((64, 128, 256), lambda rate: 1.0 / (1.0 - round(rate * 65536) / 65536)),  # 16-bit draws
     ((1001, 33), lambda rate: 1.0 / (1.0 - rate))],  # odd last axis: Keras' dropout
)  # fmt: skip
@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_drop_rate_and_mean_match_the_rate(shape, scale_of, rate):
    layer = Dropout(rate, seed=3)
    outputs = layer(tf.ones(shape), training=True).numpy()
    kept = outputs != 0
    size = kept.size
    # Binomial standard error of the drop fraction, 5 sigma.
    assert abs((1 - kept.mean()) - rate) < 5 * np.sqrt(rate * (1 - rate) / size)
    np.testing.assert_allclose(outputs[kept], scale_of(rate), rtol=1e-6)
    assert abs(outputs.mean() - 1.0) < 5 * np.sqrt(rate / (1 - rate) / size)


def test_dynamic_shapes_compile_with_xla():
    # The MLM head drops out a [positions, hidden] tensor whose first axis is only known at run
    # time; under XLA the random op needs a static shape, so that case takes Keras' dropout.
    layer = Dropout(0.5, seed=0)

    @tf.function(jit_compile=True)
    def head_dropout(hidden, mask):
        return layer(tf.gather_nd(hidden, tf.where(mask)), training=True)

    @tf.function(jit_compile=True)
    def static_dropout(hidden):
        return layer(hidden, training=True)

    hidden = tf.ones((4, 6, 8))
    mask = tf.constant(np.arange(24).reshape(4, 6) % 3 == 0)
    dropped = head_dropout(hidden, mask).numpy()
    assert dropped.shape == (8, 8) and 0 < (dropped == 0).mean() < 1
    assert 0 < (static_dropout(hidden).numpy() == 0).mean() < 1


def test_inference_is_identity_and_training_draws_new_masks():
    layer = Dropout(0.3, seed=1)
    inputs = tf.random.stateless_normal((8, 16), seed=(0, 1))
    np.testing.assert_array_equal(layer(inputs, training=False), inputs)
    first = layer(inputs, training=True).numpy()
    second = layer(inputs, training=True).numpy()
    assert not np.array_equal(first == 0, second == 0)  # the seed generator advanced


def test_same_seed_gives_same_mask_and_gradient_is_zero_where_dropped():
    inputs = tf.random.stateless_normal((4, 10, 6), seed=(2, 3))
    a, b = Dropout(0.4, seed=7), Dropout(0.4, seed=7)
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        outputs = a(inputs, training=True)
        total = tf.reduce_sum(outputs)
    gradient = tape.gradient(total, inputs).numpy()
    np.testing.assert_array_equal(outputs, b(inputs, training=True))
    dropped = outputs.numpy() == 0
    assert dropped.any() and (gradient[dropped] == 0).all()
    np.testing.assert_allclose(gradient[~dropped], 1 / (1 - round(0.4 * 65536) / 65536))


def test_mixed_precision_and_edge_rates():
    half = Dropout(0.2, dtype="mixed_bfloat16")
    assert half(tf.ones((4, 8)), training=True).dtype == tf.bfloat16
    np.testing.assert_array_equal(Dropout(1.0)(tf.ones((3, 4)), training=True), 0.0)
    np.testing.assert_array_equal(Dropout(0.0)(tf.ones((3, 4)), training=True), 1.0)
    shared = Dropout(0.5, noise_shape=(3, 1), seed=0)(tf.ones((3, 4)), training=True).numpy()
    assert all(len(set(row)) == 1 for row in shared)  # Keras' noise_shape path


def test_config_round_trip():
    layer = Dropout(0.25, noise_shape=None, seed=5, name="drop")
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is Dropout
    assert restored.get_config() == layer.get_config()


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_layer_norm_values_and_gradients_equal_keras(policy):
    rng = np.random.default_rng(0)
    inputs = tf.constant(rng.normal(2.0, 3.0, size=(4, 6, 32)).astype("float32"))
    upstream = tf.constant(rng.normal(size=(4, 6, 32)).astype("float32"))
    ours = LayerNormalization(epsilon=1e-12, dtype=policy)
    reference = keras.layers.LayerNormalization(epsilon=1e-12, dtype=policy)
    ours.build(inputs.shape)
    reference.build(inputs.shape)
    gamma = rng.normal(1.0, 0.5, size=32).astype("float32")  # non-trivial scale and shift
    beta = rng.normal(0.0, 0.5, size=32).astype("float32")
    for layer in (ours, reference):
        layer.gamma.assign(gamma)
        layer.beta.assign(beta)

    def forward_and_gradients(layer):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = layer(inputs)
            total = tf.reduce_sum(tf.cast(outputs, tf.float32) * upstream)
        return outputs, tape.gradient(total, [inputs, layer.gamma, layer.beta])

    got, got_grads = forward_and_gradients(ours)
    want, want_grads = forward_and_gradients(reference)
    assert got.dtype == want.dtype
    # In bfloat16 the input is rounded once, the normalised value and the scale and shift three
    # more times; the gradients go back through the same roundings.
    tolerance = 1e-5 if policy == "float32" else rounding_tolerance("bfloat16", 4)
    np.testing.assert_allclose(
        tf.cast(got, tf.float32), tf.cast(want, tf.float32), atol=tolerance, rtol=tolerance
    )
    for a, b in zip(got_grads, want_grads, strict=True):
        np.testing.assert_allclose(a, b, atol=tolerance * 10, rtol=tolerance)
    assert {**ours.get_config(), "name": ""} == {**reference.get_config(), "name": ""}


def test_layer_norm_other_axes_use_the_keras_implementation():
    inputs = tf.random.stateless_normal((3, 5, 4), seed=(1, 1))
    ours = LayerNormalization(axis=1)
    reference = keras.layers.LayerNormalization(axis=1)
    np.testing.assert_allclose(ours(inputs), reference(inputs), atol=1e-6)


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_under_xla_the_threefry_draws_keep_the_rate_the_scale_and_the_gradient(rate):
    # Under XLA the 16-bit draws come from ThreeFry (TensorFlow's own kernels have only Philox):
    # another stream, the same statistics and contract.
    layer = Dropout(rate, seed=5)
    inputs = tf.ones((64, 128, 256))

    @tf.function(jit_compile=True)
    def forward_and_gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            outputs = layer(x, training=True)
            total = tf.reduce_sum(outputs)
        return outputs, tape.gradient(total, x)

    outputs, gradient = (t.numpy() for t in forward_and_gradient(inputs))
    kept = outputs != 0
    scale = 1.0 / (1.0 - round(rate * 65536) / 65536)
    assert abs((1 - kept.mean()) - rate) < 5 * np.sqrt(rate * (1 - rate) / kept.size)
    np.testing.assert_allclose(outputs[kept], scale, rtol=1e-6)
    np.testing.assert_array_equal(gradient, outputs)  # d(sum)/dx is the mask times the scale
    graph_outputs = layer(inputs, training=True).numpy()
    assert not np.array_equal(graph_outputs == 0, kept)  # a new draw, from Philox
