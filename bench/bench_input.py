"""The input pipeline against what a GPU consumes: batches/s of `mlm.data.pretraining_dataset`,
with and without masking on the host, under the tf.data parallelism settings.

`mlm pretrain` reads its batches with `pretraining_dataset` (interleaved files, shuffle, batch,
bulk parse, all with `tf.data.AUTOTUNE` parallelism, prefetch) and masks them inside the training
step, on the accelerator. This benchmark reads the shards of the built-in corpus (sequence 128,
batch 32) alone, without a model, in each setting:

- as `mlm pretrain` reads them (AUTOTUNE, tf.data's shared thread pool);
- the same plus masking on the host (`mlm.masking.mask_tokens` in a parallel `map`), for a step
  that takes its batches already masked;
- both with tf.data restricted to one thread (`options.threading.private_threadpool_size = 1`), to
  show what the parallelism buys.

The consumption it is compared to: NVIDIA's published BERT-large TF2 rate on one A100 (486
sequences/s, AMP, sequence 128), per GPU and for an 8-GPU node; and the GPU rate measured by
`bench/gpu/bench_gpu.py` when its `gpu.json` is in the output directory.

Usage: python bench/bench_input.py [--batches 300] [--output bench/results]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import bench_peers as peers  # also quiets TensorFlow's start-up chatter

GPU_SEQUENCES_PER_SECOND = 486  # NVIDIA's BERT-large TF2, one A100, AMP, sequence 128
NODE_GPUS = 8


def dataset(shards: Path, *, host_masking: bool, one_thread: bool):
    """`pretraining_dataset` as `mlm pretrain` builds it, optionally masked and single-threaded."""
    import tensorflow as tf

    from mlm.data import read_tokenizer_info
    from mlm.data.dataset import pretraining_dataset
    from mlm.masking import MaskingSpec, mask_tokens

    data = pretraining_dataset(str(shards), peers.BATCH, seed=0)
    if host_masking:
        info = read_tokenizer_info(str(shards.parent / "tokenizer"))
        spec = MaskingSpec(
            vocab_size=peers.VOCAB,
            mask_token_id=info.mask_token_id,
            special_token_ids=tuple(info.special_token_ids),
            mask_ratio=peers.MASK_RATE,
        )

        def mask(batch):
            masked = mask_tokens(batch["input_ids"], batch["attention_mask"], spec=spec)
            return {**batch, "input_ids": masked["masked_input_ids"], "labels": masked["labels"]}

        data = data.map(mask, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    if one_thread:
        options = tf.data.Options()
        options.threading.private_threadpool_size = 1
        data = data.with_options(options)
    return data


def batches_per_second(data, batches: int) -> float:
    iterator = iter(data)
    for _ in range(20):  # fills the shuffle buffer and the prefetch buffers
        next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=300, help="timed batches per setting")
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    if args.batches < 1:
        parser.error(f"--batches {args.batches}: need at least 1")
    args.output = args.output.resolve()
    args.output.mkdir(parents=True, exist_ok=True)
    peers.run_prepare(args.output, [peers.LENGTH])
    shards = peers.shard_dir(args.output, peers.LENGTH)

    settings = [
        ("as `mlm pretrain` reads (AUTOTUNE), masking in the step", False, False),
        ("AUTOTUNE, masking on the host", True, False),
        ("one tf.data thread, masking in the step", False, True),
        ("one tf.data thread, masking on the host", True, True),
    ]
    rates = []
    for label, host_masking, one_thread in settings:
        rate = batches_per_second(dataset(shards, host_masking=host_masking,
                                          one_thread=one_thread), args.batches)  # fmt: skip
        rates.append(rate)
        print(f"  {label}: {rate:,.0f} batches/s", flush=True)

    consumers = [
        (f"one A100, BERT-large (NVIDIA, {GPU_SEQUENCES_PER_SECOND} seq/s)",
         GPU_SEQUENCES_PER_SECOND),
        (f"{NODE_GPUS} such GPUs on one node", NODE_GPUS * GPU_SEQUENCES_PER_SECOND),
    ]  # fmt: skip
    gpu_json = args.output / "gpu.json"
    if gpu_json.exists():
        measured = json.loads(gpu_json.read_text())
        if measured.get("device"):
            best = max(
                (max(values) for r in measured["results"].values()
                 for values in r["tokens_per_second"].values() if values),
                default=0.0,
            ) / measured["length"]  # fmt: skip
            consumers.append((f"measured on {measured['device']} (bench_gpu.py)", best))

    lines = [
        "# Input pipeline against GPU consumption",
        "",
        f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`; {peers.machine_line()}",
        f"`pretraining_dataset` over shards of the built-in corpus, batch {peers.BATCH} x "
        f"{peers.LENGTH}, read alone (no model), {args.batches} batches after 20 warm-up batches.",
        "",
        "| setting | batches/s | sequences/s | "
        + " | ".join(f"x {name}" for name, _ in consumers)
        + " |",
        "|---|---:|---:|" + "---:|" * len(consumers),
    ]
    for (label, _, _), rate in zip(settings, rates, strict=True):
        sequences = rate * peers.BATCH
        lines.append(
            f"| {label} | {rate:,.0f} | {sequences:,.0f} | "
            + " | ".join(f"{sequences / need:.1f}x" for _, need in consumers)
            + " |"
        )
    lines += [
        "",
        "A ratio of 1x or more means this machine's CPUs feed that consumer; the parallel "
        "settings are `pretraining_dataset`'s defaults (`num_parallel_calls=tf.data.AUTOTUNE` "
        "for the file interleave and the parse, `prefetch(AUTOTUNE)`).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    (args.output / "input.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
