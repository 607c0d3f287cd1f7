"""Continual pre-training: a run that starts from an earlier model, found directly or through the
model registry, and an evaluation that compares the two models. Real tiny training runs
(`mlm pretrain`, `mlm evaluate` in this process), a local registry directory."""

from __future__ import annotations

import json
import shutil

import pytest

from mlm import registry, storage
from mlm.cli import main
from mlm.steps.evaluate import evaluate
from tests.training.conftest import pretrain_argv

FIRST_STEPS = 6
MORE_STEPS = 4


def pretrain(data, output, *extra: str) -> dict:
    assert main(pretrain_argv(data, output, "--quiet", *extra)[3:]) == 0
    return json.loads((output / "metrics.json").read_text())


@pytest.fixture(scope="module")
def weekly(training_data, tmp_path_factory):
    """Two runs of a schedule: week 1 from random weights (nothing published yet), week 2 from
    week 1's model through the registry."""
    root = tmp_path_factory.mktemp("continual")
    registry_uri = str(root / "registry")
    continue_flags = ("--init-from", "registry:weekly", "--model-registry-uri", registry_uri)
    week1 = pretrain(
        training_data, root / "week1", "--steps", str(FIRST_STEPS), "--run-id", "week1",
        *continue_flags,
    )  # fmt: skip
    registry.publish(registry_uri, "weekly", model_uri=str(root / "week1"), run_id="week1")
    week2 = pretrain(
        training_data, root / "week2", "--steps", str(MORE_STEPS), "--run-id", "week2",
        *continue_flags,
    )  # fmt: skip
    return root, registry_uri, week1, week2


def test_the_first_run_of_a_schedule_starts_from_random_weights(weekly):
    _, _, week1, _ = weekly
    assert week1["init_from"] == "" and week1["initial_step"] == 0
    assert week1["start_step"] == 0 and week1["steps"] == FIRST_STEPS


def test_continual_run_starts_at_the_previous_models_step_count(weekly):
    root, registry_uri, week1, week2 = weekly
    assert registry.latest(registry_uri, "weekly").step == FIRST_STEPS
    assert week2["init_from"] == str(root / "week1")
    assert week2["initial_step"] == FIRST_STEPS and week2["start_step"] == FIRST_STEPS
    # `steps` counts this run's steps: the model has now seen both runs' steps.
    assert week2["steps"] == FIRST_STEPS + MORE_STEPS
    history = json.loads((root / "week2" / "history.json").read_text())
    assert history["step"][0] > FIRST_STEPS and history["step"][-1] == FIRST_STEPS + MORE_STEPS
    assert week2["tokenizer_hash"] == week1["tokenizer_hash"]
    assert week2["weights_sha256"] != week1["weights_sha256"]


def test_evaluate_reports_the_perplexity_change_on_the_same_batches(weekly, training_data):
    root, _, _, _ = weekly
    common = dict(eval_batches=3, batch_size=8, seed=5)
    alone = evaluate(
        str(root / "week1"), training_data["shards"], training_data["tokenizer"],
        str(root / "eval-week1"), **common,
    ).metrics  # fmt: skip
    compared = evaluate(
        str(root / "week2"), training_data["shards"], training_data["tokenizer"],
        str(root / "eval-week2"), previous_model=str(root / "week1"), **common,
    ).metrics  # fmt: skip
    # The previous model is scored by the one evaluator on the same batches and masks.
    assert compared["previous_perplexity"] == pytest.approx(alone["perplexity"], rel=1e-6)
    assert compared["previous_accuracy"] == pytest.approx(alone["accuracy"], rel=1e-6)
    assert compared["perplexity_change"] == pytest.approx(
        compared["perplexity"] - alone["perplexity"]
    )
    assert compared["perplexity_change"] != 0
    written = json.loads((root / "eval-week2" / "metrics.json").read_text())
    assert written["perplexity_change"] == compared["perplexity_change"]
    report = (root / "eval-week2" / "report.md").read_text()
    assert f"Against the previous model `{root / 'week1'}`" in report
    assert "perplexity_change" not in alone


def test_the_continued_model_starts_from_the_previous_weights(weekly, training_data, tmp_path):
    """One step at a negligible learning rate leaves week 1's weights: same perplexity."""
    root, _, _, _ = weekly
    nudged = pretrain(
        training_data, tmp_path / "nudged", "--steps", "1", "--learning-rate", "1e-12",
        "--init-from", str(root / "week1"),
    )  # fmt: skip
    assert nudged["steps"] == FIRST_STEPS + 1
    metrics = evaluate(
        str(tmp_path / "nudged"), training_data["shards"], training_data["tokenizer"],
        str(tmp_path / "eval"), previous_model=str(root / "week1"), eval_batches=2, batch_size=8,
    ).metrics  # fmt: skip
    assert metrics["perplexity"] == pytest.approx(metrics["previous_perplexity"], rel=1e-4)


def test_a_model_of_another_tokenizer_is_refused_in_one_line(
    weekly, training_data, tmp_path, capsys
):
    root, _, _, _ = weekly
    other = tmp_path / "other-tokenizer-model"
    shutil.copytree(root / "week1", other)
    metrics = json.loads((other / "metrics.json").read_text())
    metrics["tokenizer_hash"] = "f" * 64
    (other / "metrics.json").write_text(json.dumps(metrics))
    argv = pretrain_argv(training_data, tmp_path / "out", "--init-from", str(other))[3:]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "was trained with another tokenizer (content hash ffffffffffff" in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_another_architecture_or_a_missing_model_is_a_one_line_error(
    weekly, training_data, tmp_path, capsys
):
    root, _, _, _ = weekly
    smaller = json.dumps({"hidden_size": 32, "num_layers": 1, "num_heads": 2,
                          "intermediate_size": 64, "max_position_embeddings": 32})  # fmt: skip
    argv = pretrain_argv(training_data, tmp_path / "a", "--init-from", str(root / "week1"))[3:]
    assert main([*argv, "--model-overrides", smaller]) == 2
    assert "has another architecture than this run's model" in capsys.readouterr().err

    argv = pretrain_argv(training_data, tmp_path / "b", "--init-from", str(tmp_path / "none"))[3:]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "has no metrics.json, so it is not a finished pretrain output directory" in err

    argv = pretrain_argv(training_data, tmp_path / "c", "--init-from", "registry:weekly")[3:]
    assert main(argv) == 2
    assert "needs model_registry_uri" in capsys.readouterr().err
    assert not storage.exists(str(tmp_path / "c" / "metrics.json"))


def test_continue_pretraining_a_hugging_face_checkpoint(training_data, tmp_path):
    """Domain adaptation: `--init-from` a transformers BERT directory starts from its weights and
    architecture (not variant/model_overrides), at step 0; evaluate compares with it."""
    import keras
    import numpy as np

    from mlm.data import read_tokenizer_info
    from tests.encoders.test_hf_checkpoint import CONFIG, hf_tensors, write_checkpoint

    info = read_tokenizer_info(training_data["tokenizer"])
    config = {**CONFIG, "vocab_size": info.vocab_size, "max_position_embeddings": 32}
    tensors = hf_tensors(config)
    checkpoint = write_checkpoint(tmp_path / "bert-hf", config, tensors)
    output = tmp_path / "adapted"
    # A learning rate too small to move the weights: the model is the checkpoint's.
    metrics = pretrain(
        training_data, output, "--init-from", str(checkpoint), "--steps", "1",
        "--learning-rate", "1e-12",
    )  # fmt: skip
    assert metrics["init_from"] == str(checkpoint)
    assert metrics["initial_step"] == 0 and metrics["steps"] == 1
    model = keras.models.load_model(output / "mlm_model.keras")
    assert model.encoder.hidden_size == config["hidden_size"]  # not TINY_MODEL's
    np.testing.assert_allclose(
        model.encoder.token_embedding.embeddings.numpy(),
        tensors["bert.embeddings.word_embeddings.weight"],
        atol=1e-6,
    )
    result = evaluate(
        str(output), training_data["shards"], training_data["tokenizer"],
        str(tmp_path / "evaluation"), batch_size=8, eval_batches=2, seed=3,
        previous_model=str(checkpoint),
    ).metrics  # fmt: skip
    assert result["previous_perplexity"] == pytest.approx(result["perplexity"], rel=1e-4)


def test_a_hugging_face_checkpoint_with_another_vocabulary_is_one_line(training_data, tmp_path):
    from tests.encoders.test_hf_checkpoint import CONFIG, hf_tensors, write_checkpoint

    config = {**CONFIG, "max_position_embeddings": 32}  # vocabulary 90: not the tokenizer's
    checkpoint = write_checkpoint(tmp_path / "bert-hf", config, hf_tensors(config))
    argv = pretrain_argv(training_data, tmp_path / "out", "--quiet", "--init-from", str(checkpoint))
    assert main(argv[3:]) == 2
