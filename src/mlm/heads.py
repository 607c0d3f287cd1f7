"""NLP task heads that turn an encoder's output dict into task logits.

A head is a small Keras layer called on the dict an encoder returns (`last_hidden_state`
[B, L, H], `attention_mask` [B, L] and, when the encoder has a pooler, `pooler_output` [B, H]):

- `SequenceClassificationHead` pools one vector per sequence ([CLS], the pooler output or a masked
  mean) and gives [B, num_classes] logits (text classification, sentiment, sentence pairs);
- `TokenClassificationHead` gives [B, L, num_classes] logits, one row per position (NER, tagging).

`create_nlp_head(task_config, input_dim)` picks the head for an `NLPTaskConfig`.

Example:

```python
encoder = keras.models.load_model("encoder.keras")
head = create_nlp_head(
    NLPTaskConfig(name="sentiment", task_type=NLPTaskType.SENTIMENT_ANALYSIS, num_classes=3),
    input_dim=encoder.hidden_size,
)
inputs = {
    "input_ids": keras.Input(shape=(128,), dtype="int32"),
    "attention_mask": keras.Input(shape=(128,), dtype="int32"),
}
model = keras.Model(inputs, head(encoder(inputs)))
```
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import keras
from keras import ops

from mlm.errors import UserInputError
from mlm.layers import Dropout


class NLPTaskType(str, enum.Enum):
    """The kind of downstream task; decides between a sequence-level and a token-level head."""

    TEXT_CLASSIFICATION = "text_classification"
    SENTIMENT_ANALYSIS = "sentiment_analysis"
    SENTENCE_PAIR_CLASSIFICATION = "sentence_pair_classification"
    TOKEN_CLASSIFICATION = "token_classification"
    NAMED_ENTITY_RECOGNITION = "named_entity_recognition"
    PART_OF_SPEECH_TAGGING = "part_of_speech_tagging"

    # Short alias used in configs and on the command line.
    NER = "named_entity_recognition"

    @classmethod
    def _missing_(cls, value: object) -> NLPTaskType | None:
        # Accept member names ("NER", "sentiment_analysis") as well as values.
        if isinstance(value, str):
            return cls.__members__.get(value.strip().upper().replace("-", "_"))
        return None

    @property
    def is_token_level(self) -> bool:
        """Whether the task labels every token (True) or the whole sequence (False)."""
        return self in _TOKEN_LEVEL_TASKS


_TOKEN_LEVEL_TASKS = frozenset(
    {
        NLPTaskType.TOKEN_CLASSIFICATION,
        NLPTaskType.NAMED_ENTITY_RECOGNITION,
        NLPTaskType.PART_OF_SPEECH_TAGGING,
    }
)

POOLING_MODES = ("cls", "pooled", "mean")


@dataclasses.dataclass(frozen=True)
class NLPTaskConfig:
    """Description of one downstream task and the head that solves it.

    Args:
        name: Task name; also the name of the head layer.
        task_type: An `NLPTaskType` (or its string value).
        num_classes: Number of output classes (labels or tags), at least 2.
        dropout_rate: Dropout before the output projection, in [0, 1).
        pooling: Sequence tasks only: "cls" (first position of `last_hidden_state`), "pooled"
            (the encoder's `pooler_output`) or "mean" (mean over attended positions).
        hidden_size: Optional width of a tanh Dense layer before the output projection
            (None: project the encoder features directly).
        initializer_range: Standard deviation of the truncated-normal kernel initializer.
    """

    name: str
    task_type: NLPTaskType
    num_classes: int
    dropout_rate: float = 0.1
    pooling: str = "cls"
    hidden_size: int | None = None
    initializer_range: float = 0.02

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "task_type", NLPTaskType(self.task_type))
        except ValueError:
            choices = ", ".join(sorted({t.value for t in NLPTaskType}))
            raise UserInputError(
                f"NLPTaskConfig.task_type: unknown task {self.task_type!r}; use one of {choices}"
            ) from None
        if not self.name:
            raise UserInputError("NLPTaskConfig.name: give the task a non-empty name")
        if int(self.num_classes) < 2:
            raise UserInputError(
                f"NLPTaskConfig.num_classes: need at least 2 classes, got {self.num_classes}"
            )
        if not 0.0 <= float(self.dropout_rate) < 1.0:
            raise UserInputError(
                f"NLPTaskConfig.dropout_rate: must be in [0, 1), got {self.dropout_rate}"
            )
        if self.pooling not in POOLING_MODES:
            raise UserInputError(
                f"NLPTaskConfig.pooling: got {self.pooling!r}; use one of {', '.join(POOLING_MODES)}"
            )
        if self.hidden_size is not None and int(self.hidden_size) < 1:
            raise UserInputError(
                f"NLPTaskConfig.hidden_size: must be a positive width or None, got "
                f"{self.hidden_size}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-ready values."""
        values = dataclasses.asdict(self)
        values["task_type"] = self.task_type.value
        return values


class _TaskHead(keras.layers.Layer):
    """Shared parts of the heads: optional tanh Dense, dropout and the output projection."""

    def __init__(
        self,
        num_classes: int,
        input_dim: int,
        dropout_rate: float = 0.1,
        hidden_size: int | None = None,
        initializer_range: float = 0.02,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}")
        if int(input_dim) < 1:
            raise ValueError(f"input_dim must be positive, got {input_dim}")
        self.num_classes = int(num_classes)
        self.input_dim = int(input_dim)
        self.dropout_rate = float(dropout_rate)
        self.hidden_size = None if hidden_size is None else int(hidden_size)
        self.initializer_range = float(initializer_range)

        # === Layers ===
        initializer = keras.initializers.TruncatedNormal(stddev=self.initializer_range)
        self.hidden = (
            None
            if self.hidden_size is None
            else keras.layers.Dense(
                self.hidden_size,
                activation="tanh",
                kernel_initializer=initializer,
                dtype=self.dtype_policy,
                name="hidden",
            )
        )
        self.dropout = Dropout(self.dropout_rate, dtype=self.dtype_policy)
        self.classifier = keras.layers.Dense(
            self.num_classes,
            kernel_initializer=initializer,
            dtype=self.dtype_policy,
            name="logits",
        )

    def build(self, input_shape: Any = None) -> None:
        # The encoder output is a dict; the feature width is known from input_dim.
        width = self.input_dim
        if self.hidden is not None:
            self.hidden.build((None, width))
            width = self.hidden_size
        self.classifier.build((None, width))
        self.built = True

    def _project(self, features: Any, training: bool | None) -> Any:
        if self.hidden is not None:
            features = self.hidden(features)
        return self.classifier(self.dropout(features, training=training))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "input_dim": self.input_dim,
                "dropout_rate": self.dropout_rate,
                "hidden_size": self.hidden_size,
                "initializer_range": self.initializer_range,
            }
        )
        return config


def _hidden_states(inputs: Any) -> Any:
    if isinstance(inputs, dict):
        if "last_hidden_state" not in inputs:
            raise ValueError(
                "the head expects the encoder's output dict with 'last_hidden_state', got keys "
                f"{sorted(inputs)}"
            )
        return inputs["last_hidden_state"]
    return inputs


@keras.saving.register_keras_serializable(package="mlm")
class SequenceClassificationHead(_TaskHead):
    """Classifies whole sequences from one pooled vector per sequence.

    Args:
        num_classes: Number of classes.
        input_dim: Width of the encoder features (`hidden_size`).
        pooling: "cls" (position 0 of `last_hidden_state`), "pooled" (the encoder's
            `pooler_output`) or "mean" (mean over positions where `attention_mask` is 1).
        dropout_rate: Dropout before the output projection.
        hidden_size: Optional width of a tanh Dense layer before the output projection.
        initializer_range: Standard deviation of the kernel initializer.

    Call arguments:
        inputs: The encoder's output dict (or a [B, L, H] tensor for "cls"/"mean").

    Returns:
        Logits [B, num_classes].
    """

    def __init__(self, num_classes: int, input_dim: int, pooling: str = "cls", **kwargs: Any):
        if pooling not in POOLING_MODES:
            raise ValueError(f"pooling must be one of {POOLING_MODES}, got {pooling!r}")
        self.pooling = pooling
        super().__init__(num_classes, input_dim, **kwargs)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if self.pooling == "pooled":
            if not isinstance(inputs, dict) or inputs.get("pooler_output") is None:
                raise ValueError(
                    "pooling='pooled' needs an encoder built with add_pooler=True "
                    "(no 'pooler_output' in its outputs); use pooling='cls' instead"
                )
            features = inputs["pooler_output"]
        elif self.pooling == "mean":
            hidden = _hidden_states(inputs)
            mask = inputs.get("attention_mask") if isinstance(inputs, dict) else None
            if mask is None:
                features = ops.mean(hidden, axis=1)
            else:
                weights = ops.expand_dims(ops.cast(mask, hidden.dtype), -1)
                total = ops.sum(hidden * weights, axis=1)
                features = total / ops.maximum(ops.sum(weights, axis=1), 1.0)
        else:
            features = _hidden_states(inputs)[:, 0, :]
        return self._project(features, training)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["pooling"] = self.pooling
        return config


@keras.saving.register_keras_serializable(package="mlm")
class TokenClassificationHead(_TaskHead):
    """Classifies every position of a sequence (NER, part-of-speech tagging).

    Args:
        num_classes: Number of tags.
        input_dim: Width of the encoder features (`hidden_size`).
        dropout_rate: Dropout before the output projection.
        hidden_size: Optional width of a tanh Dense layer before the output projection.
        initializer_range: Standard deviation of the kernel initializer.

    Call arguments:
        inputs: The encoder's output dict (or its [B, L, H] `last_hidden_state`).

    Returns:
        Logits [B, L, num_classes].
    """

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        return self._project(_hidden_states(inputs), training)


def create_nlp_head(task_config: NLPTaskConfig, input_dim: int) -> keras.layers.Layer:
    """Builds the head for a task: token-level tasks get a `TokenClassificationHead`, the rest a
    `SequenceClassificationHead`.

    Args:
        task_config: The task to solve.
        input_dim: Width of the encoder features (the encoder's `hidden_size`).

    Returns:
        A built, serializable Keras layer named after the task, called on the encoder's output dict.
    """
    if not isinstance(task_config, NLPTaskConfig):
        raise TypeError(f"task_config must be an NLPTaskConfig, got {type(task_config).__name__}")
    common = {
        "num_classes": task_config.num_classes,
        "input_dim": int(input_dim),
        "dropout_rate": task_config.dropout_rate,
        "hidden_size": task_config.hidden_size,
        "initializer_range": task_config.initializer_range,
        "name": task_config.name,
    }
    if task_config.task_type.is_token_level:
        head: keras.layers.Layer = TokenClassificationHead(**common)
    else:
        head = SequenceClassificationHead(pooling=task_config.pooling, **common)
    head.build()
    return head
