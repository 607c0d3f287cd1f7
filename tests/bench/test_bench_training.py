"""The report arithmetic of bench/bench_training.py's `--xla-flags` mode (the benchmark itself
runs on request; nothing here times anything)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))  # as the script runs
import bench_training


def test_xla_flags_table_takes_the_median_of_each_process_own_ratio():
    # Each process times both steps, so its own ratio is free of drift between processes:
    # the per-process ratios are 1.2, 1.1 and 1.11, median 1.11 (the ratio of the medians,
    # 1.2 / 1.0, would mix processes).
    runs = {
        ("float32", "oneDNN"): [
            {"gather, static": 1.0, "gather+xla": 1.2, "dot": "f32"},
            {"gather, static": 2.0, "gather+xla": 2.2, "dot": "f32"},
            {"gather, static": 0.9, "gather+xla": 1.0, "dot": "f32"},
        ],
        ("mixed_bfloat16", "XLA's own code (no flags)"): [
            {"gather, static": 0.6, "gather+xla": 0.9, "dot": "f32"},
        ],
    }
    header, rule, onednn, own = bench_training.xla_flags_table(runs)
    assert header.startswith("| XLA_FLAGS | precision | graph ms | XLA ms |")
    assert rule.count("|") == header.count("|")
    assert header.endswith("| XLA's dot type |")
    assert onednn == (
        "| oneDNN (`--xla_cpu_use_onednn=true`) | float32 | 1,000 | 1,200 | 1.11 | f32 |"
    )
    assert own == "| XLA's own code (no flags) | mixed_bfloat16 | 600 | 900 | 1.50 | f32 |"


def test_xla_flag_settings_are_single_xla_cpu_flags():
    flags = bench_training.XLA_LIBRARY_FLAGS
    assert flags["XLA's own code (no flags)"] == ""  # the reference every other row is read against
    for name, value in flags.items():
        if value:
            assert value.startswith("--xla_cpu_") and " " not in value, name
    assert len(set(flags.values())) == len(flags)


def test_dot_types_reads_each_dot_of_optimized_hlo():
    hlo = """
  %convert.1 = f32[64,32]{1,0} convert(%p0)
  %dot.2 = f32[64,16]{1,0} dot(%convert.1, %convert.3), lhs_contracting_dims={1}
  %dot.4 = bf16[8,16]{1,0:T(8,128)(2,1)} dot(%a, %b), lhs_contracting_dims={1}
  ROOT %fusion = bf16[64,16]{1,0} fusion(%dot.2), kind=kLoop
"""
    assert bench_training.dot_types(hlo) == ["f32", "bf16"]


def test_xla_on_cpu_computes_bfloat16_dots_in_float32():
    # Why mlm's XLA step loses to the graph step in bfloat16 on CPU (docs/performance.md, "Why
    # XLA's bfloat16 step is slower"): the XLA in TensorFlow's wheel converts bfloat16 dot
    # operands to float32 for its own dot loops, so its matmuls run at the float32 rate while
    # the graph step's run oneDNN's bfloat16 kernels. If a TensorFlow release keeps the dot in
    # bfloat16, this fails: measure XLA again before keeping the graph step as the CPU default.
    # Without XLA_FLAGS XLA calls no dot library, so the answer does not depend on the CPU kind.
    assert bench_training.xla_dot_type("mixed_bfloat16") == "f32"
    assert bench_training.xla_dot_type("float32") == "f32"


def test_tail_bound_table_reads_each_variant_against_the_first_round_by_round():
    # Round by round the free tail takes 0.8, 0.9 and 0.85 of the step: median 0.85, bound
    # 1/0.85 = 1.18x (the medians' ratio, 0.9 / 1.0, would mix rounds of different speed).
    times = {
        "the step (gather)": [1.0, 0.8, 1.2],
        "all three": [0.8, 0.72, 1.02],
    }
    header, rule, step, free = bench_training.tail_bound_table(times)
    assert header.count("|") == rule.count("|") == 5
    assert step == "| the step (gather) | 1,000 | 1.000 | 1.00x |"
    assert free == "| all three | 800 | 0.850 | 1.18x |"


def test_tail_variants_start_with_the_step_and_end_with_every_part_free():
    variants = list(bench_training.TAIL_VARIANTS.values())
    assert variants[0] == ()
    assert set(variants[-1]) == set().union(*variants) == {"dropout", "LayerNorm", "GELU"}


def test_precision_without_the_bisection_is_refused():
    script = Path(bench_training.__file__)
    run = subprocess.run(
        [sys.executable, str(script), "--precision", "mixed_bfloat16"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2
    assert "--precision applies to --xla-bisection only" in run.stderr
