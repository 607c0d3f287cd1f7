"""The README's Quick Start script, run as written: a tiny BERT trained on a toy corpus."""

from __future__ import annotations

import re
from pathlib import Path

import keras
from core_helpers import SENTENCES

README = Path(__file__).resolve().parents[2] / "README.md"


def quick_start_script() -> str:
    """The first python block after the README's "### Quick Start" heading."""
    text = README.read_text()
    section = text[text.index("### Quick Start") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README.md has no python block under ### Quick Start"
    return match.group(1)


def test_quick_start_trains_and_the_loss_goes_down(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text("\n".join(SENTENCES * 8) + "\n")
    keras.utils.set_random_seed(0)
    namespace: dict = {}
    exec(compile(quick_start_script(), "quick_start.py", "exec"), namespace)
    losses = namespace["history"].history["loss"]
    assert losses[-1] < losses[0] - 0.3, losses
    encoder = keras.models.load_model(tmp_path / "pretrained_encoder.keras")
    outputs = encoder({"input_ids": keras.ops.ones((1, 8), "int32")})
    assert tuple(outputs["last_hidden_state"].shape) == (1, 8, 64)
