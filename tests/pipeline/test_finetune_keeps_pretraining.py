"""Fine-tuning starts from the exported encoder and keeps what pre-training learned.

Real parts throughout: the tiny pre-training run of conftest, the export step, the finetune step
and Keras' optimizer; no mocks."""

import json

import keras
import numpy as np
import pytest

import mlm
from mlm.config import FinetuneConfig, PretrainConfig, recipe_settings
from mlm.encoders.bert import BERT
from mlm.errors import UserInputError
from mlm.heads import NLPTaskConfig
from mlm.optimization import LayerwiseAdamW, optimizer_builder
from mlm.steps.finetune import (
    build_classifier,
    layerwise_learning_rate_multipliers,
    set_encoder_trainable,
)

from .conftest import TINY_MODEL, finetune_labels, write_labels


def encoder_weights(encoder):
    """An encoder's weights by their path below the encoder (Keras may number its name)."""
    return {v.path.split("/", 1)[1]: v.numpy() for v in encoder.weights}


def classifier_encoder(finetune_dir) -> BERT:
    """The encoder inside the classifier that `finetune` saved in `finetune_dir`."""
    classifier = keras.models.load_model(finetune_dir / "classifier.keras")
    (encoder,) = [layer for layer in classifier.layers if isinstance(layer, BERT)]
    return encoder


def small_encoder(num_layers: int) -> BERT:
    """A randomly initialised BERT small enough to build in milliseconds."""
    return BERT(
        vocab_size=50,
        hidden_size=8,
        num_layers=num_layers,
        num_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
    )


def test_export_carries_every_pretrained_encoder_weight(tiny_run, exported):
    mlm.register_serializables()
    pretrained = keras.models.load_model(f"{tiny_run.model}/mlm_model.keras").encoder
    export_encoder = keras.models.load_model(exported.encoder_path)
    before, after = encoder_weights(pretrained), encoder_weights(export_encoder)
    # Embeddings (token, position, segment), every LayerNorm and block: all carried over.
    assert set(before) == set(after) and len(before) > 10
    for path, value in before.items():
        np.testing.assert_array_equal(after[path], value, err_msg=path)


def test_the_fast_recipe_pretrains_exports_and_finetunes_an_alibi_encoder(tiny_run, tmp_path):
    """The `fast` recipe's encoder has ALiBi attention biases and no position weights; the
    option survives export (Keras file, SavedModel, export.json) and fine-tuning."""
    import tensorflow as tf

    from mlm.steps.export import export
    from mlm.steps.pretrain import pretrain

    settings = recipe_settings("fast")
    overrides = {**TINY_MODEL, **settings.pop("model_overrides")}
    assert overrides["position_embedding_type"] == "alibi"
    model_dir = str(tmp_path / "model")
    pretrain(
        tiny_run.shards,
        tiny_run.tokenizer,
        model_dir,
        **settings,
        model_overrides=overrides,
        batch_size=8,
        steps=3,
        validation_batches=1,
        quiet=True,
    )
    result = export(model_dir, tiny_run.tokenizer, str(tmp_path / "export"))
    facts = json.loads((tmp_path / "export" / "export.json").read_text())
    assert facts["architecture"]["position_embedding_type"] == "alibi"
    mlm.register_serializables()
    encoder = keras.models.load_model(result.encoder_path)
    assert encoder.position_embedding is None
    assert not [v.path for v in encoder.weights if "position" in v.path]
    # The SavedModel serves any length up to the limit: the bias is built from the input's.
    serving = tf.saved_model.load(result.saved_model_path).signatures["serving_default"]
    ids = tf.constant([[2, 7, 9, 3, 0, 0, 0]], tf.int32)
    served = serving(input_ids=ids, attention_mask=tf.cast(ids > 0, tf.int32))
    want = encoder({"input_ids": ids, "attention_mask": tf.cast(ids > 0, tf.int32)})
    np.testing.assert_allclose(served["last_hidden_state"], want["last_hidden_state"], atol=1e-5)
    finetune_labels(result.output_dir, tmp_path)
    assert classifier_encoder(tmp_path / "ft").get_config()["position_embedding_type"] == "alibi"


def test_finetune_starts_from_the_exported_weights(exported, tmp_path):
    """With a tiny layer decay and no weight decay the encoder barely moves: the fine-tuned
    classifier's encoder equals the export's, so fine-tuning started from those weights."""
    finetune_labels(exported.output_dir, tmp_path, epochs=2, layer_decay=1e-4, weight_decay=0.0)
    mlm.register_serializables()
    start = encoder_weights(keras.models.load_model(exported.encoder_path))
    tuned = encoder_weights(classifier_encoder(tmp_path / "ft"))
    assert set(tuned) == set(start)
    for path, value in start.items():
        np.testing.assert_allclose(tuned[path], value, atol=1e-5, err_msg=path)


def test_finetune_scores_test_data_when_given(exported, tmp_path):
    test = write_labels(tmp_path / "test.csv", rows_per_label=3)
    result = finetune_labels(exported.output_dir, tmp_path, test_data=test)
    assert sum(map(sum, result.confusion_matrix)) == 15  # 3 test rows of each of 5 labels
    assert "Scored on 15 test examples" in (tmp_path / "ft" / "report.md").read_text()
    saved = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert saved["settings"]["layer_decay"] == FinetuneConfig.layer_decay
    # The held-out score is kept beside the test score, for choices made without the test data.
    for side in ("pretrained",):
        assert 0.0 <= result.metrics[side]["validation_accuracy"] <= 1.0
    assert "pretrained_validation_accuracy" in result.flat_metrics()


def test_head_only_epochs_train_the_head_on_a_frozen_encoder(exported, tmp_path):
    """Head-only epochs leave every encoder weight bit-identical (no gradient, no weight decay)
    while the head learns at its own rate; the history holds both phases."""
    result = finetune_labels(
        exported.output_dir,
        tmp_path,
        head_only_epochs=2,
        head_only_learning_rate=0.05,
        epochs=1,
        learning_rate=1e-9,  # the second phase barely moves anything: the head-only rate did
        weight_decay=0.0,
        patience=5,
    )
    saved = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert saved["settings"]["head_only_learning_rate"] == 0.05
    assert len(saved["history"]["pretrained"]["loss"]) == 3  # 2 head-only epochs + 1
    assert result.metrics["pretrained"]["epochs_trained"] == 3
    mlm.register_serializables()
    start = encoder_weights(keras.models.load_model(exported.encoder_path))
    classifier = keras.models.load_model(tmp_path / "ft" / "classifier.keras")
    (encoder,) = [layer for layer in classifier.layers if isinstance(layer, BERT)]
    tuned = encoder_weights(encoder)
    for path, value in start.items():
        np.testing.assert_allclose(tuned[path], value, atol=1e-6, err_msg=path)
    head = [v for v in classifier.weights if v.path.endswith("logits/kernel")]
    assert head and np.abs(head[0].numpy()).max() > 0.05  # initialized at stddev 0.02


def test_set_encoder_trainable_freezes_the_encoder_and_keeps_an_unused_pooler_frozen():
    encoder = small_encoder(num_layers=1)
    task = NLPTaskConfig(name="t", task_type="text_classification", num_classes=2, pooling="mean")
    model = build_classifier(encoder, task, 16)
    set_encoder_trainable(encoder, task, False)
    assert {v.path.split("/")[0] for v in model.trainable_variables} == {"t"}
    set_encoder_trainable(encoder, task, True)
    paths = [v.path for v in model.trainable_variables]
    assert any("token_embedding" in p for p in paths) and not any("pooler" in p for p in paths)


def test_layer_decay_multipliers_rise_from_embeddings_to_the_head():
    encoder = small_encoder(num_layers=2)
    task = NLPTaskConfig(name="t", task_type="text_classification", num_classes=2)
    model = build_classifier(encoder, task, 16)
    multipliers = layerwise_learning_rate_multipliers(encoder, model.trainable_variables, 0.5)
    name = encoder.name  # "bert", or "bert_<n>" when other encoders were built before
    assert multipliers[f"{name}/token_embedding/embeddings"] == 0.125
    assert multipliers[f"{name}/embeddings_norm/gamma"] == 0.125
    assert multipliers[f"{name}/transformer_layer_0/attention/query/kernel"] == 0.25
    assert multipliers[f"{name}/transformer_layer_1/output_norm/beta"] == 0.5
    assert "t/logits/kernel" not in multipliers  # the head: the full rate
    assert layerwise_learning_rate_multipliers(encoder, model.trainable_variables, 1.0) == {}


def test_layerwise_adamw_scales_each_variables_step():
    full, half, frozen = (keras.Variable(np.zeros(3, "float32"), name=n) for n in "abc")
    optimizer = optimizer_builder(
        {
            "type": "adamw",
            "weight_decay": 0.0,
            "learning_rate_multipliers": {half.path: 0.5, frozen.path: 0.0},
        },
        0.1,
    )
    assert isinstance(optimizer, LayerwiseAdamW)
    gradient = np.array([1.0, -2.0, 3.0], "float32")
    optimizer.apply([gradient] * 3, [full, half, frozen])
    # Adam's first step moves each weight by about the learning rate against the gradient sign.
    np.testing.assert_allclose(full.numpy(), [-0.1, 0.1, -0.1], rtol=1e-4)
    np.testing.assert_allclose(half.numpy(), [-0.05, 0.05, -0.05], rtol=1e-4)
    np.testing.assert_array_equal(frozen.numpy(), [0.0, 0.0, 0.0])
    clone = LayerwiseAdamW.from_config(optimizer.get_config())
    assert clone.learning_rate_multipliers == {half.path: 0.5, frozen.path: 0.0}


def test_layer_decay_above_one_is_a_user_error():
    with pytest.raises(UserInputError, match=r"layer_decay=1\.5: must be at most 1"):
        FinetuneConfig.create(encoder_dir="e", data="d", output_dir="o", layer_decay=1.5)


def test_recipes_are_valid_pretrain_settings():
    fast = PretrainConfig.create(
        shard_dir="s", tokenizer_dir="t", output_dir="o", **recipe_settings("fast")
    )
    assert fast.model.tie_word_embeddings and fast.schedule == "polynomial_decay"
    assert fast.model.token_embedding_init == "cooccurrence"
    assert fast.model.model_overrides["hidden_dropout_prob"] == 0.0
    # Without a recipe named, the fast one's settings are the defaults; seed is the class's.
    paths = {"shard_dir": "s", "tokenizer_dir": "t", "output_dir": "o"}
    assert PretrainConfig.create(**paths) == fast
    assert PretrainConfig.create(**paths, recipe="seed") == PretrainConfig(**paths, recipe="seed")
    with pytest.raises(
        UserInputError, match="recipe='slow': unknown recipe; use one of seed, fast"
    ):
        recipe_settings("slow")
