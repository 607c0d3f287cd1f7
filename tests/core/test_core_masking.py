"""Tests of mlm.masking: statistics, protection of special/padding, whole words, MaskingSpec."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from mlm.errors import UserInputError
from mlm.masking import MaskingSpec, mask_tokens

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIAL = [PAD, UNK, CLS, SEP, MASK]
VOCAB = 200


def _batch(batch: int = 256, length: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random ids in [5, VOCAB) with [CLS] ... [SEP] and random-length padding."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, VOCAB, size=(batch, length)).astype(np.int32)
    lengths = rng.integers(4, length + 1, size=batch)
    attention = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int32)
    ids[:, 0] = CLS
    ids[np.arange(batch), lengths - 1] = SEP
    ids[attention == 0] = PAD
    return ids, attention


def _mask(ids, attention, **kwargs):
    args = {"vocab_size": VOCAB, "mask_token_id": MASK, "special_token_ids": SPECIAL}
    args.update(kwargs)
    return {k: v.numpy() for k, v in mask_tokens(ids, attention, **args).items()}


def test_statistics_over_many_batches_match_the_configured_ratios():
    selected = maskable = n_mask = n_random = n_same = 0
    special_or_pad_selected = 0
    random_special = 0
    for step in range(8):
        ids, attention = _batch(seed=step)
        out = _mask(ids, attention, seed=step)
        sel = out["mask"]
        is_maskable = (attention == 1) & ~np.isin(ids, SPECIAL)
        selected += sel.sum()
        maskable += is_maskable.sum()
        special_or_pad_selected += (sel & ~is_maskable).sum()
        new = out["masked_input_ids"][sel]
        old = ids[sel]
        n_mask += (new == MASK).sum()
        n_random += ((new != MASK) & (new != old)).sum()
        n_same += (new == old).sum()
        random_special += np.isin(new[new != MASK], SPECIAL).sum()
        # Unselected positions are never changed; labels are the original ids.
        np.testing.assert_array_equal(out["masked_input_ids"][~sel], ids[~sel])
        np.testing.assert_array_equal(out["labels"], ids)
    assert special_or_pad_selected == 0
    assert random_special == 0
    assert maskable > 50_000
    assert abs(selected / maskable - 0.15) < 0.01
    # A random draw equals the original id with probability 1/195: counted as unchanged.
    assert abs(n_mask / selected - 0.8) < 0.02
    assert abs(n_random / selected - 0.1) < 0.015
    assert abs(n_same / selected - 0.1) < 0.015


def test_custom_ratios_are_honoured():
    ids, attention = _batch(seed=11)
    out = _mask(ids, attention, mask_ratio=0.4, random_token_ratio=0.0, unchanged_ratio=0.5, seed=3)
    sel = out["mask"]
    is_maskable = (attention == 1) & ~np.isin(ids, SPECIAL)
    assert abs(sel.sum() / is_maskable.sum() - 0.4) < 0.02
    new = out["masked_input_ids"][sel]
    assert abs((new == MASK).mean() - 0.5) < 0.03
    # random_token_ratio=0: every non-[MASK] selected token keeps its original id.
    np.testing.assert_array_equal(new[new != MASK], ids[sel][new != MASK])


def test_mask_ratio_extremes_and_all_special_batch():
    ids, attention = _batch(batch=16, seed=4)
    assert not _mask(ids, attention, mask_ratio=0.0, seed=0)["mask"].any()
    everything = _mask(ids, attention, mask_ratio=1.0, seed=0)["mask"]
    np.testing.assert_array_equal(everything, (attention == 1) & ~np.isin(ids, SPECIAL))
    only_special = np.array([[CLS, SEP, PAD, PAD]], np.int32)
    out = _mask(only_special, None, mask_ratio=1.0, seed=0, max_predictions=3)
    assert not out["mask"].any()
    np.testing.assert_array_equal(out["mask_weights"], np.zeros((1, 3), np.float32))


def test_mask_token_in_input_is_never_selected_even_if_not_listed_special():
    ids = np.full((4, 32), MASK, np.int32)
    ids[:, ::2] = 50
    out = _mask(ids, None, special_token_ids=[], mask_ratio=1.0, seed=0)
    np.testing.assert_array_equal(out["mask"], ids == 50)


def test_seed_makes_masking_deterministic_and_different_seeds_differ():
    ids, attention = _batch(batch=32, seed=5)
    first = _mask(ids, attention, seed=7, max_predictions=10)
    again = _mask(ids, attention, seed=tf.constant([7, 0]), max_predictions=10)
    other = _mask(ids, attention, seed=8, max_predictions=10)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first["mask"], other["mask"])


def test_unseeded_masking_draws_a_fresh_mask_each_call():
    ids, attention = _batch(batch=32, seed=6)
    assert not np.array_equal(_mask(ids, attention)["mask"], _mask(ids, attention)["mask"])


def test_max_predictions_gives_static_shapes_consistent_with_the_mask():
    ids, attention = _batch(batch=64, length=32, seed=8)
    out = _mask(ids, attention, mask_ratio=0.5, max_predictions=6, seed=1)
    assert out["mask_positions"].shape == (64, 6)
    assert out["mask_positions"].dtype == np.int32
    assert out["mask_weights"].dtype == np.float32
    counts = out["mask"].sum(axis=1)
    assert counts.max() == 6  # the cap binds at a 50% rate
    np.testing.assert_array_equal(out["mask_weights"].sum(axis=1), counts)
    for row in range(64):
        real = out["mask_weights"][row] == 1
        positions = out["mask_positions"][row][real]
        np.testing.assert_array_equal(positions, np.flatnonzero(out["mask"][row]))
        np.testing.assert_array_equal(out["mask_ids"][row][real], ids[row, positions])
        assert (out["mask_positions"][row][~real] == 0).all()
        assert (out["mask_ids"][row][~real] == 0).all()


def test_max_predictions_longer_than_the_sequence_pads():
    ids = np.array([[CLS, 10, 11, SEP]], np.int32)
    out = _mask(ids, None, mask_ratio=1.0, max_predictions=6, seed=0)
    np.testing.assert_array_equal(out["mask_positions"], [[1, 2, 0, 0, 0, 0]])
    np.testing.assert_array_equal(out["mask_ids"], [[10, 11, 0, 0, 0, 0]])
    np.testing.assert_array_equal(out["mask_weights"], [[1, 1, 0, 0, 0, 0]])


def test_masking_runs_inside_a_compiled_function_with_unknown_shapes():
    fn = tf.function(
        lambda ids: mask_tokens(
            ids,
            vocab_size=VOCAB,
            mask_token_id=MASK,
            special_token_ids=SPECIAL,
            seed=0,
            max_predictions=4,
        ),
        input_signature=[tf.TensorSpec([None, None], tf.int32)],
    )
    ids, _ = _batch(batch=8, length=16, seed=9)
    out = fn(ids)
    assert out["mask_positions"].shape == (8, 4)
    eager = _mask(ids, None, seed=0, max_predictions=4)
    np.testing.assert_array_equal(out["mask"].numpy(), eager["mask"])


def _words(ids_row: np.ndarray, continuation: set[int], maskable: np.ndarray) -> list[list[int]]:
    """Position groups of whole words (a start piece followed by its continuation pieces)."""
    words: list[list[int]] = []
    for pos, token in enumerate(ids_row):
        if not maskable[pos]:
            continue
        if token in continuation and words and words[-1][-1] == pos - 1:
            words[-1].append(pos)
        else:
            words.append([pos])
    return words


@pytest.mark.parametrize("max_predictions", [None, 5])
def test_whole_word_masking_never_selects_part_of_a_word(max_predictions):
    continuation = set(range(100, 200))  # ids 100..199 play "##" pieces
    ids, attention = _batch(batch=128, length=48, seed=10)
    is_maskable = (attention == 1) & ~np.isin(ids, SPECIAL)
    out = _mask(
        ids,
        attention,
        mask_ratio=0.3,
        continuation_token_ids=sorted(continuation),
        max_predictions=max_predictions,
        seed=2,
    )
    multi_piece_selected = 0
    for row in range(ids.shape[0]):
        for word in _words(ids[row], continuation, is_maskable[row]):
            chosen = out["mask"][row, word]
            assert chosen.all() or not chosen.any(), (row, word, chosen)
            multi_piece_selected += int(chosen.all() and len(word) > 1)
    assert multi_piece_selected > 50
    assert abs(out["mask"].sum() / is_maskable.sum() - 0.3) < 0.05 or max_predictions
    if max_predictions:
        assert out["mask"].sum(axis=1).max() <= max_predictions


def test_stray_continuation_piece_after_cls_is_its_own_word():
    ids = np.array([[CLS, 150, 151, 20, SEP]], np.int32)
    out = _mask(ids, None, mask_ratio=1.0, continuation_token_ids=[150, 151], seed=0)
    np.testing.assert_array_equal(out["mask"], [[False, True, True, True, False]])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mask_ratio": 1.5}, "mask_ratio"),
        ({"mask_ratio": -0.1}, "mask_ratio"),
        ({"random_token_ratio": 2.0}, "random_token_ratio"),
        ({"unchanged_ratio": -1.0}, "unchanged_ratio"),
        ({"random_token_ratio": 0.6, "unchanged_ratio": 0.5}, "random_token_ratio \\+ unchanged"),
        ({"mask_token_id": VOCAB}, "mask_token_id"),
        ({"special_token_ids": [0, -1]}, "special_token_ids"),
        ({"continuation_token_ids": [VOCAB + 3]}, "continuation_token_ids"),
        ({"max_predictions": 0}, "max_predictions"),
        ({"mask_ratio": "high"}, "mask_ratio"),
    ],
)
def test_bad_configuration_raises_a_value_error_naming_the_argument(kwargs, message):
    ids, attention = _batch(batch=2, length=8)
    with pytest.raises(ValueError, match=message):
        _mask(ids, attention, **kwargs)


def test_bad_input_rank_is_a_user_error():
    with pytest.raises(UserInputError, match="input_ids"):
        mask_tokens(np.arange(8), vocab_size=VOCAB, mask_token_id=MASK)


def test_masking_compiles_with_xla_and_keeps_its_invariants():
    """XLA draws its own random stream, so only determinism and the invariants are compared."""
    ids, attention = _batch(batch=16, length=24, seed=12)
    kwargs = {
        "vocab_size": VOCAB,
        "mask_token_id": MASK,
        "special_token_ids": SPECIAL,
        "max_predictions": 5,
        "continuation_token_ids": [150, 151],
        "mask_ratio": 0.3,
    }
    compiled = tf.function(lambda x, a, s: mask_tokens(x, a, seed=s, **kwargs), jit_compile=True)
    seed = tf.constant([1, 2], tf.int64)
    first = {k: v.numpy() for k, v in compiled(ids, attention, seed).items()}
    again = compiled(ids, attention, seed)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key].numpy(), err_msg=key)
    assert first["mask_positions"].shape == (16, 5)
    is_maskable = (attention == 1) & ~np.isin(ids, SPECIAL)
    assert first["mask"].any() and not (first["mask"] & ~is_maskable).any()
    assert (first["mask"].sum(axis=1) <= 5).all()
    np.testing.assert_array_equal(first["mask_weights"].sum(axis=1), first["mask"].sum(axis=1))


def test_masking_spec_normalizes_is_frozen_and_masks_like_the_keywords():
    spec = MaskingSpec(
        vocab_size=np.int64(VOCAB),
        mask_token_id=MASK,
        special_token_ids=np.array(SPECIAL),
        mask_ratio=0.3,
        continuation_token_ids=iter([150, 151]),
    )
    assert spec.special_token_ids == tuple(SPECIAL) and spec.continuation_token_ids == (150, 151)
    assert all(type(value) is int for value in (spec.vocab_size, *spec.special_token_ids))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.mask_ratio = 0.5
    # Changing a setting builds a new spec, validated again.
    assert dataclasses.replace(spec, mask_ratio=0.1).mask_ratio == 0.1
    with pytest.raises(UserInputError, match=r"mask_ratio must be in \[0, 1\], got 2.0"):
        dataclasses.replace(spec, mask_ratio=2.0)

    ids, attention = _batch(batch=8, length=16, seed=3)
    by_spec = mask_tokens(ids, attention, spec=spec, seed=4)
    by_keywords = _mask(ids, attention, mask_ratio=0.3, continuation_token_ids=[150, 151], seed=4)
    assert set(by_spec) == set(by_keywords)
    for key, value in by_keywords.items():
        np.testing.assert_array_equal(by_spec[key].numpy(), value)
    with pytest.raises(TypeError, match="not both"):
        mask_tokens(ids, attention, spec=spec, mask_ratio=0.2, seed=4)
