"""Benchmark of the masked-LM training step: vocabulary logits at the masked positions only
(`MaskedLanguageModel.masked_lm_forward`) against the dense way, full `[B, L, V]` logits then a
masked loss (the seed README's `call` + `compute_loss`, as most implementations do).

Both run the same model on the same batch with the same seeded masks; their losses are compared
first (dropout off). Timed, interleaved A B A B: forward and backward pass (gradients of every
trainable variable), no optimizer update, each in a `tf.function`. Prints the median time of each
and the median of the per-pair ratios sparse / dense (below 1 means the sparse head is faster).

Usage: python bench/bench_core_mlm_head.py [--variant tiny] [--vocab-size 30522] [--batch 16]
       [--length 128] [--pairs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="tiny", choices=["tiny", "small", "base", "large"])
    parser.add_argument("--vocab-size", type=int, default=30522)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--pairs", type=int, default=5)
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from mlm.encoders.bert import BERT
    from mlm.model import MaskedLanguageModel

    encoder = BERT.from_variant(
        args.variant,
        vocab_size=args.vocab_size,
        max_position_embeddings=max(512, args.length),
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model = MaskedLanguageModel(
        encoder,
        vocab_size=args.vocab_size,
        mask_token_id=4,
        special_token_ids=[0, 1, 2, 3, 4],
        mlm_head_dropout=0.0,
    )
    model.build()
    rng = np.random.default_rng(0)
    ids = rng.integers(5, args.vocab_size, (args.batch, args.length)).astype("int32")
    mask = np.ones_like(ids)
    mask[:, args.length * 3 // 4 :] = 0  # a padded quarter, as in real batches
    batch = {"input_ids": tf.constant(ids), "attention_mask": tf.constant(mask)}
    seed = tf.constant([0, 1], tf.int64)
    variables = model.trainable_variables

    @tf.function
    def sparse():
        with tf.GradientTape() as tape:
            loss = model.masked_lm_forward(batch, training=True, seed=seed)["loss"]
        return loss, tape.gradient(loss, variables)

    @tf.function
    def dense():
        with tf.GradientTape() as tape:
            masked_inputs, labels, selected = model._mask_tokens(batch, seed=seed)
            logits = model(masked_inputs, training=True)
            loss = model.compute_loss(y=labels, y_pred=logits, sample_weight=selected)
        return loss, tape.gradient(loss, variables)

    difference = abs(float(sparse()[0]) - float(dense()[0]))
    print(
        f"BERT-{args.variant} + MLM head (vocab {args.vocab_size}), batch {args.batch} x "
        f"{args.length} tokens; |loss sparse - loss dense| = {difference:.2e}"
    )
    if difference > 1e-4:
        print("error: the two computations disagree; the comparison would be meaningless")
        return 1
    for _ in range(2):  # warm-up: allocators, thread pools
        sparse()
        dense()
    sparse_times, dense_times = [], []
    for _ in range(args.pairs):
        sparse_times.append(_timed(sparse))
        dense_times.append(_timed(dense))
    ratios = [a / b for a, b in zip(sparse_times, dense_times)]
    print(f"{'case':<16} {'sparse ms':>10} {'dense ms':>10} {'ratio sparse/dense':>19}")
    print(
        f"{'train step':<16} {1e3 * statistics.median(sparse_times):>10.1f}"
        f" {1e3 * statistics.median(dense_times):>10.1f} {statistics.median(ratios):>19.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
