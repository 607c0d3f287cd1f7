"""The whole pipeline through KFP's real local runner (`kfp.local.SubprocessRunner`), tiny sizes:
every step runs as a subprocess, and every artifact it hands on is checked. A second run over the
grown corpus continues pre-training from the model the first one published to a local registry."""

import builtins
import json
import math
from pathlib import Path

import keras
import pytest

import mlm
from mlm import registry
from mlm.data.fingerprint import corpus_fingerprint
from mlm.steps.shard import shard
from mlm_pipelines.mlm_pipeline import TASK_ORDER
from mlm_pipelines.run_local import format_summary, run_local

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


def continual(registry_uri: str) -> dict:
    """The parameters of a recurring run that continues from, and publishes as, "weekly"."""
    return {
        "init_from": "registry:weekly",
        "model_registry_uri": registry_uri,
        "publish_model_as": "weekly",
    }


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """Week 1: nothing published yet, so pre-training starts from random weights."""
    root = tmp_path_factory.mktemp("local-pipeline")
    corpus = write_corpus_slice(root / "corpus")
    labels = write_labels(root / "labels.csv", rows_per_label=6)
    params = {
        **TINY_PIPELINE,
        **continual(str(root / "registry")),
        "cache_uri": str(root / "cache"),
    }
    summary = run_local(str(root / "out"), corpus=corpus, labels=labels, params=params)
    return root, corpus, labels, summary


@pytest.mark.slow
def test_local_pipeline_produces_every_artifact(first_run):
    tmp_path, corpus, _labels, summary = first_run

    artifacts = summary["artifacts"]
    assert list(artifacts) == list(TASK_ORDER)
    run_dir = Path(artifacts["tokenize"]).parent
    tokenizer = run_dir / "tokenize" / "tokenizer"
    assert json.loads((tokenizer / "mlm_tokenizer.json").read_text())["vocab_size"] <= 300

    manifest = json.loads((run_dir / "merge-shards" / "shards" / "manifest.json").read_text())
    assert manifest["seq_length"] == SEQ_LENGTH
    assert manifest["line_by_line"] is False  # packed unless the run asks otherwise
    for split in ("train", "validation"):
        assert manifest["splits"][split]["examples"] > 0
        for name in manifest["splits"][split]["files"]:
            assert (run_dir / "merge-shards" / "shards" / name).stat().st_size > 0

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

    # The fingerprint of the corpus keyed tokenize and shard; the model was published.
    fingerprint = executor_output(run_dir, "fingerprint")["parameterValues"]["Output"]
    assert fingerprint == corpus_fingerprint(corpus)
    assert "perplexity_change" not in evaluation["metadata"]  # nothing to compare with
    entry = registry.latest(str(tmp_path / "registry"), "weekly")
    assert entry.model_uri == str(model) and entry.step == 4
    assert entry.perplexity == pytest.approx(perplexity)
    assert entry.tokenizer_uri == str(tokenizer)


@pytest.mark.slow
def test_the_next_run_continues_from_the_published_model(first_run):
    """Week 2: the corpus grew by a file; the run keeps week 1's tokenizer (from the cache),
    shards only the new file, starts at week 1's step count and reports the perplexity change
    against it. It shards in 3 partitions (one task each, a file each), which give the totals of
    one `mlm shard`."""
    root, corpus, labels, first = first_run
    first_dir = Path(first["artifacts"]["pretrain"]).parent
    old_files = len(list(Path(corpus).iterdir()))
    Path(corpus, "week2.txt").write_text(Path(corpus, "train.txt").read_text()[::-1])
    entry = registry.latest(str(root / "registry"), "weekly")
    params = {
        **TINY_PIPELINE,
        **continual(str(root / "registry")),
        "cache_uri": str(root / "cache"),
        "shard_partitions": 3,
    }
    real_print = builtins.print
    summary = run_local(str(root / "out2"), corpus=corpus, labels=labels, params=params)
    # kfp.local's parallel iterations swap `print` for an indenting one; the run puts it back.
    assert builtins.print is real_print
    run_dir = Path(summary["artifacts"]["pretrain"]).parent

    fingerprint = executor_output(run_dir, "fingerprint")["parameterValues"]["Output"]
    assert fingerprint != executor_output(first_dir, "fingerprint")["parameterValues"]["Output"]
    tokenized = executor_output(run_dir, "tokenize")["artifacts"]["tokenizer"]["artifacts"][0]
    assert tokenized["metadata"]["trained"] is False
    assert tokenized["metadata"]["cached_from"] == str(root / "cache" / "tokenizer")
    kept_hash = tokenized["metadata"]["info"]["content_hash"]
    assert (
        kept_hash
        == json.loads(Path(entry.tokenizer_uri, "mlm_tokenizer.json").read_text())["content_hash"]
    )
    manifest = json.loads((run_dir / "merge-shards" / "shards" / "manifest.json").read_text())
    assert executor_output(run_dir, "plan-shards")["parameterValues"]["Output"] == [1, 2, 3]
    # Only week2.txt was read and sharded; week 1's files came from the cache.
    caches = [
        json.loads(path.read_text())["artifacts"]["shards"]["artifacts"][0]["metadata"]["cache"]
        for path in run_dir.glob("for-loop-*/shard/executor_output.json")
    ]
    assert len(caches) == 3
    assert sum(cache["sharded"] for cache in caches) == 1
    assert sum(cache["reused"] for cache in caches) == old_files
    whole = shard(
        corpus, entry.tokenizer_uri, str(root / "one-partition"),
        max_seq_length=SEQ_LENGTH, num_shards=2,
    ).manifest  # fmt: skip
    for split, counts in whole["splits"].items():
        assert manifest["splits"][split]["examples"] == counts["examples"] > 0
        assert manifest["splits"][split]["tokens"] == counts["tokens"]
    metrics = json.loads((run_dir / "pretrain" / "model" / "metrics.json").read_text())
    assert metrics["init_from"] == entry.model_uri
    assert metrics["start_step"] == 4 and metrics["steps"] == 8
    evaluation = executor_output(run_dir, "evaluate")["artifacts"]["metrics"]["artifacts"][0]
    logged = evaluation["metadata"]
    assert logged["perplexity_change"] == pytest.approx(
        logged["perplexity"] - logged["previous_perplexity"]
    )
    assert registry.latest(str(root / "registry"), "weekly").step == 8
