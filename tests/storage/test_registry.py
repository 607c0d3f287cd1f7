"""The model registry (`mlm.registry`) on local disk, gs:// (fake-gcs-server) and s3:// / minio://
(moto's S3 server): publish, read the newest entry back, resolve `registry:NAME`, one entry per
run. The "models" are directories holding only `metrics.json`, which is all the registry reads."""

from __future__ import annotations

import pytest

from mlm import registry, storage
from mlm.errors import UserInputError


@pytest.fixture(params=["local", "gs", "s3", "minio"])
def root(request: pytest.FixtureRequest, tmp_path) -> str:
    """A directory to work under: local, or a fresh bucket of the GCS emulator or moto."""
    if request.param == "local":
        return str(tmp_path / "root")
    emulator = request.getfixturevalue("gcs_emulator" if request.param == "gs" else "s3_emulator")
    return f"{request.param}://{emulator.create_bucket()}"


def fake_model(root: str, name: str, steps: int) -> str:
    uri = storage.join(root, "runs", name)
    storage.write_json(storage.join(uri, "metrics.json"), {"steps": steps, "tokenizer_hash": "ab"})
    return uri


def test_publish_then_resolve_the_newest_model(root):
    reg = storage.join(root, "registry")
    assert registry.latest(reg, "weekly") is None
    # Nothing published yet: a schedule's first run starts from random weights.
    assert registry.resolve_init_from("registry:weekly", reg) is None

    first = fake_model(root, "week1", 100)
    entry = registry.publish(reg, "weekly", model_uri=first, run_id="run-1", perplexity=40.5)
    assert (entry.model_uri, entry.step, entry.perplexity) == (first, 100, 40.5)
    assert entry.tokenizer_hash == "ab" and entry.time.endswith("Z")
    assert registry.latest(reg, "weekly") == entry
    assert registry.resolve_init_from("registry:weekly", reg) == first

    second = fake_model(root, "week2", 200)
    registry.publish(reg, "weekly", model_uri=second, run_id="run-2", perplexity=30.0)
    assert registry.latest(reg, "weekly").step == 200
    assert registry.resolve_init_from("registry:weekly", reg) == second
    # Every run keeps its own entry; names are independent.
    assert storage.read_json(storage.join(reg, "weekly", "runs", "run-1.json"))["step"] == 100
    assert registry.latest(reg, "other") is None
    # A plain URI is itself; nothing is no model.
    assert registry.resolve_init_from(first, None) == first
    assert registry.resolve_init_from("", reg) is None


def test_a_run_publishes_one_model(root):
    reg = storage.join(root, "registry")
    first = fake_model(root, "a", 10)
    registry.publish(reg, "weekly", model_uri=first, run_id="run-1")
    # A retried task publishing the same model again is fine.
    assert registry.publish(reg, "weekly", model_uri=first, run_id="run-1").model_uri == first
    with pytest.raises(UserInputError, match="run run-1 already published"):
        registry.publish(reg, "weekly", model_uri=fake_model(root, "b", 20), run_id="run-1")
    assert registry.latest(reg, "weekly").model_uri == first


def test_bad_input_is_a_one_line_error(tmp_path):
    reg = str(tmp_path / "registry")
    with pytest.raises(UserInputError, match=r"model name '\.\./x'"):
        registry.latest(reg, "../x")
    with pytest.raises(UserInputError, match="needs model_registry_uri"):
        registry.resolve_init_from("registry:weekly", None)
    with pytest.raises(UserInputError, match=r"has no metrics\.json"):
        registry.publish(reg, "weekly", model_uri=str(tmp_path / "nothing"), run_id="r")
