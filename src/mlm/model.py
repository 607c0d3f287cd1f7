"""The masked-language-model pre-trainer: any encoder plus a BERT MLM head and dynamic masking.

`MaskedLanguageModel` wraps an encoder (anything with a `hidden_size` attribute whose output dict
holds `last_hidden_state`), masks each batch on the fly (`mlm.masking.mask_tokens`) and learns to
predict the original ids. In training the vocabulary projection runs only at the selected
positions (as keras-hub's `MaskedLMHead` and MosaicBERT do), which removes most of the output
layer's cost; `call` still returns full logits for inference. The head's output projection
(`MLMOutputProjection`) and the loss on its logits (`replica_loss`) are defined in
`mlm.mlm_head` and importable from here too.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import keras
import tensorflow as tf

from mlm.errors import UserInputError
from mlm.layers import Dropout, LayerNormalization
from mlm.masking import MaskingSpec, mask_tokens
from mlm.mlm_head import (
    MLMOutputProjection,
    head_activation,
    masked_cross_entropy,
    replica_loss,
)
from mlm.optimization import optimizer_builder

# The seed README's recommended configurations (keyword arguments of MaskedLanguageModel).
MLM_PRESETS: dict[str, dict[str, Any]] = {
    "standard": {
        "mask_ratio": 0.15,
        "random_token_ratio": 0.1,
        "unchanged_ratio": 0.1,
        "mlm_head_activation": "gelu",
        "initializer_range": 0.02,
        "mlm_head_dropout": 0.1,
    },
    "low_resource": {
        "mask_ratio": 0.20,
        "random_token_ratio": 0.05,
        "unchanged_ratio": 0.05,
        "mlm_head_dropout": 0.15,
    },
    "domain_adaptation": {
        "mask_ratio": 0.10,
        "random_token_ratio": 0.05,
        "unchanged_ratio": 0.05,
        "mlm_head_dropout": 0.05,
    },
}

_ENCODER_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")
# Masking settings exposed as validated attributes (name -> `MaskingSpec` field); setting one
# re-traces the train/test steps.
_MASKING_ATTRIBUTES = {
    "mask_ratio": "mask_ratio",
    "mask_token_id": "mask_token_id",
    "random_token_ratio": "random_token_ratio",
    "unchanged_ratio": "unchanged_ratio",
    "special_token_ids": "special_token_ids",
    "max_predictions_per_seq": "max_predictions",
    "continuation_token_ids": "continuation_token_ids",
}


@keras.saving.register_keras_serializable(package="mlm")
class MaskedLanguageModel(keras.Model):
    """Masked-language-model pre-trainer around any text encoder.

    The head is BERT's: Dense(hidden, activation) -> Dropout -> LayerNorm -> projection to the
    vocabulary. `fit`/`evaluate` mask each batch dynamically and compute the loss (mean
    cross-entropy over the selected tokens) internally, so `compile` needs only an optimizer.

    Args:
        encoder: A Keras model with a `hidden_size` attribute, called with a dict (`input_ids`,
            `attention_mask`, optional `token_type_ids`) and returning a dict with
            `last_hidden_state` `[B, L, hidden_size]`.
        vocab_size: Vocabulary size; must match the encoder's when it has `vocab_size` or a
            `token_embedding`.
        mask_ratio: Fraction of maskable tokens selected for prediction.
        mask_token_id: Id of `[MASK]`.
        random_token_ratio: Fraction of selected tokens replaced by a random non-special id.
        unchanged_ratio: Fraction of selected tokens left unchanged.
        special_token_ids: Ids never selected (e.g. `tokenizer.all_special_ids`).
        mlm_head_activation: Activation of the head's dense layer (a Keras activation name).
        initializer_range: Standard deviation of the head's truncated-normal initializers.
        mlm_head_dropout: Dropout rate in the head.
        layer_norm_eps: Epsilon of the head's LayerNormalization.
        tie_word_embeddings: Use the encoder's `token_embedding.embeddings` as output kernel.
        max_predictions_per_seq: Optional fixed number of predictions per sequence (static
            shapes, as XLA needs); sequences with more selected tokens drop whole words.
        continuation_token_ids: Optional ids of "##" word pieces; turns on whole-word masking.
        **kwargs: `keras.Model` arguments (`name`, ...).

    Example:

    ```python
    encoder = mlm.BERT.from_variant("tiny", vocab_size=1000)
    model = mlm.MaskedLanguageModel(encoder, vocab_size=1000, mask_token_id=4,
                                    special_token_ids=[0, 1, 2, 3, 4])
    model.compile(optimizer=keras.optimizers.AdamW(1e-4))
    model.fit(dataset_of_dicts, epochs=1)
    ```
    """

    def __init__(
        self,
        encoder: keras.Model,
        vocab_size: int,
        mask_ratio: float = 0.15,
        mask_token_id: int = 103,
        random_token_ratio: float = 0.1,
        unchanged_ratio: float = 0.1,
        special_token_ids: Sequence[int] = (),
        mlm_head_activation: str = "gelu",
        initializer_range: float = 0.02,
        mlm_head_dropout: float = 0.1,
        layer_norm_eps: float = 1e-12,
        tie_word_embeddings: bool = False,
        max_predictions_per_seq: int | None = None,
        continuation_token_ids: Sequence[int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _check_encoder(encoder, vocab_size, tie_word_embeddings)
        if not 0.0 <= float(mlm_head_dropout) < 1.0:
            raise UserInputError(f"mlm_head_dropout must be in [0, 1), got {mlm_head_dropout}.")
        activation = head_activation(mlm_head_activation)

        # === Config ===
        self.encoder = encoder
        self.vocab_size = int(vocab_size)
        self.hidden_size = int(encoder.hidden_size)
        self.mlm_head_activation = mlm_head_activation
        self.initializer_range = float(initializer_range)
        self.layer_norm_eps = float(layer_norm_eps)
        self.tie_word_embeddings = bool(tie_word_embeddings)
        self._store_masking(
            MaskingSpec(
                vocab_size=self.vocab_size,
                mask_ratio=mask_ratio,
                mask_token_id=mask_token_id,
                random_token_ratio=random_token_ratio,
                unchanged_ratio=unchanged_ratio,
                special_token_ids=special_token_ids,
                max_predictions=max_predictions_per_seq,
                continuation_token_ids=continuation_token_ids,
            )
        )

        # === Layers ===
        initializer = keras.initializers.TruncatedNormal(stddev=self.initializer_range)
        self.mlm_dense = keras.layers.Dense(
            self.hidden_size,
            activation=activation,
            kernel_initializer=initializer,
            name="mlm_dense",
        )
        self.mlm_dropout = Dropout(float(mlm_head_dropout), name="mlm_dropout")
        self.mlm_norm = LayerNormalization(epsilon=self.layer_norm_eps, name="mlm_norm")
        self.mlm_output = MLMOutputProjection(
            self.vocab_size,
            tied=self.tie_word_embeddings,
            kernel_initializer=initializer,
            name="mlm_output",
        )

        # === Metrics ===
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.accuracy_tracker = keras.metrics.Mean(name="mlm_accuracy")
        # Compile-time settings, kept out of Keras state tracking (compile may follow build).
        self.__dict__["_user_metrics"] = []
        self.__dict__["_mlm_compile_config"] = None

    # --- masking settings: settable after loading (e.g. `model.mask_ratio = 0.10`) -------------

    def _store_masking(self, spec: MaskingSpec) -> None:
        """Keeps the (already validated) masking settings used by every step."""
        # Stored outside Keras attribute tracking: plain settings, not model state.
        self.__dict__["_masking"] = spec
        self._reset_compiled_functions()

    @property
    def mlm_head_dropout(self) -> float:
        """Dropout rate of the head; setting it changes the rate used from the next step on."""
        return float(self.mlm_dropout.rate)

    @mlm_head_dropout.setter
    def mlm_head_dropout(self, rate: float) -> None:
        if not 0.0 <= float(rate) < 1.0:
            raise UserInputError(f"mlm_head_dropout must be in [0, 1), got {rate}.")
        self.mlm_dropout.rate = float(rate)
        self._reset_compiled_functions()

    def _reset_compiled_functions(self) -> None:
        # Traced train/test/predict functions baked the old settings in as constants.
        for name in ("train_function", "test_function", "predict_function"):
            if hasattr(self, name):
                object.__setattr__(self, name, None)

    # --- building -------------------------------------------------------------------------------

    def build(self, input_shape=None) -> None:
        """Creates the encoder's and the head's weights (the shape argument is not needed)."""
        if not self.encoder.built:
            dummy = {
                "input_ids": tf.zeros((1, 2), tf.int32),
                "attention_mask": tf.ones((1, 2), tf.int32),
            }
            self._encode(dummy, training=False)
        shape = (None, self.hidden_size)
        self.mlm_dense.build(shape)
        self.mlm_norm.build(shape)
        self.mlm_output.build(shape)

    def _ensure_built(self) -> None:
        if not self.built:
            self.build(None)

    # --- forward passes -------------------------------------------------------------------------

    def _encode(self, inputs: dict, training: bool):
        encoder_inputs = {k: inputs[k] for k in _ENCODER_INPUT_KEYS if k in inputs}
        outputs = self.encoder(encoder_inputs, training=training)
        if not isinstance(outputs, dict) or "last_hidden_state" not in outputs:
            got = sorted(outputs) if isinstance(outputs, dict) else type(outputs).__name__
            raise UserInputError(
                f"The encoder {self.encoder.name!r} must return a dict with 'last_hidden_state' "
                f"[batch, length, hidden_size]; it returned {got}."
            )
        return outputs["last_hidden_state"]

    def _head(self, hidden, training: bool):
        """The MLM head on `[..., hidden]` states -> float32 logits `[..., vocab]`."""
        x = self.mlm_dense(hidden)
        x = self.mlm_dropout(x, training=training)
        x = self.mlm_norm(x)
        embeddings = self.encoder.token_embedding.embeddings if self.tie_word_embeddings else None
        return self.mlm_output(x, embeddings=embeddings)

    def call(self, inputs, training: bool = False):
        """Full logits `[B, L, vocab]` for unmasked inputs (a dict or a tensor of ids)."""
        inputs = _as_input_dict(inputs)
        self._ensure_built()
        return self._head(self._encode(inputs, training), training)

    def mask_inputs(self, inputs, seed=None):
        """Masks a batch: returns (masked inputs dict, labels `[B, L]`, selected mask `[B, L]`).

        Args:
            inputs: Dict with `input_ids` (and `attention_mask`), or a tensor of ids.
            seed: Optional int or `[2]` integer tensor for deterministic masking.
        """
        masked_inputs, masked = self._masked_batch(_as_input_dict(inputs), seed)
        return masked_inputs, masked["labels"], masked["mask"]

    # The seed README's name for `mask_inputs` (its perplexity example calls it).
    _mask_tokens = mask_inputs

    def _masked_batch(self, inputs: dict, seed) -> tuple[dict, dict]:
        """The inputs with masked `input_ids`, and everything `mask_tokens` returned."""
        masked = mask_tokens(
            inputs["input_ids"], inputs.get("attention_mask"), spec=self._masking, seed=seed
        )
        return {**inputs, "input_ids": masked["masked_input_ids"]}, masked

    def masked_lm_forward(
        self, inputs, training: bool, seed=None, return_predictions: bool = False
    ) -> dict:
        """Masks a batch, encodes it and scores the predictions at the selected positions.

        This is the one step computation shared by `train_step`, `test_step`, the evaluation
        utilities and the distributed training loop.

        Args:
            inputs: Dict with `input_ids` (and `attention_mask`, optional `token_type_ids`).
            training: Whether dropout is active.
            seed: Optional int or `[2]` integer tensor for deterministic masking.
            return_predictions: Also return `logits` (float32, `[N, vocab]` or `[B, P, vocab]`),
                `labels` and `weights` at the selected positions.

        Returns:
            Dict of scalar float32 tensors: `loss` (mean cross-entropy over the selected
            tokens, 0 when none), `loss_sum`, `num_masked` and `num_correct`.
        """
        inputs = _as_input_dict(inputs)
        self._ensure_built()
        masked_inputs, masked = self._masked_batch(inputs, seed)
        hidden = self._encode(masked_inputs, training)
        if self._masking.max_predictions is not None:
            hidden = tf.gather(hidden, masked["mask_positions"], batch_dims=1)
            labels, weights = masked["mask_ids"], masked["mask_weights"]
        else:
            positions = tf.where(masked["mask"])
            hidden = tf.gather_nd(hidden, positions)
            labels = tf.gather_nd(masked["labels"], positions)
            weights = tf.ones(tf.shape(labels), tf.float32)
        logits = self._head(hidden, training)
        loss_sum, num_masked, num_correct = masked_cross_entropy(labels, logits, weights)
        result = {
            "loss": tf.math.divide_no_nan(loss_sum, num_masked),
            "loss_sum": loss_sum,
            "num_masked": num_masked,
            "num_correct": num_correct,
        }
        if return_predictions:
            result.update(logits=logits, labels=labels, weights=weights)
        return result

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Mean cross-entropy of logits `y_pred` against ids `y` over positions where
        `sample_weight` (the selection mask) is set; 0 when nothing is selected."""
        if y is None or y_pred is None:
            raise ValueError("MaskedLanguageModel.compute_loss needs `y` (ids) and `y_pred`.")
        weights = tf.ones(tf.shape(y), tf.float32) if sample_weight is None else sample_weight
        loss_sum, count, _ = masked_cross_entropy(y, y_pred, weights)
        return tf.math.divide_no_nan(loss_sum, count)

    # --- training -------------------------------------------------------------------------------

    def compile(
        self,
        optimizer: Any = "adamw",
        loss: Any = None,
        metrics: Iterable[Any] | None = None,
        loss_scale: str | None = None,
        jit_compile: Any = "auto",
        **kwargs: Any,
    ) -> None:
        """Configures training; the loss is built in, so only an optimizer is needed.

        Args:
            optimizer: A Keras optimizer (or its name).
            loss: Must be None: the masked-LM loss is computed internally.
            metrics: Optional extra metrics, updated with the ids and logits at the selected
                positions (e.g. `SparseCategoricalAccuracy(name="mlm_accuracy")`, which then
                replaces the built-in `mlm_accuracy`).
            loss_scale: None or "dynamic" (wraps the optimizer in a `LossScaleOptimizer`, for
                `mixed_float16`).
            jit_compile: As in `keras.Model.compile`; "auto" means no XLA unless
                `max_predictions_per_seq` makes every shape static.
            **kwargs: Other `keras.Model.compile` arguments (`steps_per_execution`, ...).
        """
        if loss is not None:
            raise UserInputError(
                "MaskedLanguageModel computes its masked-LM loss internally; call compile() "
                f"without `loss` (got loss={loss!r})."
            )
        if loss_scale not in (None, "dynamic"):
            raise UserInputError(f"loss_scale must be None or 'dynamic', got {loss_scale!r}.")
        static_shapes = self._masking.max_predictions is not None
        if jit_compile is True and not static_shapes:
            raise UserInputError(
                "jit_compile=True needs static shapes: set max_predictions_per_seq on the model."
            )
        if jit_compile == "auto" and not static_shapes:
            jit_compile = False
        self.__dict__["_mlm_compile_config"] = {
            "optimizer": optimizer,
            "metrics": list(metrics) if metrics else None,
            "loss_scale": loss_scale,
            "jit_compile": jit_compile,
            **kwargs,
        }
        optimizer = keras.optimizers.get(optimizer)
        if loss_scale == "dynamic" and not isinstance(
            optimizer, keras.optimizers.LossScaleOptimizer
        ):
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        self.__dict__["_user_metrics"] = [_as_metric(m) for m in metrics or ()]
        super().compile(optimizer=optimizer, jit_compile=jit_compile, **kwargs)

    def get_compile_config(self) -> dict | None:
        if self._mlm_compile_config is None:
            return None
        return keras.saving.serialize_keras_object(self._mlm_compile_config)

    def compile_from_config(self, config: dict) -> None:
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    @property
    def metrics(self) -> list:
        user_names = {m.name for m in self._user_metrics}
        built_in = [self.loss_tracker]
        if self.accuracy_tracker.name not in user_names:
            built_in.append(self.accuracy_tracker)
        return built_in + list(self._user_metrics)

    def _update_metrics(self, out: dict) -> dict:
        num_masked = out["num_masked"]
        metrics = self.metrics
        self.loss_tracker.update_state(out["loss"], sample_weight=num_masked)
        if self.accuracy_tracker in metrics:
            self.accuracy_tracker.update_state(
                tf.math.divide_no_nan(out["num_correct"], num_masked), sample_weight=num_masked
            )
        for metric in self._user_metrics:
            metric.update_state(out["labels"], out["logits"], sample_weight=out["weights"])
        return {m.name: m.result() for m in metrics}

    def train_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            out = self.masked_lm_forward(x, training=True, return_predictions=True)
            loss = replica_loss(out, self.losses)
            scaled = self.optimizer.scale_loss(loss) if self.optimizer is not None else loss
        variables = self.trainable_variables
        gradients = tape.gradient(scaled, variables)
        if not self.optimizer.built:
            self.optimizer.build(variables)
        # Variables outside the MLM objective (e.g. BERT's pooler) get no gradient: skip them
        # (as the optimizer would, minus its warning); its state still covers every variable.
        pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
        self.optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        return self._update_metrics(out)

    def test_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self._update_metrics(
            self.masked_lm_forward(x, training=False, return_predictions=True)
        )

    # --- serialization --------------------------------------------------------------------------

    def get_config(self) -> dict:
        masking = {
            attribute: _json_value(getattr(self._masking, key))
            for attribute, key in _MASKING_ATTRIBUTES.items()
        }
        return {
            "name": self.name,
            "trainable": self.trainable,
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "vocab_size": self.vocab_size,
            "mlm_head_activation": self.mlm_head_activation,
            "initializer_range": self.initializer_range,
            "mlm_head_dropout": self.mlm_head_dropout,
            "layer_norm_eps": self.layer_norm_eps,
            "tie_word_embeddings": self.tie_word_embeddings,
            **masking,
        }

    @classmethod
    def from_config(cls, config: dict) -> MaskedLanguageModel:
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)


def _masking_property(key: str) -> property:
    def getter(self: MaskedLanguageModel) -> Any:
        return getattr(self._masking, key)

    def setter(self: MaskedLanguageModel, value: Any) -> None:
        self._store_masking(dataclasses.replace(self._masking, **{key: value}))

    return property(getter, setter, doc=f"Masking setting `{key}`; validated when set.")


for _attribute, _key in _MASKING_ATTRIBUTES.items():
    setattr(MaskedLanguageModel, _attribute, _masking_property(_key))


def _json_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _as_input_dict(inputs) -> dict:
    if isinstance(inputs, dict):
        if "input_ids" not in inputs:
            raise UserInputError(
                "MaskedLanguageModel inputs must include 'input_ids' (with optional "
                f"'attention_mask', 'token_type_ids'); got keys {sorted(inputs)}."
            )
        return inputs
    if isinstance(inputs, (list, tuple)):
        raise UserInputError(
            "MaskedLanguageModel inputs must be a dict with 'input_ids' or a tensor of ids; "
            f"got a {type(inputs).__name__} of {len(inputs)} items."
        )
    return {"input_ids": inputs}


def _as_metric(metric: Any) -> keras.metrics.Metric:
    if isinstance(metric, keras.metrics.Metric):
        return metric
    if isinstance(metric, str) and metric in ("accuracy", "acc", "sparse_categorical_accuracy"):
        return keras.metrics.SparseCategoricalAccuracy(name=metric)
    resolved = keras.metrics.get(metric)
    if isinstance(resolved, keras.metrics.Metric):
        return resolved
    name = metric if isinstance(metric, str) else getattr(resolved, "__name__", "metric")
    return keras.metrics.MeanMetricWrapper(resolved, name=name)


def _check_encoder(encoder: Any, vocab_size: int, tie_word_embeddings: bool) -> None:
    if not hasattr(encoder, "hidden_size"):
        raise UserInputError(
            f"The encoder {type(encoder).__name__} has no `hidden_size` attribute; set "
            "`self.hidden_size` in its constructor (the MLM head is sized from it)."
        )
    encoder_vocab = getattr(encoder, "vocab_size", None)
    if encoder_vocab is not None and int(encoder_vocab) != int(vocab_size):
        raise UserInputError(
            f"vocab_size={vocab_size} does not match the encoder's vocab_size={encoder_vocab}; "
            "pass the tokenizer's vocabulary size to both."
        )
    embedding = getattr(encoder, "token_embedding", None)
    embedding_vocab = getattr(embedding, "input_dim", None)
    if embedding_vocab is not None and int(embedding_vocab) != int(vocab_size):
        raise UserInputError(
            f"vocab_size={vocab_size} does not match the encoder's token_embedding "
            f"input_dim={embedding_vocab}; pass the tokenizer's vocabulary size to both."
        )
    if tie_word_embeddings:
        if embedding is None:
            raise UserInputError(
                "tie_word_embeddings=True needs an encoder with a `token_embedding` "
                f"(keras.layers.Embedding) attribute; {type(encoder).__name__} has none."
            )
        if int(getattr(embedding, "output_dim", encoder.hidden_size)) != int(encoder.hidden_size):
            raise UserInputError(
                "tie_word_embeddings=True needs token_embedding.output_dim == hidden_size; got "
                f"{embedding.output_dim} and {encoder.hidden_size}."
            )


def create_mlm_training_model(
    encoder: keras.Model,
    vocab_size: int,
    mask_token_id: int,
    *,
    preset: str | None = None,
    optimizer: Any = None,
    learning_rate: float = 5e-5,
    weight_decay: float = 0.01,
    metrics: Iterable[Any] | None = None,
    loss_scale: str | None = None,
    **mlm_kwargs: Any,
) -> MaskedLanguageModel:
    """Builds and compiles a `MaskedLanguageModel`.

    Args:
        encoder: The encoder to pre-train.
        vocab_size: Vocabulary size.
        mask_token_id: Id of `[MASK]`.
        preset: Optional name in `MLM_PRESETS` ("standard", "low_resource",
            "domain_adaptation"); explicit `mlm_kwargs` override its values.
        optimizer: Optional Keras optimizer; by default `mlm.optimization.optimizer_builder`'s
            AdamW (`learning_rate`, `weight_decay`; no decay on biases and normalization
            parameters).
        learning_rate: Learning rate of the default optimizer.
        weight_decay: Weight decay of the default optimizer.
        metrics: Optional extra metrics (see `MaskedLanguageModel.compile`).
        loss_scale: None or "dynamic".
        **mlm_kwargs: Other `MaskedLanguageModel` arguments.

    Returns:
        The compiled model.
    """
    settings: dict[str, Any] = {}
    if preset is not None:
        if preset not in MLM_PRESETS:
            raise UserInputError(
                f"Unknown preset {preset!r}; valid presets: {', '.join(sorted(MLM_PRESETS))}."
            )
        settings.update(copy.deepcopy(MLM_PRESETS[preset]))
    settings.update(mlm_kwargs)
    model = MaskedLanguageModel(
        encoder=encoder, vocab_size=vocab_size, mask_token_id=mask_token_id, **settings
    )
    if optimizer is None:
        optimizer = optimizer_builder(
            {"type": "adamw", "weight_decay": weight_decay}, learning_rate
        )
    model.compile(optimizer=optimizer, metrics=metrics, loss_scale=loss_scale)
    return model
