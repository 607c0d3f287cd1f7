"""Keras layers shared by the encoder, the MLM head and the fine-tuning heads."""

from __future__ import annotations

from typing import Any

import keras

__all__ = ["Dropout"]

_HALF_WORD = 1 << 16  # values of one 16-bit random number


@keras.saving.register_keras_serializable(package="mlm")
class Dropout(keras.layers.Dropout):
    """`keras.layers.Dropout` that draws 16 random bits per element instead of a 32-bit float.

    Same arguments, seed-generator variable and semantics as the Keras layer. On TensorFlow
    without `noise_shape`, an element is kept when a uniform 16-bit integer is at least
    `t = round(rate * 65536)`, and kept elements are scaled by `65536 / (65536 - t)`: the
    expected output equals the input exactly and the drop rate is within 1/131072 of `rate`.
    Each 32-bit Philox number then serves two elements, which halves the cost of dropout's
    random numbers (about 5% of a BERT-tiny training step on CPU). Other cases (a
    `noise_shape`, `rate` 1, other backends) run the Keras implementation.
    """

    def call(self, inputs: Any, training: bool = False) -> Any:
        if (
            not training
            or self.rate <= 0.0
            or self.rate >= 1.0
            or self.noise_shape is not None
            or keras.backend.backend() != "tensorflow"
        ):
            return super().call(inputs, training=training)
        import tensorflow as tf

        threshold = min(round(self.rate * _HALF_WORD), _HALF_WORD - 1)
        # The seed generator's state is int64; stateless ops take int32 seeds (as Keras does).
        seed = tf.cast(tf.math.floormod(self.seed_generator.next(), tf.int32.max - 1), tf.int32)
        shape = tf.shape(inputs)
        last = inputs.shape[-1]
        if last is not None and last % 2 == 0:  # one uint32 per pair along the last axis
            words_shape = tf.concat([shape[:-1], [last // 2]], axis=0)
            words = tf.random.stateless_uniform(
                words_shape, seed=seed, minval=None, maxval=None, dtype=tf.uint32
            )
            halves = tf.reshape(tf.bitcast(words, tf.uint16), shape)
        else:
            size = tf.size(inputs)
            words = tf.random.stateless_uniform(
                [(size + 1) // 2], seed=seed, minval=None, maxval=None, dtype=tf.uint32
            )
            halves = tf.reshape(tf.reshape(tf.bitcast(words, tf.uint16), [-1])[:size], shape)
        keep = halves >= tf.constant(threshold, tf.uint16)
        scale = tf.cast(_HALF_WORD / (_HALF_WORD - threshold), inputs.dtype)
        return tf.where(keep, inputs * scale, tf.zeros_like(inputs))
