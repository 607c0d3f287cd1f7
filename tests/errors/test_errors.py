"""Bad input ends a command with one line on stderr and exit status 2, with no traceback and no
output a later step could take for finished; `--debug` shows the traceback; bugs show theirs.

The end-to-end cases run the real `mlm` command (`python -m mlm.cli`) on tiny real data made by
the real steps; the components' handler runs a real component body in its own process.
Storage errors that outlast the retries are tried in tests/storage/test_storage.py
(`test_s3_errors_that_outlast_the_retries_are_one_line`, `test_s3_unreachable_endpoint_is_one_line`)
and an unreachable or hanging Pushgateway in tests/training/test_monitoring.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mlm.artifacts import (
    ENCODER_FILE,
    METRICS_FILE,
    MLM_MODEL_FILE,
    SHARD_MANIFEST_FILE,
    TOKENIZER_INFO_FILE,
)
from mlm.cli import main
from mlm.data.shards import read_manifest, verify_files
from mlm.errors import UserInputError, report, user_message
from tests.training.conftest import REPO, pretrain_argv, worker_env

BINARY = bytes(range(256)) * 4


def run_cli(*argv: str) -> subprocess.CompletedProcess:
    """`python -m mlm.cli ARGV` as a real process."""
    return subprocess.run(
        [sys.executable, "-m", "mlm.cli", *argv],
        env=worker_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )


def assert_one_line(result: subprocess.CompletedProcess, command: str, *fragments: str) -> str:
    """Exit 2, exactly one line on stderr (`mlm COMMAND: error: ...`) holding `fragments`."""
    err = result.stderr
    assert result.returncode == 2, err
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith(f"mlm {command}: error: "), err
    for fragment in fragments:
        assert fragment in err, err
    return err


def assert_unfinished(output: Path, marker: str = METRICS_FILE) -> None:
    """Nothing a later step could take for finished: no output directory, or one without its
    marker."""
    assert not (output / marker).exists()
    assert not output.exists() or not any(output.iterdir()), sorted(os.listdir(output))


def assert_no_model(output: Path) -> None:
    """A pretrain output a later step cannot take for finished: no marker and no model (a
    failed run may leave its resumable `checkpoints/` and `tensorboard/` folders)."""
    for name in (METRICS_FILE, MLM_MODEL_FILE, ENCODER_FILE):
        assert not (output / name).exists(), name


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def copy_shards(data: dict[str, str], tmp_path: Path) -> Path:
    shards = tmp_path / "shards"
    shutil.copytree(data["shards"], shards)
    return shards


def first_train_file(shards: Path) -> Path:
    return shards / read_manifest(str(shards)).splits["train"].files[0]


# --- bad bytes -----------------------------------------------------------------------------


def test_non_utf8_labelled_data_for_finetune(exported, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_bytes(b"text,label\nfine text,pos\ncaf\xe9 au lait,neg\n")
    out = tmp_path / "classifier"
    result = run_cli(
        "finetune", "--encoder", exported.output_dir, "--data", str(labels), "--output", str(out),
        "--max-seq-length", "16",
    )  # fmt: skip
    offset = labels.read_bytes().index(b"\xe9")
    assert_one_line(result, "finetune", str(labels), f"line 3 (byte offset {offset})", "UTF-8")
    assert_unfinished(out)


def test_non_utf8_conll_names_the_line(tmp_path):
    from mlm.data.labelled import read_conll

    path = tmp_path / "train.conll"
    path.write_bytes(b"EU B-ORG\n\nM\xfcller B-PER\n")
    with pytest.raises(UserInputError, match=r"train.conll, line 3 \(byte offset 11\): not UTF-8"):
        read_conll(str(path))


# --- bad JSON ------------------------------------------------------------------------------


def test_binary_manifest_for_pretrain(training_data, tmp_path):
    shards = copy_shards(training_data, tmp_path)
    (shards / SHARD_MANIFEST_FILE).write_bytes(BINARY)
    data = {**training_data, "shards": str(shards)}
    out = tmp_path / "out"
    result = run_cli(*pretrain_argv(data, out, "--steps", "2")[3:])
    err = assert_one_line(
        result, "pretrain", f"{shards / SHARD_MANIFEST_FILE} is binary", "run `mlm shard` again"
    )
    assert err.count("mlm shard") == 2  # said once, not wrapped in a second message
    assert_unfinished(out)


def test_binary_manifest_for_evaluate(tiny_run, tmp_path, capsys):
    shards = tmp_path / "shards"
    shutil.copytree(tiny_run.shards, shards)
    (shards / SHARD_MANIFEST_FILE).write_bytes(BINARY)
    out = tmp_path / "evaluation"
    argv = ["evaluate", "--model", tiny_run.model, "--shards", str(shards)]
    status = main([*argv, "--tokenizer", tiny_run.tokenizer, "--output", str(out)])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert f"{shards / SHARD_MANIFEST_FILE} is binary" in err
    assert_unfinished(out)


@pytest.mark.parametrize(
    "content, problem",
    [(b'{"seq_length": 16,', "is not valid JSON"), (b"[1, 2]", "holds a JSON list")],
)
def test_malformed_step_json_names_the_file_and_the_step(tmp_path, content, problem):
    from mlm.data.tokenizer import read_tokenizer_info

    (tmp_path / TOKENIZER_INFO_FILE).write_bytes(content)
    with pytest.raises(UserInputError) as caught:
        read_tokenizer_info(str(tmp_path))
    message = str(caught.value)
    assert f"{tmp_path / TOKENIZER_INFO_FILE} {problem}" in message
    assert "run `mlm tokenize` again" in message and "\n" not in message


# --- truncated and corrupted shards --------------------------------------------------------


def test_truncated_shard_for_pretrain(training_data, tmp_path):
    shards = copy_shards(training_data, tmp_path)
    shard = first_train_file(shards)
    size = shard.stat().st_size
    os.truncate(shard, size - 7)
    out = tmp_path / "out"
    result = run_cli(
        *pretrain_argv({**training_data, "shards": str(shards)}, out, "--steps", "2")[3:]
    )
    assert_one_line(
        result,
        "pretrain",
        f"{shard} is {size - 7} bytes but manifest.json says {size}: the shard is truncated",
        "re-run `mlm shard`",
    )
    assert_no_model(out)


def test_truncated_shard_with_local_workers_is_still_one_line(training_data, tmp_path):
    """Each worker refuses the shard in one line (on its prefixed stdout); the launcher's stderr
    carries that line once, with status 2."""
    shards = copy_shards(training_data, tmp_path)
    shard = first_train_file(shards)
    os.truncate(shard, 100)
    out = tmp_path / "out"
    data = {**training_data, "shards": str(shards)}
    result = run_cli(*pretrain_argv(data, out, "--steps", "2", "--workers", "2")[3:])
    err = assert_one_line(result, "pretrain", f"{shard} is 100 bytes but manifest.json says")
    assert err.startswith(("mlm pretrain: error: worker 0: ", "mlm pretrain: error: worker 1: "))
    assert_no_model(out)


def test_flipped_byte_is_a_crc_mismatch_for_pretrain(training_data, tmp_path, capsys):
    shards = copy_shards(training_data, tmp_path)
    shard = first_train_file(shards)
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    out = tmp_path / "out"
    argv = pretrain_argv({**training_data, "shards": str(shards)}, out, "--steps", "2")[3:]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{shard} has CRC32C " in err and "the shard is corrupted; re-run `mlm shard`" in err
    assert_no_model(out)


def test_size_is_checked_every_time_and_the_crc_once_per_file_version(training_data, tmp_path):
    shards = copy_shards(training_data, tmp_path)
    manifest = read_manifest(str(shards))
    files = manifest.files("train")
    verify_files(manifest, files)
    shard = Path(files[0])
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0x01
    shard.write_bytes(bytes(data))  # same size, new mtime: checksummed again
    with pytest.raises(UserInputError, match="the shard is corrupted"):
        verify_files(manifest, files)
    os.truncate(shard, 10)
    with pytest.raises(UserInputError, match=r"is 10 bytes but manifest\.json says"):
        verify_files(manifest, files)


def test_old_manifest_without_checksums_loads_and_a_truncated_shard_is_named(
    training_data, tmp_path, capsys
):
    """A manifest from before sizes and checksums were recorded records nothing to compare
    with; the record framing is checked instead, so a truncated file is named before training."""
    import json

    shards = copy_shards(training_data, tmp_path)
    manifest = json.loads((shards / SHARD_MANIFEST_FILE).read_text())
    del manifest["file_info"]
    (shards / SHARD_MANIFEST_FILE).write_text(json.dumps(manifest))
    for name in manifest["splits"]["train"]["files"]:
        path = shards / name
        os.truncate(path, path.stat().st_size - 5)
    out = tmp_path / "out"
    argv = pretrain_argv({**training_data, "shards": str(shards)}, out, "--steps", "50")[3:]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    first = shards / manifest["splits"]["train"]["files"][0]
    assert f"{first} is not a complete TFRecord file: it ends inside the record" in err
    assert "`mlm shard`" in err
    assert not out.exists()  # checked before the output is created


# --- servers that are down ----------------------------------------------------------------


def test_an_unreachable_pushgateway_does_not_fail_training(training_data, tmp_path):
    """Monitoring is best effort: a run whose Pushgateway refuses connections still finishes."""
    out = tmp_path / "out"
    gateway = f"http://127.0.0.1:{_closed_port()}"
    result = run_cli(
        *pretrain_argv(training_data, out, "--steps", "2", "--pushgateway-url", gateway)[3:]
    )
    assert result.returncode == 0, result.stderr
    assert (out / METRICS_FILE).is_file() and (out / MLM_MODEL_FILE).is_file()
    assert "Traceback" not in result.stderr


# --- --debug, bugs, the mapping ------------------------------------------------------------


def test_debug_shows_the_traceback(training_data, tmp_path):
    shards = copy_shards(training_data, tmp_path)
    (shards / SHARD_MANIFEST_FILE).write_bytes(BINARY)
    out = tmp_path / "out"
    argv = pretrain_argv({**training_data, "shards": str(shards)}, out, "--steps", "2")[3:]
    result = run_cli("--debug", *argv)
    assert result.returncode == 2
    assert "Traceback (most recent call last)" in result.stderr
    assert "UnicodeDecodeError" in result.stderr  # the cause is shown with the error
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("mlm pretrain: error: ") and "is binary" in last


def test_a_bug_prints_its_traceback_and_where_to_report(monkeypatch, capsys):
    """The step is replaced by one that fails with an unexpected error (a stand-in for a bug:
    the real steps have none to trigger)."""
    import mlm.steps.tokenize

    def broken(config):
        raise KeyError("vocab")

    monkeypatch.setattr(mlm.steps.tokenize, "run_cli", broken)
    assert main(["tokenize", "--corpus", "x.txt", "--output", "tok"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "KeyError: 'vocab'" in err
    assert (
        err.strip().splitlines()[-1].startswith("mlm tokenize: unexpected KeyError: this is a bug")
    )


def test_unreachable_host_is_one_line_naming_it(capsys):
    import requests

    port = _closed_port()
    with pytest.raises(requests.ConnectionError) as caught:
        requests.get(f"http://127.0.0.1:{port}/api", timeout=5)
    assert report(caught.value, "pipeline", debug=False) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot reach http://127.0.0.1:{port}/api (" in err
    assert "Connection refused" in err


def test_data_loss_is_one_line_and_other_errors_are_bugs():
    import tensorflow as tf

    error = tf.errors.DataLossError(None, None, "truncated record at 1234\n\t [[{{node Iter}}]]")
    message = user_message(error)
    assert message is not None and "\n" not in message
    assert "(truncated record at 1234)" in message
    assert user_message(RuntimeError("boom")) is None
    bad_bytes = UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
    assert user_message(bad_bytes).startswith("input is not UTF-8 text")


# --- the components' handler ---------------------------------------------------------------


def test_component_body_reports_a_known_failure_in_one_line(tmp_path):
    """The shard component's body, run by a real interpreter as KFP's executor would run it."""
    tokenizer = tmp_path / "tokenizer"
    tokenizer.mkdir()
    (tokenizer / TOKENIZER_INFO_FILE).write_bytes(BINARY)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("some text\n")
    out = tmp_path / "shards"
    code = (
        "import sys, types\n"
        "from mlm_components.shard import shard\n"
        "art = lambda p: types.SimpleNamespace(path=p, uri=p, metadata={})\n"
        "shard.python_func(corpus_uri=sys.argv[1], corpus_fingerprint='-', "
        "tokenizer=art(sys.argv[2]), "
        "shards=art(sys.argv[3]))\n"
    )
    env = {**worker_env(), "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}"}
    result = subprocess.run(
        [sys.executable, "-c", code, str(corpus), str(tokenizer), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert_one_line(result, "shard", f"{tokenizer / TOKENIZER_INFO_FILE} is binary")
    assert_unfinished(out, SHARD_MANIFEST_FILE)


def test_a_failed_worker_is_its_one_line_or_its_log_tail(capsys):
    from mlm.launch.local import WorkersFailedError

    refused = WorkersFailedError(
        "worker 1 exited with status 2", 1, 2, ["starting", "mlm pretrain: error: bad shard"]
    )
    assert user_message(refused) == "worker 1: bad shard"
    crashed = WorkersFailedError(
        "worker 0 exited with status 1; Its last lines:\n  boom", 0, 1, ["boom"]
    )
    assert user_message(crashed) is None
    assert report(crashed, "pretrain", debug=False) == 1
    err = capsys.readouterr().err
    assert err == "mlm pretrain: error: worker 0 exited with status 1; Its last lines:\n  boom\n"
