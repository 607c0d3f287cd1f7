"""bench/bench_scaling.py's choice of variants and its report (nothing here times anything)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))  # as the script runs

import bench_peers
import bench_scaling


def test_chosen_variants_come_from_the_peers_run(tmp_path):
    assert [v.key for v in bench_scaling.chosen_variants(tmp_path, "float32")] == [
        "mlm:float32:eager",
        "hf-torch:float32:eager",
    ]  # no peers.json: the defaults
    comparisons = [
        {"config": "tiny", "precision": "float32", "mlm": "mlm:float32:eager",
         "peer": "hf-torch:float32:compiled"},
        {"config": "small", "precision": "float32", "mlm": "mlm:float32:eager",
         "peer": "keras-hub:float32:compiled"},
        {"config": "small", "precision": "bfloat16", "mlm": "mlm:bfloat16:eager",
         "peer": "hf-torch:bfloat16:compiled"},
    ]  # fmt: skip
    (tmp_path / "peers.json").write_text(json.dumps({"comparisons": comparisons}))
    ours, peer = bench_scaling.chosen_variants(tmp_path, "float32")
    assert (ours.key, peer.key) == ("mlm:float32:eager", "keras-hub:float32:compiled")
    ours, peer = bench_scaling.chosen_variants(tmp_path, "bfloat16")
    assert (ours.key, peer.key) == ("mlm:bfloat16:eager", "hf-torch:bfloat16:compiled")


def test_report_rows_ratio_and_failures():
    ours = bench_peers.VARIANTS_BY_KEY["mlm:float32:eager"]
    peer = bench_peers.VARIANTS_BY_KEY["keras-hub:float32:compiled"]
    rows = [
        ("tiny", 128, {"batch": 32, "failed": {},
                       ours.key: {"tokens_per_second": 4000.0, "peak_rss_mb": 1600.0},
                       peer.key: {"tokens_per_second": 2000.0, "peak_rss_mb": 2300.0}}),
        ("base", 512, {"batch": 8, "failed": {peer.key: "MemoryError: out of memory"},
                       ours.key: {"tokens_per_second": 300.0, "peak_rss_mb": 5000.0}}),
    ]  # fmt: skip
    args = argparse.Namespace(warmup=1, rounds=2, steps=1)
    text = bench_scaling.report(rows, (ours, peer), args)
    assert "| tiny | 128 | 32 | 4,000 | 1,600 | 2,000 | 2,300 | 2.00x |" in text
    assert "| base | 512 | 8 | 300 | 5,000 | failed: MemoryError: out of memory |  | - |" in text
