"""What `make test` sets up on a fresh machine: the venv's build tools and the system programs.

A fresh venv ships a setuptools too old for pyproject's `[build-system]` (license expressions need
setuptools >= 77), and the tests start Debian programs for real; `make test` must provide both.
"""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_venv_satisfies_the_build_system_requirements():
    for text in _pyproject()["build-system"]["requires"]:
        requirement = Requirement(text)
        installed = importlib.metadata.version(requirement.name)
        assert requirement.specifier.contains(installed), f"{requirement} but {installed}"


def test_venv_has_every_dev_requirement():
    for text in _pyproject()["project"]["optional-dependencies"]["dev"]:
        requirement = Requirement(text)
        installed = importlib.metadata.version(requirement.name)
        assert requirement.specifier.contains(installed, prereleases=True), (
            f"{requirement} but {installed}"
        )


def test_make_installs_every_system_program_the_tests_start():
    makefile = (REPO / "Makefile").read_text()
    pairs = re.search(r"^SYSTEM_PACKAGES := (.+)$", makefile, re.M).group(1).split()
    commands = {pair.split("=")[0] for pair in pairs}
    assert "prometheus-pushgateway" in commands
    for command in commands:
        assert shutil.which(command), f"{command} missing although `make test` installs it"


def test_system_package_script_names_the_command_when_it_cannot_install(tmp_path):
    """Not root: one line naming the apt-get command, and a failure (never a silent skip)."""
    script = REPO / "scripts" / "install-system-packages.sh"
    fake_id = tmp_path / "id"
    fake_id.write_text("#!/bin/sh\necho 1000\n")
    fake_id.chmod(0o755)
    result = subprocess.run(
        ["bash", str(script), "no-such-command-mlm=no-such-package"],
        capture_output=True,
        text=True,
        env={"PATH": f"{tmp_path}:/usr/bin:/bin"},
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "missing system packages: run 'sudo apt-get install -y no-such-package', "
        "then make test again"
    ]
    present = subprocess.run(["bash", str(script), "sh=dash"], capture_output=True, text=True)
    assert present.returncode == 0 and present.stdout == ""
