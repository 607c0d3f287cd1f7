"""BERT dynamic masking for masked-language-model pre-training, as pure TensorFlow ops.

The process (Devlin et al., 2018):

1. Select `mask_ratio` of the maskable tokens. A token is maskable when its attention mask is 1
   and its id is not special (the `[MASK]` id always counts as special).
2. Of the selected tokens, replace `1 - random_token_ratio - unchanged_ratio` (80% by default) by
   `[MASK]`, `random_token_ratio` (10%) by a random non-special token and leave `unchanged_ratio`
   (10%) as they are.

Selection draws one Bernoulli(`mask_ratio`) per word, so the expected fraction of selected
maskable tokens is exactly `mask_ratio`. Without `continuation_token_ids` every maskable token is
its own word; with them (the ids of WordPiece "##" pieces) a word is a maskable token that is not a
continuation piece followed by its continuation pieces, and all pieces of a word are selected
together (whole-word masking). With `max_predictions` at most that many tokens are selected per
sequence (whole words are dropped at random until the rest fit) and the selected positions come
back as fixed-size tensors, so every shape is static (as XLA needs).

All randomness comes from stateless ops keyed by one seed, so a given seed always gives the same
masking (within one execution mode: XLA-compiled code draws another random stream). Without a
seed a fresh one is drawn from TensorFlow's global generator (reproducible after
`keras.utils.set_random_seed`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from mlm.errors import UserInputError

_INT32_MAX = 2**31 - 1
# Named rather than "auto_select", whose choice is left to the device. XLA-compiled code still
# draws its own stream, so masks for a seed are the same within one execution mode.
_RNG = "philox"


@dataclasses.dataclass(frozen=True)
class MaskingSpec:
    """Validated masking settings: everything `mask_tokens` needs but the batch and the seed.

    Construction normalizes the values (plain ints and floats, tuples of ids) and checks them; a
    bad one raises a `UserInputError` (a `ValueError`) that names it. Change a setting with
    `dataclasses.replace(spec, mask_ratio=0.1)`, which validates again.

    Attributes:
        vocab_size: Number of token ids; must be at least 2.
        mask_token_id: Id of `[MASK]`, in `[0, vocab_size)`.
        special_token_ids: Ids that are never selected nor drawn as random replacements.
        mask_ratio: Fraction of maskable tokens to select, in `[0, 1]`.
        random_token_ratio: Fraction of selected tokens replaced by a random token, in `[0, 1]`.
        unchanged_ratio: Fraction of selected tokens left unchanged, in `[0, 1]`.
        max_predictions: Optional positive cap on selected tokens per sequence.
        continuation_token_ids: Optional ids of word-continuation pieces, in `[0, vocab_size)`.
    """

    vocab_size: int
    mask_token_id: int
    special_token_ids: tuple[int, ...] = ()
    mask_ratio: float = 0.15
    random_token_ratio: float = 0.1
    unchanged_ratio: float = 0.1
    max_predictions: int | None = None
    continuation_token_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        # frozen: fields are set here only. Ids may come as any iterable: read them once.
        object.__setattr__(self, "special_token_ids", tuple(self.special_token_ids))
        if self.continuation_token_ids is not None:
            object.__setattr__(self, "continuation_token_ids", tuple(self.continuation_token_ids))
        _validate(self)
        normalized = {
            "vocab_size": int(self.vocab_size),
            "mask_token_id": int(self.mask_token_id),
            "special_token_ids": tuple(_as_int_list(self.special_token_ids)),
            "mask_ratio": float(self.mask_ratio),
            "random_token_ratio": float(self.random_token_ratio),
            "unchanged_ratio": float(self.unchanged_ratio),
            "max_predictions": None if self.max_predictions is None else int(self.max_predictions),
            "continuation_token_ids": (
                None
                if self.continuation_token_ids is None
                else tuple(_as_int_list(self.continuation_token_ids))
            ),
        }
        for name, value in normalized.items():
            object.__setattr__(self, name, value)


def _validate(spec: MaskingSpec) -> None:
    """Raises a `UserInputError` naming the first bad setting of `spec` (not yet normalized)."""
    vocab_size, mask_token_id = spec.vocab_size, spec.mask_token_id
    special_token_ids, continuation_token_ids = spec.special_token_ids, spec.continuation_token_ids
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)):
        raise UserInputError(f"vocab_size must be an integer, got {vocab_size!r}.")
    if vocab_size < 2:
        raise UserInputError(f"vocab_size must be at least 2, got {vocab_size}.")
    for name in ("mask_ratio", "random_token_ratio", "unchanged_ratio"):
        value = getattr(spec, name)
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)):
            raise UserInputError(f"{name} must be a number in [0, 1], got {value!r}.")
        if not 0.0 <= float(value) <= 1.0:
            raise UserInputError(f"{name} must be in [0, 1], got {value}.")
    if float(spec.random_token_ratio) + float(spec.unchanged_ratio) > 1.0:
        raise UserInputError(
            "random_token_ratio + unchanged_ratio must be at most 1 (the rest of the selected "
            f"tokens become [MASK]), got {spec.random_token_ratio} + {spec.unchanged_ratio}."
        )
    _check_ids("mask_token_id", [mask_token_id], vocab_size)
    _check_ids("special_token_ids", special_token_ids, vocab_size)
    if continuation_token_ids is not None:
        _check_ids("continuation_token_ids", continuation_token_ids, vocab_size)
    max_predictions = spec.max_predictions
    if max_predictions is not None and (
        isinstance(max_predictions, bool)
        or not isinstance(max_predictions, (int, np.integer))
        or max_predictions < 1
    ):
        raise UserInputError(
            f"max_predictions must be a positive integer or None, got {max_predictions!r}."
        )
    non_special = set(range(vocab_size)) - set(_as_int_list(special_token_ids)) - {mask_token_id}
    if float(spec.random_token_ratio) > 0 and not non_special:
        raise UserInputError(
            "random_token_ratio > 0 needs at least one non-special token id to draw from; "
            "every id in [0, vocab_size) is special."
        )


def _as_int_list(ids: Iterable[int] | None) -> list[int]:
    return [int(i) for i in ids] if ids is not None else []


def _check_ids(name: str, ids: Iterable[Any], vocab_size: int) -> None:
    for token_id in ids:
        if isinstance(token_id, bool) or not isinstance(token_id, (int, np.integer)):
            raise UserInputError(f"{name} must hold integer token ids, got {token_id!r}.")
        if not 0 <= int(token_id) < vocab_size:
            raise UserInputError(
                f"{name} contains {int(token_id)}, outside [0, vocab_size={vocab_size}); "
                "use the ids of the tokenizer the model is trained with."
            )


def _random_pool(vocab_size: int, unselectable: Sequence[int]) -> np.ndarray:
    """The ids a random replacement may take: every id that is not special."""
    pool = np.ones(vocab_size, dtype=bool)
    pool[list(unselectable)] = False
    return np.flatnonzero(pool).astype(np.int32)


def _resolve_seed(seed: Any):
    """A `[2]` int64 seed tensor (the dtype matters: stateless ops hash int32 seeds differently)."""
    import tensorflow as tf

    if seed is None:
        return tf.cast(tf.random.uniform([2], 0, _INT32_MAX, dtype=tf.int32), tf.int64)
    if isinstance(seed, (int, np.integer)):
        return tf.constant([int(seed), 0], dtype=tf.int64)
    seed = tf.convert_to_tensor(seed)
    if not seed.dtype.is_integer or seed.shape.num_elements() not in (None, 2):
        raise UserInputError(
            f"seed must be an int or a [2] integer tensor, got {seed.dtype.name} {seed.shape}."
        )
    return tf.reshape(tf.cast(seed, tf.int64), [2])


def _isin(ids, values: Sequence[int]):
    import tensorflow as tf

    if not values:
        return tf.zeros_like(ids, dtype=tf.bool)
    table = tf.constant(sorted(set(values)), dtype=ids.dtype)
    return tf.reduce_any(ids[..., None] == table, axis=-1)


def _word_ids(maskable, continuation):
    """Word starts and a flat segment id per position (one per word; one per row for the rest).

    A word starts at every maskable token that is not a continuation piece, or whose previous
    token is not maskable (a stray "##" piece after [CLS] starts its own word).
    """
    import tensorflow as tf

    previous_maskable = tf.pad(maskable[:, :-1], [[0, 0], [1, 0]])
    starts = maskable & (~continuation | ~previous_maskable)
    word = tf.cumsum(tf.cast(starts, tf.int32), axis=1)
    word = tf.where(maskable, word, 0)
    length = tf.shape(maskable)[1]
    row = tf.range(tf.shape(maskable)[0], dtype=tf.int32)[:, None]
    return starts, row * (length + 1) + word


def _per_word(values, segment, firsts, fill):
    """Broadcasts the largest value among a word's `firsts` pieces to all of the word's pieces."""
    import tensorflow as tf

    num_segments = tf.size(values) + tf.shape(values)[0]  # B * (L + 1), as `_word_ids` numbers
    at_first = tf.where(firsts, values, tf.fill(tf.shape(values), fill))
    per_segment = tf.math.unsorted_segment_max(at_first, segment, num_segments)
    return tf.gather(per_segment, segment)


def _select(maskable, continuation, mask_ratio, max_predictions, seed):
    """Selects words with probability `mask_ratio`, capped at `max_predictions` tokens.

    `continuation` (bool `[B, L]`, or None for one word per token) marks "##" pieces.
    """
    import tensorflow as tf

    score = tf.random.stateless_uniform(tf.shape(maskable), seed=seed, alg=_RNG)
    if continuation is not None:
        starts, segment = _word_ids(maskable, continuation)
        score = _per_word(score, segment, starts, -1.0)  # a word's pieces share its first draw
    selected = maskable & (score < mask_ratio)
    if max_predictions is None:
        return selected
    # Keep the selected words with the lowest scores while they fit: count, in score order, the
    # selected tokens up to each position; a word survives when its largest count fits.
    order = tf.argsort(tf.where(selected, score, 2.0), axis=1, stable=True)
    running = tf.cumsum(tf.cast(tf.gather(selected, order, batch_dims=1), tf.int32), axis=1)
    count = tf.gather(running, tf.argsort(order, axis=1), batch_dims=1)
    if continuation is not None:
        count = _per_word(count, segment, maskable, -1)
    return selected & (count <= max_predictions)


def _gather_predictions(selected, labels, max_predictions):
    """Fixed-size `[B, P]` positions, original ids and 0/1 weights of the selected tokens."""
    import tensorflow as tf

    # Stable sort of "not selected" puts selected positions first, in order.
    order = tf.argsort(tf.cast(~selected, tf.int32), axis=1, stable=True)
    shortfall = tf.maximum(max_predictions - tf.shape(order)[1], 0)
    order = tf.pad(order, [[0, 0], [0, shortfall]])[:, :max_predictions]
    # Slots past the sequence length were padded with position 0: never a prediction.
    weights = tf.gather(selected, order, batch_dims=1) & (
        tf.range(max_predictions) < tf.shape(selected)[1]
    )
    positions = tf.where(weights, order, 0)
    positions.set_shape([None, max_predictions])
    ids = tf.where(weights, tf.gather(labels, positions, batch_dims=1), 0)
    return positions, ids, tf.cast(weights, tf.float32)


def mask_tokens(
    input_ids,
    attention_mask=None,
    *,
    spec: MaskingSpec | None = None,
    seed: Any = None,
    **settings: Any,
) -> dict:
    """Applies BERT masking to a batch of token ids.

    Args:
        input_ids: `[B, L]` integer token ids.
        attention_mask: Optional `[B, L]`; positions where it is 0 (padding) are never selected.
        spec: The masking settings, as a `MaskingSpec`.
        seed: Optional int or `[2]` integer tensor for deterministic (stateless) masking.
        **settings: Instead of `spec`, its fields as keywords (`vocab_size`, `mask_token_id`,
            `special_token_ids`, `mask_ratio`, `random_token_ratio`, `unchanged_ratio`,
            `max_predictions`, `continuation_token_ids`; see `MaskingSpec`).

    Returns:
        A dict with `masked_input_ids` (`[B, L]` int32), `labels` (`[B, L]` int32, the original
        ids) and `mask` (`[B, L]` bool, the selected positions); with `max_predictions=P` also
        `mask_positions` (`[B, P]` int32), `mask_ids` (`[B, P]` int32) and `mask_weights`
        (`[B, P]` float32, 1 for a real prediction, 0 for padding).
    """
    import tensorflow as tf

    if spec is None:
        spec = MaskingSpec(**settings)
    elif settings:
        raise TypeError(
            f"mask_tokens takes the masking settings as `spec` or as keywords, not both; got "
            f"spec and {sorted(settings)}."
        )
    mask_id, max_predictions = spec.mask_token_id, spec.max_predictions
    random_ratio, unchanged_ratio = spec.random_token_ratio, spec.unchanged_ratio
    unselectable = sorted(set(spec.special_token_ids) | {mask_id})
    labels = tf.cast(input_ids, tf.int32)
    if labels.shape.rank != 2:
        raise UserInputError(
            f"input_ids must be a [batch, length] tensor, got shape {labels.shape}."
        )
    maskable = ~_isin(labels, unselectable)
    if attention_mask is not None:
        maskable &= tf.cast(attention_mask, tf.bool)
    whole_words = spec.continuation_token_ids is not None
    continuation = _isin(labels, spec.continuation_token_ids) if whole_words else None

    select_seed, action_seed, random_seed = tf.unstack(
        tf.random.experimental.stateless_split(_resolve_seed(seed), num=3, alg=_RNG)
    )
    selected = _select(maskable, continuation, spec.mask_ratio, max_predictions, select_seed)

    # One uniform draw per position decides its fate: [MASK] | random | unchanged.
    action = tf.random.stateless_uniform(tf.shape(labels), seed=action_seed, alg=_RNG)
    mask_cut = 1.0 - random_ratio - unchanged_ratio
    to_mask = selected & (action < mask_cut)
    to_random = selected & (action >= mask_cut) & (action < mask_cut + random_ratio)
    pool = _random_pool(spec.vocab_size, unselectable)
    if pool.size:
        draw = tf.random.stateless_uniform(
            tf.shape(labels), seed=random_seed, maxval=pool.size, dtype=tf.int32, alg=_RNG
        )
        random_ids = tf.gather(tf.constant(pool), draw)
    else:
        random_ids = labels
    masked = tf.where(to_mask, tf.constant(mask_id, tf.int32), labels)
    masked = tf.where(to_random, random_ids, masked)

    result = {"masked_input_ids": masked, "labels": labels, "mask": selected}
    if max_predictions is not None:
        positions, ids, weights = _gather_predictions(selected, labels, max_predictions)
        result.update(mask_positions=positions, mask_ids=ids, mask_weights=weights)
    return result
