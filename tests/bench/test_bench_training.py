"""The report arithmetic of bench/bench_training.py's `--xla-flags` mode (the benchmark itself
runs on request; nothing here times anything)."""

from __future__ import annotations

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
            {"gather, static": 1.0, "gather+xla": 1.2},
            {"gather, static": 2.0, "gather+xla": 2.2},
            {"gather, static": 0.9, "gather+xla": 1.0},
        ],
        ("mixed_bfloat16", "XLA's own code (no flags)"): [
            {"gather, static": 0.6, "gather+xla": 0.9},
        ],
    }
    header, rule, onednn, own = bench_training.xla_flags_table(runs)
    assert header.startswith("| XLA_FLAGS | precision | graph ms | XLA ms |")
    assert rule.count("|") == header.count("|")
    assert onednn == "| oneDNN (`--xla_cpu_use_onednn=true`) | float32 | 1,000 | 1,200 | 1.11 |"
    assert own == "| XLA's own code (no flags) | mixed_bfloat16 | 600 | 900 | 1.50 |"


def test_xla_flag_settings_are_single_xla_cpu_flags():
    flags = bench_training.XLA_LIBRARY_FLAGS
    assert flags["XLA's own code (no flags)"] == ""  # the reference every other row is read against
    for name, value in flags.items():
        if value:
            assert value.startswith("--xla_cpu_") and " " not in value, name
    assert len(set(flags.values())) == len(flags)
