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
from typing import Any

import keras
from keras import ops

from mlm.encoders.activations import ACTIVATIONS, get_activation
from mlm.encoders.blocks import (
    NORMALIZATION_TYPES,
    StochasticDepth,
    TransformerEncoderBlock,
    alibi_slopes,
    check_positive_int,
    check_rate,
    make_normalization,
)
from mlm.errors import UserInputError
from mlm.layers import Dropout

# The building blocks are defined in `activations` and `blocks`; existing imports name them here.
__all__ = [
    "ACTIVATIONS",
    "BERT",
    "BERT_VARIANTS",
    "NORMALIZATION_TYPES",
    "POSITION_EMBEDDING_TYPES",
    "StochasticDepth",
    "TransformerEncoderBlock",
    "alibi_slopes",
    "get_activation",
    "make_normalization",
]

# Sizes of the BERT family (Turc et al., 2019 for tiny/small; Devlin et al., 2018 for base/large).
BERT_VARIANTS: dict[str, dict[str, int]] = {
    "tiny": {"num_layers": 4, "hidden_size": 256, "num_heads": 4, "intermediate_size": 1024},
    "small": {"num_layers": 6, "hidden_size": 512, "num_heads": 8, "intermediate_size": 2048},
    "base": {"num_layers": 12, "hidden_size": 768, "num_heads": 12, "intermediate_size": 3072},
    "large": {"num_layers": 24, "hidden_size": 1024, "num_heads": 16, "intermediate_size": 4096},
}

POSITION_EMBEDDING_TYPES = ("absolute", "alibi")


def _check_arguments(
    sizes: dict[str, Any], rates: dict[str, Any], hidden_act: str, position_embedding_type: str
) -> None:
    """Validates `BERT`'s arguments before anything is built.

    Raises:
        UserInputError: a size that is not a positive integer, a rate outside [0, 1), an unknown
            activation or position embedding type.
    """
    for name, value in sizes.items():
        check_positive_int(name, value)
    for name, value in rates.items():
        check_rate(name, value)
    get_activation(hidden_act)
    if position_embedding_type not in POSITION_EMBEDDING_TYPES:
        raise UserInputError(
            f"position_embedding_type={position_embedding_type!r} is not supported; "
            f"use one of {list(POSITION_EMBEDDING_TYPES)}."
        )


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
        _check_arguments(
            sizes={
                "vocab_size": vocab_size,
                "hidden_size": hidden_size,
                "num_layers": num_layers,
                "num_heads": num_heads,
                "intermediate_size": intermediate_size,
                "max_position_embeddings": max_position_embeddings,
                "type_vocab_size": type_vocab_size,
            },
            rates={
                "hidden_dropout_prob": hidden_dropout_prob,
                "attention_probs_dropout_prob": attention_probs_dropout_prob,
                "stochastic_depth_rate": stochastic_depth_rate,
            },
            hidden_act=hidden_act,
            position_embedding_type=position_embedding_type,
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

        # === Layers === (created in this order, the order of the model's weights)
        self._create_embedding_layers()
        self.transformer_layers = self._create_transformer_layers()
        self._create_output_layers()

    def _initializer(self) -> keras.initializers.Initializer:
        return keras.initializers.TruncatedNormal(stddev=self.initializer_range)

    def _embedding(self, input_dim: int, name: str) -> keras.layers.Embedding:
        return keras.layers.Embedding(
            input_dim,
            self.hidden_size,
            embeddings_initializer=self._initializer(),
            dtype=self.dtype_policy,
            name=name,
        )

    def _create_embedding_layers(self) -> None:
        """Token, position (absolute only) and segment embeddings, their norm and dropout."""
        self.token_embedding = self._embedding(self.vocab_size, "token_embedding")
        self.position_embedding = (
            self._embedding(self.max_position_embeddings, "position_embedding")
            if self.position_embedding_type == "absolute"
            else None
        )
        self.segment_embedding = self._embedding(self.type_vocab_size, "segment_embedding")
        self.embeddings_norm = make_normalization(
            self.normalization_type,
            self.layer_norm_eps,
            name="embeddings_norm",
            dtype=self.dtype_policy,
        )
        self.embeddings_dropout = Dropout(
            self.hidden_dropout_prob, dtype=self.dtype_policy, name="embeddings_dropout"
        )

    def _create_transformer_layers(self) -> list[TransformerEncoderBlock]:
        """The `num_layers` blocks, each with its rate from `drop_path_rates`."""
        return [
            TransformerEncoderBlock(
                hidden_size=self.hidden_size,
                num_heads=self.num_heads,
                intermediate_size=self.intermediate_size,
                hidden_act=self.hidden_act,
                hidden_dropout_prob=self.hidden_dropout_prob,
                attention_probs_dropout_prob=self.attention_probs_dropout_prob,
                layer_norm_eps=self.layer_norm_eps,
                normalization_type=self.normalization_type,
                drop_path_rate=rate,
                initializer_range=self.initializer_range,
                norm_first=self.norm_first,
                dtype=self.dtype_policy,
                name=f"transformer_layer_{index}",
            )
            for index, rate in enumerate(self.drop_path_rates())
        ]

    def _create_output_layers(self) -> None:
        """The final normalization (pre-norm only) and the pooler (`add_pooler` only)."""
        # Pre-norm blocks leave the residual stream unnormalized: normalize it once at the end.
        self.final_norm = (
            make_normalization(
                self.normalization_type,
                self.layer_norm_eps,
                name="final_norm",
                dtype=self.dtype_policy,
            )
            if self.norm_first
            else None
        )
        self.pooler = (
            keras.layers.Dense(
                self.hidden_size,
                activation="tanh",
                kernel_initializer=self._initializer(),
                dtype=self.dtype_policy,
                name="pooler",
            )
            if self.add_pooler
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
