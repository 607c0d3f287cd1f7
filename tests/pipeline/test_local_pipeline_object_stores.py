"""The whole pipeline through KFP's real local runner with its corpus and labels in an object
store: `s3://` on moto's real S3 server and `gs://` on the real fake-gcs-server emulator.

The step subprocesses inherit the emulator settings (`AWS_ENDPOINT_URL`, `STORAGE_EMULATOR_HOST`)
from the test's environment, as pods inherit them from their spec on a cluster.
"""

import json
import os
from pathlib import Path

import pytest

from mlm import storage
from mlm_pipelines.run_local import run_local

from .conftest import write_corpus_slice, write_labels
from .test_local_pipeline import TINY_PIPELINE


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_local_pipeline_reads_corpus_and_labels_from_an_object_store(scheme, request, tmp_path):
    if scheme == "s3":
        bucket = f"s3://{request.getfixturevalue('s3_emulator').create_bucket()}"
    else:
        bucket = f"gs://{request.getfixturevalue('gcs_emulator').create_bucket()}"
    corpus_dir = write_corpus_slice(tmp_path / "corpus")
    for name in sorted(os.listdir(corpus_dir)):
        storage.write_text(f"{bucket}/corpus/{name}", Path(corpus_dir, name).read_text())
    labels = write_labels(tmp_path / "labels.csv", rows_per_label=6)
    storage.write_text(f"{bucket}/labels.csv", Path(labels).read_text())

    summary = run_local(
        str(tmp_path / "out"),
        corpus=f"{bucket}/corpus",
        labels=f"{bucket}/labels.csv",
        params=TINY_PIPELINE,
    )

    run_dir = Path(summary["artifacts"]["tokenize"]).parent
    corpus_stats = json.loads((run_dir / "merge-shards" / "shards" / "manifest.json").read_text())
    assert corpus_stats["splits"]["train"]["examples"] > 0
    finetuned = json.loads((run_dir / "finetune" / "classifier" / "metrics.json").read_text())
    # 6 rows of each of the 5 labels were read from the store and split for fine-tuning.
    assert finetuned["num_train"] + finetuned["num_validation"] == 30
    assert set(finetuned["metrics"]) == {"pretrained", "baseline"}
