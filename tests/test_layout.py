"""The repository's layout as a package: what the wheel ships, and one version everywhere.

`components/` and `pipelines/` stay at the top of the repository but are installed with `mlm`, as
`mlm_components` and `mlm_pipelines` (names no other distribution is likely to take), so
nothing patches `sys.path` and an installed `mlm pipeline compile` runs from any directory. The
version is defined once (`mlm.__version__`); the image tags of the Makefile and the manifests
must agree with it.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
import yaml

import mlm
import mlm_components
from mlm.launch import kubernetes

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The project's wheel (built from this checkout) installed alone into a fresh directory."""
    root = tmp_path_factory.mktemp("install")
    # A copy of the sources, so the build leaves nothing in the checkout.
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, source / name)
    for name in ("src", "components", "pipelines"):
        shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--wheel-dir", str(root / "wheels"), str(source)],
        check=True, capture_output=True, cwd=root,
    )  # fmt: skip
    (wheel,) = (root / "wheels").glob("mlm-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"mlm/cli.py", "mlm_components/__init__.py", "mlm_pipelines/compile.py"} <= names
    # The generic top-level names of the checkout's directories are not installed.
    assert not [n for n in names if n.startswith(("components/", "pipelines/"))]
    assert not [n for n in names if n.startswith("tests/")]
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
         "--target", str(root / "site"), str(wheel)],
        check=True, capture_output=True, cwd=root,
    )  # fmt: skip
    return root / "site"


def test_installed_pipeline_compile_runs_from_any_directory(installed, tmp_path):
    # Only the installed copy is importable (plus the venv's third-party packages): not the
    # checkout, and the working directory is an empty temporary one.
    env = {**os.environ, "PYTHONPATH": str(installed)}
    where = subprocess.run(
        [sys.executable, "-c", "import mlm, mlm_components, mlm_pipelines; "
         "print(mlm.__file__, mlm_components.__file__, mlm_pipelines.__file__)"],
        env=env, cwd=tmp_path, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert all(path.startswith(str(installed)) for path in where.stdout.split()), where.stdout
    result = subprocess.run(
        [sys.executable, "-m", "mlm.cli", "pipeline", "compile", "--output", "out.yaml",
         "--image", "registry.example.com/mlm:7"],
        env=env, cwd=tmp_path, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    spec = next(yaml.safe_load_all((tmp_path / "out.yaml").read_text()))
    assert spec["pipelineInfo"]["name"] == "mlm-pretraining"
    images = {e["container"]["image"] for e in spec["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example.com/mlm:7"}


def test_every_package_of_the_library_ships():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(project["tool"]["setuptools"]["packages"])
    found = {
        ".".join(path.parent.relative_to(REPO / "src").parts)
        for path in (REPO / "src").rglob("__init__.py")
    }
    assert found | {"mlm_components", "mlm_pipelines"} == listed


def test_no_module_patches_sys_path():
    sources = [*REPO.glob("src/mlm/**/*.py"), *REPO.glob("components/*.py")]
    sources += REPO.glob("pipelines/*.py")
    patched = [str(p.relative_to(REPO)) for p in sources if "sys.path" in p.read_text()]
    assert patched == []


def test_the_version_is_defined_once_and_the_image_tags_follow_it():
    version = mlm.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", version)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "mlm.__version__"}

    image = f"{mlm.IMAGE_REPOSITORY}:{version}"
    assert mlm.DEFAULT_IMAGE == mlm_components.DEFAULT_IMAGE == kubernetes.DEFAULT_IMAGE == image
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^TAG \?= (\S+)$", makefile, re.M).group(1) == version
    assert re.search(r"^REGISTRY \?= (\S+)$", makefile, re.M).group(1) + "/mlm" == (
        mlm.IMAGE_REPOSITORY
    )
    tags = {}
    for overlay in ("dev", "gke-gpu"):
        kustomization = yaml.safe_load(
            (REPO / "manifests" / "overlays" / overlay / "kustomization.yaml").read_text()
        )
        (entry,) = kustomization["images"]
        assert entry["name"] == mlm.IMAGE_REPOSITORY
        tags[overlay] = entry["newTag"]
    assert tags == {"dev": version, "gke-gpu": version + mlm.GPU_IMAGE_SUFFIX}
    runtime = (REPO / "manifests/base/runtime/tensorflow-distributed.yaml").read_text()
    assert re.findall(r"image: (\S+)", runtime) == [image]


def _imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The package modules a source file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                qualified = f"{node.module}.{alias.name}"
                found.add(qualified if qualified in modules else node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found & modules


def test_the_library_components_and_pipelines_have_no_import_cycles():
    """Imports run one way (e.g. `data.corpus` uses `data.cleaning`, never the reverse; the
    pipeline's compiler uses `mlm.config`, and `mlm.kfp_client` the compiler, never the reverse)."""
    paths = {}
    # Modules by their installed names (the directories components/ and pipelines/ install as
    # mlm_components and mlm_pipelines).
    for directory, name in ((REPO / "src" / "mlm", "mlm"), (REPO / "components", "mlm_components"),
                            (REPO / "pipelines", "mlm_pipelines")):  # fmt: skip
        for path in directory.rglob("*.py"):
            parts = (name, *path.relative_to(directory).with_suffix("").parts)
            paths[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    # `mlm` itself only re-exports lazily; every module may import it.
    graph = {
        name: _imported_modules(path, set(paths)) - {name, "mlm"} for name, path in paths.items()
    }
    # The graph sees the imports between the three trees (a renamed package would drop them).
    assert {"mlm_components.pretrain", "mlm.config"} <= graph["mlm_pipelines.mlm_pipeline"]
    cycles = []

    def visit(module: str, chain: list[str]) -> None:
        for imported in sorted(graph[module]):
            if imported in chain:
                cycles.append([*chain[chain.index(imported) :], imported])
            elif imported not in done:
                visit(imported, [*chain, imported])
        done.add(module)

    done: set[str] = set()
    for module in sorted(graph):
        visit(module, [module])
    assert cycles == []


def test_nothing_imports_the_checkout_directory_names():
    """The components and the pipeline are imported by their installed names: in a checkout the
    directories are importable as `components` and `pipelines` too, and a module imported under
    both names would exist twice."""
    found = []
    for path in (p for top in ("src", "components", "pipelines", "tests", "bench")
                 for p in (REPO / top).rglob("*.py")):  # fmt: skip
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            found += [
                f"{path.relative_to(REPO)}:{node.lineno}: {name}"
                for name in names
                if name.split(".")[0] in ("components", "pipelines")
            ]
    assert found == []


def test_artifact_file_names_are_defined_once():
    """Every artifact file name is written as a literal only in `mlm.artifacts`."""
    from mlm import artifacts

    names = {
        value
        for key, value in vars(artifacts).items()
        if key.endswith(("_FILE", "_DIR")) and isinstance(value, str)
    }
    assert {"metrics.json", "encoder.keras", "manifest.json", "mlm_tokenizer.json"} <= names
    names.discard(artifacts.TOKENIZER_DIR)  # "tokenizer" is also a word in messages and kinds
    literals = []
    for path in (REPO / "src").rglob("*.py"):
        if path.name == "artifacts.py" and path.parent.name == "mlm":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                literals.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value}")
    assert literals == []


def test_compile_options_are_arguments_not_environment_writes():
    """No module of components/ or pipelines/ writes the process environment (a setting that
    travels through os.environ to code imported later is a side channel)."""
    writes = []
    for top in ("components", "pipelines"):
        for path in (REPO / top).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                target = None
                if isinstance(node, ast.Assign | ast.AugAssign | ast.Delete):
                    targets = (
                        node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
                    )
                    target = next((t for t in targets if isinstance(t, ast.Subscript)), None)
                    target = target.value if target is not None else None
                elif (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in {"update", "setdefault", "pop", "clear", "putenv"}
                ):
                    target = node.func.value
                if target is not None and ast.unparse(target) in {"os.environ", "os"}:
                    writes.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert writes == []


# Size limits a reader can hold in their head: 600 lines a module (src/, components/, pipelines/),
# 80 lines a function (src/). Nothing is above them; an entry here would be an exception at its
# current size (it may shrink, never grow).
MODULE_LINES, FUNCTION_LINES = 600, 80
OVERSIZED_MODULES: dict[str, int] = {}
OVERSIZED_FUNCTIONS: dict[str, int] = {}


def test_no_module_or_function_grows_past_the_size_limits():
    modules, functions = {}, {}
    for top in ("src", "components", "pipelines"):
        for path in sorted((REPO / top).rglob("*.py")):
            name = str(path.relative_to(REPO))
            text = path.read_text()
            if len(text.splitlines()) > MODULE_LINES:
                modules[name] = len(text.splitlines())
            if top != "src":
                continue
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = node.end_lineno - node.lineno + 1
                    if lines > FUNCTION_LINES:
                        functions[f"{name}::{node.name}"] = lines
    grown = [
        f"{name}: {size} lines (limit {allowed.get(name, limit)})"
        for found, allowed, limit in (
            (modules, OVERSIZED_MODULES, MODULE_LINES),
            (functions, OVERSIZED_FUNCTIONS, FUNCTION_LINES),
        )
        for name, size in found.items()
        if size > allowed.get(name, limit)
    ]
    assert grown == []
    # An entry that shrank under its limit is dropped, so the list only says what is left.
    stale = sorted({*OVERSIZED_MODULES} - {*modules} | {*OVERSIZED_FUNCTIONS} - {*functions})
    assert stale == []
