"""Building blocks of the BERT encoder: normalization, ALiBi slopes, drop-path, transformer block.

`mlm.encoders.bert.BERT` stacks `TransformerEncoderBlock`s; the block's options come from later
work than BERT: RMS normalization instead of LayerNorm, stochastic depth (drop-path on the
residual branches) and pre-norm. ALiBi's per-head slopes (attention biases in place of learned
position embeddings) are defined here too.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from mlm.encoders.activations import get_activation
from mlm.errors import UserInputError
from mlm.layers import Dropout, LayerNormalization

NORMALIZATION_TYPES = ("layer_norm", "rms_norm")


def alibi_slopes(num_heads: int) -> list[float]:
    """Per-head slopes of the ALiBi attention bias `-slope * |query - key|`.

    Press et al. ("Train Short, Test Long", 2022) give head `h` of `n` the slope
    `2 ** (-8 * (h + 1) / n)`. With fewer than 8 heads that makes every head nearly position-blind
    (2 heads: 1/16 and 1/256), so small models take the first `n` slopes of the 8-head sequence
    instead (1/2, 1/4, ...): their first head stays sharply local.
    """
    check_positive_int("num_heads", num_heads)
    return [2.0 ** (-8.0 * (head + 1) / max(num_heads, 8)) for head in range(num_heads)]


def make_normalization(
    normalization_type: str, epsilon: float, name: str | None = None, dtype: Any = None
) -> keras.layers.Layer:
    """Returns a LayerNormalization or RMSNormalization layer over the last axis.

    Args:
        normalization_type: "layer_norm" (scale and bias) or "rms_norm" (scale only).
        epsilon: added to the variance for numerical stability.
        name: layer name.
        dtype: dtype policy of the layer.

    Raises:
        UserInputError: unknown `normalization_type`.
    """
    if normalization_type == "layer_norm":
        return LayerNormalization(epsilon=epsilon, name=name, dtype=dtype)
    if normalization_type == "rms_norm":
        return keras.layers.RMSNormalization(epsilon=epsilon, name=name, dtype=dtype)
    raise UserInputError(
        f"normalization_type={normalization_type!r} is not supported; "
        f"use one of {list(NORMALIZATION_TYPES)}."
    )


def check_positive_int(name: str, value: Any) -> None:
    """Raises `UserInputError` unless `value` is an int (not a bool) of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserInputError(f"{name} must be a positive integer, got {value!r}.")


def check_rate(name: str, value: Any) -> None:
    """Raises `UserInputError` unless `value` is a number (not a bool) in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise UserInputError(f"{name} must be a number in [0, 1), got {value!r}.")


@keras.saving.register_keras_serializable(package="mlm")
class StochasticDepth(keras.layers.Layer):
    """Drop-path: during training, drops a whole residual branch for a random subset of samples.

    Each sample's branch output is zeroed with probability `rate` and the kept ones are scaled by
    `1 / (1 - rate)`, so the expected output is unchanged (Huang et al., 2016). Outside training
    the layer is the identity.

    Args:
        rate: probability of dropping the branch, in [0, 1).
        seed: seed of the layer's random generator.
        **kwargs: base layer arguments (`name`, `dtype`, ...).
    """

    def __init__(self, rate: float = 0.0, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_rate("rate", rate)
        self.rate = float(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if not training or self.rate == 0.0:
            return inputs
        keep_prob = 1.0 - self.rate
        # One draw per sample, broadcast over the sequence and feature axes.
        shape = (ops.shape(inputs)[0], *([1] * (len(inputs.shape) - 1)))
        noise = keras.random.uniform(shape, seed=self.seed_generator, dtype=inputs.dtype)
        keep = ops.floor(keep_prob + noise)
        return inputs / keep_prob * keep

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update({"rate": self.rate, "seed": self.seed})
        return config


@keras.saving.register_keras_serializable(package="mlm")
class TransformerEncoderBlock(keras.layers.Layer):
    """A transformer encoder block: post-norm as in BERT, or pre-norm.

    Post-norm (the default): `x = norm(x + drop_path(dropout(attention(x))))`, then
    `x = norm(x + drop_path(dropout(dense(act(dense(x))))))`. Pre-norm (`norm_first=True`)
    normalizes each branch's input instead and leaves the residual stream unnormalized:
    `x = x + drop_path(dropout(attention(norm(x))))`, then the same for the feed-forward branch.

    Args:
        hidden_size: width of the input and output.
        num_heads: attention heads; must divide `hidden_size`.
        intermediate_size: width of the feed-forward layer.
        hidden_act: feed-forward activation, a name in `ACTIVATIONS`.
        hidden_dropout_prob: dropout on each branch output.
        attention_probs_dropout_prob: dropout on the attention probabilities.
        layer_norm_eps: epsilon of the normalization layers.
        normalization_type: "layer_norm" or "rms_norm".
        drop_path_rate: stochastic-depth rate of both residual branches.
        initializer_range: standard deviation of the truncated-normal kernel initializer.
        norm_first: pre-norm instead of post-norm.
        **kwargs: base layer arguments (`name`, `dtype`, ...).
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        layer_norm_eps: float = 1e-12,
        normalization_type: str = "layer_norm",
        drop_path_rate: float = 0.0,
        initializer_range: float = 0.02,
        norm_first: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if hidden_size % num_heads:
            raise UserInputError(
                f"hidden_size={hidden_size} must be divisible by num_heads={num_heads}."
            )
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.layer_norm_eps = layer_norm_eps
        self.normalization_type = normalization_type
        self.drop_path_rate = drop_path_rate
        self.initializer_range = initializer_range
        self.norm_first = norm_first
        self.activation = get_activation(hidden_act)

        def initializer() -> keras.initializers.Initializer:
            return keras.initializers.TruncatedNormal(stddev=initializer_range)

        # === Layers ===
        self.attention = keras.layers.MultiHeadAttention(
            num_heads=num_heads,
            key_dim=hidden_size // num_heads,
            dropout=attention_probs_dropout_prob,
            kernel_initializer=initializer(),
            dtype=self.dtype_policy,
            name="attention",
        )
        self.attention_probs_dropout = Dropout(
            attention_probs_dropout_prob, dtype=self.dtype_policy, name="attention_probs_dropout"
        )
        self.attention_dropout = Dropout(
            hidden_dropout_prob, dtype=self.dtype_policy, name="attention_dropout"
        )
        self.attention_norm = make_normalization(
            normalization_type, layer_norm_eps, name="attention_norm", dtype=self.dtype_policy
        )
        self.intermediate_dense = keras.layers.Dense(
            intermediate_size,
            kernel_initializer=initializer(),
            dtype=self.dtype_policy,
            name="intermediate_dense",
        )
        self.output_dense = keras.layers.Dense(
            hidden_size,
            kernel_initializer=initializer(),
            dtype=self.dtype_policy,
            name="output_dense",
        )
        self.output_dropout = Dropout(
            hidden_dropout_prob, dtype=self.dtype_policy, name="output_dropout"
        )
        self.output_norm = make_normalization(
            normalization_type, layer_norm_eps, name="output_norm", dtype=self.dtype_policy
        )
        self.drop_path = StochasticDepth(drop_path_rate, dtype=self.dtype_policy, name="drop_path")

    def build(self, input_shape: tuple) -> None:
        self.attention.build(query_shape=input_shape, value_shape=input_shape)
        self.attention_norm.build(input_shape)
        self.intermediate_dense.build(input_shape)
        self.output_dense.build((*input_shape[:-1], self.intermediate_size))
        self.output_norm.build(input_shape)
        self.built = True

    def call(
        self,
        inputs: Any,
        attention_mask: Any = None,
        attention_bias: Any = None,
        training: bool | None = None,
    ) -> Any:
        """Runs the block.

        Args:
            inputs: float tensor [batch, length, hidden_size].
            attention_mask: bool tensor broadcastable to [batch, length, length]; False marks
                key positions that no query may attend to (padding).
            attention_bias: optional float32 tensor broadcastable to [batch, num_heads, length,
                length], added to the attention scores before the softmax (e.g. ALiBi).
            training: whether dropout and drop-path are active.

        Returns:
            Float tensor of the same shape as `inputs`.
        """
        if self.norm_first:
            attended = self._self_attention(
                self.attention_norm(inputs), attention_mask, training, attention_bias
            )
            attended = self.attention_dropout(attended, training=training)
            x = inputs + self.drop_path(attended, training=training)
            hidden = self.activation(self.intermediate_dense(self.output_norm(x)))
            hidden = self.output_dropout(self.output_dense(hidden), training=training)
            return x + self.drop_path(hidden, training=training)
        attended = self._self_attention(inputs, attention_mask, training, attention_bias)
        attended = self.attention_dropout(attended, training=training)
        x = self.attention_norm(inputs + self.drop_path(attended, training=training))
        hidden = self.activation(self.intermediate_dense(x))
        hidden = self.output_dropout(self.output_dense(hidden), training=training)
        return self.output_norm(x + self.drop_path(hidden, training=training))

    def _self_attention(
        self,
        inputs: Any,
        attention_mask: Any,
        training: bool | None,
        attention_bias: Any = None,
    ) -> Any:
        """Multi-head self-attention computed with the weights of `self.attention`.

        `self.attention` (a Keras `MultiHeadAttention`) holds the weights in its layout, which
        checkpoints and the Hugging Face import rely on; its einsums run ~2.8x slower on
        TensorFlow's CPU kernels than batched matmuls in [batch, heads, length, head_dim]
        layout, so the computation is done here: one fused query/key/value projection, scaled
        dot products with the bias and the mask added before a float32 softmax, dropout on the
        probabilities, and the output projection. Without a bias the result equals
        `self.attention(inputs, inputs, attention_mask=attention_mask)` (tested).
        """
        dtype = self.compute_dtype
        hidden, heads = self.hidden_size, self.num_heads
        head_dim = hidden // heads
        projections = (
            self.attention.query_dense,
            self.attention.key_dense,
            self.attention.value_dense,
        )
        kernel = ops.concatenate(
            [ops.reshape(ops.cast(p.kernel, dtype), (hidden, hidden)) for p in projections], axis=1
        )
        bias = ops.concatenate(
            [ops.reshape(ops.cast(p.bias, dtype), (hidden,)) for p in projections], axis=0
        )
        batch, length = ops.shape(inputs)[0], ops.shape(inputs)[1]
        qkv = ops.reshape(ops.matmul(inputs, kernel) + bias, (batch, length, 3, heads, head_dim))
        query, key, value = ops.unstack(ops.transpose(qkv, (2, 0, 3, 1, 4)), axis=0)
        query = query * ops.cast(1.0 / head_dim**0.5, dtype)
        scores = ops.cast(ops.matmul(query, ops.swapaxes(key, -1, -2)), "float32")
        if attention_bias is not None:
            # Keras casts a layer's float arguments to its compute dtype (float16/bfloat16
            # under mixed precision); the scores are float32.
            scores = scores + ops.cast(attention_bias, "float32")
        if attention_mask is not None:  # bool, [batch, (length or 1), length] -> add per head
            keep = ops.cast(ops.expand_dims(attention_mask, -3), "float32")
            scores = scores + (1.0 - keep) * -1e9
        probs = ops.cast(ops.softmax(scores, axis=-1), dtype)
        probs = self.attention_probs_dropout(probs, training=training)
        context = ops.matmul(probs, value)
        if attention_mask is not None:
            # A query that may attend to no key gets no context (Keras zeroes its weights).
            context = context * ops.cast(ops.max(keep, axis=-1, keepdims=True), dtype)
        context = ops.transpose(context, (0, 2, 1, 3))
        context = ops.reshape(context, (batch, length, hidden))
        output = self.attention.output_dense
        return ops.matmul(
            context, ops.reshape(ops.cast(output.kernel, dtype), (hidden, hidden))
        ) + (ops.cast(output.bias, dtype))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "hidden_size": self.hidden_size,
                "num_heads": self.num_heads,
                "intermediate_size": self.intermediate_size,
                "hidden_act": self.hidden_act,
                "hidden_dropout_prob": self.hidden_dropout_prob,
                "attention_probs_dropout_prob": self.attention_probs_dropout_prob,
                "layer_norm_eps": self.layer_norm_eps,
                "normalization_type": self.normalization_type,
                "drop_path_rate": self.drop_path_rate,
                "initializer_range": self.initializer_range,
                "norm_first": self.norm_first,
            }
        )
        return config
