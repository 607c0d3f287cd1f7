"""The pretrain step's validation and the evaluate step are one evaluator: same data, same number.

The pretrain step validates at the masking ratio it trains with; `mlm evaluate` scores at 15%
unless told otherwise, so here it is told the training ratio."""

from __future__ import annotations

import pytest

from tests.training.conftest import TINY_MODEL

BATCH_SIZE = 8
BATCHES = 3
SEED = 5
TRAINING_MASK_RATIO = 0.4  # the default recipe's


@pytest.fixture(scope="module")
def pretrained(training_data, tmp_path_factory):
    """A 2-step tiny pre-training run that validates on `BATCHES` batches with mask seed `SEED`."""
    from mlm.steps.pretrain import pretrain

    output = tmp_path_factory.mktemp("one-evaluator") / "model"
    return pretrain(
        training_data["shards"],
        training_data["tokenizer"],
        str(output),
        model_overrides=TINY_MODEL,
        batch_size=BATCH_SIZE,
        steps=2,
        learning_rate=1e-3,
        validation_batches=BATCHES,
        mask_ratio=TRAINING_MASK_RATIO,
        seed=SEED,
        quiet=True,
    )


def test_pretrain_validation_and_the_evaluate_step_give_the_same_perplexity(
    training_data, pretrained, tmp_path
):
    from mlm.data import read_manifest
    from mlm.steps.evaluate import evaluate

    # Both read the validation split from its start, unshuffled; inside the split (the pretrain
    # step's validation input repeats, the evaluate step's does not) the batches are the same.
    examples = read_manifest(training_data["shards"]).splits["validation"].examples
    assert examples >= BATCHES * BATCH_SIZE
    validation = pretrained.metrics
    evaluation = evaluate(
        pretrained.output_dir,
        training_data["shards"],
        training_data["tokenizer"],
        str(tmp_path / "evaluation"),
        batch_size=BATCH_SIZE,
        eval_batches=BATCHES,
        seed=SEED,
        mask_ratio=TRAINING_MASK_RATIO,
    ).metrics

    assert evaluation["num_masked"] == validation["validation_num_masked"] > 0
    assert evaluation["perplexity"] == pytest.approx(validation["validation_perplexity"], rel=1e-5)
    assert evaluation["loss"] == pytest.approx(validation["validation_loss"], rel=1e-5)
    assert evaluation["accuracy"] == pytest.approx(validation["validation_accuracy"], rel=1e-5)

    # The agreement is not a coincidence of near-uniform predictions: another mask seed gives
    # another number.
    reseeded = evaluate(
        pretrained.output_dir,
        training_data["shards"],
        training_data["tokenizer"],
        str(tmp_path / "reseeded"),
        batch_size=BATCH_SIZE,
        eval_batches=BATCHES,
        seed=SEED + 1,
        mask_ratio=TRAINING_MASK_RATIO,
    ).metrics
    assert reseeded["perplexity"] != pytest.approx(validation["validation_perplexity"], rel=1e-5)
