"""Where the time of mlm's training step goes: TensorFlow profiler time by op type.

Runs `bench_peers.py`'s mlm worker (the `mlm pretrain` step on its own input pipeline, BERT tiny
and small, sequence 128, batch 32) for a few steps under `tf.profiler`, after an untimed warm-up,
and sums the kernel time of each op type (`_MklMatMul`, `ResourceApplyAdam`, ...) and each group
(matmuls, the elementwise tail, cross-entropy, optimizer, ...). Kernels of one step run partly in
parallel (inter-op), so the summed kernel time can exceed the step's wall time; the shares are of
the summed kernel time.

Usage: python bench/bench_profile.py [--configs tiny,small] [--steps 3] [--precision float32]
       [--output bench/results]
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

import bench_peers as peers

# Op types by group; the rest counts as "other".
GROUPS = {
    "matmuls": ("MatMul", "BatchMatMul", "FusedMatMul", "Einsum"),
    "cross-entropy and accuracy": ("SparseSoftmaxCrossEntropyWithLogits", "ArgMax", "Softmax"),
    "optimizer (fused AdamW)": ("ResourceApplyAdam", "AssignSubVariableOp", "AssignVariableOp"),
    "layout (transpose, reshape, gather, scatter)": (
        "Transpose", "Reshape", "Gather", "Scatter", "ConcatV2", "Slice", "Pack", "Unpack",
        "UnsortedSegmentSum", "Where", "Tile",
    ),
    "random (masking, dropout)": ("Random", "Stateless"),
}  # fmt: skip
ELEMENTWISE = "elementwise and reductions (norm, GELU, dropout, residual, bias)"


def group_of(op_type: str) -> str:
    for group, markers in GROUPS.items():
        if any(marker in op_type for marker in markers):
            return group
    return ELEMENTWISE if op_type else "other"


def profile(
    config: str, steps: int, workdir: Path, precision: str = "float32"
) -> tuple[dict[str, float], float]:
    """Kernel milliseconds per step by op type, and the step's wall milliseconds."""
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    variant = peers.Variant("mlm", precision, False)
    worker = peers.MlmWorker(peers.CONFIGS[config], peers.Shape(), variant, workdir)
    worker.run(peers.WARMUP_STEPS)
    with tempfile.TemporaryDirectory(prefix="mlm-profile-") as logdir:
        tf.profiler.experimental.start(logdir)
        wall = worker.run(steps)
        tf.profiler.experimental.stop()
        (path,) = Path(logdir).glob("plugins/profile/*/*.xplane.pb")
        space = xplane_pb2.XSpace.FromString(path.read_bytes())
    per_type: dict[str, float] = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if line.name == "python":  # the host's own trace events, not kernels
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" in name and "::" not in name:  # kernels: "op_name:OpType"
                    per_type[name.rsplit(":", 1)[1]] += event.duration_ps / 1e9 / steps
    return dict(per_type), 1000 * wall / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="tiny,small")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument(
        "--precision", choices=peers.PRECISIONS, default="float32",
        help="bfloat16: the step `mlm pretrain --precision mixed_bfloat16` runs",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    args.output = args.output.resolve()
    args.output.mkdir(parents=True, exist_ok=True)
    configs = [c for c in args.configs.split(",") if c]
    unknown = sorted(set(configs) - set(peers.CONFIGS))
    if unknown:
        parser.error(f"--configs: unknown {unknown}; use any of {sorted(peers.CONFIGS)}")
    started = time.perf_counter()
    peers.run_prepare(args.output, [peers.LENGTH])
    lines = [
        f"# Profile of mlm's {args.precision} training step",
        "",
        f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`; {peers.machine_line()}",
        f"`tf.profiler` over {args.steps} steps after {peers.WARMUP_STEPS} warm-up steps; kernel "
        "milliseconds per step (kernels run partly in parallel, so they can add up to more than "
        "the step's wall time).",
        "",
    ]
    for config in configs:
        per_type, wall = profile(config, args.steps, args.output, args.precision)
        total = sum(per_type.values())
        groups: dict[str, float] = collections.Counter()
        for op_type, ms in per_type.items():
            groups[group_of(op_type)] += ms
        lines += [
            f"BERT {config}: step {wall:,.0f} ms wall, {total:,.0f} ms of kernels.",
            "",
            "| group | ms per step | share |",
            "|---|---:|---:|",
            *(f"| {g} | {ms:,.1f} | {ms / total:.0%} |" for g, ms in
              sorted(groups.items(), key=lambda kv: -kv[1])),
            "",
            "| op type (top 12) | ms per step | share |",
            "|---|---:|---:|",
            *(f"| `{t}` | {ms:,.1f} | {ms / total:.0%} |" for t, ms in
              sorted(per_type.items(), key=lambda kv: -kv[1])[:12]),
            "",
        ]  # fmt: skip
        print(f"  profiled {config}", flush=True)
    text = "\n".join(lines)
    print(text)
    report = args.output / ("profile.md" if args.precision == "float32" else "profile_bfloat16.md")
    report.write_text(text + "\n")
    print(f"wrote {report} ({(time.perf_counter() - started) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
