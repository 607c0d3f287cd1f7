"""bench/bench_allreduce.py: two real local MultiWorkerMirroredStrategy workers all-reduce
gradient-shaped tensors once per pack size, and the report says what was reduced and how long
it took."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_allreduce.py"


def test_two_workers_time_the_gradient_all_reduce_per_pack_size(tmp_path):
    from mlm.encoders.bert import BERT
    from mlm.model import MaskedLanguageModel

    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--vocab-size", "500", "--pack-mb", "0", "1",
         "--repeats", "3", "--output", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    # What the workers reduced is the model `mlm pretrain` builds: every trainable variable.
    model = MaskedLanguageModel(
        encoder=BERT.from_variant("tiny", vocab_size=500), vocab_size=500, mask_token_id=4,
        special_token_ids=(0, 1, 2, 3, 4), tie_word_embeddings=True,
    )  # fmt: skip
    model.build(None)
    megabytes = sum(v.numpy().nbytes for v in model.trainable_variables) / 2**20
    timings = json.loads((tmp_path / "allreduce.json").read_text())
    assert set(timings) == {"0.0", "1.0"}
    for timing in timings.values():
        assert timing["tensors"] == len(model.trainable_variables)
        assert timing["megabytes"] == pytest.approx(megabytes)
        assert timing["ms"] > 0
    report = (tmp_path / "allreduce.md").read_text()
    assert "| 0 (TensorFlow's default) |" in report and "| 1 MB |" in report
