"""The gcs_emulator fixture and its process helpers (tests/gcs_emulator.py)."""

from __future__ import annotations

import os
import sys
import urllib.request

import pytest

from tests.gcs_emulator import start_service


def test_fixture_serves_the_storage_api_and_sets_the_environment(gcs_emulator):
    assert os.environ["STORAGE_EMULATOR_HOST"] == gcs_emulator.endpoint
    name = gcs_emulator.create_bucket("fixture-bucket")
    with urllib.request.urlopen(f"{gcs_emulator.endpoint}/storage/v1/b/{name}", timeout=5) as r:
        assert r.status == 200
    assert gcs_emulator.create_bucket() != gcs_emulator.create_bucket()  # fresh unique names


def test_each_test_starts_with_an_empty_emulator(gcs_emulator):
    assert [b.name for b in gcs_emulator.client().list_buckets()] == []


def test_start_service_reports_a_process_that_exits(tmp_path):
    argv = [sys.executable, "-c", "import sys; print('flag provided but not defined'); sys.exit(3)"]
    with pytest.raises(RuntimeError, match=r"exit code 3\): flag provided but not defined"):
        start_service(argv, "http://127.0.0.1:9/", tmp_path / "log.txt")
