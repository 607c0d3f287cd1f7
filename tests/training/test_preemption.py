"""SIGTERM during `mlm pretrain`, as real processes: every worker saves the same step, the run
exits 143, and a rerun continues from that step with no step repeated or skipped, ending with the
same weights, bit for bit, as a run that was never stopped (the masks, the dropout random numbers
and the input position are all restored)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest

from tests.training.conftest import pretrain_argv, worker_env

STEPS = 60
PROGRESS = re.compile(r"^(?:\[worker 0\] )?step (\d+)/")


def interrupt(
    argv: list[str], after_step: int, signum: int = signal.SIGTERM
) -> tuple[int, list[str]]:
    """Runs `argv`, sends `signum` once it logged `after_step`; the exit status and all lines."""
    process = subprocess.Popen(
        argv, env=worker_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    try:
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            match = PROGRESS.match(line)
            if match and int(match[1]) >= after_step:
                process.send_signal(signum)
                break
        lines += [line.rstrip("\n") for line in process.stdout]  # until the process ends
        process.wait(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()
    return process.returncode, lines


def logged_steps(lines: list[str]) -> list[int]:
    return [int(m[1]) for m in map(PROGRESS.match, lines) if m]


def uninterrupted(argv: list[str], output: Path, reference: Path) -> dict:
    """The metrics of the same run into `reference`, never stopped."""
    argv = [str(reference) if part == str(output) else part for part in argv]
    result = subprocess.run(argv, env=worker_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((reference / "metrics.json").read_text())


def check_same_as_uninterrupted(output: Path, argv: list[str], reference: Path) -> None:
    expected = uninterrupted(argv, output, reference)
    resumed = json.loads((output / "metrics.json").read_text())
    assert resumed["weights_sha256"] == expected["weights_sha256"]
    assert resumed["final_loss"] == expected["final_loss"]
    history = json.loads((output / "history.json").read_text())
    assert history["loss"] == json.loads((reference / "history.json").read_text())["loss"]


def check_stop_and_resume(output: Path, argv: list[str], num_workers: int) -> None:
    code, lines = interrupt(argv, after_step=3)
    text = "\n".join(lines)
    assert code == 143, text[-3000:]
    stopped = [
        re.search(r"stopped by SIGTERM at step (\d+) \(saved a checkpoint\)", line)
        for line in lines
    ]
    stopped_steps = [int(m[1]) for m in stopped if m]
    assert len(stopped_steps) == 1, text[-3000:]  # the chief's log line
    step = stopped_steps[0]
    first_steps = logged_steps(lines)
    assert first_steps == list(range(1, max(first_steps) + 1))
    assert step >= max(first_steps) and step < STEPS
    # Every worker saved the same step, with the same weights.
    summaries = [
        json.loads((output / "workers" / f"worker-{i}.json").read_text())
        for i in range(num_workers)
    ]
    assert {s["step"] for s in summaries} == {step}
    assert {s["stopped_by"] for s in summaries} == {"SIGTERM"}
    assert len({s["weights_sha256"] for s in summaries}) == 1
    state = (output / "checkpoints" / "checkpoint").read_text()
    assert f'model_checkpoint_path: "ckpt-{step}"' in state
    for worker in range(num_workers):
        assert (
            output
            / "checkpoints"
            / "input"
            / f"worker-{worker}-of-{num_workers}"
            / f"ckpt-{step}"
            / "DONE"
        ).exists()
    assert not (output / "metrics.json").exists()

    result = subprocess.run(
        argv, env=worker_env(), capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert any(line.endswith(f"resumed from checkpoint at step {step}") for line in lines)
    assert not any("no saved input position" in line for line in lines)
    assert logged_steps(lines) == list(range(step + 1, STEPS + 1))  # never twice, never skipped
    metrics = json.loads((output / "metrics.json").read_text())
    assert (metrics["start_step"], metrics["steps"]) == (step, STEPS)
    history = json.loads((output / "history.json").read_text())
    assert history["step"] == list(range(1, STEPS + 1))


def test_sigterm_stops_two_local_workers_at_the_same_step_and_the_rerun_continues(
    training_data, tmp_path
):
    output = tmp_path / "out"
    argv = pretrain_argv(
        training_data, output, "--steps", str(STEPS), "--log-every-steps", "1",
        "--checkpoint-every-steps", "1000", "--workers", "2", "--worker-timeout", "600",
    )  # fmt: skip
    check_stop_and_resume(output, argv, num_workers=2)
    check_same_as_uninterrupted(output, argv, tmp_path / "reference")


@pytest.mark.parametrize("dropout", [0.1, 0.0])
def test_sigterm_stops_one_process_after_saving_and_the_rerun_continues(
    training_data, tmp_path, dropout
):
    output = tmp_path / "out"
    argv = pretrain_argv(
        training_data, output, "--steps", str(STEPS), "--log-every-steps", "1",
        "--checkpoint-every-steps", "1000",
    )  # fmt: skip
    overrides = argv.index("--model-overrides") + 1
    argv[overrides] = json.dumps(
        {
            **json.loads(argv[overrides]),
            "hidden_dropout_prob": dropout,
            "attention_probs_dropout_prob": dropout,
        }
    )
    check_stop_and_resume(output, argv, num_workers=1)
    check_same_as_uninterrupted(output, argv, tmp_path / "reference")


def test_a_stop_request_catches_both_signals_and_restores_the_handlers():
    """Real signals to this process: the first one is kept, none interrupts, handlers return."""
    import os
    import time

    from mlm.training.preemption import StopRequest, TrainingInterrupted, exit_status

    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)  # would raise KeyboardInterrupt without the handler
        os.kill(os.getpid(), signal.SIGTERM)  # would end the process without the handler
        deadline = time.monotonic() + 10
        while stop.signum is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stop.signum == signal.SIGINT
    assert {signum: signal.getsignal(signum) for signum in before} == before
    assert (exit_status(signal.SIGTERM), exit_status(signal.SIGINT)) == (143, 130)
    interrupted = TrainingInterrupted(signal.SIGINT, step=7)
    assert isinstance(interrupted, SystemExit) and interrupted.code == 130
    assert str(interrupted) == "stopped by SIGINT at step 7"
