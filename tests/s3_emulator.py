"""Pytest plugin: a real S3 API server (moto's server) for tests that use ``s3://`` / ``minio://``.

moto's standalone server (PyPI ``moto[server]``) runs once per test session (per xdist worker) on
a free loopback port. The function-scoped fixture ``s3_emulator`` empties it, points the standard
AWS variables at it for the test (``AWS_ENDPOINT_URL``, dummy credentials and region; inherited
by subprocesses the test starts, restored afterwards) and returns an `S3Emulator`::

    def test_upload(s3_emulator):
        bucket = s3_emulator.create_bucket("artifacts")
        mlm.storage.write_text(f"s3://{bucket}/x.txt", "hi")

``object_store`` is parametrized over the object stores the tests start ("gs" on fake-gcs-server,
"s3" and "minio" on moto) and gives a fresh bucket URI such as ``s3://test-bucket-1-1``.

`FlakyProxy` sits between a client and such a server and answers the first N requests with
HTTP 503 ``SlowDown``, to test retries against real HTTP failures.

Without moto the fixture skips, except under CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import http.client
import http.server
import os
import shutil
import sys
import tempfile
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gcs_emulator import _free_port, start_service, stop_service

# The region and credentials moto accepts; any values work, real ones are never used.
_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Variables that would send requests elsewhere or change signing; removed during a test.
_CLEARED = ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_REGION")


class S3Emulator:
    """A running moto server.

    Attributes:
        endpoint: base URL, e.g. ``http://127.0.0.1:41234`` (the value of AWS_ENDPOINT_URL).
    """

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._created = 0

    def client(self):
        """A boto3 S3 client bound to the server (path-style, dummy credentials)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=_ENVIRONMENT["AWS_DEFAULT_REGION"],
            aws_access_key_id=_ENVIRONMENT["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=_ENVIRONMENT["AWS_SECRET_ACCESS_KEY"],
            config=Config(s3={"addressing_style": "path"}),
        )

    def create_bucket(self, name: str | None = None) -> str:
        """Creates a bucket (a fresh unique name when ``name`` is None) and returns its name."""
        if name is None:
            self._created += 1
            name = f"test-bucket-{os.getpid()}-{self._created}"
        self.client().create_bucket(Bucket=name)
        return name

    def reset(self) -> None:
        """Deletes every bucket and object (moto's reset API)."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()


@pytest.fixture(scope="session")
def _s3_emulator_server() -> Iterator[S3Emulator]:
    """Starts moto's server once per session and stops it at the end."""
    log_dir = Path(tempfile.mkdtemp(prefix="moto-server-"))
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        import moto.server  # noqa: F401  (fail early, with a clear message, when moto is missing)

        argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        process = start_service(argv, f"{endpoint}/moto-api/", log_dir / "server.log")
    except (ImportError, OSError, RuntimeError) as err:
        shutil.rmtree(log_dir, ignore_errors=True)
        message = f"S3 server (moto) unavailable: {err}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield S3Emulator(endpoint)
    finally:
        stop_service(process)
        shutil.rmtree(log_dir, ignore_errors=True)


@pytest.fixture
def s3_emulator(_s3_emulator_server: S3Emulator, monkeypatch: pytest.MonkeyPatch) -> S3Emulator:
    """An empty S3 server with the standard AWS variables pointing at it during the test."""
    for name in _CLEARED:
        monkeypatch.delenv(name, raising=False)
    for name, value in _ENVIRONMENT.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", _s3_emulator_server.endpoint)
    _s3_emulator_server.reset()
    return _s3_emulator_server


@pytest.fixture(params=["gs", "s3", "minio"])
def object_store(request: pytest.FixtureRequest) -> str:
    """A fresh bucket URI on each object store the tests start: ``gs://...``, ``s3://...``, ``minio://...``."""
    if request.param == "gs":
        return f"gs://{request.getfixturevalue('gcs_emulator').create_bucket()}"
    return f"{request.param}://{request.getfixturevalue('s3_emulator').create_bucket()}"


class FlakyProxy:
    """A loopback HTTP proxy that fails the first ``failures`` requests with 503, then forwards.

    Use as a context manager; ``endpoint`` is its URL, ``failed`` how many requests it failed
    and ``forwarded`` how many it passed on to ``upstream``.
    """

    _SLOW_DOWN = (
        b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
        b"<Message>Please reduce your request rate.</Message></Error>"
    )

    def __init__(self, upstream: str, failures: int) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.remaining = failures
        self.failed = 0
        self.forwarded = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # answers `Expect: 100-continue`, which S3 clients send

            def _handle(self) -> None:
                body = self._read_body()
                with proxy._lock:
                    fail = proxy.remaining > 0
                    proxy.remaining -= fail
                    proxy.failed += fail
                    proxy.forwarded += not fail
                if fail:
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(proxy._SLOW_DOWN)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(proxy._SLOW_DOWN)
                    return
                self._forward(body)

            def _read_body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", ""):
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    self.rfile.readline()
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _forward(self, body: bytes) -> None:
                connection = http.client.HTTPConnection(
                    proxy.upstream.hostname, proxy.upstream.port, timeout=30
                )
                skip = {"connection", "transfer-encoding", "content-length"}
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                headers["Content-Length"] = str(len(body))
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                data = response.read()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in {"connection", "transfer-encoding", "content-length"}:
                        self.send_header(name, value)
                length = response.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                connection.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> FlakyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
