"""Count-based initial token embeddings: PPMI-SVD word vectors of the training text.

On a small budget, masked-LM pre-training spends thousands of steps learning which tokens occur
together, and a fine-tuned classifier on few labelled rows mostly needs exactly that. The
corpus's co-occurrence counts give it for the price of one pass over the shards: positive
pointwise mutual information (PPMI) of token pairs at most `window` apart, with the context
distribution smoothed by 0.75 (Levy et al., 2015), factorized by a randomized truncated SVD
(Halko et al., 2011); a token's vector is its row of U * sqrt(S). Started from these vectors
(scaled to the encoder's initializer range), masked-LM training adds what counts cannot
(docs/training.md has the measurements).

The counts are kept sparse (only the pairs that occur), so memory grows with the text counted,
not with the square of the vocabulary; at most `max_tokens` token positions are counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

COUNTED_TOKENS = 10_000_000  # token positions counted at most: enough for stable vectors
_MERGE_EVERY = 1 << 25  # pair keys buffered before they are merged into the sparse counts


def cooccurrence_counts(
    batches: Iterable[Any], vocab_size: int, *, window: int = 10, max_tokens: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symmetric co-occurrence counts of token ids at most `window` positions apart.

    Args:
        batches: `[batch, length]` token-id arrays (padding included: a row is one example).
        vocab_size: ids are below this.
        window: the farthest distance that counts as co-occurring.
        max_tokens: count at most this many token positions (None: all).

    Returns:
        `(rows, cols, counts)`, the pairs that occur, sorted by row then column.
    """
    if window < 1:
        raise ValueError(f"window={window}: must be at least 1")
    keys: np.ndarray = np.zeros(0, np.int64)
    counts: np.ndarray = np.zeros(0, np.int64)
    pending: list[np.ndarray] = []
    pending_size = 0
    counted = 0

    def merge() -> None:
        nonlocal keys, counts, pending, pending_size
        if not pending:
            return
        new_keys, new_counts = np.unique(np.concatenate(pending), return_counts=True)
        keys, inverse = np.unique(np.concatenate([keys, new_keys]), return_inverse=True)
        counts = np.bincount(
            inverse, weights=np.concatenate([counts, new_counts]), minlength=len(keys)
        ).astype(np.int64)
        pending, pending_size = [], 0

    for batch in batches:
        ids = np.asarray(batch, np.int64)
        if ids.ndim != 2:
            raise ValueError(f"token-id batches must be [batch, length], got shape {ids.shape}")
        if max_tokens is not None:
            ids = ids[: max(0, (max_tokens - counted) // max(1, ids.shape[1]))]
        if ids.size == 0:
            break
        if ids.min() < 0 or ids.max() >= vocab_size:
            raise ValueError(
                f"token ids must be in [0, {vocab_size}); got {ids.min()}..{ids.max()}"
            )
        counted += ids.size
        for distance in range(1, min(window, ids.shape[1] - 1) + 1):
            left, right = ids[:, :-distance].ravel(), ids[:, distance:].ravel()
            pending += [left * vocab_size + right, right * vocab_size + left]
            pending_size += 2 * left.size
        if pending_size >= _MERGE_EVERY:
            merge()
    merge()
    return keys // vocab_size, keys % vocab_size, counts


def ppmi(
    rows: np.ndarray, cols: np.ndarray, counts: np.ndarray, vocab_size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The positive PMI of sparse counts, context distribution smoothed by 0.75: `(rows, cols,
    values)` of the positive entries, in the order given."""
    counts = counts.astype(np.float64)
    total = counts.sum()
    row_sums = np.bincount(rows, weights=counts, minlength=vocab_size)
    context = np.bincount(cols, weights=counts, minlength=vocab_size) ** 0.75
    context *= total / context.sum()
    values = np.log(counts * total / (row_sums[rows] * context[cols]))
    keep = values > 0
    return rows[keep], cols[keep], values[keep].astype(np.float32)


def truncated_svd_rows(
    rows: np.ndarray,
    cols: np.ndarray,
    values: np.ndarray,
    vocab_size: int,
    dim: int,
    *,
    seed: int = 0,
    power_iterations: int = 3,
) -> np.ndarray:
    """U * sqrt(S) of the sparse `[vocab, vocab]` matrix's leading `dim` singular directions
    (randomized SVD with power iterations), `[vocab, dim]` float32; directions beyond the
    matrix's rank are zero columns."""
    import tensorflow as tf

    matrix = tf.sparse.SparseTensor(
        np.stack([rows, cols], axis=1), values, dense_shape=(vocab_size, vocab_size)
    )

    def times(dense: np.ndarray, transpose: bool = False) -> np.ndarray:
        return tf.sparse.sparse_dense_matmul(matrix, dense, adjoint_a=transpose).numpy()

    sketch_size = min(dim + 32, vocab_size)
    gaussian = np.random.default_rng(seed).standard_normal((vocab_size, sketch_size), np.float32)
    sketch = times(gaussian)
    for _ in range(power_iterations):  # sharpen the leading subspace
        basis, _ = np.linalg.qr(sketch)
        sketch = times(times(basis, transpose=True))
    basis, _ = np.linalg.qr(sketch)
    left, singular, _ = np.linalg.svd(times(basis, transpose=True).T, full_matrices=False)
    vectors = (basis @ left)[:, :dim] * np.sqrt(singular[:dim])
    table = np.zeros((vocab_size, dim), np.float32)
    table[:, : vectors.shape[1]] = vectors
    return table


def cooccurrence_embeddings(
    batches: Iterable[Any],
    vocab_size: int,
    dim: int,
    *,
    window: int = 10,
    max_tokens: int | None = COUNTED_TOKENS,
    seed: int = 0,
) -> np.ndarray:
    """PPMI-SVD vectors of token-id batches, `[vocab_size, dim]` float32 (rows U * sqrt(S)).

    Tokens that never occur in the batches (or have no positive PMI with any) get zero rows.
    """
    rows, cols, counts = cooccurrence_counts(
        batches, vocab_size, window=window, max_tokens=max_tokens
    )
    if not len(counts):
        raise ValueError("no token pairs to count: the batches are empty")
    positive = ppmi(rows, cols, counts, vocab_size)
    table = truncated_svd_rows(*positive, vocab_size, dim, seed=seed)
    # Rows with no positive PMI (tokens that never occur) are exact zeros, not SVD round-off.
    table[np.bincount(positive[0], minlength=vocab_size) == 0] = 0
    return table


def initial_token_embeddings(
    batches: Iterable[Any], random_table: np.ndarray, stddev: float, **options: Any
) -> tuple[np.ndarray, int]:
    """The count-based initial token embedding table, in place of `random_table`.

    The PPMI-SVD vectors scaled to standard deviation `stddev` (the encoder's initializer
    range), so training starts at the scale it expects; rows of tokens that never occur in the
    batches keep their random initial values (e.g. [MASK], absent from the text). Returns the
    table and how many tokens got a count-based row.
    """
    vocab_size, dim = random_table.shape
    vectors = cooccurrence_embeddings(batches, vocab_size, dim, **options)
    seen = np.abs(vectors).sum(axis=1) > 0
    scale = stddev / max(float(vectors[seen].std()), 1e-12)
    table = np.where(seen[:, None], vectors * scale, random_table).astype(np.float32)
    return table, int(seen.sum())
