"""The masked-LM head's parts outside `mlm.model`: activation, vocabulary projection, and loss.

`mlm.model.MaskedLanguageModel` builds its head from `head_activation` and `MLMOutputProjection`,
scores the projection's logits with `masked_cross_entropy` and trains on `replica_loss`, the one
definition of the objective that `fit` and `mlm.training.loop` share.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import tensorflow as tf

from mlm.errors import UserInputError


def _activation_names() -> list[str]:
    skip = {"get", "serialize", "deserialize"}
    return sorted(n for n in dir(keras.activations) if not n.startswith("_") and n not in skip)


def head_activation(name: Any) -> Any:
    """Returns the Keras activation `name` of the head's dense layer.

    Raises:
        UserInputError: `name` is not a Keras activation.
    """
    try:
        return keras.activations.get(name)
    except (ValueError, TypeError) as error:
        raise UserInputError(
            f"mlm_head_activation={name!r} is not a Keras activation; use one of: "
            f"{', '.join(_activation_names())}."
        ) from error


@keras.saving.register_keras_serializable(package="mlm")
class MLMOutputProjection(keras.layers.Layer):
    """Projection from hidden states to vocabulary logits, with its own bias.

    The kernel is `[hidden, vocab]`, or `None` when the projection is tied to a token embedding;
    the tied matrix (`[vocab, hidden]`) is then passed to `call`. Logits are float32 whatever the
    compute dtype, so the loss stays stable under mixed precision.

    Args:
        vocab_size: Number of output ids.
        tied: Whether the kernel comes from a token embedding passed to `call`.
        kernel_initializer: Initializer of the kernel (when not tied).
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`, ...).
    """

    def __init__(
        self,
        vocab_size: int,
        tied: bool = False,
        kernel_initializer: Any = "glorot_uniform",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.vocab_size = int(vocab_size)
        self.tied = bool(tied)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel = None
        self.bias = None

    def build(self, input_shape) -> None:
        if not self.tied:
            self.kernel = self.add_weight(
                name="kernel",
                shape=(input_shape[-1], self.vocab_size),
                initializer=self.kernel_initializer,
            )
        self.bias = self.add_weight(name="bias", shape=(self.vocab_size,), initializer="zeros")

    def call(self, inputs, embeddings=None):
        if self.tied:
            if embeddings is None:
                raise ValueError("A tied MLMOutputProjection needs `embeddings` in call().")
            # transpose_b rather than a transposed copy: the gradient then comes out in the
            # embedding's own [vocab, hidden] layout, with no transpose of it every step.
            embeddings = tf.cast(embeddings, self.compute_dtype)
            logits = tf.linalg.matmul(
                tf.cast(inputs, self.compute_dtype), embeddings, transpose_b=True
            )
        else:
            logits = keras.ops.matmul(inputs, self.kernel)
        return keras.ops.cast(logits, "float32") + keras.ops.cast(self.bias, "float32")

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.vocab_size)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "vocab_size": self.vocab_size,
                "tied": self.tied,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            }
        )
        return config


def masked_cross_entropy(
    labels: Any, logits: Any, weights: Any
) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """Sum of cross-entropy, number of predictions and number of correct argmaxes (float32)."""
    logits = tf.cast(logits, tf.float32)
    weights = tf.cast(weights, tf.float32)
    per_token = tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=logits
    )
    correct = tf.cast(
        tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), labels), tf.float32
    )
    return (
        tf.reduce_sum(per_token * weights),
        tf.reduce_sum(weights),
        tf.reduce_sum(correct * weights),
    )


def replica_loss(out: Mapping[str, tf.Tensor], extra_losses: Sequence = ()) -> tf.Tensor:
    """This replica's share of the loss to differentiate: gradients are summed over replicas.

    The one definition of the training objective under any strategy, used by `MaskedLanguageModel.train_step`
    (`fit`) and by `mlm.training.loop`. The masked-LM part divides this replica's loss sum by every
    replica's selected tokens (an all-reduce in the current replica context), so the sum over
    replicas is the mean over the global batch; extra (regularization) losses are split evenly.
    With one replica this is `out["loss"] + sum(extra_losses)`.

    Args:
        out: `MaskedLanguageModel.masked_lm_forward`'s result on this replica's batch (`loss`, `loss_sum`,
            `num_masked`).
        extra_losses: Other losses of the model (`model.losses`).

    Returns:
        The scalar float32 loss to differentiate (before any loss scaling).
    """
    context = tf.distribute.get_replica_context()
    replicas = 1 if context is None else context.num_replicas_in_sync
    loss = out["loss"]
    if replicas > 1:
        global_masked = context.all_reduce(
            tf.distribute.ReduceOp.SUM, tf.stop_gradient(out["num_masked"])
        )
        loss = tf.math.divide_no_nan(out["loss_sum"], global_masked)
    if extra_losses:
        loss += tf.add_n([tf.cast(v, tf.float32) for v in extra_losses]) / replicas
    return loss
