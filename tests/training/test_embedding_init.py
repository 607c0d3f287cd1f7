"""Count-based initial token embeddings: sparse counts, PPMI, the truncated SVD, and the
`token_embedding_init=cooccurrence` setting of `mlm pretrain`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlm.training import embedding_init
from mlm.training.embedding_init import (
    cooccurrence_counts,
    cooccurrence_embeddings,
    initial_token_embeddings,
    ppmi,
    truncated_svd_rows,
)


def dense_counts(batches, vocab_size: int, window: int) -> np.ndarray:
    counts = np.zeros((vocab_size, vocab_size), np.int64)
    for batch in batches:
        for row in batch:
            for i, a in enumerate(row):
                for b in row[i + 1 : i + 1 + window]:
                    counts[a, b] += 1
                    counts[b, a] += 1
    return counts


def random_batches(seed: int = 0, count: int = 6, vocab_size: int = 30) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab_size, (4, 12)) for _ in range(count)]


def test_sparse_counts_equal_the_dense_pair_counts(monkeypatch):
    monkeypatch.setattr(embedding_init, "_MERGE_EVERY", 50)  # merge after nearly every batch
    batches = random_batches()
    rows, cols, counts = cooccurrence_counts(batches, 30, window=3)
    expected = dense_counts(batches, 30, window=3)
    got = np.zeros_like(expected)
    got[rows, cols] = counts
    assert np.array_equal(got, expected)
    assert np.all(np.diff(rows * 30 + cols) > 0)  # sorted by row, then column, no repeats


def test_max_tokens_counts_only_the_first_rows():
    batches = random_batches()
    rows, cols, counts = cooccurrence_counts(batches, 30, window=2, max_tokens=4 * 12 + 2 * 12)
    expected = dense_counts([batches[0], batches[1][:2]], 30, window=2)
    got = np.zeros_like(expected)
    got[rows, cols] = counts
    assert np.array_equal(got, expected)


def test_ppmi_matches_the_dense_formula():
    vocab_size = 30
    batches = random_batches(seed=1, count=20)
    rows, cols, counts = cooccurrence_counts(batches, vocab_size, window=4)
    dense = dense_counts(batches, vocab_size, window=4).astype(np.float64)
    total = dense.sum()
    context = dense.sum(0) ** 0.75
    context *= total / context.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = np.log(dense * total / np.outer(dense.sum(1), context))
    expected = np.maximum(np.where(np.isfinite(expected), expected, 0), 0)
    p_rows, p_cols, values = ppmi(rows, cols, counts, vocab_size)
    got = np.zeros_like(expected)
    got[p_rows, p_cols] = values
    assert np.all(values > 0)
    assert np.allclose(got, expected, atol=1e-5)


def test_truncated_svd_finds_the_leading_singular_directions():
    rng = np.random.default_rng(2)
    # A rank-3 matrix plus a little noise, stored sparse (every entry).
    matrix = rng.standard_normal((40, 3)) @ rng.standard_normal((3, 40)) * 3
    matrix = (matrix + 0.01 * rng.standard_normal((40, 40))).astype(np.float32)
    rows, cols = np.divmod(np.arange(40 * 40), 40)
    vectors = truncated_svd_rows(rows, cols, matrix.ravel(), 40, dim=3)
    u, s, _ = np.linalg.svd(matrix)
    expected = u[:, :3] * np.sqrt(s[:3])
    # Singular vectors are defined up to sign.
    signs = np.sign((vectors * expected).sum(0))
    assert np.allclose(vectors * signs, expected, atol=1e-3)
    # More directions than the matrix has: the extra columns are zero.
    wide = truncated_svd_rows(rows[:5], cols[:5], matrix.ravel()[:5], 40, dim=50)
    assert wide.shape == (40, 50) and np.allclose(wide[:, 40:], 0)


def test_tokens_that_share_contexts_get_similar_vectors():
    # Two topics: ids 2-9 only ever appear among themselves, ids 10-17 likewise.
    rng = np.random.default_rng(0)
    topics = [np.arange(2, 10), np.arange(10, 18)]
    batches = [
        np.stack([rng.choice(topics[(row + step) % 2], 24) for row in range(8)])
        for step in range(20)
    ]
    vectors = cooccurrence_embeddings(batches, vocab_size=20, dim=4, window=3)
    assert vectors.shape == (20, 4) and vectors.dtype == np.float32
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
    similarity = unit @ unit.T
    within = np.mean([similarity[a, b] for a in range(2, 10) for b in range(2, 10) if a != b])
    across = np.mean([similarity[a, b] for a in range(2, 10) for b in range(10, 18)])
    assert within > 0.8 and across < 0.2, (within, across)
    assert np.allclose(vectors[[0, 1, 18, 19]], 0)  # tokens that never occur get no vector

    # As initial embeddings: the counted rows at the initializer's scale, the others random.
    random_table = np.random.default_rng(1).normal(0, 0.02, (20, 4)).astype(np.float32)
    table, covered = initial_token_embeddings(batches, random_table, 0.05, window=3)
    assert covered == 16
    assert np.allclose(table[[0, 1, 18, 19]], random_table[[0, 1, 18, 19]])
    assert table[2:18].std() == pytest.approx(0.05, rel=1e-4)
    assert np.allclose(table[2:18] / table[2:18].std(), vectors[2:18] / vectors[2:18].std())


@pytest.mark.parametrize(
    "batches, message",
    [
        ([np.array([[1, 2, 30]])], r"token ids must be in \[0, 30\); got 1..30"),
        ([np.array([1, 2, 3])], r"must be \[batch, length\]"),
        ([], "no token pairs to count"),
    ],
)
def test_bad_batches_are_refused(batches, message):
    with pytest.raises(ValueError, match=message):
        cooccurrence_embeddings(batches, 30, 4)


def train_batches(shards: str):
    from mlm.data import pretraining_dataset

    dataset = pretraining_dataset(
        shards, 64, split="train", shuffle=False, repeat=False, drop_remainder=False
    )
    return (batch["input_ids"] for batch in dataset.as_numpy_iterator())


def token_embeddings(encoder_path: str) -> np.ndarray:
    import keras

    import mlm

    mlm.register_serializables()
    return np.asarray(keras.models.load_model(encoder_path).token_embedding.embeddings)


def test_pretrain_starts_from_the_count_based_embeddings(training_data, tmp_path):
    """One step at a negligible learning rate leaves the initial embeddings in the model."""
    from mlm.steps.pretrain import pretrain
    from tests.training.conftest import TINY_MODEL

    settings = dict(
        model_overrides=TINY_MODEL, batch_size=8, steps=1, learning_rate=1e-9,
        weight_decay=0.0, validation_batches=0, quiet=True,
    )  # fmt: skip
    result = pretrain(
        training_data["shards"], training_data["tokenizer"], str(tmp_path / "counts"),
        token_embedding_init="cooccurrence", **settings,
    )  # fmt: skip
    assert result.metrics["token_embedding_init"] == "cooccurrence"
    assert result.metrics["token_embedding_init_seconds"] > 0
    table = token_embeddings(result.encoder_path)
    zeros = np.zeros_like(table)
    expected, covered = initial_token_embeddings(
        train_batches(training_data["shards"]), zeros, 0.02
    )
    seen = np.abs(expected).sum(1) > 0
    assert covered == seen.sum() > 50
    assert np.allclose(table[seen], expected[seen], atol=1e-6)

    # `random` (the seed recipe's): the variant's random initializer, not these vectors.
    random_run = pretrain(
        training_data["shards"], training_data["tokenizer"], str(tmp_path / "random"),
        token_embedding_init="random", **settings,
    )  # fmt: skip
    assert random_run.metrics["token_embedding_init"] == "random"
    assert random_run.metrics["token_embedding_init_seconds"] == 0
    random_table = token_embeddings(random_run.encoder_path)
    assert not np.allclose(random_table[seen], expected[seen], atol=1e-3)

    # A model continued from another keeps that model's embeddings.
    continued = pretrain(
        training_data["shards"], training_data["tokenizer"], str(tmp_path / "continued"),
        init_from=random_run.output_dir, token_embedding_init="cooccurrence", **settings,
    )  # fmt: skip
    assert continued.metrics["token_embedding_init"] == ""
    metrics = json.loads((tmp_path / "continued" / "metrics.json").read_text())
    assert metrics["init_from"] == random_run.output_dir
    assert np.allclose(token_embeddings(continued.encoder_path), random_table, atol=1e-6)
