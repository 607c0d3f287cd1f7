"""Feed-forward activations of the encoder, by the names Hugging Face's `hidden_act` uses.

Three GELU variants: the exact one (with a cheaper hand-written gradient on TensorFlow) and the
tanh approximation under its several Hugging Face names.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras

from mlm.errors import UserInputError


def _gelu_exact(x: Any) -> Any:
    """Exact GELU, `x * Phi(x)`, with a hand-written gradient on TensorFlow.

    The gradient `Phi(x) + x * phi(x)` reuses the forward pass's `Phi(x)`; TensorFlow's
    automatic gradient of `tf.nn.gelu` takes about twice as many elementwise passes over the
    feed-forward activations. Values equal `keras.activations.gelu(x, approximate=False)`.
    Under mixed precision `Phi(x)` and `phi(x)` are computed in float32 and rounded once:
    TensorFlow's CPU `Erfc` on bfloat16 took 42 ms of a BERT-tiny step, in float32 with the casts
    11 ms (docs/performance.md).
    """
    if keras.backend.backend() != "tensorflow":
        return keras.activations.gelu(x, approximate=False)
    return _tf_gelu_exact(x)


def _tf_gelu_exact(x: Any) -> Any:
    import tensorflow as tf

    @tf.custom_gradient
    def gelu(x: Any) -> Any:
        wide = tf.cast(x, tf.float32)  # x itself when it is float32
        cdf = tf.cast(0.5 * tf.math.erfc(wide * -(2.0**-0.5)), x.dtype)  # Phi(x), as tf.nn.gelu

        def gradient(upstream: Any) -> Any:
            pdf = tf.exp(-0.5 * tf.square(wide)) * (2.0 * math.pi) ** -0.5  # phi(x)
            return upstream * (cdf + x * tf.cast(pdf, x.dtype))

        return x * cdf, gradient

    return gelu(x)


def _gelu_tanh(x: Any) -> Any:
    return keras.activations.gelu(x, approximate=True)


# Names as Hugging Face's `hidden_act` spells them, so imported configs keep their activation.
ACTIVATIONS: dict[str, Callable[[Any], Any]] = {
    "gelu": _gelu_exact,
    "gelu_new": _gelu_tanh,
    "gelu_pytorch_tanh": _gelu_tanh,
    "gelu_approximate": _gelu_tanh,
    "relu": keras.activations.relu,
    "silu": keras.activations.silu,
    "swish": keras.activations.silu,
    "tanh": keras.activations.tanh,
}


def get_activation(name: str) -> Callable[[Any], Any]:
    """Returns the activation function called `name` (one of `ACTIVATIONS`).

    Raises:
        UserInputError: `name` is not a known activation.
    """
    if name not in ACTIVATIONS:
        raise UserInputError(
            f"hidden_act={name!r} is not a known activation; use one of {sorted(ACTIVATIONS)}."
        )
    return ACTIVATIONS[name]
