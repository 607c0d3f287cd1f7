"""Overhead of the multi-worker path: `mlm pretrain --workers 2` vs `--workers 1`, same global batch.

Both runs train the same BERT (the `tiny` variant unless `--variant` says otherwise) on shards of
the built-in corpus for the same steps with the same global batch: one process, or two local
processes under MultiWorkerMirroredStrategy (each takes half the batch and the gradients are
all-reduced every step). The runs alternate (1, 2, 1, 2, ...) and the throughput is the
`tokens_per_second` that `mlm pretrain` writes to `metrics.json` (steady state, the first step
left out). On one machine the two workers share its cores, so the ratio measures what the
multi-worker path costs (collectives, the split batch, two processes), not a speed-up.

Usage: python bench/bench_multiworker.py [--variant tiny] [--vocab-size 8000] [--steps 30]
       [--batch-size 32] [--pairs 2] [--output bench/results]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def mlm_command() -> list[str]:
    return [sys.executable, "-m", "mlm.cli"]


def run(command: list[str], log: Path) -> None:
    with log.open("a") as out:
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, check=False)
    if result.returncode:
        tail = "\n".join(log.read_text().splitlines()[-20:])
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variant", default="tiny")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    log = args.output / "multiworker.log"
    log.write_text("")

    with tempfile.TemporaryDirectory(prefix="mlm-bench-") as workdir:
        work = Path(workdir)
        tokenize = ["tokenize", "--output", str(work / "tok"), "--vocab-size", str(args.vocab_size)]
        run([*mlm_command(), *tokenize], log)
        shard = ["shard", "--tokenizer", str(work / "tok"), "--output", str(work / "shards")]
        run([*mlm_command(), *shard, "--num-shards", "4"], log)
        rates: dict[int, list[float]] = {1: [], 2: []}
        wall: dict[int, list[float]] = {1: [], 2: []}
        for pair in range(args.pairs):
            for workers in (1, 2):
                out = work / f"run-{workers}-{pair}"
                start = time.perf_counter()
                pretrain = {
                    "--shards": work / "shards",
                    "--tokenizer": work / "tok",
                    "--output": out,
                    "--variant": args.variant,
                    "--steps": args.steps,
                    "--batch-size": args.batch_size,
                    "--workers": workers,
                    "--validation-batches": 0,
                    "--checkpoint-every-steps": 0,
                }
                options = [str(part) for pair in pretrain.items() for part in pair]
                run([*mlm_command(), "pretrain", *options, "--quiet"], log)
                wall[workers].append(time.perf_counter() - start)
                metrics = json.loads((out / "metrics.json").read_text())
                rates[workers].append(metrics["tokens_per_second"])
                shutil.rmtree(out)
                print(
                    f"  pair {pair + 1}/{args.pairs}, {workers} worker(s): "
                    f"{rates[workers][-1]:,.0f} tokens/s",
                    flush=True,
                )

    ratio = statistics.median(b / a for a, b in zip(rates[1], rates[2], strict=True))
    lines = [
        "# Multi-worker overhead: `mlm pretrain --workers 2` vs `--workers 1`",
        "",
        f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`; {os.cpu_count()} CPUs, "
        f"BERT {args.variant}, built-in corpus, vocabulary {args.vocab_size}, "
        f"global batch {args.batch_size}, {args.steps} steps, "
        f"{args.pairs} alternating pairs, medians.",
        "",
        "| workers | tokens/s | wall s (incl. start-up) |",
        "|---:|---:|---:|",
    ]
    for workers in (1, 2):
        lines.append(
            f"| {workers} | {statistics.median(rates[workers]):,.0f} "
            f"| {statistics.median(wall[workers]):.0f} |"
        )
    lines += [
        "",
        f"2 workers / 1 worker: {ratio:.2f}x tokens/s (the workers share this machine's cores).",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    (args.output / "multiworker.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
