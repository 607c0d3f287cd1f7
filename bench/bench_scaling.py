"""How the cost of an MLM training step grows: tokens/s and peak memory against sequence length
and model size, for mlm and the best peer.

For BERT tiny, small and base at sequence 128 and 512 (the same tokens per step: batch 32 at
128, batch 8 at 512), each implementation runs in its own worker process (`bench_peers.py`'s
workers, so the set-up is the same as there): a warm-up that covers compilation, then a few
interleaved rounds of one step; the report gives the median tokens/s and the worker process's
peak resident memory (VmHWM, the whole process: framework, model, optimizer, activations).

The peer is the best peer variant of the precision that `bench_peers.py` measured in the same
output directory (`peers.json`), else transformers + PyTorch eager; mlm runs its best variant of
that precision likewise.

Usage: python bench/bench_scaling.py [--configs tiny,small,base] [--lengths 128,512]
       [--precision float32] [--rounds 2] [--output bench/results]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import bench_peers as peers

TOKENS_PER_STEP = peers.LENGTH * peers.BATCH


def chosen_variants(output: Path, precision: str) -> tuple[peers.Variant, peers.Variant]:
    """mlm's and the peers' best variant of `precision` in the last `bench_peers.py` run."""
    ours = peers.Variant("mlm", precision, False)
    peer = peers.Variant("hf-torch", precision, False)
    try:
        summary = json.loads((output / "peers.json").read_text())
    except (OSError, ValueError):
        return ours, peer
    rows = [row for row in summary.get("comparisons", []) if row["precision"] == precision]
    if rows:  # the largest config measured there
        row = rows[-1]
        ours, peer = peers.VARIANTS_BY_KEY[row["mlm"]], peers.VARIANTS_BY_KEY[row["peer"]]
    return ours, peer


def measure(config: str, length: int, variants, args: argparse.Namespace) -> dict:
    """Median tokens/s and peak RSS (MB) of each variant at one model size and length."""
    shape = peers.Shape(length, max(1, TOKENS_PER_STEP // length))
    label = f"{config} seq {length}"
    workers, failed = peers.start_workers(variants, config, shape, args.output, warmup=args.warmup)
    try:
        rates = peers.interleaved_rates(
            workers, args.rounds, args.steps, shape.batch * shape.length, label
        )
        memory = {w.variant.key: w.ask("memory") for w in workers}
    finally:
        for worker in workers:
            worker.close()
    row = {"batch": shape.batch, "failed": failed}
    for variant in variants:
        if variant.key in rates:
            row[variant.key] = {
                "tokens_per_second": statistics.median(rates[variant.key]),
                "peak_rss_mb": memory[variant.key],
            }
        elif variant.key not in failed:
            failed[variant.key] = "failed mid-run"
    return row


def report(rows: list[tuple[str, int, dict]], variants, args: argparse.Namespace) -> str:
    ours, peer = variants
    lines = [
        "# How cost grows: sequence length and model size",
        "",
        f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`; {peers.machine_line()}",
        f"{TOKENS_PER_STEP} tokens per step (the batch is given per row); {args.warmup} untimed "
        f"warm-up steps, then {args.rounds} interleaved rounds of {args.steps} step(s); medians. "
        "Peak memory is the worker process's peak resident set (VmHWM).",
        "",
        f"| model | sequence | batch | {ours.label} tokens/s | peak MB | {peer.label} tokens/s "
        "| peak MB | mlm / peer |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for config, length, row in rows:
        cells = []
        for variant in variants:
            if variant.key in row:
                result = row[variant.key]
                cells += [f"{result['tokens_per_second']:,.0f}", f"{result['peak_rss_mb']:,.0f}"]
            else:
                cells += [f"failed: {row['failed'][variant.key].replace('|', '/')}", ""]
        both = ours.key in row and peer.key in row
        ratio = (
            f"{row[ours.key]['tokens_per_second'] / row[peer.key]['tokens_per_second']:.2f}x"
            if both
            else "-"
        )
        lines.append(f"| {config} | {length} | {row['batch']} | {' | '.join(cells)} | {ratio} |")
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="tiny,small,base")
    parser.add_argument("--lengths", default="128,512")
    parser.add_argument("--precision", default="float32", choices=peers.PRECISIONS)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=1, help="steps per worker and round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps (compilation)")
    parser.add_argument("--quick", action="store_true", help="a check that it runs: tiny only")
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    if args.quick:
        args.configs, args.rounds, args.warmup = "tiny", 1, 1
    configs = [c for c in args.configs.split(",") if c]
    unknown = sorted(set(configs) - set(peers.CONFIGS))
    if unknown:
        parser.error(f"--configs: unknown {unknown}; use any of {sorted(peers.CONFIGS)}")
    lengths = [int(n) for n in args.lengths.split(",") if n]
    if any(n < 8 or n > 512 for n in lengths):
        parser.error(f"--lengths {args.lengths}: each length must be in [8, 512]")
    peers.require_peers(parser)
    args.output = args.output.resolve()
    args.output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    variants = chosen_variants(args.output, args.precision)
    print("comparing " + " and ".join(v.label for v in variants), flush=True)
    peers.run_prepare(args.output, lengths)
    rows = [
        (config, length, measure(config, length, variants, args))
        for config in configs
        for length in lengths
    ]
    text = report(rows, variants, args)
    print(text)
    (args.output / "scaling.md").write_text(text + "\n")
    (args.output / "scaling.json").write_text(
        json.dumps([{"config": c, "length": n, **row} for c, n, row in rows], indent=1) + "\n"
    )
    print(f"wrote {args.output / 'scaling.md'} ({(time.perf_counter() - started) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
