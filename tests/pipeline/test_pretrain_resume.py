"""A retried pretrain step (launcher "local") resumes from the checkpoints of the attempt that
was lost, because it trains straight at the model artifact's remote URI.

The first attempt is the real pretrain component body in a subprocess, killed (os._exit, as
when a node is lost) right after it saved its checkpoint at step `STOP_AT`; the retry is the same
body with the same arguments. The remote store is a real GCS emulator (tests/gcs_emulator.py).
"""

import json
import subprocess
import sys
import textwrap

from .conftest import TINY_MODEL

STOP_AT = 4
STEPS = 8

CHILD = textwrap.dedent(
    """
    import json, os, sys

    from kfp.dsl import Artifact, Dataset, Metrics, Model, TaskConfig

    from mlm_components.pretrain import pretrain
    from mlm.training.checkpoints import CheckpointKeeper

    save = CheckpointKeeper.save

    def save_then_die(self, step, sidecar=None):
        path = save(self, step, sidecar)
        if step >= {stop_at}:
            os._exit(137)  # the pod is gone: no cleanup, no final outputs
        return path

    CheckpointKeeper.save = save_then_die
    kwargs = json.loads(sys.argv[1])
    pretrain.python_func(
        shards=Dataset(name="shards", uri=kwargs.pop("shards")),
        tokenizer=Artifact(name="tokenizer", uri=kwargs.pop("tokenizer")),
        model=Model(name="model", uri=kwargs.pop("model")),
        metrics=Metrics(name="metrics", uri=kwargs.pop("metrics")),
        task_config=TaskConfig(),
        **kwargs,
    )
    """
)


def test_a_retried_local_pretrain_resumes_from_its_durable_checkpoint(
    tiny_run, gcs_emulator, tmp_path
):
    from kfp.dsl import Artifact, Dataset, Metrics, Model, TaskConfig

    from mlm import storage
    from mlm_components.pretrain import pretrain

    model_uri = f"gs://{gcs_emulator.create_bucket()}/run-1/pretrain/model"
    parameters = {
        "model_overrides": TINY_MODEL,
        "batch_size": 8,
        "steps": STEPS,
        "learning_rate": 1e-3,
        "launcher": "local",
        "run_id": "run-1",
        "checkpoint_every_steps": 2,
        "validation_batches": 1,
        "quiet": True,
    }
    first = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD.format(stop_at=STOP_AT),
            json.dumps(
                {
                    "shards": tiny_run.shards,
                    "tokenizer": tiny_run.tokenizer,
                    "model": model_uri,
                    "metrics": str(tmp_path / "first-metrics"),
                    **parameters,
                }
            ),
        ],
        capture_output=True,
        text=True,
    )
    assert first.returncode == 137, first.stdout + first.stderr
    # The lost attempt left its checkpoints at the remote URI, and no finished model.
    saved = storage.glob(f"{model_uri}/checkpoints/ckpt-{STOP_AT}*")
    assert saved, storage.glob(f"{model_uri}/**")
    assert not storage.exists(f"{model_uri}/metrics.json")

    metrics = Metrics(name="metrics", uri=str(tmp_path / "metrics"))
    pretrain.python_func(
        shards=Dataset(name="shards", uri=tiny_run.shards),
        tokenizer=Artifact(name="tokenizer", uri=tiny_run.tokenizer),
        model=Model(name="model", uri=model_uri),
        metrics=metrics,
        task_config=TaskConfig(),
        **parameters,
    )
    assert metrics.metadata["start_step"] == STOP_AT
    result = storage.read_json(f"{model_uri}/metrics.json")
    assert (result["start_step"], result["steps"]) == (STOP_AT, STEPS)
    assert storage.exists(f"{model_uri}/encoder.keras")
