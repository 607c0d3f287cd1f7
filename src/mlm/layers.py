"""Keras layers shared by the encoder, the MLM head and the fine-tuning heads."""

from __future__ import annotations

from typing import Any

import keras

__all__ = ["Dropout", "LayerNormalization"]

_HALF_WORD = 1 << 16  # values of one 16-bit random number


@keras.saving.register_keras_serializable(package="mlm")
class Dropout(keras.layers.Dropout):
    """`keras.layers.Dropout` that draws 16 random bits per element instead of a 32-bit float.

    Same arguments, seed-generator variable and semantics as the Keras layer. On TensorFlow
    without `noise_shape`, an element is kept when a uniform 16-bit integer is at least
    `t = round(rate * 65536)`, and kept elements are scaled by `65536 / (65536 - t)`: the
    expected output equals the input exactly and the drop rate is within 1/131072 of `rate`.
    Each 32-bit Philox number then serves two elements, which halves the cost of dropout's
    random numbers (about 5% of a BERT-tiny training step on CPU). Other cases (a shape not
    known when the function is traced or with an odd last axis, a `noise_shape`, `rate` 1,
    other backends) run the Keras implementation.
    """

    def call(self, inputs: Any, training: bool = False) -> Any:
        shape = inputs.shape
        if (
            not training
            or self.rate <= 0.0
            or self.rate >= 1.0
            or self.noise_shape is not None
            or keras.backend.backend() != "tensorflow"
            # One uint32 per pair of elements along the last axis needs a known, even shape
            # (static shapes also keep the random op XLA-compilable).
            or not shape.is_fully_defined()
            or shape[-1] % 2
        ):
            return super().call(inputs, training=training)
        import tensorflow as tf

        threshold = min(round(self.rate * _HALF_WORD), _HALF_WORD - 1)
        # The seed generator's state is int64; stateless ops take int32 seeds (as Keras does).
        seed = tf.cast(tf.math.floormod(self.seed_generator.next(), tf.int32.max - 1), tf.int32)
        # Under XLA the words come from ThreeFry: XLA on CPU keeps Philox's words between the
        # forward and the backward pass in a fusion about 30 times slower than the one that
        # draws them, which made the XLA training step 3.5 times slower than the graph step
        # (docs/performance.md, "Why the XLA step was slower"). TensorFlow's own kernels have
        # Philox only; either way the drop rate and the scale are the same.
        in_xla = tf.__internal__.get_enclosing_xla_context() is not None
        words = tf.random.stateless_uniform(
            [*shape[:-1], shape[-1] // 2],
            seed=seed,
            minval=None,
            maxval=None,
            dtype=tf.uint32,
            alg="threefry" if in_xla else "philox",
        )
        halves = tf.reshape(tf.bitcast(words, tf.uint16), shape)
        keep = halves >= tf.constant(threshold, tf.uint16)
        scale = tf.cast(_HALF_WORD / (_HALF_WORD - threshold), inputs.dtype)
        return tf.where(keep, inputs * scale, tf.zeros_like(inputs))


@keras.saving.register_keras_serializable(package="mlm")
class LayerNormalization(keras.layers.LayerNormalization):
    """`keras.layers.LayerNormalization` with a hand-written gradient on TensorFlow.

    Same arguments, weights and outputs as the Keras layer. For the usual case (last axis,
    scale and center, no RMS scaling) on TensorFlow it computes the normalization in float32
    and the input gradient in closed form, `inv * (g - mean(g) - xhat * mean(g * xhat))` with
    `g = dy * gamma`, reusing the forward pass's `xhat` and `inv`: about half the elementwise
    passes of TensorFlow's automatic gradient of the Keras expression. Other cases run the
    Keras implementation.
    """

    def call(self, inputs: Any) -> Any:
        axis = self.axis if isinstance(self.axis, int) else tuple(self.axis)
        if (
            keras.backend.backend() != "tensorflow"
            or axis not in (-1, len(inputs.shape) - 1, (-1,), (len(inputs.shape) - 1,))
            or not (self.center and self.scale)
            or self.rms_scaling
        ):
            return super().call(inputs)
        import tensorflow as tf

        outputs = _tf_layer_norm(
            tf.cast(inputs, tf.float32),
            tf.cast(self.gamma, tf.float32),
            tf.cast(self.beta, tf.float32),
            float(self.epsilon),
        )
        return tf.cast(outputs, self.compute_dtype)


def _tf_layer_norm(x: Any, gamma: Any, beta: Any, epsilon: float) -> Any:
    import tensorflow as tf

    @tf.custom_gradient
    def layer_norm(x: Any, gamma: Any, beta: Any) -> Any:
        mean = tf.reduce_mean(x, axis=-1, keepdims=True)
        centered = x - mean
        inv = tf.math.rsqrt(tf.reduce_mean(tf.square(centered), axis=-1, keepdims=True) + epsilon)
        normalized = centered * inv

        def gradient(upstream: Any) -> tuple[Any, Any, Any]:
            batch_axes = list(range(len(upstream.shape) - 1))
            scaled = upstream * gamma
            d_x = inv * (
                scaled
                - tf.reduce_mean(scaled, axis=-1, keepdims=True)
                - normalized * tf.reduce_mean(scaled * normalized, axis=-1, keepdims=True)
            )
            d_gamma = tf.reduce_sum(upstream * normalized, axis=batch_axes)
            d_beta = tf.reduce_sum(upstream, axis=batch_axes)
            return d_x, d_gamma, d_beta

        return normalized * gamma + beta, gradient

    return layer_norm(x, gamma, beta)
