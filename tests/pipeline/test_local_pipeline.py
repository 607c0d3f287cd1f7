"""The whole pipeline through KFP's real local runner (`kfp.local.SubprocessRunner`), tiny sizes:
every step runs as a subprocess, and every artifact it hands on is checked."""

import json
import math
from pathlib import Path

import keras
import pytest

import mlm
from pipelines.mlm_pipeline import TASK_ORDER
from pipelines.run_local import format_summary, run_local

from .conftest import SEQ_LENGTH, TINY_MODEL, write_corpus_slice, write_labels

TINY_PIPELINE = {
    "vocab_size": 300,
    "max_seq_length": SEQ_LENGTH,
    "num_shards": 2,
    "model_overrides": TINY_MODEL,
    "batch_size": 8,
    "steps": 4,
    "learning_rate": 1e-3,
    "warmup_ratio": 0.25,
    "eval_batches": 2,
    "finetune_max_seq_length": SEQ_LENGTH,
    "finetune_batch_size": 8,
    "finetune_epochs": 1,
    "baseline": True,
}


def executor_output(run_dir: Path, task: str) -> dict:
    return json.loads((run_dir / task / "executor_output.json").read_text())


@pytest.mark.slow
def test_local_pipeline_produces_every_artifact(tmp_path):
    corpus = write_corpus_slice(tmp_path / "corpus")
    labels = write_labels(tmp_path / "labels.csv", rows_per_label=6)
    summary = run_local(str(tmp_path / "out"), corpus=corpus, labels=labels, params=TINY_PIPELINE)

    artifacts = summary["artifacts"]
    assert list(artifacts) == list(TASK_ORDER)
    run_dir = Path(artifacts["tokenize"]).parent
    tokenizer = run_dir / "tokenize" / "tokenizer"
    assert json.loads((tokenizer / "mlm_tokenizer.json").read_text())["vocab_size"] <= 300

    manifest = json.loads((run_dir / "shard" / "shards" / "manifest.json").read_text())
    assert manifest["seq_length"] == SEQ_LENGTH
    for split in ("train", "validation"):
        assert manifest["splits"][split]["examples"] > 0
        for name in manifest["splits"][split]["files"]:
            assert (run_dir / "shard" / "shards" / name).stat().st_size > 0

    model = run_dir / "pretrain" / "model"
    for name in ("mlm_model.keras", "encoder.keras", "metrics.json", "history.json"):
        assert (model / name).is_file(), name
    assert any((model / "checkpoints").iterdir())
    assert json.loads((model / "metrics.json").read_text())["steps"] == 4
    pretrain_metrics = executor_output(run_dir, "pretrain")["artifacts"]["metrics"]["artifacts"]
    assert math.isfinite(pretrain_metrics[0]["metadata"]["final_loss"])

    evaluation = executor_output(run_dir, "evaluate")["artifacts"]["metrics"]["artifacts"][0]
    perplexity = evaluation["metadata"]["perplexity"]
    assert math.isfinite(perplexity) and perplexity > 1
    assert summary["perplexity"] == pytest.approx(perplexity)
    assert "MLM Prediction Visualization" in (run_dir / "evaluate" / "report").read_text()

    export_dir = run_dir / "export" / "encoder"
    for name in ("encoder.keras", "README.md", "export.json", "tokenizer/mlm_tokenizer.json"):
        assert (export_dir / name).is_file(), name
    assert (export_dir / "saved_model" / "saved_model.pb").is_file()
    mlm.register_serializables()
    encoder = keras.models.load_model(export_dir / "encoder.keras")
    assert encoder.hidden_size == TINY_MODEL["hidden_size"]

    finetuned = json.loads((run_dir / "finetune" / "classifier" / "metrics.json").read_text())
    assert set(finetuned["metrics"]) == {"pretrained", "baseline"}
    assert summary["finetune"] == finetuned["metrics"]
    for scores in finetuned["metrics"].values():
        assert 0 <= scores["accuracy"] <= 1 and 0 <= scores["macro_f1"] <= 1
    outputs = executor_output(run_dir, "finetune")["artifacts"]
    logged = outputs["metrics"]["artifacts"][0]["metadata"]
    assert logged["pretrained_accuracy"] == pytest.approx(
        finetuned["metrics"]["pretrained"]["accuracy"]
    )
    assert "baseline_macro_f1" in logged
    confusion = outputs["confusion_matrix"]["artifacts"][0]["metadata"]["confusionMatrix"]
    assert [c["displayName"] for c in confusion["annotationSpecs"]] == finetuned["label_names"]
    assert sum(sum(row["row"]) for row in confusion["rows"]) == finetuned["num_validation"]
    assert "Confusion matrix" in (run_dir / "finetune" / "report").read_text()

    assert json.loads((tmp_path / "out" / "summary.json").read_text())["seconds"] > 0
    text = format_summary(summary)
    assert "perplexity" in text and "random-init baseline" in text and str(run_dir) in text
