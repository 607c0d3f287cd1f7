"""`mlm pretrain` end to end, as real processes: one process, two workers, kill -9 and resume."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess

import pytest

from mlm import storage
from mlm.cli import main
from tests.training.conftest import pretrain_argv, scrape, worker_env
from tests.training.test_monitoring import read_scalars

STEPS = 8


def run(argv: list[str], timeout: float = 400) -> subprocess.CompletedProcess:
    result = subprocess.run(
        argv, env=worker_env(), capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def single_run(training_data, pushgateway, tmp_path_factory):
    """One `mlm pretrain` process: 8 steps of global batch 8, reporting to the Pushgateway."""
    output = tmp_path_factory.mktemp("single") / "out"
    result = run(
        pretrain_argv(
            training_data, output, "--steps", str(STEPS), "--log-every-steps", "2",
            "--checkpoint-every-steps", "4", "--pushgateway-url", pushgateway, "--run-id", "single",
            "--token-embedding-init", "cooccurrence",
        )
    )  # fmt: skip
    return output, result.stdout


def test_single_process_writes_the_outputs(single_run):
    output, stdout = single_run
    assert sorted(os.listdir(output)) == [
        "checkpoints", "encoder.keras", "history.json", "metrics.json", "mlm_model.keras",
        "tensorboard", "workers",
    ]  # fmt: skip
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["steps"] == STEPS and metrics["start_step"] == 0
    assert metrics["num_workers"] == 1 and metrics["global_batch_size"] == 8
    assert metrics["tokens"] > 0 and metrics["tokens_per_second"] > 0
    assert 0 < metrics["final_loss"] < 10 and 0 <= metrics["final_accuracy"] <= 1
    assert 0 < metrics["validation_loss"] < 10 and metrics["validation_perplexity"] > 1
    history = json.loads((output / "history.json").read_text())
    assert history["step"] == [2, 4, 6, 8]
    assert history["loss"][-1] == pytest.approx(metrics["final_loss"])
    assert sorted(os.listdir(output / "checkpoints")) == [
        "checkpoint",
        "ckpt-4.data-00000-of-00001", "ckpt-4.index", "ckpt-4.json",
        "ckpt-8.data-00000-of-00001", "ckpt-8.index", "ckpt-8.json", "input",
    ]  # fmt: skip
    # The input position of each kept checkpoint (one input pipeline).
    assert sorted(os.listdir(output / "checkpoints" / "input" / "worker-0-of-1")) == [
        "ckpt-4", "ckpt-8",
    ]  # fmt: skip
    lines = stdout.splitlines()
    assert lines[0].startswith("pretrain: tiny BERT (")
    assert lines[1].startswith("pretrain: token embeddings of ")
    assert metrics["token_embedding_init"] == "cooccurrence"
    progress = [line for line in lines if line.startswith("step ")]
    assert [line.split()[1] for line in progress] == ["2/8", "4/8", "6/8", "8/8"]
    assert all(" | loss " in line and " tok/s | eta " in line for line in progress)
    assert lines[-1].startswith(f"pretrain: done at step {STEPS}: loss ")


def test_single_process_models_load_and_predict(single_run):
    import keras
    import numpy as np

    import mlm

    mlm.register_serializables()
    output, _ = single_run
    model = keras.models.load_model(output / "mlm_model.keras")
    encoder = keras.models.load_model(output / "encoder.keras")
    ids = np.array([[2, 10, 11, 12, 3, 0, 0, 0]], dtype="int32")
    mask = (ids > 0).astype("int32")
    logits = model({"input_ids": ids, "attention_mask": mask})
    assert tuple(logits.shape) == (1, 8, model.vocab_size)
    hidden = encoder({"input_ids": ids, "attention_mask": mask})["last_hidden_state"]
    np.testing.assert_allclose(
        hidden, model.encoder({"input_ids": ids, "attention_mask": mask})["last_hidden_state"],
        atol=1e-5,
    )  # fmt: skip


def test_single_process_tensorboard_events(single_run):
    output, _ = single_run
    scalars = read_scalars(output / "tensorboard")
    assert set(scalars) == {"loss", "accuracy", "learning_rate", "tokens_per_second"}
    history = json.loads((output / "history.json").read_text())
    assert [step for step, _ in scalars["loss"]] == history["step"]
    assert [value for _, value in scalars["loss"]] == pytest.approx(history["loss"], rel=1e-6)


def test_single_process_pushed_to_the_pushgateway(single_run, pushgateway):
    output, _ = single_run
    metrics = json.loads((output / "metrics.json").read_text())
    scraped = scrape(pushgateway)
    labels = "instance=,job=mlm_pretrain,run_id=single"
    assert scraped["mlm_global_step"][labels] == STEPS
    assert scraped["mlm_train_loss"][labels] == pytest.approx(metrics["final_loss"], rel=1e-6)
    assert scraped["mlm_train_accuracy"][labels] == pytest.approx(metrics["final_accuracy"])
    assert scraped["mlm_learning_rate"][labels] >= 0
    assert scraped["mlm_tokens_per_second"][labels] > 0
    assert scraped["mlm_last_success_timestamp"][labels] > 1.7e9
    assert scraped["mlm_training_finished"][labels] == 1


def test_two_local_workers_stay_in_sync_and_match_one_process(training_data, single_run, tmp_path):
    """MultiWorkerMirroredStrategy over localhost: identical weights, loss like one process."""
    output = tmp_path / "out"
    result = run(
        pretrain_argv(
            training_data, output, "--steps", str(STEPS), "--log-every-steps", "2",
            "--checkpoint-every-steps", "4", "--workers", "2", "--worker-timeout", "350",
            "--token-embedding-init", "cooccurrence",
        )
    )  # fmt: skip
    assert "[worker 0] pretrain: tiny BERT" in result.stdout
    # Every worker computes the same count-based embeddings from the same shards.
    assert "[worker 0] pretrain: token embeddings of " in result.stdout
    assert "on 2 replica(s) / 2 worker(s)" in result.stdout
    summaries = [json.loads((output / "workers" / f"worker-{i}.json").read_text()) for i in (0, 1)]
    assert [s["step"] for s in summaries] == [STEPS, STEPS]
    assert summaries[0]["weights_sha256"] == summaries[1]["weights_sha256"]
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["num_workers"] == 2 and metrics["num_replicas"] == 2
    assert metrics["token_embedding_init"] == "cooccurrence"
    assert metrics["weights_sha256"] == summaries[0]["weights_sha256"]
    # Same global batch, seed and initial weights; the batches and masks differ in composition.
    single = json.loads((single_run[0] / "metrics.json").read_text())
    assert metrics["final_loss"] == pytest.approx(single["final_loss"], abs=0.3)
    assert metrics["validation_loss"] == pytest.approx(single["validation_loss"], abs=0.3)


def test_kill_9_then_rerun_resumes_on_gcs(training_data, gcs_emulator, tmp_path):
    """A run killed mid-training resumes from its last checkpoint (kept on gs://)."""
    output = f"gs://{gcs_emulator.create_bucket()}/run"
    argv = pretrain_argv(
        training_data, output, "--steps", "30", "--log-every-steps", "1",
        "--checkpoint-every-steps", "3",
    )  # fmt: skip
    process = subprocess.Popen(
        argv, env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    seen = []
    try:
        for line in process.stdout:
            seen.append(line.rstrip())
            if line.startswith("saved checkpoint at step 6"):
                break
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL, "\n".join(seen[-20:])
    assert not storage.exists(f"{output}/metrics.json")

    result = run(argv)
    lines = result.stdout.splitlines()
    resumed = [line for line in lines if line.startswith("resumed from checkpoint at step ")]
    assert len(resumed) == 1
    start = int(resumed[0].rsplit(" ", 1)[1])
    assert start >= 6 and start % 3 == 0
    assert not any("no saved input position" in line for line in lines)  # restored from gs://
    steps = [int(line.split()[1].split("/")[0]) for line in lines if line.startswith("step ")]
    assert steps == list(range(start + 1, 31))  # never backwards, never twice
    metrics = storage.read_json(f"{output}/metrics.json")
    assert (metrics["start_step"], metrics["steps"]) == (start, 30)
    history = storage.read_json(f"{output}/history.json")
    assert history["step"] == list(range(1, 31))
    assert storage.exists(f"{output}/mlm_model.keras")
    assert storage.glob(f"{output}/tensorboard/events.out.tfevents.*")
    checkpoints = sorted(u.rsplit("/", 1)[1] for u in storage.glob(f"{output}/checkpoints/*.index"))
    assert checkpoints == ["ckpt-24.index", "ckpt-27.index", "ckpt-30.index"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--batch-size", "0"], "batch_size=0: must be at least 1"),
        (["--precision", "float8"], "precision='float8'"),
        (["--learning-rate", "nan"], "learning_rate=nan"),
        (["--model-overrides", '["layers"]'], "model_overrides=['layers']: expected a mapping"),
        (["--mask-ratio", "1.5"], "mask_ratio=1.5: must be less than 1"),
    ],
)
def test_bad_arguments_are_one_line_errors(training_data, tmp_path, capsys, extra, message):
    argv = pretrain_argv(training_data, tmp_path / "out", *extra)[3:]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlm pretrain: error: ") and message in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_missing_shards_is_a_user_error(training_data, tmp_path, capsys):
    data = {**training_data, "shards": str(tmp_path / "nowhere")}
    assert main(pretrain_argv(data, tmp_path / "out")[3:]) == 2
    assert "has no manifest.json" in capsys.readouterr().err


def test_workers_inside_a_cluster_is_refused(training_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker"}}')
    assert main(pretrain_argv(training_data, tmp_path / "out", "--workers", "2")[3:]) == 2
    assert "TF_CONFIG is already set" in capsys.readouterr().err


def test_a_failing_worker_fails_the_launch(training_data, tmp_path):
    """Workers that refuse their input in one line make `--workers 2` exit 2 with that line.

    (Here: gradient accumulation, which Keras cannot run across several replicas.)
    """
    argv = pretrain_argv(
        training_data, tmp_path / "out", "--workers", "2", "--worker-timeout", "300",
        "--gradient-accumulation-steps", "2",
    )  # fmt: skip
    result = subprocess.run(
        argv, env=worker_env(), capture_output=True, text=True, timeout=400, check=False
    )
    assert result.returncode == 2
    assert result.stderr.startswith("mlm pretrain: error: worker ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "gradient_accumulation_steps=2 works only with one replica" in result.stderr
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_mixed_float16_with_accumulation_and_static_predictions(training_data, tmp_path):
    """The Python API in this process: loss scaling, gradient accumulation, whole-word masking."""
    import keras

    from mlm.steps.pretrain import pretrain
    from tests.training.conftest import TINY_MODEL

    result = pretrain(
        training_data["shards"], training_data["tokenizer"], str(tmp_path / "out"),
        model_overrides=TINY_MODEL, batch_size=8, steps=4, learning_rate=3e-3,
        precision="mixed_float16", gradient_accumulation_steps=2, whole_word_masking=True,
        max_predictions_per_seq=4, tie_word_embeddings=True, validation_batches=1, quiet=True,
    )  # fmt: skip
    assert result.metrics["steps"] == 4 and result.metrics["precision"] == "mixed_float16"
    assert 0 < result.metrics["final_loss"] < 10
    assert result.model_path == str(tmp_path / "out" / "mlm_model.keras")
    assert keras.mixed_precision.global_policy().name == "float32"  # restored afterwards


@pytest.mark.parametrize("schedule", ["constant", "cosine_decay", "polynomial_decay"])
def test_every_schedule_trains(training_data, tmp_path, schedule):
    """Each `--schedule` choice: warm-up to the peak over the first half, then its own shape."""
    from mlm.steps.pretrain import pretrain
    from tests.training.conftest import TINY_MODEL

    result = pretrain(
        training_data["shards"], training_data["tokenizer"], str(tmp_path / "out"),
        model_overrides=TINY_MODEL, batch_size=8, steps=4, learning_rate=3e-3, warmup_ratio=0.5,
        schedule=schedule, log_every_steps=1, validation_batches=1, quiet=True,
    )  # fmt: skip
    rates = json.loads((tmp_path / "out" / "history.json").read_text())["learning_rate"]
    assert result.metrics["steps"] == 4 and len(rates) == 4
    assert max(rates) == pytest.approx(3e-3, rel=1e-5)
    if schedule == "constant":
        assert rates[1:] == pytest.approx([3e-3] * 3, rel=1e-5)
    else:
        assert rates[-1] < rates[1]


def test_workers_get_the_same_config_as_flags():
    """What the local launcher hands its workers is `to_argv` of the config it was given."""
    from mlm.config import PretrainConfig, PretrainLaunchConfig, from_argv, to_argv

    launch = PretrainLaunchConfig.create(
        shard_dir="s", tokenizer_dir="t", output_dir="o", workers=3, worker_timeout=60,
        steps=7, mask_ratio=0.2, quiet=True,
    )  # fmt: skip
    worker = from_argv(PretrainConfig, to_argv(launch.pretrain_config()))
    assert worker == launch.pretrain_config()
    assert type(worker) is PretrainConfig and worker.masking.mask_ratio == 0.2
    assert "--workers" not in to_argv(launch.pretrain_config())


def test_diverging_training_exits_3_without_outputs(training_data, tmp_path, capsys):
    """Absurd initial weights make the loss NaN within steps: one-line error, exit 3, no outputs."""
    from tests.training.conftest import TINY_MODEL

    overrides = json.dumps({**TINY_MODEL, "initializer_range": 1e30})
    argv = pretrain_argv(training_data, tmp_path / "out", "--steps", "4")[3:]
    argv[argv.index("--model-overrides") + 1] = overrides
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert re.match(r"mlm pretrain: error: the training loss became (nan|inf) at step \d+;", err)
    assert err.count("\n") == 1
    assert not (tmp_path / "out" / "metrics.json").exists()
    assert not (tmp_path / "out" / "checkpoints" / "checkpoint").exists()
