"""Upstream's published packages, each at the versions a supported release ships, in side
environments (`make upstream-packages`, from tests/conformance/upstream-packages.txt).

Two versions of one package cannot be imported into one interpreter, so code that needs one runs
in a child interpreter with that side environment first on its path (`run_in`). The pipeline-spec
environments carry their own protobuf runtime and the `kfp` namespace package, which the project's
`kfp` would shadow, so they run isolated from the project's site-packages (`isolated=True`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
LIST = Path(__file__).with_name("upstream-packages.txt")
ROOT = Path(sys.prefix) / "upstream"


@cache
def requirements() -> dict[str, list[str]]:
    """NAME -> requirements of every side environment in the list file."""
    environments = {}
    for line in LIST.read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if fields:
            environments[fields[0]] = fields[1:]
    return environments


def side_environment(name: str) -> Path:
    """The installed side environment NAME; fails (never skips) when `make test` did not set it
    up with the listed requirements."""
    if name not in requirements():
        raise KeyError(f"{name} is not in {LIST.relative_to(REPO)}")
    path = ROOT / name
    marker = path / ".requirements"
    wanted = "\n".join(requirements()[name]) + "\n"
    if not marker.is_file() or marker.read_text() != wanted:
        raise AssertionError(
            f"side environment {path} is missing or out of date: run `make upstream-packages`"
        )
    return path


def run_in(name: str, script: str, payload: Any = None, *, isolated: bool = False) -> Any:
    """Runs `script` in a child interpreter whose path starts with side environment NAME.

    The script reads `payload` as JSON from stdin and prints one JSON value, which is returned.
    `isolated` leaves the project's site-packages out (`python -S`).
    """
    env = {**os.environ, "PYTHONPATH": str(side_environment(name))}
    command = [sys.executable, *(["-S"] if isolated else []), "-c", script]
    result = subprocess.run(
        command, input=json.dumps(payload), capture_output=True, text=True, env=env, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"side environment {name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout)
