"""The local multi-worker launcher with real worker processes (small Python scripts, no TF)."""

from __future__ import annotations

import io
import os
import sys
import textwrap
import time

import pytest

from mlm.launch.local import WorkersFailedError, run_local_workers, worker_tf_configs


def script(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def test_tf_configs_match_the_training_operator():
    configs = worker_tf_configs(3, ports=[5001, 5002, 5003])
    hosts = ["localhost:5001", "localhost:5002", "localhost:5003"]
    assert configs == [
        {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}} for i in range(3)
    ]
    ports = [int(h.split(":")[1]) for h in worker_tf_configs(4)[0]["cluster"]["worker"]]
    assert len(set(ports)) == 4


def test_workers_get_their_tf_config_and_prefixed_output():
    out = io.StringIO()
    run_local_workers(
        script(
            """
            import json, os
            config = json.loads(os.environ["TF_CONFIG"])
            print("index", config["task"]["index"], "of", len(config["cluster"]["worker"]))
            print("second line")
            """
        ),
        2,
        output=out,
        timeout=60,
    )
    lines = out.getvalue().splitlines()
    assert "[worker 0] index 0 of 2" in lines
    assert "[worker 1] index 1 of 2" in lines
    assert lines.count("[worker 0] second line") == 1
    assert all(line.startswith(("[worker 0] ", "[worker 1] ")) for line in lines)


def test_a_failing_worker_stops_the_others_and_is_reported():
    out = io.StringIO()
    started = time.monotonic()
    with pytest.raises(WorkersFailedError) as caught:
        run_local_workers(
            script(
                """
                import json, os, sys, time
                index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
                if index == 1:
                    time.sleep(0.5)
                    print("worker one failed: bad shard", file=sys.stderr)
                    sys.exit(3)
                time.sleep(300)
                """
            ),
            2,
            output=out,
            timeout=120,
            grace_period=5,
        )
    error = caught.value
    assert (error.worker, error.returncode) == (1, 3)
    assert "worker one failed: bad shard" in str(error)
    assert error.tail == ["worker one failed: bad shard"]
    # Worker 0 would sleep 300 s: it was stopped, not waited for.
    assert time.monotonic() - started < 120


def test_a_worker_ignoring_sigterm_is_killed_after_the_grace_period(tmp_path):
    pid_file = tmp_path / "pid"
    with pytest.raises(WorkersFailedError, match="did not finish within 3 s"):
        run_local_workers(
            script(
                f"""
                import os, signal, time
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
                open({str(pid_file)!r}, "w").write(str(os.getpid()))
                time.sleep(300)
                """
            ),
            1,
            output=io.StringIO(),
            timeout=3,
            grace_period=1,
        )
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_environment_is_passed_through():
    out = io.StringIO()
    run_local_workers(
        script('import os; print(os.environ["MLM_TEST_VALUE"], os.environ["PYTHONUNBUFFERED"])'),
        1,
        env={"MLM_TEST_VALUE": "42", "PATH": "/usr/bin:/bin"},
        output=out,
        timeout=60,
    )
    assert out.getvalue() == "[worker 0] 42 1\n"


def test_zero_workers_is_refused():
    with pytest.raises(ValueError, match="at least 1"):
        run_local_workers(script("pass"), 0)


def test_sigterm_is_forwarded_and_the_workers_get_time_to_save(tmp_path):
    """SIGTERM to the launcher (this process) reaches every worker, which "save" for a second
    and exit 143; the launcher waits for them, raises TrainingInterrupted (exit status 143) and
    puts the previous SIGTERM handler back."""
    import signal
    import threading

    from mlm.training.preemption import TrainingInterrupted

    def send_when_both_are_up():
        deadline = time.monotonic() + 120
        while len(list(tmp_path.glob("up-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    sender = threading.Thread(target=send_when_both_are_up, daemon=True)
    sender.start()
    with pytest.raises(TrainingInterrupted) as caught:
        run_local_workers(
            script(
                f"""
                import json, os, pathlib, signal, sys, time
                index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
                folder = pathlib.Path({str(tmp_path)!r})

                def save_and_exit(signum, _frame):
                    time.sleep(1.0)  # longer than the poll interval: the launcher must wait
                    (folder / f"saved-{{index}}").write_text(str(signum))
                    sys.exit(128 + signum)

                signal.signal(signal.SIGTERM, save_and_exit)
                (folder / f"up-{{index}}").write_text("")
                time.sleep(300)
                """
            ),
            2,
            output=io.StringIO(),
            timeout=200,
            grace_period=0.5,
        )
    sender.join(timeout=10)
    assert caught.value.code == 143 and caught.value.signum == signal.SIGTERM
    assert [(tmp_path / f"saved-{i}").read_text() for i in (0, 1)] == ["15", "15"]
    assert signal.getsignal(signal.SIGTERM) is previous
