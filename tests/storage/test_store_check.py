"""`storage.check_store`: the one quick request a pipeline step makes before it relies on the
artifact store, against a real S3 API server (moto's, with its IAM authentication on, so unknown
keys are refused as SeaweedFS and MinIO refuse them)."""

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pytest

from mlm import storage
from mlm.errors import UserInputError
from tests.gcs_emulator import _free_port, start_service, stop_service

SECRET = "mlpipeline-minio-artifact"
# moto serves this many requests unauthenticated (the set-up below), then checks every
# signature against its IAM users (moto settings.INITIAL_NO_AUTH_ACTION_COUNT).
SETUP_REQUESTS = 4


@pytest.fixture(scope="module")
def store():
    """A moto server with one IAM user allowed everything in S3 and one bucket; yields
    (endpoint, bucket, access key id, secret key)."""
    log_dir = Path(tempfile.mkdtemp(prefix="moto-auth-"))
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(SETUP_REQUESTS)}
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    process = start_service(argv, f"{endpoint}/moto-api/", log_dir / "server.log", env=env)
    try:
        import boto3

        options = {
            "endpoint_url": endpoint,
            "region_name": "us-east-1",
            "aws_access_key_id": "setup",
            "aws_secret_access_key": "setup",
        }
        iam = boto3.client("iam", **options)
        iam.create_user(UserName="kubeflow")
        key = iam.create_access_key(UserName="kubeflow")["AccessKey"]
        iam.put_user_policy(
            UserName="kubeflow",
            PolicyName="s3",
            PolicyDocument='{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", '
            '"Action": "s3:*", "Resource": "*"}]}',
        )
        boto3.client("s3", **options).create_bucket(Bucket="mlpipeline")
        yield endpoint, "mlpipeline", key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        stop_service(process)
        shutil.rmtree(log_dir, ignore_errors=True)


@pytest.fixture
def step_env(monkeypatch):
    """A pipeline step's environment as the compiled pipeline sets it (no AWS_ENDPOINT_URL)."""
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata fallback
    monkeypatch.setenv(storage.STORE_SECRET_ENV, SECRET)

    def configure(endpoint, key_id=None, secret_key=None):
        monkeypatch.setenv(storage.STORE_ENDPOINT_ENV, endpoint)
        for name, value in (("AWS_ACCESS_KEY_ID", key_id), ("AWS_SECRET_ACCESS_KEY", secret_key)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)

    return configure


def one_line(error):
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_a_usable_store_passes_with_the_endpoint_the_pipeline_gave(store, step_env):
    endpoint, bucket, key_id, secret_key = store
    step_env(endpoint, key_id, secret_key)
    storage.check_store(f"minio://{bucket}/v2/artifacts/run/tokenize/tokenizer")
    storage.check_store("runs/local/path")  # a local path needs no store
    # The same endpoint serves the step's reads and writes afterwards.
    storage.write_text(f"s3://{bucket}/shared/probe.txt", "ok")
    assert storage.read_text(f"minio://{bucket}/shared/probe.txt") == "ok"


def test_unknown_keys_fail_in_one_line_naming_the_secret_and_the_endpoint(store, step_env):
    endpoint, bucket, _, _ = store
    step_env(endpoint, "AKIAUNKNOWN000000000", "wrong")
    with pytest.raises(UserInputError) as error:
        storage.check_store(f"minio://{bucket}/v2/artifacts/x")
    message = one_line(error)
    assert "refuses the credentials" in message and "InvalidAccessKeyId" in message
    assert SECRET in message and endpoint in message


def test_a_wrong_secret_key_fails_as_refused_credentials(store, step_env):
    endpoint, bucket, key_id, _ = store
    step_env(endpoint, key_id, "not-the-secret-key")
    with pytest.raises(UserInputError) as error:
        storage.check_store(f"minio://{bucket}/v2/artifacts/x")
    message = one_line(error)
    assert "refuses the credentials" in message and "SignatureDoesNotMatch" in message
    assert SECRET in message


def test_a_missing_secret_leaves_no_credentials_and_says_which_secret(store, step_env):
    endpoint, bucket, _, _ = store
    step_env(endpoint)  # the optional Secret was not there: no keys in the pod
    with pytest.raises(UserInputError) as error:
        storage.check_store(f"minio://{bucket}/v2/artifacts/x")
    message = one_line(error)
    assert f"the Secret {SECRET} is missing" in message and "--store-secret" in message


def test_a_missing_bucket_is_named(store, step_env):
    endpoint, _, key_id, secret_key = store
    step_env(endpoint, key_id, secret_key)
    with pytest.raises(UserInputError) as error:
        storage.check_store("minio://no-such-bucket/v2/artifacts/x")
    assert "no such bucket: minio://no-such-bucket" in one_line(error)


def test_an_unreachable_store_fails_within_a_minute_naming_endpoint_and_secret(step_env):
    endpoint = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    step_env(endpoint, "AKIAANY", "any")
    started = time.monotonic()
    with pytest.raises(UserInputError) as error:
        storage.check_store("minio://mlpipeline/v2/artifacts/x")
    assert time.monotonic() - started < 60  # one attempt, not the mid-run retries
    message = one_line(error)
    assert f"cannot reach the S3 endpoint {endpoint}" in message
    assert SECRET in message and "--store-endpoint" in message
