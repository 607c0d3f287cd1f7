"""The arithmetic and the report of bench/bench_peers.py (the benchmark itself is `make bench`;
nothing here times anything)."""

from __future__ import annotations

import argparse

import pytest

from bench import bench_peers


def test_training_flops_per_token_by_hand():
    tiny = bench_peers.CONFIGS["tiny"]
    per_layer = 2 * (4 * 256 * 256 + 2 * 256 * 1024) + 4 * 128 * 256  # projections + attention
    head = 2 * (256 * 256 + 256 * 30522)  # transform + vocabulary projection
    assert bench_peers.training_flops_per_token(tiny, 1.0) == 3 * (4 * per_layer + head)
    assert bench_peers.training_flops_per_token(tiny, 0.15) == pytest.approx(
        3 * (4 * per_layer + 0.15 * head)
    )


def _results(mlm_over_keras_hub: float) -> dict[str, list[float]]:
    keras_hub = [1000.0, 1100.0, 900.0]
    return {
        "mlm": [mlm_over_keras_hub * value for value in keras_hub],
        "hf-torch": [400.0, 420.0, 380.0],
        "keras-hub": keras_hub,
        "mlm-bf16": [3000.0, 3100.0, 2900.0],
    }


def test_report_ratios_verdicts_and_headroom():
    args = argparse.Namespace(rounds=3, steps=2)
    results = {"tiny": _results(1.6), "small": _results(1.2)}
    text = bench_peers.report(results, {"tensorflow": 200.0, "torch": 150.0}, {"tiny": 50.0}, args)
    assert "| tiny | mlm | 1,600 | 1.60x |" in text
    assert "| small | hf-torch | 400 | 0.40x |" in text  # against the faster peer, keras-hub
    assert "- tiny: mlm 1.600x keras-hub; target 1.5x: met." in text
    assert "- small: mlm 1.200x keras-hub; target 1.4x: NOT met." in text
    steps_per_second = 1600 / (bench_peers.BATCH * bench_peers.LENGTH)
    assert f"- tiny: 50 batches/s vs {steps_per_second:.2f} steps/s" in text
    assert "the limit used below is 200 GFLOP/s" in text
    model = 1600 * bench_peers.training_flops_per_token(bench_peers.CONFIGS["tiny"], 0.15) / 1e9
    assert f"| {model:.0f} ({model / 200:.0%}) |" in text


def test_plot_writes_a_png(tmp_path):
    path = tmp_path / "peers.png"
    bench_peers.plot({"tiny": _results(1.6), "small": _results(1.2)}, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
