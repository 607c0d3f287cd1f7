"""Fixtures of the error tests: the tiny real data of the training and pipeline tests."""

from tests.pipeline.conftest import exported, tiny_run  # noqa: F401 (fixtures)
from tests.training.conftest import training_data  # noqa: F401 (fixture)
