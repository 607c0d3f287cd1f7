"""The gradient all-reduce of a 2-worker pre-training step: its time, and what packing changes.

Two local worker processes (`mlm.launch.local.run_local_workers`, each with the TF_CONFIG a TFJob
gives its pods) build the masked-LM model `mlm pretrain --variant V` builds, under
MultiWorkerMirroredStrategy, and time the all-reduce that Keras' optimizer runs each step: one
`ReplicaContext.all_reduce(SUM, gradients)` over tensors shaped like every trainable variable, in a
`tf.function`. Each `--pack-mb` value is a pair of fresh processes whose strategy is created with
`CommunicationOptions(bytes_per_pack=...)` (0: TensorFlow's default, a size it picks); TensorFlow
takes a strategy's options once per process. The step it belongs to is timed by
`bench/bench_multiworker.py` (`mlm pretrain --workers 2`); the share is this time over that step.

Usage: python bench/bench_allreduce.py [--variant tiny] [--vocab-size 8000] [--pack-mb 0 4 32]
       [--repeats 30] [--output bench/results]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def worker(args: argparse.Namespace) -> None:
    """One worker: builds the model, times the all-reduce; worker 0 writes the milliseconds."""
    import tensorflow as tf

    options = tf.distribute.experimental.CommunicationOptions(
        bytes_per_pack=int(args.pack_mb[0] * 2**20)
    )
    strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)

    from mlm.encoders.bert import BERT
    from mlm.model import MaskedLanguageModel

    with strategy.scope():
        encoder = BERT.from_variant(args.variant, vocab_size=args.vocab_size)
        model = MaskedLanguageModel(
            encoder=encoder,
            vocab_size=args.vocab_size,
            mask_token_id=4,
            special_token_ids=(0, 1, 2, 3, 4),
            tie_word_embeddings=True,
        )
        model.build(None)
        gradients = [tf.Variable(tf.ones(v.shape, v.dtype)) for v in model.trainable_variables]

    @tf.function
    def all_reduce() -> list:
        def replica_fn() -> list:
            context = tf.distribute.get_replica_context()
            return context.all_reduce(tf.distribute.ReduceOp.SUM, [g * 1.0 for g in gradients])

        return strategy.run(replica_fn)

    for _ in range(3):  # tracing, and the collectives' first exchange
        all_reduce()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        reduced = all_reduce()
        float(tf.reduce_sum(reduced[0]))  # waits for the result
        times.append(time.perf_counter() - start)
    task = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    if task == 0:
        megabytes = sum(v.shape.num_elements() * v.dtype.size for v in gradients) / 2**20
        result = {
            "ms": 1000 * statistics.median(times),
            "megabytes": megabytes,
            "tensors": len(gradients),
        }
        Path(args.result).write_text(json.dumps(result))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="tiny")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--pack-mb", type=float, nargs="+", default=[0, 4, 32])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0

    from mlm.launch.local import run_local_workers

    args.output.mkdir(parents=True, exist_ok=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="mlm-bench-") as workdir:
        for pack_mb in args.pack_mb:
            result = Path(workdir, f"{pack_mb}.json")
            command = [
                sys.executable, __file__, "--worker", "--variant", args.variant,
                "--vocab-size", str(args.vocab_size), "--pack-mb", str(pack_mb),
                "--repeats", str(args.repeats), "--result", str(result),
            ]  # fmt: skip
            with open(args.output / "allreduce.log", "a") as log:
                run_local_workers(command, 2, timeout=600, output=log)
            results[pack_mb] = json.loads(result.read_text())
            print(f"  pack {pack_mb:g} MB: {results[pack_mb]['ms']:.1f} ms", flush=True)

    first = next(iter(results.values()))
    lines = [
        "# Gradient all-reduce of a 2-worker step (MultiWorkerMirroredStrategy, one machine)",
        "",
        f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`; {os.cpu_count()} CPUs, "
        f"BERT {args.variant}, vocabulary {args.vocab_size}: {first['tensors']} gradient tensors, "
        f"{first['megabytes']:.1f} MB in float32; median of {args.repeats} all-reduces.",
        "",
        "| bytes_per_pack | all-reduce ms |",
        "|---:|---:|",
    ]
    for pack_mb, result in results.items():
        label = "0 (TensorFlow's default)" if pack_mb == 0 else f"{pack_mb:g} MB"
        lines.append(f"| {label} | {result['ms']:.1f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    (args.output / "allreduce.md").write_text(text)
    (args.output / "allreduce.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
