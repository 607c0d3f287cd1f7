"""MLM pre-training on one GPU: mlm (`mixed_bfloat16`, with and without XLA) against transformers
+ PyTorch (`torch.compile` + bf16 autocast), BERT-base and BERT-large at sequence 128.

The workers are `bench/bench_peers.py`'s (same model, masking, optimizer and set-up), run on the
GPU: TensorFlow places the mlm step there by itself, PyTorch's is moved with `.to("cuda")`. The
report gives sequences/s per GPU and model-FLOP utilisation (model FLOPs as in bench_peers.py,
over the GPU's dense bfloat16 peak), next to NVIDIA's published BERT-large TF2 figure: 486
sequences/s on one A100, AMP, sequence 128 (NVIDIA Deep Learning Examples,
TensorFlow2/LanguageModeling/BERT).

`--smoke` runs a tiny model at sequence 32 for one step, on the CPU when there is no GPU: a check
that the script works, not a measurement.

Usage: bench/gpu/run.sh [--models base,large] [--batch 64] [--rounds 3] [--steps 10]
       [--smoke] [--output bench/results]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import bench_peers as peers

NVIDIA_BERT_LARGE = 486  # sequences/s, one A100, TF2 AMP, sequence 128 (published)
NVIDIA_LENGTH = 128
A100_BF16_TFLOPS = 312
# Dense bfloat16 tensor-core peaks (TFLOP/s) by the name nvidia-smi reports.
PEAK_TFLOPS = {"A100": 312, "H100": 989, "H200": 989, "L4": 121, "L40S": 362, "A10": 125}
VARIANTS = (
    peers.Variant("mlm", "bfloat16", True),
    peers.Variant("mlm", "bfloat16", False),
    peers.Variant("hf-torch", "bfloat16", True),
)


def gpu_name() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, check=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return None
    names = out.stdout.strip().splitlines()
    return names[0] if names else None


def peak_tflops(name: str | None, override: float | None) -> float | None:
    if override:
        return override
    for key, value in sorted(PEAK_TFLOPS.items(), key=lambda kv: -len(kv[0])):
        if name and key in name:
            return value
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="base,large")
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64, help="sequences per step (one GPU)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="steps per worker and round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps (compilation)")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, if unlisted")
    parser.add_argument("--smoke", action="store_true", help="tiny, seq 32, 1 step: a check only")
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    if args.smoke:
        args.models, args.length, args.batch = "tiny", 32, 4
        args.rounds, args.steps, args.warmup = 1, 1, 1
    models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(models) - set(peers.CONFIGS))
    if unknown:
        parser.error(f"--models: unknown {unknown}; use any of {sorted(peers.CONFIGS)}")
    peers.require_peers(parser)
    name = gpu_name()
    if name is None and not args.smoke:
        parser.error("no GPU found (nvidia-smi): run on a GPU machine, or pass --smoke")
    device = "cuda" if name else "cpu"
    # Both frameworks share the GPU: TensorFlow must not reserve all of its memory up front.
    os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    args.output = args.output.resolve()
    args.output.mkdir(parents=True, exist_ok=True)
    peers.run_prepare(args.output, [args.length])

    shape = peers.Shape(args.length, args.batch)
    results = {}
    for model in models:
        workers, failed = peers.start_workers(
            list(VARIANTS), model, shape, args.output, device=device, warmup=args.warmup
        )
        try:
            rates = peers.interleaved_rates(
                workers, args.rounds, args.steps, args.batch * args.length, model
            )
        finally:
            for worker in workers:
                worker.close()
        results[model] = {"tokens_per_second": rates, "failed": failed}

    peak = peak_tflops(name, args.peak_tflops)
    nvidia_mfu = (
        NVIDIA_BERT_LARGE * NVIDIA_LENGTH
        * peers.model_flops_per_token(peers.CONFIGS["large"], NVIDIA_LENGTH)
        / (A100_BF16_TFLOPS * 1e12)
    )  # fmt: skip
    lines = [
        "# MLM pre-training on one GPU",
        "",
        f"Device: {name or 'none (CPU smoke run, not a measurement)'}"
        + (f", dense bf16 peak {peak:g} TFLOP/s" if peak else "")
        + f". Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        f"Sequence {args.length}, batch {args.batch} per GPU, {args.warmup} untimed warm-up "
        f"steps, {args.rounds} interleaved rounds of {args.steps} steps; medians. Model FLOPs as "
        "in bench_peers.py (MLM head at the masked positions only).",
        "",
        "| model | variant | sequences/s | model TFLOP/s | MFU |",
        "|---|---|---:|---:|---:|",
    ]
    for model, result in results.items():
        for variant in VARIANTS:
            if variant.key in result["failed"]:
                lines.append(f"| {model} | {variant.label} | failed: "
                             f"{result['failed'][variant.key].replace('|', '/')} | | |")  # fmt: skip
                continue
            if variant.key not in result["tokens_per_second"]:
                continue
            tokens = statistics.median(result["tokens_per_second"][variant.key])
            flops = tokens * peers.model_flops_per_token(peers.CONFIGS[model], args.length) / 1e12
            mfu = f"{flops / peak:.0%}" if peak else "-"
            lines.append(f"| {model} | {variant.label} | {tokens / args.length:,.0f} "
                         f"| {flops:.1f} | {mfu} |")  # fmt: skip
    lines += [
        f"| large | NVIDIA's published BERT-large TF2, one A100, AMP (reference) "
        f"| {NVIDIA_BERT_LARGE} | {nvidia_mfu * A100_BF16_TFLOPS:.1f} | {nvidia_mfu:.0%} |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    (args.output / "gpu.md").write_text(text + "\n")
    (args.output / "gpu.json").write_text(json.dumps(
        {"device": name, "peak_tflops": peak, "length": args.length, "batch": args.batch,
         "results": results, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
        indent=1) + "\n")  # fmt: skip
    print(f"wrote {args.output / 'gpu.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
