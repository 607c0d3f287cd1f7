"""The evaluate, export and fine-tune steps on a real (tiny) pre-training run."""

import json
import math
import os
import re
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import mlm
from mlm.cli import main
from mlm.data.labelled import read_labelled_texts, stratified_split
from mlm.errors import UserInputError
from mlm.steps.evaluate import evaluate
from mlm.steps.export import export
from mlm.steps.finetune import finetune

from .conftest import SEQ_LENGTH, TINY_MODEL, finetune_labels, write_labels


def sample_batch(tokenizer_dir, texts):
    from mlm.data.tokenizer import load_tokenizer

    encoded = load_tokenizer(tokenizer_dir)(
        texts, max_length=SEQ_LENGTH, truncation=True, padding="max_length", return_tensors="np"
    )
    return {k: encoded[k].astype("int32") for k in ("input_ids", "attention_mask")}


# --- evaluate -----------------------------------------------------------------------------------


def test_evaluate_is_deterministic_and_writes_report(tiny_run, tmp_path):
    first = evaluate(tiny_run.model, tiny_run.shards, tiny_run.tokenizer, str(tmp_path / "a"))
    second = evaluate(tiny_run.model, tiny_run.shards, tiny_run.tokenizer, str(tmp_path / "b"))
    metrics = first.metrics
    assert metrics == second.metrics  # fixed mask seed
    assert math.isfinite(metrics["perplexity"]) and metrics["perplexity"] > 1
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]))
    assert 0 <= metrics["accuracy"] <= 1
    assert metrics["num_masked"] > 0
    manifest = json.loads(Path(tiny_run.shards, "manifest.json").read_text())
    assert metrics["num_examples"] == manifest["splits"]["validation"]["examples"]
    assert json.loads((tmp_path / "a" / "metrics.json").read_text()) == metrics
    report = (tmp_path / "a" / "report.md").read_text()
    assert "MLM Prediction Visualization" in report and "Masked Input:" in report
    assert f"{metrics['perplexity']:.3f}" in report


def test_evaluate_rejects_bad_inputs(tiny_run, tmp_path):
    with pytest.raises(UserInputError, match=r"mlm_model\.keras"):
        evaluate(
            str(tiny_run.root / "corpus"), tiny_run.shards, tiny_run.tokenizer, str(tmp_path / "x")
        )
    with pytest.raises(UserInputError, match="does not exist"):
        evaluate(str(tmp_path / "none"), tiny_run.shards, tiny_run.tokenizer, str(tmp_path / "x"))
    with pytest.raises(UserInputError, match="batch_size"):
        evaluate(
            tiny_run.model, tiny_run.shards, tiny_run.tokenizer, str(tmp_path / "x"), batch_size=0
        )
    # The output directory holds something else: refused, left alone.
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me")
    with pytest.raises(UserInputError, match="non-empty"):
        evaluate(tiny_run.model, tiny_run.shards, tiny_run.tokenizer, str(tmp_path / "busy"))
    assert (tmp_path / "busy" / "notes.txt").read_text() == "keep me"


# --- export -------------------------------------------------------------------------------------


def test_export_keras_and_saved_model_match_the_trained_encoder(tiny_run, exported):
    mlm.register_serializables()
    trained = keras.models.load_model(os.path.join(tiny_run.model, "encoder.keras"))
    batch = sample_batch(
        tiny_run.tokenizer, ["the module provides a class", "a short one", "x " * 60]
    )
    expected = trained(batch, training=False)["last_hidden_state"].numpy()

    loaded = keras.models.load_model(exported.encoder_path)
    np.testing.assert_allclose(
        loaded(batch, training=False)["last_hidden_state"].numpy(), expected, rtol=1e-5, atol=1e-5
    )

    serving = tf.saved_model.load(exported.saved_model_path).signatures["serving_default"]
    outputs = serving(
        input_ids=tf.constant(batch["input_ids"]),
        attention_mask=tf.constant(batch["attention_mask"]),
    )
    np.testing.assert_allclose(outputs["last_hidden_state"].numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        outputs["pooled_output"].numpy(), expected[:, 0], rtol=1e-5, atol=1e-5
    )
    # Any length up to the encoder's limit (the signature is [None, None]).
    short = serving(
        input_ids=tf.constant(batch["input_ids"][:, :5]),
        attention_mask=tf.constant(batch["attention_mask"][:, :5]),
    )
    assert short["last_hidden_state"].shape == (3, 5, 32)


def test_export_writes_tokenizer_card_and_facts(tiny_run, exported):
    from mlm.data.tokenizer import load_tokenizer, read_tokenizer_info

    root = exported.output_dir
    assert read_tokenizer_info(exported.tokenizer_dir) == read_tokenizer_info(tiny_run.tokenizer)
    assert load_tokenizer(exported.tokenizer_dir)("hello")["input_ids"]
    facts = json.loads(Path(root, "export.json").read_text())
    assert facts["architecture"]["hidden_size"] == 32
    assert facts["architecture"]["num_layers"] == 2
    assert facts["num_parameters"] == exported.num_parameters > 0
    assert facts["pretraining"]["steps"] == 4
    card = Path(exported.model_card_path).read_text()
    for heading in (
        "## Architecture",
        "## Tokenizer",
        "## Pre-training",
        "## Evaluation",
        "## Use",
    ):
        assert heading in card
    assert "| hidden_size | 32 |" in card


def test_export_card_carries_evaluation_metrics(tiny_run, tmp_path):
    evaluation = evaluate(
        tiny_run.model, tiny_run.shards, tiny_run.tokenizer, str(tmp_path / "eval"), eval_batches=1
    )
    result = export(
        tiny_run.model,
        tiny_run.tokenizer,
        str(tmp_path / "export"),
        evaluation_dir=str(tmp_path / "eval"),
    )
    facts = json.loads((tmp_path / "export" / "export.json").read_text())
    assert facts["evaluation"]["perplexity"] == evaluation.metrics["perplexity"]
    assert (
        f"| perplexity | {evaluation.metrics['perplexity']:.4g} |"
        in Path(result.model_card_path).read_text()
    )


def test_export_rejects_a_mismatched_tokenizer(tiny_run, tmp_path):
    from mlm.steps.tokenize import tokenize

    other = str(tmp_path / "other_tokenizer")
    tokenize(tiny_run.corpus, other, vocab_size=150)
    with pytest.raises(UserInputError, match="vocab_size"):
        export(tiny_run.model, other, str(tmp_path / "export"))
    assert not (tmp_path / "export").exists()


# --- finetune -----------------------------------------------------------------------------------


def test_finetune_sequence_classifier_with_baseline(exported, tmp_path, capsys):
    result = finetune_labels(
        exported.output_dir, tmp_path, rows_per_label=8, epochs=2, baseline=True, seed=1
    )
    assert set(result.metrics) == {"pretrained", "baseline"}
    # Progress with an ETA on stderr, as pretrain prints it: 30 rows / batch 8 x 2 epochs.
    progress = [line for line in capsys.readouterr().err.splitlines() if "finetune:" in line]
    line = r"finetune: step \d/8 \(\d+%\) \| loss \d+\.\d{4} \| acc \d\.\d{4} \| eta \d:\d\d:\d\d"
    assert len(progress) >= 2 and all(re.fullmatch(line, text) for text in progress), progress
    assert result.num_train + result.num_validation == 40
    assert result.num_validation == 10  # 2 of each of 5 labels
    matrix = np.array(result.confusion_matrix)
    assert matrix.shape == (5, 5) and matrix.sum() == result.num_validation
    assert result.metrics["pretrained"]["accuracy"] == pytest.approx(
        np.trace(matrix) / matrix.sum()
    )
    for scores in result.metrics.values():
        assert 0 <= scores["accuracy"] <= 1 and 0 <= scores["macro_f1"] <= 1
        assert 1 <= scores["epochs_trained"] <= 2
    flat = result.flat_metrics()
    assert {"pretrained_accuracy", "baseline_macro_f1"} <= set(flat)

    # The saved classifier reproduces the reported held-out accuracy.
    texts, labels = read_labelled_texts(str(tmp_path / "labels.csv"))
    _, held_out = stratified_split(labels, 0.2, seed=1)
    mlm.register_serializables()
    classifier = keras.models.load_model(tmp_path / "ft" / "classifier.keras")
    batch = sample_batch(str(tmp_path / "ft" / "tokenizer"), [texts[i] for i in held_out])
    predicted = np.argmax(classifier.predict(batch, verbose=0), axis=-1)
    names = json.loads((tmp_path / "ft" / "labels.json").read_text())["label_names"]
    truth = np.array([names.index(labels[i]) for i in held_out])
    assert np.mean(predicted == truth) == pytest.approx(result.metrics["pretrained"]["accuracy"])

    saved = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert saved["metrics"] == result.metrics
    assert "Confusion matrix" in (tmp_path / "ft" / "report.md").read_text()


def test_finetune_ner_reports_entity_f1(exported, tmp_path):
    people, places = ["alice", "bob", "carol", "dave"], ["paris", "london", "rome", "oslo"]
    lines = []
    for i in range(24):
        person, place = people[i % 4], places[(i // 4) % 4]
        for word, tag in [(person, "B-PER"), ("lives", "O"), ("in", "O"), (place, "B-LOC")]:
            lines.append(f"{word} {tag}")
        lines.append("")
    path = tmp_path / "train.conll"
    path.write_text("\n".join(lines))
    result = finetune(
        exported.output_dir,
        str(path),
        str(tmp_path / "ner"),
        task="ner",
        max_seq_length=16,
        batch_size=8,
        epochs=1,
        baseline=False,
    )
    assert result.task == "named_entity_recognition"
    assert result.label_names == ["B-LOC", "B-PER", "O"]
    assert result.confusion_matrix is None
    scores = result.metrics["pretrained"]
    assert {"entity_precision", "entity_recall", "entity_f1", "accuracy"} <= set(scores)
    assert scores["num_entities"] == 2 * result.num_validation
    assert 0 <= scores["entity_f1"] <= 1


def test_finetune_bad_inputs_are_user_errors(exported, tmp_path, capsys):
    single = tmp_path / "one_label.csv"
    single.write_text("text,label\nhello there,a\ngood day,a\nfine,a\n")
    with pytest.raises(UserInputError, match="at least 2 distinct labels"):
        finetune(exported.output_dir, str(single), str(tmp_path / "out"), max_seq_length=SEQ_LENGTH)
    with pytest.raises(UserInputError, match="max_position_embeddings"):
        finetune(exported.output_dir, str(single), str(tmp_path / "out"), max_seq_length=512)
    with pytest.raises(UserInputError, match="unknown task"):
        finetune(exported.output_dir, str(single), str(tmp_path / "out"), task="summarize")
    with pytest.raises(UserInputError, match=r"encoder\.keras"):
        finetune(str(tmp_path), str(single), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()

    broken = tmp_path / "broken.csv"
    broken.write_text("sentence,label\nhi,a\n")
    code = main(
        [
            "finetune",
            "--encoder",
            exported.output_dir,
            "--data",
            str(broken),
            "--output",
            str(tmp_path / "o"),
            "--max-seq-length",
            "32",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mlm finetune: error:") and "'text'" in err and "\n" not in err


# --- object stores -------------------------------------------------------------------------------


def test_steps_read_and_write_object_stores(tiny_run, object_store, tmp_path):
    """pretrain (through the CLI), evaluate, export and finetune with every input and output on
    a real object-store server: gs:// on fake-gcs-server, s3:// and minio:// on moto."""
    from mlm import storage

    bucket = object_store
    for name in ("tokenizer", "shards"):
        storage.upload_dir(getattr(tiny_run, name), f"{bucket}/{name}")
    storage.write_text(
        f"{bucket}/labels.csv", Path(write_labels(tmp_path / "labels.csv", 4)).read_text()
    )
    code = main(
        [
            "pretrain",
            "--shards", f"{bucket}/shards",
            "--tokenizer", f"{bucket}/tokenizer",
            "--output", f"{bucket}/model",
            "--model-overrides", json.dumps(TINY_MODEL),
            "--batch-size", "8",
            "--steps", "2",
            "--validation-batches", "1",
        ]
    )  # fmt: skip
    assert code in (0, None)
    assert storage.read_json(f"{bucket}/model/metrics.json")["steps"] == 2
    assert storage.exists(f"{bucket}/model/checkpoints/checkpoint")
    assert storage.exists(f"{bucket}/model/encoder.keras")

    evaluation = evaluate(
        f"{bucket}/model",
        f"{bucket}/shards",
        f"{bucket}/tokenizer",
        f"{bucket}/eval",
        eval_batches=1,
    )
    assert storage.read_json(f"{bucket}/eval/metrics.json") == evaluation.metrics

    result = export(
        f"{bucket}/model",
        f"{bucket}/tokenizer",
        f"{bucket}/export",
        evaluation_dir=f"{bucket}/eval",
    )
    assert storage.exists(f"{bucket}/export/saved_model/saved_model.pb")
    assert storage.exists(f"{bucket}/export/tokenizer/mlm_tokenizer.json")
    assert storage.read_json(f"{bucket}/export/export.json")["num_parameters"] == (
        result.num_parameters
    )

    tuned = finetune(
        f"{bucket}/export",
        f"{bucket}/labels.csv",
        f"{bucket}/ft",
        max_seq_length=SEQ_LENGTH,
        batch_size=8,
        epochs=1,
        validation_fraction=0.5,
        baseline=False,
    )
    assert storage.read_json(f"{bucket}/ft/metrics.json")["metrics"] == tuned.metrics
    assert storage.exists(f"{bucket}/ft/classifier.keras")
    assert storage.exists(f"{bucket}/ft/tokenizer/mlm_tokenizer.json")
