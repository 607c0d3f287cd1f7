"""The README's Quick Start script, run as written: a tiny BERT trained on a toy corpus."""

from __future__ import annotations

import keras
from core_helpers import SENTENCES

# Kept identical to the "Quick Start" block of the README.
QUICK_START = """
import keras
from mlm import BERT, MaskedLanguageModel, create_mlm_dataset
from mlm.data import train_wordpiece

tokenizer = train_wordpiece(open("corpus.txt").read().splitlines(), vocab_size=200, min_frequency=1)
dataset = create_mlm_dataset("corpus.txt", tokenizer, batch_size=8, max_length=32)
encoder = BERT.from_variant("tiny", vocab_size=tokenizer.vocab_size, hidden_size=64, num_layers=2,
                            num_heads=2, intermediate_size=128, max_position_embeddings=32)
mlm_model = MaskedLanguageModel(encoder, vocab_size=tokenizer.vocab_size,
                                mask_token_id=tokenizer.mask_token_id,
                                special_token_ids=tokenizer.all_special_ids)
mlm_model.compile(optimizer=keras.optimizers.AdamW(learning_rate=1e-3))
history = mlm_model.fit(dataset.repeat(), steps_per_epoch=10, epochs=3)
mlm_model.encoder.save("pretrained_encoder.keras")
"""


def test_quick_start_trains_and_the_loss_goes_down(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text("\n".join(SENTENCES * 8) + "\n")
    keras.utils.set_random_seed(0)
    namespace: dict = {}
    exec(compile(QUICK_START, "quick_start.py", "exec"), namespace)
    losses = namespace["history"].history["loss"]
    assert losses[-1] < losses[0] - 0.3, losses
    encoder = keras.models.load_model(tmp_path / "pretrained_encoder.keras")
    outputs = encoder({"input_ids": keras.ops.ones((1, 8), "int32")})
    assert tuple(outputs["last_hidden_state"].shape) == (1, 8, 64)
