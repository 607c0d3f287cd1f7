"""Learning-rate schedules and optimizers built from small config dicts.

Schedules and optimizers are Keras' built-ins; "adam" and "adamw" are the Keras classes with the
fused TensorFlow update kernel (`Adam`, `AdamW`).

Both builders take the plain dicts of the seed README, so a schedule or an optimizer can be
described in a pipeline parameter or a JSON file:

    lr_schedule = learning_rate_schedule_builder({
        "type": "cosine_decay", "learning_rate": 5e-5, "decay_steps": 10_000,
        "warmup_steps": 1_000, "warmup_start_lr": 1e-8, "alpha": 1e-6,
    })
    optimizer = optimizer_builder({"type": "adamw", "weight_decay": 0.01,
                                   "gradient_clipping_by_norm": 1.0}, lr_schedule)

Keys set to None count as not given (their default applies). Unknown types, unknown keys, missing
required keys and out-of-range values raise `mlm.errors.UserInputError` (a ValueError) naming
the key and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import keras

from mlm.errors import UserInputError

__all__ = [
    "LR_SCHEDULE_TYPES",
    "OPTIMIZER_TYPES",
    "WEIGHT_DECAY_EXCLUDED_NAMES",
    "Adam",
    "AdamW",
    "LayerwiseAdamW",
    "LinearWarmup",
    "learning_rate_schedule_builder",
    "optimizer_builder",
]

# Variable names (regular expressions searched in `variable.name`) that decoupled weight decay
# skips: biases and normalization parameters (LayerNorm gamma/beta, RMSNorm scale), as in BERT.
# "layer_norm"/"LayerNorm" also cover variables named after checkpoint conventions.
WEIGHT_DECAY_EXCLUDED_NAMES = ("bias", "gamma", "beta", "scale", "layer_norm", "LayerNorm")


# --------------------------------------------------------------------------------------------
# Config validation
# --------------------------------------------------------------------------------------------


def _number(
    what: str, key: str, value: Any, *, minimum: float, integer: bool = False, strict: bool = False
) -> Any:
    """Checks that ``value`` is a real (or integer) number >= ``minimum`` (> if ``strict``)."""
    if integer:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok and isinstance(value, float) and value.is_integer():
            value, ok = int(value), True
        kind = "an integer"
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = ok and math.isfinite(value)
        kind = "a number"
    if not ok:
        raise UserInputError(f"{what}: {key!r} must be {kind}, got {value!r}")
    if value < minimum or (strict and value == minimum):
        bound = ">" if strict else ">="
        raise UserInputError(f"{what}: {key!r} must be {bound} {minimum}, got {value!r}")
    return value if integer else float(value)


def _resolve(
    what: str,
    config: Mapping[str, Any],
    keys: Mapping[str, tuple[str, ...]],
    required: Mapping[str, tuple[str, ...]],
) -> tuple[str, dict[str, Any]]:
    """Checks ``config``'s type and keys; returns the type and the given (non-None) keys."""
    if not isinstance(config, Mapping):
        raise UserInputError(f"{what} config must be a dict, got {type(config).__name__}")
    kind = config.get("type")
    if kind not in keys:
        raise UserInputError(f"{what}: unknown type {kind!r}; valid types: {', '.join(keys)}")
    given = {k: v for k, v in config.items() if k != "type" and v is not None}
    unknown = sorted(set(given) - set(keys[kind]))
    if unknown:
        raise UserInputError(
            f"{what} {kind!r}: unknown key(s) {', '.join(unknown)}; valid keys: "
            f"{', '.join(('type', *keys[kind]))}"
        )
    for key in required.get(kind, ()):
        if key not in given:
            raise UserInputError(f"{what} {kind!r}: missing required key {key!r}")
    return kind, given


# --------------------------------------------------------------------------------------------
# Learning-rate schedules
# --------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="mlm")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """A linear warmup in front of another learning-rate schedule.

    For ``step < warmup_steps`` the rate rises linearly from ``warmup_start_lr`` to
    ``after_warmup(0)``; from then on it is ``after_warmup(step - warmup_steps)``. (Keras'
    `CosineDecay` has this warmup built in; `PolynomialDecay` has none.)

    Args:
        after_warmup: the schedule that takes over at ``warmup_steps``.
        warmup_steps: number of warmup steps, >= 1.
        warmup_start_lr: learning rate at step 0.
        name: name scope of the ops.

    Example:

    >>> decay = keras.optimizers.schedules.PolynomialDecay(1e-3, decay_steps=90)
    >>> schedule = LinearWarmup(decay, warmup_steps=10, warmup_start_lr=0.0)
    >>> round(float(schedule(5)), 6)
    0.0005
    """

    def __init__(
        self,
        after_warmup: keras.optimizers.schedules.LearningRateSchedule,
        warmup_steps: int,
        warmup_start_lr: float = 0.0,
        name: str = "LinearWarmup",
    ) -> None:
        super().__init__()
        if int(warmup_steps) < 1:
            raise ValueError(f"warmup_steps must be >= 1, got {warmup_steps}")
        self.after_warmup = after_warmup
        self.warmup_steps = int(warmup_steps)
        self.warmup_start_lr = float(warmup_start_lr)
        self.name = name

    def __call__(self, step: Any) -> Any:
        ops = keras.ops
        with keras.name_scope(self.name):
            step = ops.cast(step, "float32")
            warmup_steps = ops.cast(self.warmup_steps, "float32")
            peak = ops.cast(self.after_warmup(0), "float32")
            warm = self.warmup_start_lr + (peak - self.warmup_start_lr) * (step / warmup_steps)
            # Both branches are computed; the decay one gets a non-negative step.
            decayed = ops.cast(self.after_warmup(ops.maximum(step - warmup_steps, 0.0)), "float32")
            return ops.where(step < warmup_steps, warm, decayed)

    def get_config(self) -> dict[str, Any]:
        return {
            "after_warmup": keras.optimizers.schedules.serialize(self.after_warmup),
            "warmup_steps": self.warmup_steps,
            "warmup_start_lr": self.warmup_start_lr,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LinearWarmup:
        config = dict(config)
        config["after_warmup"] = keras.optimizers.schedules.deserialize(config["after_warmup"])
        return cls(**config)


_WARMUP_KEYS = ("learning_rate", "warmup_steps", "warmup_start_lr")
_SCHEDULE_KEYS = {
    "cosine_decay": (*_WARMUP_KEYS, "decay_steps", "alpha"),
    "polynomial_decay": (*_WARMUP_KEYS, "decay_steps", "power", "end_learning_rate"),
    "constant": _WARMUP_KEYS,
}
_SCHEDULE_REQUIRED = {
    "cosine_decay": ("learning_rate", "decay_steps"),
    "polynomial_decay": ("learning_rate", "decay_steps"),
    "constant": ("learning_rate",),
}
_SCHEDULE_DEFAULTS = {
    "warmup_steps": 0,
    "warmup_start_lr": 0.0,
    "alpha": 0.0,
    "power": 1.0,
    "end_learning_rate": 0.0,
}
LR_SCHEDULE_TYPES = tuple(_SCHEDULE_KEYS)


def _cosine_decay(c: dict[str, Any]) -> keras.optimizers.schedules.LearningRateSchedule:
    # Keras' alpha is a fraction of the peak; ours (as in the seed README) is the minimum rate.
    warmup = c["warmup_steps"] > 0
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=c["warmup_start_lr"] if warmup else c["learning_rate"],
        decay_steps=c["decay_steps"] - c["warmup_steps"],
        alpha=c["alpha"] / c["learning_rate"],
        warmup_target=c["learning_rate"] if warmup else None,
        warmup_steps=c["warmup_steps"],
    )


def _polynomial_decay(c: dict[str, Any]) -> keras.optimizers.schedules.LearningRateSchedule:
    return keras.optimizers.schedules.PolynomialDecay(
        initial_learning_rate=c["learning_rate"],
        decay_steps=c["decay_steps"] - c["warmup_steps"],
        end_learning_rate=c["end_learning_rate"],
        power=c["power"],
    )


def _constant(c: dict[str, Any]) -> keras.optimizers.schedules.LearningRateSchedule:
    # A PolynomialDecay that ends where it starts is Keras' constant schedule.
    return keras.optimizers.schedules.PolynomialDecay(
        c["learning_rate"], decay_steps=1, end_learning_rate=c["learning_rate"]
    )


_SCHEDULE_BUILDERS: dict[
    str, Callable[[dict[str, Any]], keras.optimizers.schedules.LearningRateSchedule]
] = {"cosine_decay": _cosine_decay, "polynomial_decay": _polynomial_decay, "constant": _constant}


def learning_rate_schedule_builder(
    config: Mapping[str, Any],
) -> keras.optimizers.schedules.LearningRateSchedule:
    """Builds a Keras learning-rate schedule (with optional linear warmup) from a config dict.

    Every type can warm up linearly from ``warmup_start_lr`` to ``learning_rate`` over the first
    ``warmup_steps`` steps. ``decay_steps`` counts the whole schedule, warmup included: the rate
    reaches its minimum at step ``decay_steps`` (e.g. the total number of training steps) and
    stays there.

    - "cosine_decay": warmup, then a half cosine from ``learning_rate`` down to ``alpha`` (the
      minimum learning rate, an absolute value like 1e-6 — converted to Keras' fraction
      ``alpha / learning_rate``). Keras' `CosineDecay` with its own warmup arguments.
    - "polynomial_decay": warmup, then ``(learning_rate - end_learning_rate) * (1 - t) ** power
      + end_learning_rate`` (``power`` 1.0 is linear decay). Keras' `PolynomialDecay` inside
      `LinearWarmup`.
    - "constant": warmup, then ``learning_rate``.

    Args:
        config: "type" and the keys above. Required: ``learning_rate`` (and ``decay_steps`` for
            the decays). Defaults: ``warmup_steps`` 0, ``warmup_start_lr`` 0.0, ``alpha`` 0.0,
            ``power`` 1.0, ``end_learning_rate`` 0.0.

    Returns:
        A serializable `keras.optimizers.schedules.LearningRateSchedule`.

    Raises:
        UserInputError: unknown type or key, missing required key, bad value.
    """
    what = "learning-rate schedule"
    kind, given = _resolve(what, config, _SCHEDULE_KEYS, _SCHEDULE_REQUIRED)
    c = _SCHEDULE_DEFAULTS | given
    c["learning_rate"] = _number(what, "learning_rate", c["learning_rate"], minimum=0, strict=True)
    c["warmup_steps"] = _number(what, "warmup_steps", c["warmup_steps"], minimum=0, integer=True)
    c["warmup_start_lr"] = _number(what, "warmup_start_lr", c["warmup_start_lr"], minimum=0.0)
    c["power"] = _number(what, "power", c["power"], minimum=0.0)
    for key in ("alpha", "end_learning_rate"):
        c[key] = _number(what, key, c[key], minimum=0.0)
        if c[key] > c["learning_rate"]:
            raise UserInputError(
                f"{what} {kind!r}: {key!r} is the final (minimum) learning rate, an absolute "
                f"value, and must be <= learning_rate ({c['learning_rate']}); got {c[key]}"
            )
    if kind != "constant":
        c["decay_steps"] = _number(what, "decay_steps", c["decay_steps"], minimum=1, integer=True)
        if c["decay_steps"] <= c["warmup_steps"]:
            raise UserInputError(
                f"{what} {kind!r}: 'decay_steps' ({c['decay_steps']}) counts the whole schedule "
                f"and must be larger than 'warmup_steps' ({c['warmup_steps']})"
            )
    schedule = _SCHEDULE_BUILDERS[kind](c)
    if kind == "cosine_decay" or c["warmup_steps"] == 0:
        return schedule
    return LinearWarmup(schedule, c["warmup_steps"], c["warmup_start_lr"])


# --------------------------------------------------------------------------------------------
# Optimizers
# --------------------------------------------------------------------------------------------

_COMMON_OPTIMIZER_KEYS = ("gradient_clipping_by_norm", "gradient_accumulation_steps")
_ADAM_KEYS = ("beta_1", "beta_2", "epsilon")
_OPTIMIZER_KEYS = {
    "adamw": (
        "weight_decay",
        "learning_rate_multipliers",
        *_ADAM_KEYS,
        *_COMMON_OPTIMIZER_KEYS,
    ),
    "adam": (*_ADAM_KEYS, *_COMMON_OPTIMIZER_KEYS),
    "lamb": ("weight_decay", *_ADAM_KEYS, *_COMMON_OPTIMIZER_KEYS),
    "sgd": ("momentum", "nesterov", *_COMMON_OPTIMIZER_KEYS),
}


class _FusedAdamUpdate:
    """Runs the Adam update of one variable as TensorFlow's fused `ResourceApplyAdam` kernel.

    Keras' Adam writes the update as about a dozen elementwise ops, each a pass over the
    variable-sized moments; the fused kernel makes three passes. The rule is the same as Keras'
    (`m += (g - m)(1 - b1)`, `v += (g^2 - v)(1 - b2)`,
    `w -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)`) and so are the slot variables,
    so results, checkpoints and configs match the Keras class (tested). AMSGrad and other
    backends fall back to Keras' update.
    """

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        import tensorflow as tf

        if self.amsgrad or keras.backend.backend() != "tensorflow":
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        beta_1 = tf.cast(self.beta_1, dtype)
        beta_2 = tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=variable.handle,
            m=self._momentums[index].value.handle,
            v=self._velocities[index].value.handle,
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(tf.convert_to_tensor(gradient), dtype),
        )
        return None


@keras.saving.register_keras_serializable(package="mlm")
class Adam(_FusedAdamUpdate, keras.optimizers.Adam):
    """`keras.optimizers.Adam` with the fused TensorFlow update (same arguments)."""


@keras.saving.register_keras_serializable(package="mlm")
class AdamW(_FusedAdamUpdate, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` with the fused TensorFlow update (same arguments).

    The decoupled weight decay is Keras' (`w -= lr * weight_decay * w` before the update,
    skipping excluded variables).
    """


@keras.saving.register_keras_serializable(package="mlm")
class LayerwiseAdamW(AdamW):
    """`AdamW` whose learning rate is scaled per variable (layer-wise learning-rate decay).

    Args:
        learning_rate_multipliers: factor of the learning rate by variable path
            (`variable.path`, e.g. "bert/transformer_layer_0/attention/query/kernel"); variables
            not named get the full rate. Decoupled weight decay keeps the unscaled rate.
        *args, **kwargs: `AdamW`'s arguments.
    """

    def __init__(
        self, *args: Any, learning_rate_multipliers: Mapping[str, float] | None = None, **kwargs
    ) -> None:
        super().__init__(*args, **kwargs)
        self.learning_rate_multipliers = {
            str(k): float(v) for k, v in (learning_rate_multipliers or {}).items()
        }
        self._multipliers: list[float] = []

    def build(self, var_list: list[Any]) -> None:
        super().build(var_list)
        self._multipliers = [
            self.learning_rate_multipliers.get(variable.path, 1.0) for variable in var_list
        ]

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        multiplier = self._multipliers[self._get_variable_index(variable)]
        if multiplier != 1.0:
            learning_rate = learning_rate * multiplier
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["learning_rate_multipliers"] = dict(self.learning_rate_multipliers)
        return config


_OPTIMIZER_CLASSES: dict[str, type[keras.optimizers.Optimizer]] = {
    "adamw": AdamW,
    "adam": Adam,
    "lamb": keras.optimizers.Lamb,
    "sgd": keras.optimizers.SGD,
}
OPTIMIZER_TYPES = tuple(_OPTIMIZER_KEYS)


def optimizer_builder(
    config: Mapping[str, Any],
    lr_schedule: keras.optimizers.schedules.LearningRateSchedule | float,
) -> keras.optimizers.Optimizer:
    """Builds a Keras optimizer from a config dict.

    Types: "adamw" (`keras.optimizers.AdamW`), "adam", "lamb" (`keras.optimizers.Lamb`), "sgd".
    With "adamw" and "lamb", decoupled weight decay skips biases and normalization parameters
    (`WEIGHT_DECAY_EXCLUDED_NAMES`, matched in variable names). Keras does not save that
    exclusion in the optimizer's config: build the optimizer with this function again when
    resuming training, rather than deserializing a saved one.

    Args:
        config: "type" plus
            - ``weight_decay`` (adamw, lamb; default 0.01 for adamw, none for lamb),
            - ``beta_1``, ``beta_2``, ``epsilon`` (adam-family; defaults 0.9, 0.999, 1e-6 as in
              BERT),
            - ``momentum`` (default 0.0), ``nesterov`` (default False) for sgd,
            - ``gradient_clipping_by_norm``: clips the global norm of all gradients together
              (Keras ``global_clipnorm``, as BERT does), not each gradient separately,
            - ``gradient_accumulation_steps``: apply the averaged gradients of this many
              batches at once (1 = every batch),
            - ``learning_rate_multipliers`` (adamw): factor of the learning rate by variable
              path (`LayerwiseAdamW`; layer-wise learning-rate decay when fine-tuning).
        lr_schedule: a learning-rate schedule (see `learning_rate_schedule_builder`) or a float.

    Returns:
        The unbuilt Keras optimizer.

    Raises:
        UserInputError: unknown type or key, bad value.
    """
    what = "optimizer"
    kind, given = _resolve(what, config, _OPTIMIZER_KEYS, {})
    kwargs: dict[str, Any] = {"learning_rate": lr_schedule}
    if kind in ("adamw", "adam", "lamb"):
        kwargs["beta_1"] = _probability(what, "beta_1", given.get("beta_1", 0.9))
        kwargs["beta_2"] = _probability(what, "beta_2", given.get("beta_2", 0.999))
        kwargs["epsilon"] = _number(what, "epsilon", given.get("epsilon", 1e-6), minimum=0.0)
    if kind == "sgd":
        kwargs["momentum"] = _probability(what, "momentum", given.get("momentum", 0.0))
        nesterov = given.get("nesterov", False)
        if not isinstance(nesterov, bool):
            raise UserInputError(
                f"{what} 'sgd': 'nesterov' must be true or false, got {nesterov!r}"
            )
        kwargs["nesterov"] = nesterov
    weight_decay = given.get("weight_decay", 0.01 if kind == "adamw" else None)
    if weight_decay is not None:
        kwargs["weight_decay"] = _number(what, "weight_decay", weight_decay, minimum=0.0)
    if "gradient_clipping_by_norm" in given:
        kwargs["global_clipnorm"] = _number(
            what,
            "gradient_clipping_by_norm",
            given["gradient_clipping_by_norm"],
            minimum=0,
            strict=True,
        )
    accumulation = _number(
        what,
        "gradient_accumulation_steps",
        given.get("gradient_accumulation_steps", 1),
        minimum=1,
        integer=True,
    )
    # Keras takes None for "no accumulation" and rejects 1.
    kwargs["gradient_accumulation_steps"] = accumulation if accumulation > 1 else None

    multipliers = given.get("learning_rate_multipliers")
    if multipliers:
        for path, factor in multipliers.items():
            _number(what, f"learning_rate_multipliers[{path!r}]", factor, minimum=0.0)
        optimizer: keras.optimizers.Optimizer = LayerwiseAdamW(
            learning_rate_multipliers=multipliers, **kwargs
        )
    else:
        optimizer = _OPTIMIZER_CLASSES[kind](**kwargs)
    if kwargs.get("weight_decay"):
        optimizer.exclude_from_weight_decay(var_names=list(WEIGHT_DECAY_EXCLUDED_NAMES))
    return optimizer


def _probability(what: str, key: str, value: Any) -> float:
    value = _number(what, key, value, minimum=0.0)
    if value >= 1.0:
        raise UserInputError(f"{what}: {key!r} must be in [0, 1), got {value}")
    return value
