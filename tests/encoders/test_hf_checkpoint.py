"""Tests of the Hugging Face BERT checkpoint import.

Checkpoints are written here with numpy + safetensors in the exact layout `transformers` uses, and
checked two ways: every tensor lands in the right Keras variable, and the loaded encoder computes
what BERT computes (a float64 numpy re-implementation of `BertModel`'s forward pass below). When
PyTorch is installed, a further test compares against `transformers.BertModel` itself.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from safetensors.numpy import save_file

from mlm.encoders.bert import BERT
from mlm.encoders.hf_checkpoint import encoder_config_from_hf, load_hf_bert_checkpoint
from mlm.errors import UserInputError

CONFIG = {
    "architectures": ["BertForMaskedLM"],
    "model_type": "bert",
    "vocab_size": 90,
    "hidden_size": 24,
    "num_hidden_layers": 2,
    "num_attention_heads": 3,
    "intermediate_size": 40,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1,
    "max_position_embeddings": 20,
    "type_vocab_size": 2,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-12,
    "tie_word_embeddings": True,
}
# The MaskedLanguageModel default (103, bert-base-uncased's [MASK]) is outside this vocabulary.
MLM = {"mask_token_id": 4}


def hf_tensors(
    config: dict, *, prefix: str = "bert.", pooler: bool = False, mlm_head: bool = True, seed=0
) -> dict[str, np.ndarray]:
    """Random float32 tensors named and shaped as a transformers BERT state dict."""
    rng = np.random.default_rng(seed)
    hidden, inner = config["hidden_size"], config["intermediate_size"]
    tensors: dict[str, np.ndarray] = {}

    def add(name: str, *shape: int, around: float = 0.0) -> None:
        tensors[name] = (around + 0.2 * rng.standard_normal(shape)).astype("float32")

    def linear(name: str, out_features: int, in_features: int) -> None:
        add(f"{name}.weight", out_features, in_features)
        add(f"{name}.bias", out_features)

    def layer_norm(name: str) -> None:
        add(f"{name}.weight", hidden, around=1.0)
        add(f"{name}.bias", hidden)

    add(f"{prefix}embeddings.word_embeddings.weight", config["vocab_size"], hidden)
    add(f"{prefix}embeddings.position_embeddings.weight", config["max_position_embeddings"], hidden)
    add(f"{prefix}embeddings.token_type_embeddings.weight", config["type_vocab_size"], hidden)
    layer_norm(f"{prefix}embeddings.LayerNorm")
    for i in range(config["num_hidden_layers"]):
        layer = f"{prefix}encoder.layer.{i}"
        for part in ("query", "key", "value"):
            linear(f"{layer}.attention.self.{part}", hidden, hidden)
        linear(f"{layer}.attention.output.dense", hidden, hidden)
        layer_norm(f"{layer}.attention.output.LayerNorm")
        linear(f"{layer}.intermediate.dense", inner, hidden)
        linear(f"{layer}.output.dense", hidden, inner)
        layer_norm(f"{layer}.output.LayerNorm")
    if pooler:
        linear(f"{prefix}pooler.dense", hidden, hidden)
    if mlm_head:
        linear("cls.predictions.transform.dense", hidden, hidden)
        layer_norm("cls.predictions.transform.LayerNorm")
        add("cls.predictions.bias", config["vocab_size"])
        if not config.get("tie_word_embeddings", True):
            add("cls.predictions.decoder.weight", config["vocab_size"], hidden)
    return tensors


def write_checkpoint(directory: Path, config: dict, tensors: dict[str, np.ndarray]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(directory / "model.safetensors"))
    return directory


# --- a float64 numpy BertModel (transformers' modeling_bert forward, eval mode) ----------------

_erf = np.vectorize(math.erf)


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _linear(tensors, x, name):
    return x @ tensors[f"{name}.weight"].astype("float64").T + tensors[f"{name}.bias"]


def _layer_norm(tensors, x, name, eps):
    normalized = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
    return normalized * tensors[f"{name}.weight"] + tensors[f"{name}.bias"]


def reference_bert(tensors, config, input_ids, attention_mask, token_type_ids, prefix="bert."):
    """BertModel's last_hidden_state [batch, length, hidden] (float64)."""
    eps = config["layer_norm_eps"]
    batch, length = input_ids.shape
    heads = config["num_attention_heads"]
    head_dim = config["hidden_size"] // heads
    embeddings = f"{prefix}embeddings"
    x = (
        tensors[f"{embeddings}.word_embeddings.weight"].astype("float64")[input_ids]
        + tensors[f"{embeddings}.position_embeddings.weight"][np.arange(length)][None]
        + tensors[f"{embeddings}.token_type_embeddings.weight"][token_type_ids]
    )
    x = _layer_norm(tensors, x, f"{embeddings}.LayerNorm", eps)
    bias = (1.0 - attention_mask[:, None, None, :]) * -1e9

    def split_heads(h):
        return h.reshape(batch, length, heads, head_dim).transpose(0, 2, 1, 3)

    for i in range(config["num_hidden_layers"]):
        layer = f"{prefix}encoder.layer.{i}"
        q, k, v = (
            split_heads(_linear(tensors, x, f"{layer}.attention.self.{part}"))
            for part in ("query", "key", "value")
        )
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(head_dim) + bias
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        context = (probs @ v).transpose(0, 2, 1, 3).reshape(batch, length, -1)
        attended = _linear(tensors, context, f"{layer}.attention.output.dense")
        x = _layer_norm(tensors, x + attended, f"{layer}.attention.output.LayerNorm", eps)
        inner = _gelu(_linear(tensors, x, f"{layer}.intermediate.dense"))
        x = _layer_norm(
            tensors,
            x + _linear(tensors, inner, f"{layer}.output.dense"),
            f"{layer}.output.LayerNorm",
            eps,
        )
    return x


def reference_mlm_logits(tensors, config, hidden):
    """BertForMaskedLM's logits [batch, length, vocab] from the encoder's hidden states."""
    h = _gelu(_linear(tensors, hidden, "cls.predictions.transform.dense"))
    h = _layer_norm(tensors, h, "cls.predictions.transform.LayerNorm", config["layer_norm_eps"])
    decoder = tensors.get("cls.predictions.decoder.weight")
    if decoder is None:
        decoder = tensors["bert.embeddings.word_embeddings.weight"]
    return h @ decoder.astype("float64").T + tensors["cls.predictions.bias"]


def _inputs(config, batch=2, length=12, seed=1):
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, length), "int32")
    mask[1, 7:] = 0
    types = np.zeros((batch, length), "int32")
    types[:, 5:] = 1
    ids = rng.integers(0, config["vocab_size"], (batch, length)).astype("int32")
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


# --- tests --------------------------------------------------------------------------------------


def test_every_encoder_weight_lands(tmp_path):
    tensors = hf_tensors(CONFIG, prefix="", pooler=True, mlm_head=False)
    directory = write_checkpoint(tmp_path / "bert", CONFIG, tensors)
    encoder = load_hf_bert_checkpoint(directory, with_mlm_head=False)

    assert isinstance(encoder, BERT)
    assert (encoder.num_layers, encoder.hidden_size, encoder.num_heads) == (2, 24, 3)
    assert (encoder.intermediate_size, encoder.max_position_embeddings) == (40, 20)
    assert encoder.pooler is not None

    def check(name, variable, transform=lambda a: a):
        np.testing.assert_array_equal(variable.numpy(), transform(tensors[name]), err_msg=name)

    check("embeddings.word_embeddings.weight", encoder.token_embedding.embeddings)
    check("embeddings.position_embeddings.weight", encoder.position_embedding.embeddings)
    check("embeddings.token_type_embeddings.weight", encoder.segment_embedding.embeddings)
    check("embeddings.LayerNorm.weight", encoder.embeddings_norm.gamma)
    check("embeddings.LayerNorm.bias", encoder.embeddings_norm.beta)
    for i, block in enumerate(encoder.transformer_layers):
        layer = f"encoder.layer.{i}"
        attention = block.attention
        for part, dense in (
            ("query", attention.query_dense),
            ("key", attention.key_dense),
            ("value", attention.value_dense),
        ):
            # Keras splits heads: kernel [hidden, heads, head_dim], bias [heads, head_dim].
            check(
                f"{layer}.attention.self.{part}.weight",
                dense.kernel,
                lambda a: a.T.reshape(24, 3, 8),
            )
            check(f"{layer}.attention.self.{part}.bias", dense.bias, lambda a: a.reshape(3, 8))
        check(
            f"{layer}.attention.output.dense.weight",
            attention.output_dense.kernel,
            lambda a: a.T.reshape(3, 8, 24),
        )
        check(f"{layer}.attention.output.dense.bias", attention.output_dense.bias)
        check(f"{layer}.attention.output.LayerNorm.weight", block.attention_norm.gamma)
        check(f"{layer}.attention.output.LayerNorm.bias", block.attention_norm.beta)
        check(f"{layer}.intermediate.dense.weight", block.intermediate_dense.kernel, np.transpose)
        check(f"{layer}.intermediate.dense.bias", block.intermediate_dense.bias)
        check(f"{layer}.output.dense.weight", block.output_dense.kernel, np.transpose)
        check(f"{layer}.output.dense.bias", block.output_dense.bias)
        check(f"{layer}.output.LayerNorm.weight", block.output_norm.gamma)
        check(f"{layer}.output.LayerNorm.bias", block.output_norm.beta)
    check("pooler.dense.weight", encoder.pooler.kernel, np.transpose)
    check("pooler.dense.bias", encoder.pooler.bias)
    # Every variable of the model was covered above.
    assert len(encoder.weights) == 5 + 2 * 16 + 2


def test_loaded_encoder_computes_bert(tmp_path):
    tensors = hf_tensors(CONFIG, pooler=True)
    directory = write_checkpoint(tmp_path / "bert", CONFIG, tensors)
    encoder = load_hf_bert_checkpoint(directory, with_mlm_head=False)
    inputs = _inputs(CONFIG)
    expected = reference_bert(tensors, CONFIG, **inputs)
    outputs = encoder(inputs)
    valid = inputs["attention_mask"].astype(bool)
    np.testing.assert_allclose(
        outputs["last_hidden_state"].numpy()[valid], expected[valid], atol=1e-4
    )
    pooled = np.tanh(
        expected[:, 0] @ tensors["bert.pooler.dense.weight"].T + tensors["bert.pooler.dense.bias"]
    )
    np.testing.assert_allclose(outputs["pooler_output"], pooled, atol=1e-4)


def test_mlm_head_import_tied(tmp_path):
    tensors = hf_tensors(CONFIG)
    directory = write_checkpoint(tmp_path / "bert", CONFIG, tensors)
    model = load_hf_bert_checkpoint(directory, mask_ratio=0.2, **MLM)

    from mlm.model import MaskedLanguageModel

    assert isinstance(model, MaskedLanguageModel)
    assert isinstance(model.encoder, BERT) and model.encoder.pooler is None
    assert model.tie_word_embeddings and model.mlm_output.kernel is None
    assert model.mask_ratio == pytest.approx(0.2)
    np.testing.assert_array_equal(
        model.mlm_dense.kernel.numpy(), tensors["cls.predictions.transform.dense.weight"].T
    )
    np.testing.assert_array_equal(
        model.mlm_dense.bias.numpy(), tensors["cls.predictions.transform.dense.bias"]
    )
    np.testing.assert_array_equal(
        model.mlm_norm.gamma.numpy(), tensors["cls.predictions.transform.LayerNorm.weight"]
    )
    np.testing.assert_array_equal(
        model.mlm_norm.beta.numpy(), tensors["cls.predictions.transform.LayerNorm.bias"]
    )
    np.testing.assert_array_equal(model.mlm_output.bias.numpy(), tensors["cls.predictions.bias"])

    inputs = _inputs(CONFIG)
    hidden = reference_bert(tensors, CONFIG, **inputs)
    expected = reference_mlm_logits(tensors, CONFIG, hidden)
    logits = model(inputs).numpy()
    valid = inputs["attention_mask"].astype(bool)
    np.testing.assert_allclose(logits[valid], expected[valid], atol=1e-3, rtol=1e-4)


def test_mlm_head_import_untied_and_forced_untied(tmp_path):
    config = {**CONFIG, "tie_word_embeddings": False}
    tensors = hf_tensors(config)
    directory = write_checkpoint(tmp_path / "untied", config, tensors)
    model = load_hf_bert_checkpoint(directory, **MLM)
    assert not model.tie_word_embeddings
    np.testing.assert_array_equal(
        model.mlm_output.kernel.numpy(), tensors["cls.predictions.decoder.weight"].T
    )
    # A tied checkpoint loaded untied starts its output kernel from the word embeddings.
    tied_tensors = hf_tensors(CONFIG, seed=5)
    tied_dir = write_checkpoint(tmp_path / "tied", CONFIG, tied_tensors)
    model = load_hf_bert_checkpoint(tied_dir, tie_word_embeddings=False, **MLM)
    np.testing.assert_array_equal(
        model.mlm_output.kernel.numpy(), tied_tensors["bert.embeddings.word_embeddings.weight"].T
    )
    # Forcing a tie on a checkpoint whose decoder differs from the embeddings is refused.
    with pytest.raises(UserInputError, match="pass tie_word_embeddings=False"):
        load_hf_bert_checkpoint(directory, tie_word_embeddings=True, **MLM)


def test_special_tokens_come_from_vocab_txt(tmp_path):
    directory = write_checkpoint(tmp_path / "bert", CONFIG, hf_tensors(CONFIG))
    vocab = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += [f"w{i}" for i in range(CONFIG["vocab_size"] - len(vocab))]
    (directory / "vocab.txt").write_text("\n".join(vocab) + "\n")
    model = load_hf_bert_checkpoint(directory)
    assert model.mask_token_id == 5
    assert tuple(model.special_token_ids) == (0, 2, 3, 4, 5)
    explicit = load_hf_bert_checkpoint(directory, mask_token_id=7, special_token_ids=[0])
    assert (explicit.mask_token_id, tuple(explicit.special_token_ids)) == (7, (0,))


def test_tensorflow_era_names_and_sharded_files_load(tmp_path, caplog):
    tensors = hf_tensors(CONFIG, prefix="", mlm_head=False)
    renamed = {
        name.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta"
        ): value
        for name, value in tensors.items()
    }
    renamed["embeddings.position_ids"] = np.arange(20, dtype="int64")[None]
    renamed["cls.seq_relationship.weight"] = np.zeros((2, 24), "float32")
    renamed["extra.tensor"] = np.zeros((3,), "float32")
    directory = tmp_path / "sharded"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(CONFIG))
    names = sorted(renamed)
    shards = {
        "model-00001-of-00002.safetensors": names[::2],
        "model-00002-of-00002.safetensors": names[1::2],
    }
    for file_name, keys in shards.items():
        save_file({k: renamed[k] for k in keys}, str(directory / file_name))
    weight_map = {k: f for f, keys in shards.items() for k in keys}
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))

    with caplog.at_level(logging.WARNING, logger="mlm.encoders.hf_checkpoint"):
        encoder = load_hf_bert_checkpoint(directory, with_mlm_head=False)
    np.testing.assert_array_equal(
        encoder.transformer_layers[1].output_norm.gamma.numpy(),
        tensors["encoder.layer.1.output.LayerNorm.weight"],
    )
    # Unknown tensors are reported; known buffers and the next-sentence head are not.
    assert "1 tensors not used: extra.tensor" in caplog.text


def test_missing_files_and_tensors_are_user_errors(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        load_hf_bert_checkpoint(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserInputError, match=r"config.json does not exist"):
        load_hf_bert_checkpoint(empty)
    (empty / "config.json").write_text(json.dumps(CONFIG))
    (empty / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(
        UserInputError, match=r"model.safetensors does not exist.*safe_serialization"
    ):
        load_hf_bert_checkpoint(empty)
    (empty / "config.json").write_text("{not json")
    with pytest.raises(UserInputError, match="is not valid JSON"):
        load_hf_bert_checkpoint(empty)

    tensors = hf_tensors(CONFIG)
    del tensors["bert.encoder.layer.1.attention.self.key.bias"]
    directory = write_checkpoint(tmp_path / "partial", CONFIG, tensors)
    with pytest.raises(
        UserInputError, match=r"no tensor 'bert.encoder.layer.1.attention.self.key.bias'"
    ):
        load_hf_bert_checkpoint(directory)
    head_less = write_checkpoint(tmp_path / "headless", CONFIG, hf_tensors(CONFIG, mlm_head=False))
    with pytest.raises(UserInputError, match=r"cls\.predictions\.transform\.dense\.weight"):
        load_hf_bert_checkpoint(head_less, **MLM)
    assert isinstance(load_hf_bert_checkpoint(head_less, with_mlm_head=False), BERT)

    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "config.json").write_text(json.dumps(CONFIG))
    (tmp_path / "garbage" / "model.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(UserInputError, match="could not be read as float safetensors"):
        load_hf_bert_checkpoint(tmp_path / "garbage")


def test_shape_mismatch_names_tensor_and_shapes(tmp_path):
    tensors = hf_tensors(CONFIG)
    bigger = {**CONFIG, "intermediate_size": 48}
    directory = write_checkpoint(tmp_path / "bert", bigger, tensors)
    with pytest.raises(UserInputError) as error:
        load_hf_bert_checkpoint(directory)
    message = str(error.value)
    assert "'bert.encoder.layer.0.intermediate.dense.weight'" in message
    assert "has shape (40, 24)" in message and "expects (48, 24)" in message


def test_config_translation_and_rejections():
    kwargs = encoder_config_from_hf(CONFIG)
    assert kwargs["num_layers"] == 2 and kwargs["num_heads"] == 3 and kwargs["hidden_act"] == "gelu"
    # Missing fields take BertConfig's defaults (bert-base-uncased).
    defaults = encoder_config_from_hf({})
    assert (defaults["vocab_size"], defaults["num_layers"], defaults["hidden_size"]) == (
        30522,
        12,
        768,
    )
    with pytest.raises(UserInputError, match="model_type='roberta'"):
        encoder_config_from_hf({"model_type": "roberta"})
    with pytest.raises(UserInputError, match="position_embedding_type='relative_key'"):
        encoder_config_from_hf({"position_embedding_type": "relative_key"})
    with pytest.raises(UserInputError, match="hidden_act='quick_gelu'"):
        encoder_config_from_hf({"hidden_act": "quick_gelu"})


def test_load_from_gcs(gcs_emulator, tmp_path):
    from mlm import storage

    tensors = hf_tensors(CONFIG)
    local = write_checkpoint(tmp_path / "bert", CONFIG, tensors)
    bucket = gcs_emulator.create_bucket()
    uri = f"gs://{bucket}/models/bert"
    for name in ("config.json", "model.safetensors"):
        storage.write_bytes(f"{uri}/{name}", (local / name).read_bytes())
    model = load_hf_bert_checkpoint(uri, **MLM)
    np.testing.assert_array_equal(
        model.encoder.token_embedding.embeddings.numpy(),
        tensors["bert.embeddings.word_embeddings.weight"],
    )
    with pytest.raises(UserInputError):
        load_hf_bert_checkpoint(f"gs://{bucket}/models/missing")
    storage.write_text(f"gs://{bucket}/models/broken/config.json", json.dumps(CONFIG))
    with pytest.raises(UserInputError, match=f"gs://{bucket}/models/broken/model.safetensors"):
        load_hf_bert_checkpoint(f"gs://{bucket}/models/broken")


def test_matches_transformers_bert(tmp_path):
    """Parity with transformers' own PyTorch BERT (torch is a test requirement)."""
    import torch
    import transformers

    config = transformers.BertConfig(
        vocab_size=90,
        hidden_size=24,
        num_hidden_layers=2,
        num_attention_heads=3,
        intermediate_size=40,
        max_position_embeddings=20,
    )
    torch.manual_seed(0)
    reference = transformers.BertForMaskedLM(config).eval()
    with torch.no_grad():
        for parameter in reference.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    reference.save_pretrained(tmp_path / "hf")
    model = load_hf_bert_checkpoint(tmp_path / "hf", **MLM)

    inputs = _inputs(CONFIG)
    with torch.no_grad():
        expected = reference(
            **{k: torch.tensor(v, dtype=torch.long) for k, v in inputs.items()},
            output_hidden_states=True,
        )
    hidden = model.encoder(inputs)["last_hidden_state"].numpy()
    valid = inputs["attention_mask"].astype(bool)
    np.testing.assert_allclose(hidden[valid], expected.hidden_states[-1].numpy()[valid], atol=1e-4)
    np.testing.assert_allclose(
        model(inputs).numpy()[valid], expected.logits.numpy()[valid], atol=1e-4
    )


def test_continue_pretraining_an_imported_checkpoint(tmp_path):
    tensors = hf_tensors(CONFIG)
    directory = write_checkpoint(tmp_path / "bert", CONFIG, tensors)
    model = load_hf_bert_checkpoint(directory, special_token_ids=[0, 1, 2, 3, 4], **MLM)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3))
    rng = np.random.default_rng(0)
    data = {
        "input_ids": rng.integers(5, CONFIG["vocab_size"], (8, 12)).astype("int32"),
        "attention_mask": np.ones((8, 12), "int32"),
    }
    history = model.fit(tf.data.Dataset.from_tensor_slices(data).batch(4), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])
    # Training moved the imported weights.
    assert not np.allclose(
        model.encoder.token_embedding.embeddings.numpy(),
        tensors["bert.embeddings.word_embeddings.weight"],
    )
    path = tmp_path / "mlm_model.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    inputs = _inputs(CONFIG)
    np.testing.assert_array_equal(restored(inputs).numpy(), model(inputs).numpy())
