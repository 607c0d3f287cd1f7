"""NLP heads: shapes, pooling values, token-level routing, serialization and config validation."""

import keras
import numpy as np
import pytest

from mlm.errors import UserInputError
from mlm.heads import (
    NLPTaskConfig,
    NLPTaskType,
    SequenceClassificationHead,
    TokenClassificationHead,
    create_nlp_head,
)

HIDDEN = 8


def encoder_outputs(batch=3, length=5, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, length), dtype="int32")
    mask[0, 3:] = 0
    return {
        "last_hidden_state": rng.normal(size=(batch, length, HIDDEN)).astype("float32"),
        "attention_mask": mask,
        "pooler_output": rng.normal(size=(batch, HIDDEN)).astype("float32"),
    }


def linear_logits(head, features):
    kernel, bias = (np.asarray(w) for w in head.classifier.weights)
    return features @ kernel + bias


@pytest.mark.parametrize("task_type", ["text_classification", NLPTaskType.SENTIMENT_ANALYSIS])
def test_sequence_task_gives_logits_from_cls(task_type):
    head = create_nlp_head(NLPTaskConfig("sentiment", task_type, 3, dropout_rate=0.0), HIDDEN)
    assert isinstance(head, SequenceClassificationHead)
    assert head.name == "sentiment"
    outputs = encoder_outputs()
    logits = np.asarray(head(outputs))
    assert logits.shape == (3, 3)
    expected = linear_logits(head, outputs["last_hidden_state"][:, 0, :])
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)


def test_mean_pooling_ignores_padding():
    head = create_nlp_head(
        NLPTaskConfig("topic", "text_classification", 4, dropout_rate=0.0, pooling="mean"), HIDDEN
    )
    outputs = encoder_outputs()
    changed = dict(outputs, last_hidden_state=outputs["last_hidden_state"].copy())
    changed["last_hidden_state"][0, 3:] += 100.0  # padded positions of sample 0
    np.testing.assert_allclose(np.asarray(head(outputs)), np.asarray(head(changed)), atol=1e-5)
    mean = outputs["last_hidden_state"][0, :3].mean(axis=0)
    np.testing.assert_allclose(
        np.asarray(head(outputs))[0], linear_logits(head, mean), rtol=1e-5, atol=1e-5
    )


def test_pooled_output_and_missing_pooler():
    head = create_nlp_head(
        NLPTaskConfig("nli", "sentence_pair_classification", 3, dropout_rate=0, pooling="pooled"),
        HIDDEN,
    )
    outputs = encoder_outputs()
    np.testing.assert_allclose(
        np.asarray(head(outputs)),
        linear_logits(head, outputs["pooler_output"]),
        rtol=1e-5,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="add_pooler"):
        head({k: v for k, v in outputs.items() if k != "pooler_output"})


@pytest.mark.parametrize("task_type", ["ner", "token_classification", "part_of_speech_tagging"])
def test_token_tasks_get_per_position_logits(task_type):
    config = NLPTaskConfig("tags", task_type, 5, hidden_size=6)
    assert config.task_type.is_token_level
    head = create_nlp_head(config, HIDDEN)
    assert isinstance(head, TokenClassificationHead)
    assert np.asarray(head(encoder_outputs())).shape == (3, 5, 5)


def test_ner_alias_is_named_entity_recognition():
    assert NLPTaskType("ner") is NLPTaskType.NAMED_ENTITY_RECOGNITION
    assert NLPTaskType.NER is NLPTaskType.NAMED_ENTITY_RECOGNITION
    assert not NLPTaskType.TEXT_CLASSIFICATION.is_token_level


def test_heads_round_trip_inside_a_saved_model(tmp_path):
    head = create_nlp_head(NLPTaskConfig("topic", "text_classification", 3, hidden_size=4), HIDDEN)
    inputs = {
        "last_hidden_state": keras.Input((5, HIDDEN), name="last_hidden_state"),
        "attention_mask": keras.Input((5,), dtype="int32", name="attention_mask"),
    }
    model = keras.Model(inputs, head(inputs))
    path = tmp_path / "head.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    outputs = encoder_outputs()
    feed = {k: outputs[k] for k in inputs}
    np.testing.assert_allclose(
        np.asarray(loaded(feed)), np.asarray(model(feed)), rtol=1e-6, atol=1e-6
    )
    config = head.get_config()
    assert SequenceClassificationHead.from_config(config).get_config() == config


def test_config_validation_names_the_field():
    with pytest.raises(UserInputError, match="num_classes"):
        NLPTaskConfig("x", "text_classification", 1)
    with pytest.raises(UserInputError, match="task_type"):
        NLPTaskConfig("x", "summarization", 2)
    with pytest.raises(UserInputError, match="dropout_rate"):
        NLPTaskConfig("x", "text_classification", 2, dropout_rate=1.0)
    with pytest.raises(UserInputError, match="pooling"):
        NLPTaskConfig("x", "text_classification", 2, pooling="max")
    with pytest.raises(TypeError):
        create_nlp_head({"name": "x"}, HIDDEN)
    assert NLPTaskConfig("x", "ner", 3).to_dict()["task_type"] == "named_entity_recognition"
