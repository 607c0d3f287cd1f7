"""BERT text encoder: embeddings, post-norm transformer blocks and an optional pooler.

The encoder follows "BERT: Pre-training of Deep Bidirectional Transformers for Language
Understanding" (Devlin et al., 2018) and the weight layout of Hugging Face's `BertModel`, so
checkpoints convert one tensor at a time (see `mlm.encoders.hf_checkpoint`). It adds
options from later work: RMS normalization instead of LayerNorm, stochastic depth (drop-path on
the residual branches), pre-norm blocks, and ALiBi attention biases in place of learned position
embeddings.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import keras
from keras import ops

from mlm.errors import UserInputError
from mlm.layers import Dropout, LayerNormalization

# Sizes of the BERT family (Turc et al., 2019 for tiny/small; Devlin et al., 2018 for base/large).
BERT_VARIANTS: dict[str, dict[str, int]] = {
    "tiny": {"num_layers": 4, "hidden_size": 256, "num_heads": 4, "intermediate_size": 1024},
    "small": {"num_layers": 6, "hidden_size": 512, "num_heads": 8, "intermediate_size": 2048},
    "base": {"num_layers": 12, "hidden_size": 768, "num_heads": 12, "intermediate_size": 3072},
    "large": {"num_layers": 24, "hidden_size": 1024, "num_heads": 16, "intermediate_size": 4096},
}

NORMALIZATION_TYPES = ("layer_norm", "rms_norm")
POSITION_EMBEDDING_TYPES = ("absolute", "alibi")


def alibi_slopes(num_heads: int) -> list[float]:
    """Per-head slopes of the ALiBi attention bias `-slope * |query - key|`.

    Press et al. ("Train Short, Test Long", 2022) give head `h` of `n` the slope
    `2 ** (-8 * (h + 1) / n)`. With fewer than 8 heads that makes every head nearly position-blind
    (2 heads: 1/16 and 1/256), so small models take the first `n` slopes of the 8-head sequence
    instead (1/2, 1/4, ...): their first head stays sharply local.
    """
    _check_positive_int("num_heads", num_heads)
    return [2.0 ** (-8.0 * (head + 1) / max(num_heads, 8)) for head in range(num_heads)]


def _gelu_exact(x: Any) -> Any:
    """Exact GELU, `x * Phi(x)`, with a hand-written gradient on TensorFlow.

    The gradient `Phi(x) + x * phi(x)` reuses the forward pass's `Phi(x)`; TensorFlow's
    automatic gradient of `tf.nn.gelu` takes about twice as many elementwise passes over the
    feed-forward activations. Values equal `keras.activations.gelu(x, approximate=False)`.
    """
    if keras.backend.backend() != "tensorflow":
        return keras.activations.gelu(x, approximate=False)
    return _tf_gelu_exact(x)


def _tf_gelu_exact(x: Any) -> Any:
    import tensorflow as tf

    @tf.custom_gradient
    def gelu(x: Any) -> Any:
        cdf = 0.5 * tf.math.erfc(x * -(2.0**-0.5))  # Phi(x), as tf.nn.gelu computes it

        def gradient(upstream: Any) -> Any:
            pdf = tf.exp(-0.5 * tf.square(x)) * (2.0 * math.pi) ** -0.5  # phi(x)
            return upstream * (cdf + x * pdf)

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


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserInputError(f"{name} must be a positive integer, got {value!r}.")


def _check_rate(name: str, value: Any) -> None:
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
        _check_rate("rate", rate)
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
            scores = scores + attention_bias
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


@keras.saving.register_keras_serializable(package="mlm")
class BERT(keras.Model):
    """A BERT encoder: token, position and segment embeddings and a stack of transformer blocks.

    The embeddings are summed, normalized and dropped out, then run through `num_layers`
    transformer blocks that attend only to positions where `attention_mask` is 1: post-norm as
    in BERT, or pre-norm with one more normalization after the last block (`norm_first`; it
    trains stably at higher learning rates, as in Geiping & Goldstein's "Cramming", 2022).
    The optional pooler is a tanh dense layer on the first ([CLS]) position.

    Positions are learned embeddings added to the token embeddings, as in BERT
    (`position_embedding_type="absolute"`), or ALiBi (`"alibi"`; Press et al., 2022, and
    MosaicBERT, Portes et al., 2023): no position embeddings, and each head's attention scores
    get `-slope * |query - key|` (see `alibi_slopes`). Every head then starts out favouring
    nearby tokens, so masked-LM training uses local context from the first steps instead of
    first spending thousands of steps near the unigram loss while learned positions take shape.

    Args:
        vocab_size: number of token ids.
        hidden_size: width of the embeddings and of every block.
        num_layers: number of transformer blocks.
        num_heads: attention heads per block; must divide `hidden_size`.
        intermediate_size: width of each block's feed-forward layer.
        hidden_act: feed-forward activation, one of `ACTIVATIONS` ("gelu" is the exact GELU).
        hidden_dropout_prob: dropout on the embeddings and on each block's branch outputs.
        attention_probs_dropout_prob: dropout on the attention probabilities.
        max_position_embeddings: longest sequence the encoder accepts.
        type_vocab_size: number of segment (token type) ids.
        initializer_range: standard deviation of the truncated-normal weight initializer.
        layer_norm_eps: epsilon of the normalization layers.
        normalization_type: "layer_norm" or "rms_norm".
        norm_first: pre-norm blocks and a final normalization instead of post-norm blocks.
        position_embedding_type: "absolute" (learned position embeddings) or "alibi"
            (attention biases, no position weights).
        use_stochastic_depth: whether to drop residual branches at random during training.
        stochastic_depth_rate: drop-path rate of the last block; it rises linearly from 0 at
            the first block.
        add_pooler: whether to compute `pooler_output`.
        **kwargs: base model arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a dict with `input_ids` [batch, length] and optionally `attention_mask` (1 for
            real tokens, 0 for padding; all ones when missing) and `token_type_ids` (zeros when
            missing), or an int tensor of token ids.
        training: whether dropout and stochastic depth are active.

    Returns:
        A dict with `last_hidden_state` [batch, length, hidden_size], `attention_mask`
        [batch, length] (int32) and, when `add_pooler`, `pooler_output` [batch, hidden_size].

    Example:
    ```python
    encoder = BERT.from_variant("tiny", vocab_size=1000, max_position_embeddings=128)
    outputs = encoder({"input_ids": np.ones((2, 16), "int32")})
    outputs["last_hidden_state"].shape  # (2, 16, 256)
    ```
    """

    def __init__(
        self,
        vocab_size: int = 30522,
        hidden_size: int = 768,
        num_layers: int = 12,
        num_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-12,
        normalization_type: str = "layer_norm",
        norm_first: bool = False,
        position_embedding_type: str = "absolute",
        use_stochastic_depth: bool = False,
        stochastic_depth_rate: float = 0.1,
        add_pooler: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        for name, value in (
            ("vocab_size", vocab_size),
            ("hidden_size", hidden_size),
            ("num_layers", num_layers),
            ("num_heads", num_heads),
            ("intermediate_size", intermediate_size),
            ("max_position_embeddings", max_position_embeddings),
            ("type_vocab_size", type_vocab_size),
        ):
            _check_positive_int(name, value)
        for name, value in (
            ("hidden_dropout_prob", hidden_dropout_prob),
            ("attention_probs_dropout_prob", attention_probs_dropout_prob),
            ("stochastic_depth_rate", stochastic_depth_rate),
        ):
            _check_rate(name, value)
        get_activation(hidden_act)
        if position_embedding_type not in POSITION_EMBEDDING_TYPES:
            raise UserInputError(
                f"position_embedding_type={position_embedding_type!r} is not supported; "
                f"use one of {list(POSITION_EMBEDDING_TYPES)}."
            )

        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.normalization_type = normalization_type
        self.norm_first = norm_first
        self.position_embedding_type = position_embedding_type
        self.use_stochastic_depth = use_stochastic_depth
        self.stochastic_depth_rate = stochastic_depth_rate
        self.add_pooler = add_pooler

        def initializer() -> keras.initializers.Initializer:
            return keras.initializers.TruncatedNormal(stddev=initializer_range)

        def embedding(input_dim: int, name: str) -> keras.layers.Embedding:
            return keras.layers.Embedding(
                input_dim,
                hidden_size,
                embeddings_initializer=initializer(),
                dtype=self.dtype_policy,
                name=name,
            )

        # === Layers ===
        self.token_embedding = embedding(vocab_size, "token_embedding")
        self.position_embedding = (
            embedding(max_position_embeddings, "position_embedding")
            if position_embedding_type == "absolute"
            else None
        )
        self.segment_embedding = embedding(type_vocab_size, "segment_embedding")
        self.embeddings_norm = make_normalization(
            normalization_type, layer_norm_eps, name="embeddings_norm", dtype=self.dtype_policy
        )
        self.embeddings_dropout = Dropout(
            hidden_dropout_prob, dtype=self.dtype_policy, name="embeddings_dropout"
        )
        self.transformer_layers = [
            TransformerEncoderBlock(
                hidden_size=hidden_size,
                num_heads=num_heads,
                intermediate_size=intermediate_size,
                hidden_act=hidden_act,
                hidden_dropout_prob=hidden_dropout_prob,
                attention_probs_dropout_prob=attention_probs_dropout_prob,
                layer_norm_eps=layer_norm_eps,
                normalization_type=normalization_type,
                drop_path_rate=rate,
                initializer_range=initializer_range,
                norm_first=norm_first,
                dtype=self.dtype_policy,
                name=f"transformer_layer_{index}",
            )
            for index, rate in enumerate(self.drop_path_rates())
        ]
        # Pre-norm blocks leave the residual stream unnormalized: normalize it once at the end.
        self.final_norm = (
            make_normalization(
                normalization_type, layer_norm_eps, name="final_norm", dtype=self.dtype_policy
            )
            if norm_first
            else None
        )
        self.pooler = (
            keras.layers.Dense(
                hidden_size,
                activation="tanh",
                kernel_initializer=initializer(),
                dtype=self.dtype_policy,
                name="pooler",
            )
            if add_pooler
            else None
        )

    @classmethod
    def from_variant(cls, variant: str, **overrides: Any) -> BERT:
        """Builds a randomly initialized encoder of a named size.

        Args:
            variant: "tiny" (4 layers, 256 wide), "small" (6, 512), "base" (12, 768) or
                "large" (24, 1024).
            **overrides: any constructor argument, e.g. `vocab_size=...`.

        Raises:
            UserInputError: unknown variant, unknown argument or bad argument value.
        """
        if variant not in BERT_VARIANTS:
            raise UserInputError(
                f"variant={variant!r} is not a BERT variant; use one of {list(BERT_VARIANTS)}."
            )
        arguments = [
            name
            for name in inspect.signature(cls.__init__).parameters
            if name not in ("self", "kwargs")
        ]
        unknown = sorted(set(overrides) - set(arguments) - {"name", "dtype", "trainable"})
        if unknown:
            raise UserInputError(
                f"Unknown BERT argument(s) {unknown}; valid arguments: {', '.join(arguments)}."
            )
        return cls(**{**BERT_VARIANTS[variant], **overrides})

    def drop_path_rates(self) -> list[float]:
        """Returns each block's stochastic-depth rate: 0 for the first, rising to the last."""
        if not self.use_stochastic_depth or self.num_layers == 1:
            return [0.0] * self.num_layers
        step = self.stochastic_depth_rate / (self.num_layers - 1)
        return [step * index for index in range(self.num_layers)]

    def build(self, input_shape: Any = None) -> None:
        # The weights do not depend on the batch size or the sequence length.
        hidden_shape = (None, None, self.hidden_size)
        for embedding in (self.token_embedding, self.position_embedding, self.segment_embedding):
            if embedding is not None:
                embedding.build((None, None))
        self.embeddings_norm.build(hidden_shape)
        for layer in self.transformer_layers:
            layer.build(hidden_shape)
        if self.final_norm is not None:
            self.final_norm.build(hidden_shape)
        if self.pooler is not None:
            self.pooler.build((None, self.hidden_size))
        self.built = True

    def _unpack_inputs(self, inputs: Any) -> tuple[Any, Any, Any]:
        if isinstance(inputs, dict):
            if "input_ids" not in inputs:
                raise UserInputError(
                    f"BERT inputs must contain 'input_ids'; got keys {sorted(inputs)}."
                )
            input_ids = inputs["input_ids"]
            attention_mask = inputs.get("attention_mask")
            token_type_ids = inputs.get("token_type_ids")
        else:
            input_ids, attention_mask, token_type_ids = inputs, None, None
        if len(input_ids.shape) != 2:
            raise UserInputError(
                f"BERT input_ids must have shape [batch, length], got {tuple(input_ids.shape)}."
            )
        input_ids = ops.cast(input_ids, "int32")
        attention_mask = (
            ops.ones_like(input_ids)
            if attention_mask is None
            else ops.cast(attention_mask, "int32")
        )
        token_type_ids = (
            ops.zeros_like(input_ids)
            if token_type_ids is None
            else ops.cast(token_type_ids, "int32")
        )
        return input_ids, attention_mask, token_type_ids

    def _check_length(self, input_ids: Any) -> None:
        length = input_ids.shape[1]
        message = (
            "BERT input length {} exceeds max_position_embeddings="
            f"{self.max_position_embeddings}; truncate the sequences (e.g. a smaller "
            "max_seq_length) or build the encoder with a larger max_position_embeddings."
        )
        if length is not None:
            if length > self.max_position_embeddings:
                raise UserInputError(message.format(length))
        elif keras.backend.backend() == "tensorflow":
            # Length known only at run time (e.g. a serving signature): check it in the graph,
            # since an out-of-range position lookup fails obscurely on CPU and silently on GPU.
            import tensorflow as tf

            tf.debugging.assert_less_equal(
                tf.shape(input_ids)[1],
                self.max_position_embeddings,
                message=message.format("(dynamic)"),
            )

    def call(self, inputs: Any, training: bool | None = None) -> dict[str, Any]:
        input_ids, attention_mask, token_type_ids = self._unpack_inputs(inputs)
        self._check_length(input_ids)
        length = ops.shape(input_ids)[1]
        x = self.token_embedding(input_ids) + self.segment_embedding(token_type_ids)
        attention_bias = None
        if self.position_embedding is not None:
            positions = ops.expand_dims(ops.arange(length, dtype="int32"), 0)
            x = x + self.position_embedding(positions)
        else:
            attention_bias = self._alibi_bias(length)
        x = self.embeddings_dropout(self.embeddings_norm(x), training=training)
        # [batch, 1, length]: every query position sees the same keys.
        self_attention_mask = ops.expand_dims(ops.cast(attention_mask, "bool"), 1)
        for layer in self.transformer_layers:
            x = layer(
                x,
                attention_mask=self_attention_mask,
                attention_bias=attention_bias,
                training=training,
            )
        if self.final_norm is not None:
            x = self.final_norm(x)
        outputs = {"last_hidden_state": x, "attention_mask": attention_mask}
        if self.pooler is not None:
            outputs["pooler_output"] = self.pooler(x[:, 0, :])
        return outputs

    def _alibi_bias(self, length: Any) -> Any:
        """Float32 `[1, num_heads, length, length]`: `-slope * |query - key|` per head."""
        positions = ops.arange(length, dtype="float32")
        distance = ops.abs(ops.expand_dims(positions, 1) - ops.expand_dims(positions, 0))
        slopes = ops.convert_to_tensor(alibi_slopes(self.num_heads), dtype="float32")
        return -ops.reshape(slopes, (1, -1, 1, 1)) * ops.expand_dims(distance, 0)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "vocab_size": self.vocab_size,
                "hidden_size": self.hidden_size,
                "num_layers": self.num_layers,
                "num_heads": self.num_heads,
                "intermediate_size": self.intermediate_size,
                "hidden_act": self.hidden_act,
                "hidden_dropout_prob": self.hidden_dropout_prob,
                "attention_probs_dropout_prob": self.attention_probs_dropout_prob,
                "max_position_embeddings": self.max_position_embeddings,
                "type_vocab_size": self.type_vocab_size,
                "initializer_range": self.initializer_range,
                "layer_norm_eps": self.layer_norm_eps,
                "normalization_type": self.normalization_type,
                "norm_first": self.norm_first,
                "position_embedding_type": self.position_embedding_type,
                "use_stochastic_depth": self.use_stochastic_depth,
                "stochastic_depth_rate": self.stochastic_depth_rate,
                "add_pooler": self.add_pooler,
            }
        )
        return config
