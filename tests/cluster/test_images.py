"""The Dockerfiles: lint-clean, buildable from the Docker context .dockerignore leaves.

No Docker engine runs on the test machines, so the images are not built here. Instead: hadolint
lints both files; every COPY source must exist and survive .dockerignore (Docker's matching rules,
re-implemented below); and the build stage's step, `pip wheel` of the package, runs on a copy of
exactly that context.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

from tests.cluster.manifest_policy import REPO

HADOLINT = Path(sys.executable).with_name("hadolint")
DOCKERFILES = ["images/cpu.Dockerfile", "images/gpu.Dockerfile"]


def dockerignore_rules(text: str) -> list[tuple[re.Pattern, bool]]:
    """(regex, is_exception) per .dockerignore line, in order (the last match decides)."""
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((re.compile(regex + "$"), exception))
    return rules


def ignored(path: str, rules) -> bool:
    """Whether Docker leaves `path` (relative, '/'-separated) out of the build context.

    A pattern that matches a parent directory matches everything under it, as in Docker.
    """
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for regex, exception in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            excluded = not exception
    return excluded


def build_context(rules) -> list[str]:
    """Every file of the working tree that Docker would send as the build context."""
    files = []
    for root, dirs, names in os.walk(REPO):
        rel_root = os.path.relpath(root, REPO)
        rel_root = "" if rel_root == "." else rel_root + "/"
        # Skip trees no exception could bring back (cheap: .venv, .git).
        dirs[:] = [d for d in dirs if d not in {".venv", ".git"}]
        files += [rel_root + name for name in names if not ignored(rel_root + name, rules)]
    return sorted(files)


@pytest.fixture(scope="module")
def rules():
    return dockerignore_rules((REPO / ".dockerignore").read_text())


def test_dockerignore_matcher_follows_docker_rules():
    rules = dockerignore_rules("*\n!src/\n**/__pycache__\n!keep/**/x.txt\nruns\n")
    assert ignored("Makefile", rules) and ignored(".venv/bin/python", rules)
    assert not ignored("src/mlm/cli.py", rules)
    assert ignored("src/mlm/__pycache__/cli.cpython-311.pyc", rules)
    assert not ignored("keep/a/b/x.txt", rules) and ignored("keep/a/y.txt", rules)


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint_passes(dockerfile):
    result = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "style", str(REPO / dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    result = subprocess.run([str(HADOLINT), str(bad)], capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "DL3007" in result.stdout and "DL3013" in result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_is_multi_stage_pinned_non_root_and_copies_only_context_files(dockerfile, rules):
    text = (REPO / dockerfile).read_text()
    instructions = [
        line.strip()
        for line in re.sub(r"\\\n", " ", text).splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    bases = [line.split()[1] for line in instructions if line.startswith("FROM ")]
    assert len(bases) == 2, "a build stage and a runtime stage"
    for base in bases:
        assert re.fullmatch(r"[\w./-]+:[\w.-]+(@sha256:[0-9a-f]{64})?", base) and not base.endswith(
            ":latest"
        )
    users = [line.split()[1] for line in instructions if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert not re.search(r"(?i)(password|secret|token|api_key)\s*=", text)
    context = set(build_context(rules))
    for line in instructions:
        if not line.startswith("COPY ") or "--from=" in line:
            continue
        for source in line.split()[1:-1]:
            path = REPO / source
            assert path.exists(), f"{dockerfile}: COPY {source} does not exist"
            wanted = [
                str(p.relative_to(REPO)) for p in ([path] if path.is_file() else path.rglob("*.py"))
            ]
            assert wanted and all(w in context for w in wanted), (
                f"{source} is excluded by .dockerignore"
            )


def test_gpu_image_installs_the_cuda_build_of_the_pinned_tensorflow():
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    tensorflow = next(pin for pin in pins if pin.startswith("tensorflow=="))
    version = tensorflow.split("==")[1]
    assert f'"tensorflow[and-cuda]=={version}"' in (REPO / "images/gpu.Dockerfile").read_text()


def test_context_is_small_and_leaves_out_local_state(rules):
    context = build_context(rules)
    for path in context:
        assert not path.startswith((".venv/", ".git/", "runs/", "tests/")), path
        assert "__pycache__" not in path and ".egg-info" not in path, path
    assert {
        "pyproject.toml",
        "README.md",
        "src/mlm/cli.py",
        "src/mlm/launch/kubernetes.py",
        "components/pretrain.py",
        "pipelines/mlm_pipeline.py",
    } <= set(context)
    assert len(context) < 300


def test_build_stage_makes_the_wheel_from_the_context_alone(tmp_path, rules):
    """The build stage's `pip wheel --no-deps .`, on a copy of exactly the Docker context."""
    context = tmp_path / "context"
    for path in build_context(rules):
        target = context / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / path, target)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(tmp_path / "wheels"), str(context)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (wheel,) = (tmp_path / "wheels").glob("mlm-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "mlm/cli.py" in names and "mlm/launch/kubernetes.py" in names
    # The KFP components and pipelines ship in the wheel: `mlm pipeline compile` in the image.
    assert {"components/__init__.py", "components/pretrain.py", "pipelines/compile.py"} <= set(
        names
    )
    assert not [n for n in names if "__pycache__" in n]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "mlm = mlm.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
