"""Test-wide settings: CPU only, quiet TensorFlow, Keras on the TensorFlow backend."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

pytest_plugins = ["tests.gcs_emulator", "tests.s3_emulator"]

# The components read their image from the environment; the tests check the default.
os.environ.pop("MLM_IMAGE", None)


def pytest_sessionfinish(session, exitstatus) -> None:
    """A skipped test counts as a failure: `make test` installs everything every test needs."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped and exitstatus == 0:
        reporter.write_line(
            f"{skipped} test(s) skipped: `make test` should have installed what they need",
            red=True,
        )
        session.exitstatus = 1
