"""Benchmark of the BERT encoder against Hugging Face transformers' PyTorch `BertModel`.

Both models have the same configuration and the same weights (the PyTorch model, in a separate
process, is saved with `save_pretrained` and imported with `mlm.load_hf_bert_checkpoint`; their
outputs are compared first). Timed, interleaved A B A B on the same batch:

- inference: one forward pass (ours in a `tf.function`, the peer under `torch.inference_mode`);
- training: forward and backward pass of a scalar loss in training mode (dropout on), no
  optimizer update.

Prints the median time of each and the median of the per-pair ratios ours / peer (below 1 means
ours is faster). Needs `torch`; without it, says so and exits 0.

Writes the table to `<output>/encoder.md`.

Usage: python bench/bench_encoder.py [--variant tiny] [--batch 8] [--length 128] [--pairs 5]
       [--output bench/results]
"""

from __future__ import annotations

import argparse
import importlib.util
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _peer_process(conn, directory: str, config: dict, ids, mask, threads: int) -> None:
    """The peer, in its own process so the two frameworks' thread pools never share one.

    Builds `transformers.BertModel`, saves it to `directory` for the parent to import, sends its
    inference output, then answers each case name with the seconds one call of it took.
    """
    import torch
    import transformers

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = transformers.BertModel(transformers.BertConfig(**config))
    model.save_pretrained(directory)
    inputs = {
        "input_ids": torch.tensor(ids, dtype=torch.long),
        "attention_mask": torch.tensor(mask, dtype=torch.long),
    }

    def inference():
        model.eval()
        with torch.inference_mode():
            return model(**inputs).last_hidden_state

    def training():
        model.train()
        model.zero_grad(set_to_none=True)
        (model(**inputs).last_hidden_state ** 2).mean().backward()

    cases = {"inference": inference, "training": training}
    conn.send(inference().numpy())
    while (case := conn.recv()) is not None:
        conn.send(_timed(cases[case]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="tiny", choices=["tiny", "small", "base", "large"])
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)

    if (
        importlib.util.find_spec("torch") is None
        or importlib.util.find_spec("transformers") is None
    ):
        print("skipped: the peer needs PyTorch and transformers")
        return 0
    import numpy as np
    import tensorflow as tf

    from mlm import load_hf_bert_checkpoint
    from mlm.encoders.bert import BERT_VARIANTS

    threads = os.cpu_count() or 1
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    sizes = BERT_VARIANTS[args.variant]
    config = {
        "vocab_size": args.vocab_size,
        "hidden_size": sizes["hidden_size"],
        "num_hidden_layers": sizes["num_layers"],
        "num_attention_heads": sizes["num_heads"],
        "intermediate_size": sizes["intermediate_size"],
        "max_position_embeddings": max(512, args.length),
    }
    rng = np.random.default_rng(0)
    ids = rng.integers(0, args.vocab_size, (args.batch, args.length)).astype("int32")
    mask = np.ones_like(ids)
    mask[:, args.length * 3 // 4 :] = 0  # a padded quarter, as in real batches

    context = multiprocessing.get_context("spawn")
    conn, child_conn = context.Pipe()
    with tempfile.TemporaryDirectory() as directory:
        peer = context.Process(
            target=_peer_process, args=(child_conn, directory, config, ids, mask, threads)
        )
        peer.start()
        try:
            peer_output = conn.recv()
            ours = load_hf_bert_checkpoint(directory, with_mlm_head=False)
            return _compare(ours, conn, ids, mask, peer_output, args, threads)
        finally:
            conn.send(None)
            peer.join()


def _compare(ours, conn, ids, mask, peer_output, args, threads) -> int:
    import numpy as np
    import tensorflow as tf

    inputs = {"input_ids": tf.constant(ids), "attention_mask": tf.constant(mask)}

    @tf.function
    def inference():
        return ours(inputs, training=False)["last_hidden_state"]

    @tf.function
    def training():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(ours(inputs, training=True)["last_hidden_state"] ** 2)
        return tape.gradient(loss, ours.trainable_variables)

    valid = mask.astype(bool)
    difference = np.abs(inference().numpy() - peer_output)[valid].max()
    lines = [
        "# BERT encoder: mlm vs transformers `BertModel` (PyTorch), same weights",
        "",
        f"Command: `{' '.join([os.path.basename(sys.executable), *sys.argv])}`; "
        f"BERT-{args.variant} (vocab {args.vocab_size}), batch {args.batch} x {args.length} "
        f"tokens (a padded quarter), {threads} threads each; {args.pairs} interleaved pairs, "
        f"medians; max |ours - peer| on real tokens: {difference:.2e}.",
        "",
        "| case | mlm ms | transformers ms | mlm / transformers |",
        "|---|---:|---:|---:|",
    ]
    if difference > 1e-3:
        print("error: the two models disagree; the comparison would be meaningless")
        return 1

    def peer_call(case: str) -> float:
        conn.send(case)
        return conn.recv()

    for case, ours_fn in (("inference", inference), ("training", training)):
        for _ in range(2):  # warm-up: tracing, allocators, thread pools
            ours_fn()
            peer_call(case)
        ours_times, peer_times = [], []
        for _ in range(args.pairs):
            ours_times.append(_timed(ours_fn))
            peer_times.append(peer_call(case))
        ratios = [a / b for a, b in zip(ours_times, peer_times)]
        lines.append(
            f"| {case} | {1e3 * statistics.median(ours_times):.1f} "
            f"| {1e3 * statistics.median(peer_times):.1f} | {statistics.median(ratios):.2f} |"
        )
    text = "\n".join(
        [*lines, "", "Below 1: mlm is faster. Training: forward + backward, no optimizer.", ""]
    )
    print(text)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "encoder.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
