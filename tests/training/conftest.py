"""Fixtures of the training tests: tiny shards and tokenizer, a real Pushgateway, the CLI runner.

The Pushgateway is the real `prometheus-pushgateway` binary on a free loopback port with no
persistence file; `make test` installs it (Debian package), and without it the tests that need it
fail.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gcs_emulator import _gcs_emulator_server, gcs_emulator  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[2]

# A deliberately tiny model: the tests check mechanics (distribution, resume, reporting), not skill.
TINY_MODEL = {
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 32,
}

_TEXT = (
    "the a model reads text and learns which word fits each masked position in a sentence "
    "while training on many examples from books letters news reports stories papers notes "
    "every token gets an id from the vocabulary built by wordpiece quickly slowly"
)


def _sentences(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = _TEXT.split()
    return [
        " ".join(rng.choices(words, k=rng.randint(5, 14))).capitalize() + "." for _ in range(count)
    ]


@pytest.fixture(scope="session")
def training_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A tokenizer (vocabulary ~120) and 4+4 shards of 16-token examples, from the data steps."""
    from mlm.steps.shard import shard
    from mlm.steps.tokenize import tokenize

    root = tmp_path_factory.mktemp("training-data")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(_sentences(600, seed=7)) + "\n")
    tokenize(str(corpus), str(root / "tokenizer"), vocab_size=120, min_frequency=1)
    shard(
        str(corpus),
        str(root / "tokenizer"),
        str(root / "shards"),
        max_seq_length=16,
        num_shards=4,
        validation_fraction=0.1,
    )
    return {"tokenizer": str(root / "tokenizer"), "shards": str(root / "shards")}


@pytest.fixture(scope="session")
def many_shard_files(training_data, tmp_path_factory: pytest.TempPathFactory) -> str:
    """16 train files (about 160 16-token examples each) and 16 small validation files, written
    with `training_data`'s tokenizer: a corpus that streaming reads a few files at a time."""
    from mlm.steps.shard import shard

    root = tmp_path_factory.mktemp("many-shard-files")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(_sentences(1500, seed=11)) + "\n")
    shard(
        str(corpus),
        training_data["tokenizer"],
        str(root / "shards"),
        max_seq_length=16,
        num_shards=16,
        validation_fraction=0.05,
    )
    return str(root / "shards")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a real Prometheus Pushgateway started for this session."""
    binary = shutil.which("prometheus-pushgateway")
    if binary is None:
        pytest.fail("prometheus-pushgateway is not installed: run `make test` (it installs it)")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("pushgateway") / "pushgateway.log"
    with open(log, "wb") as log_file:
        process = subprocess.Popen(
            [binary, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the Pushgateway did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def scrape(url: str) -> dict[str, dict[str, float]]:
    """Gauge values scraped from a Pushgateway's /metrics: {metric name: {labels: value}}."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    values: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            values.setdefault(sample.name, {})[labels] = sample.value
    return values


def pretrain_argv(data: dict[str, str], output: Path | str, *extra: str) -> list[str]:
    """`python -m mlm.cli pretrain ...` for the tiny model on `data`."""
    return [
        sys.executable, "-m", "mlm.cli", "pretrain",
        "--shards", data["shards"],
        "--tokenizer", data["tokenizer"],
        "--output", str(output),
        "--model-overrides", json.dumps(TINY_MODEL),
        "--batch-size", "8",
        "--learning-rate", "3e-3",
        "--warmup-ratio", "0.25",
        "--validation-batches", "2",
        *extra,
    ]  # fmt: skip


def worker_env() -> dict[str, str]:
    """The environment for CLI subprocesses: quiet, CPU only, one thread pool per process."""
    env = dict(os.environ)
    env.update(
        TF_CPP_MIN_LOG_LEVEL="2",
        KERAS_BACKEND="tensorflow",
        CUDA_VISIBLE_DEVICES="",
        PYTHONPATH=str(REPO / "src"),
    )
    return env
