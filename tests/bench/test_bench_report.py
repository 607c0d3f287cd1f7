"""The arithmetic, the like-for-like comparisons and the report of bench/bench_peers.py (the
benchmark itself is `make bench`; nothing here times anything)."""

from __future__ import annotations

import argparse
import math

import pytest

from bench import bench_peers

V = bench_peers.VARIANTS_BY_KEY
PEAK = {
    "float32": {"tensorflow": 200.0, "torch": 150.0},
    "bfloat16": {"tensorflow": 500.0, "torch": 1000.0},
}


def test_training_flops_per_token_by_hand():
    tiny = bench_peers.CONFIGS["tiny"]
    per_layer = 2 * (4 * 256 * 256 + 2 * 256 * 1024) + 4 * 128 * 256  # projections + attention
    head = 2 * (256 * 256 + 256 * 30522)  # transform + vocabulary projection
    assert bench_peers.training_flops_per_token(tiny, 1.0) == 3 * (4 * per_layer + head)
    assert bench_peers.training_flops_per_token(tiny, 0.15) == pytest.approx(
        3 * (4 * per_layer + 0.15 * head)
    )
    per_layer_512 = 2 * (4 * 256 * 256 + 2 * 256 * 1024) + 4 * 512 * 256
    assert bench_peers.model_flops_per_token(tiny, 512) == pytest.approx(
        3 * (4 * per_layer_512 + 0.15 * head)
    )


def test_variants_cover_each_peer_in_both_precisions_eager_and_compiled():
    keys = {v.key for v in bench_peers.DEFAULT_VARIANTS}
    for implementation in ("hf-torch", "keras-hub"):
        for precision in ("float32", "bfloat16"):
            for mode in ("eager", "compiled"):
                assert f"{implementation}:{precision}:{mode}" in keys
    assert {"mlm:float32:eager", "mlm:bfloat16:eager"} <= keys
    assert "mlm:float32:compiled" not in keys  # XLA on CPU: asked for by name only
    assert V["hf-torch:bfloat16:compiled"].label == "hf-torch bf16 autocast + torch.compile"
    assert V["keras-hub:bfloat16:compiled"].label == "keras-hub mixed_bfloat16, jit_compile"
    assert V["mlm:float32:compiled"].label == "mlm --precision float32 --jit-compile"


def test_logit_fraction_and_max_predictions():
    shape = bench_peers.Shape()
    assert shape.max_predictions() == 24  # keras-hub's 96 of 512, at 128
    assert bench_peers.Shape(512, 8).max_predictions() == 96
    assert V["hf-torch:float32:eager"].logit_fraction(shape) == 1.0
    assert V["keras-hub:float32:eager"].logit_fraction(shape) == 24 / 128
    assert V["mlm:float32:eager"].logit_fraction(shape) == bench_peers.MASK_RATE
    assert V["mlm:float32:compiled"].logit_fraction(shape) == 24 / 128


def _results(float32_ratio: float, failed: dict[str, str] | None = None) -> dict:
    keras_hub = [1000.0, 1100.0, 900.0]
    torch_compiled_bf16 = [2000.0, 2100.0, 1900.0]
    rates = {
        "mlm:float32:eager": [float32_ratio * value for value in keras_hub],
        "mlm:bfloat16:eager": [3000.0, 3150.0, 2850.0],  # 1.5x the best bfloat16 peer
        "hf-torch:float32:eager": [400.0, 420.0, 380.0],
        "hf-torch:bfloat16:compiled": torch_compiled_bf16,
        "keras-hub:float32:compiled": keras_hub,
        "keras-hub:bfloat16:compiled": [1500.0, 1600.0, 1400.0],
    }
    failed = failed or {}
    return {"tokens_per_second": {k: v for k, v in rates.items() if k not in failed},
            "failed": failed}  # fmt: skip


def _args() -> argparse.Namespace:
    keys = [
        "mlm:float32:eager", "mlm:bfloat16:eager", "hf-torch:float32:eager",
        "hf-torch:bfloat16:compiled", "keras-hub:float32:compiled", "keras-hub:bfloat16:compiled",
    ]  # fmt: skip
    return argparse.Namespace(rounds=3, steps=2, variant_keys=keys)


def test_comparisons_are_like_for_like():
    results = {"tiny": _results(1.6), "small": _results(1.2)}
    rows = {(r["config"], r["precision"]): r for r in bench_peers.comparisons(results, PEAK)}
    assert rows["tiny", "float32"]["peer"] == "keras-hub:float32:compiled"
    assert rows["tiny", "float32"]["ratio"] == pytest.approx(1.6)
    assert rows["small", "float32"]["ratio"] == pytest.approx(1.2)
    # The bfloat16 class: the best bfloat16 peer, never a float32 one, nor mlm itself.
    assert rows["tiny", "bfloat16"]["mlm"] == "mlm:bfloat16:eager"
    assert rows["tiny", "bfloat16"]["peer"] == "hf-torch:bfloat16:compiled"
    assert rows["tiny", "bfloat16"]["ratio"] == pytest.approx(1.5)
    model = 3000 * bench_peers.model_flops_per_token(bench_peers.CONFIGS["tiny"]) / 1e9
    assert rows["tiny", "bfloat16"]["matmul_fraction"] == pytest.approx(model / 1000.0)


def test_report_lists_every_variant_failures_and_verdicts():
    failed = {"keras-hub:bfloat16:compiled": "XlaRuntimeError: could not | compile"}
    results = {"tiny": _results(1.6, failed), "small": _results(1.2)}
    text = bench_peers.report(results, PEAK, _args())
    assert "| tiny | mlm --precision float32 | 1,600 | 1.60x |" in text
    assert "| small | hf-torch float32 eager | 400 | 0.40x |" in text  # vs keras-hub compiled
    assert "| tiny | keras-hub mixed_bfloat16, jit_compile | failed: XlaRuntimeError: could not / compile" in text  # fmt: skip
    assert (
        "| tiny | float32 | mlm --precision float32 | keras-hub float32, jit_compile | 1.60x "
        "| 1.5x | yes |"
    ) in text
    assert (
        "| small | float32 | mlm --precision float32 | keras-hub float32, jit_compile | 1.20x "
        "| 1.4x | **no** |"
    ) in text
    assert (
        "| small | bfloat16 | mlm --precision mixed_bfloat16 "
        "| hf-torch bf16 autocast + torch.compile | 1.50x | 1.4x | yes |"
    ) in text
    assert "| bfloat16 | 500 | 1000 | 1000 |" in text  # the limit is the faster framework's
    model = 1600 * bench_peers.model_flops_per_token(bench_peers.CONFIGS["tiny"]) / 1e9
    assert f"| {model:.0f} ({model / 200:.0%}) |" in text
    assert "bfloat16 instructions:" in text


def test_plot_writes_a_png(tmp_path):
    path = tmp_path / "peers.png"
    results = {"tiny": _results(1.6, {"keras-hub:bfloat16:compiled": "failed"}),
               "small": _results(1.2)}  # fmt: skip
    bench_peers.plot(results, _args(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_worker_that_fails_reports_its_reason(tmp_path):
    """A real worker process that fails at start-up (an unknown config) is reported, not fatal."""
    variant = V["hf-torch:float32:eager"]
    worker = bench_peers.Worker(variant, "no-such-config", bench_peers.Shape(), tmp_path)
    assert worker.wait_ready() is False
    assert "KeyError" in worker.failure and "no-such-config" in worker.failure
    assert worker.ask("1") is None
    worker.close()


def test_matmul_rates_only_for_the_precisions_asked_and_emulated_bf16_is_time_boxed(monkeypatch):
    # A real emulated bfloat16 matmul can take minutes, so the subprocess is stood in for here:
    # what is asked of it (which precisions, which sizes, which time limit) is what is checked.
    import subprocess

    calls = []

    def run(argv, timeout=None, **kwargs):
        calls.append((argv[-1], timeout))
        if "'torch', 'bfloat16'" in argv[-1]:
            raise subprocess.TimeoutExpired(argv, timeout)
        return subprocess.CompletedProcess(argv, 0, stdout="123.0\n", stderr="")

    monkeypatch.setattr(bench_peers.subprocess, "run", run)
    monkeypatch.setattr(bench_peers, "bf16_instructions", lambda: [])  # an AVX2-only CPU
    assert bench_peers.measure_matmul(["float32"]) == {
        "float32": {"tensorflow": 123.0, "torch": 123.0}
    }
    assert all("bfloat16" not in code for code, _ in calls)
    calls.clear()
    peak = bench_peers.measure_matmul(["bfloat16"])
    assert peak["bfloat16"]["tensorflow"] == 123.0 and math.isnan(peak["bfloat16"]["torch"])
    assert all("sizes=(512, 1024)" in code for code, _ in calls)
    assert all(timeout == bench_peers.MATMUL_TIMEOUT_S for _, timeout in calls)
    assert bench_peers.matmul_limit(peak["bfloat16"]) == 123.0
    assert math.isnan(bench_peers.matmul_limit({"torch": math.nan}))
