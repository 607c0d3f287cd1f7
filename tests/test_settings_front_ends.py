"""A pretrain setting is declared once, in `mlm.config`, and every front end follows from it.

The test adds a setting to a copy of the sources (one line in `PretrainConfig`) and finds it,
with its default, help and checks, in `mlm pretrain --help`, in a `--config` file, in the compiled
pipeline YAML (a parameter of the pipeline and of the pretrain component, wired from one to the
other) and in the argv of a cluster job's workers, reached through the compiled component's own
function. Nothing else in the copy is edited.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
ANCHOR = '    seed: int = setting(0, "seed of weight initialisation, data order and masking")\n'
NEW_SETTING = (
    '    label_smoothing: float = setting(0.0, "label smoothing of the masked-LM loss", '
    "at_least=0, below=1)\n"
)

# Runs in the copy: the compiled pretrain component's function with launcher "trainjob", the
# job's creation replaced by a capture of what the workers would run.
RUN_COMPONENT = """
import json, sys
from kfp.dsl import Artifact, Dataset, Metrics, Model, TaskConfig
from mlm.launch import kubernetes
from mlm_components.pretrain import pretrain

captured = {}
def create(kind, name, namespace, image, workers, gpus, args, **options):
    captured.update(kind=kind, workers=workers, args=list(args))
kubernetes.launch_pretraining_job = create
model = sys.argv[1]
pretrain.python_func(
    shards=Dataset(name="shards", uri="gs://b/shards"),
    tokenizer=Artifact(name="tokenizer", uri="gs://b/tokenizer"),
    model=Model(name="model", uri=model),
    metrics=Metrics(name="metrics", uri=model + "-metrics"),
    task_config=TaskConfig(),
    launcher="trainjob", namespace="team-a", workers=2, run_id="run-1", label_smoothing=0.25,
)
print(json.dumps(captured))
"""


@pytest.fixture(scope="module")
def copy_with_a_new_setting(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sources")
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO / "src" / "mlm", root / "mlm", ignore=ignore)
    for name in ("components", "pipelines"):
        shutil.copytree(REPO / name, root / name, ignore=ignore)
    config = root / "mlm" / "config" / "__init__.py"
    source = config.read_text()
    assert source.count(ANCHOR) == 1 and "label_smoothing" not in source
    config.write_text(source.replace(ANCHOR, ANCHOR + NEW_SETTING))
    return root


def run(root: Path, *argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [sys.executable, *argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_a_new_pretrain_setting_reaches_every_front_end(copy_with_a_new_setting, tmp_path):
    root = copy_with_a_new_setting

    # The command line: a flag with its help and default.
    result = run(root, "-m", "mlm.cli", "pretrain", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    help_text = " ".join(result.stdout.split())
    assert "--label-smoothing LABEL_SMOOTHING label smoothing of the masked-LM loss" in help_text
    assert "(default: 0.0)" in help_text.rsplit("--label-smoothing", 1)[1].split("--", 1)[0]

    # A --config file: the key is read, and a bad value is refused in one line naming it.
    settings = {"shard_dir": "s", "tokenizer_dir": "t", "output_dir": "o", "label_smoothing": 0.1}
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(settings))
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**settings, "label_smoothing": 2}))
    script = textwrap.dedent("""
        from mlm.config import PretrainLaunchConfig, from_argv, to_argv
        from mlm.errors import UserInputError
        config = from_argv(PretrainLaunchConfig, ["--config", "run.yaml"])
        print(config.label_smoothing, to_argv(config.pretrain_config()))
        try:
            from_argv(PretrainLaunchConfig, ["--config", "bad.yaml"])
        except UserInputError as error:
            print(error)
    """)
    result = run(root, "-c", script, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    read, refused = result.stdout.splitlines()
    assert read.startswith("0.1 ") and "'--label-smoothing', '0.1'" in read
    assert refused == "--config bad.yaml: label_smoothing=2.0: must be less than 1"

    # The compiled pipeline: a parameter of the pipeline and of the component, wired together.
    result = run(root, "-m", "mlm.cli", "pipeline", "compile", "--output", "p.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    spec = next(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))
    parameter = spec["root"]["inputDefinitions"]["parameters"]["label_smoothing"]
    assert parameter == {
        "defaultValue": 0.0,
        "description": "label smoothing of the masked-LM loss",
        "isOptional": True,
        "parameterType": "NUMBER_DOUBLE",
    }
    component = spec["components"]["comp-pretrain"]["inputDefinitions"]["parameters"]
    assert component["label_smoothing"] == parameter
    steps = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    assert steps["pretrain"]["inputs"]["parameters"]["label_smoothing"] == {
        "componentInputParameter": "pipelinechannel--label_smoothing"
    }
    command = spec["deploymentSpec"]["executors"]["exec-pretrain"]["container"]["command"]
    assert "    label_smoothing: float = 0.0,\n" in command[-1]

    # The workers' argv of a cluster job, from the component's function.
    model = tmp_path / "model"
    model.mkdir()
    (model / "metrics.json").write_text('{"final_loss": 3.0}')
    result = run(root, "-c", RUN_COMPONENT, str(model), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    job = json.loads(result.stdout.splitlines()[-1])
    assert (job["kind"], job["workers"]) == ("trainjob", 2)
    args = job["args"]
    assert args[args.index("--label-smoothing") + 1] == "0.25"
    assert args[args.index("--shards") + 1] == "gs://b/shards"
