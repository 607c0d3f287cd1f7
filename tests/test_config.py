"""One source of truth for settings: `mlm.config` against the CLI, the steps, KFP and `--config`.

The step chain at the end really runs every step through `mlm <step> --config FILE.yaml`, with
flags overriding the files, on a tiny corpus and model.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlm import config as settings
from mlm.cli import STEPS, build_parser, main
from mlm.config import (
    EvaluateConfig,
    ExportConfig,
    FinetuneConfig,
    MergeShardsConfig,
    PretrainConfig,
    PretrainLaunchConfig,
    ShardConfig,
    TokenizeConfig,
    from_argv,
    to_argv,
)
from mlm.errors import UserInputError
from mlm_components.tasks import FINETUNE_NAMES, SHARD_NAMES, TOKENIZE_NAMES
from tests.training.conftest import TINY_MODEL

REQUIRED = {
    TokenizeConfig: {"output_dir": "tok"},
    ShardConfig: {"tokenizer_dir": "tok", "output_dir": "shards"},
    PretrainConfig: {"shard_dir": "shards", "tokenizer_dir": "tok", "output_dir": "out"},
    PretrainLaunchConfig: {"shard_dir": "shards", "tokenizer_dir": "tok", "output_dir": "out"},
    EvaluateConfig: {"model_dir": "m", "shard_dir": "s", "tokenizer_dir": "t", "output_dir": "o"},
    ExportConfig: {"model_dir": "m", "tokenizer_dir": "t", "output_dir": "o"},
    FinetuneConfig: {"encoder_dir": "e", "data": "d.csv", "output_dir": "o"},
    MergeShardsConfig: {"parts": "p1", "output_dir": "shards"},
}


def required_argv(config_class) -> list[str]:
    fields = {f.name: f for f in config_class.fields()}
    return [part for name, v in REQUIRED[config_class].items() for part in (fields[name].flag, v)]


def subparser(command: str):
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices[command]


# --- the command line ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", list(STEPS))
def test_cli_flags_are_the_settings_with_their_defaults_and_help(command):
    config_class = STEPS[command][0]
    parser = subparser(command)
    flags = {a.dest: a for a in parser._actions if a.dest not in ("help", "_config_file")}
    assert set(flags) == {f.name for f in config_class.fields()}
    for action in flags.values():
        assert action.help and len(action.help) > 10, action.dest
    # No flag given: the config is the class's defaults.
    parsed = settings.from_args(config_class, parser.parse_args(required_argv(config_class)))
    assert parsed == config_class.create(**REQUIRED[config_class])
    for field in config_class.fields():
        if not field.required:
            assert field.value_in(parsed) == field.default, field.name


@pytest.mark.parametrize("command", list(STEPS))
def test_step_functions_take_their_defaults_from_the_config(command):
    """The Python API has no defaults of its own (they could drift): inputs and **settings."""
    runner = STEPS[command][1]
    module = runner.split(":")[0] if command != "pretrain" else "mlm.steps.pretrain"
    step = getattr(__import__(module, fromlist=[command]), command.replace("-", "_"))
    parameters = inspect.signature(step).parameters.values()
    defaults = {p.name for p in parameters if p.default is not inspect.Parameter.empty}
    assert defaults <= {"evaluation_metrics"}  # export's in-memory metrics, not a setting
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def test_flag_names_agree_across_steps():
    """A setting name means one flag everywhere; flags carry no underscores."""
    flags: dict[str, set[str]] = {}
    for config_class, _runner, _help in STEPS.values():
        for field in config_class.fields():
            flags.setdefault(field.name, set()).add(field.flag)
            assert "_" not in field.flag, field.flag
    assert {name: f for name, f in flags.items() if len(f) > 1} == {}


def test_old_flag_spellings_still_work():
    pretrain = from_argv(
        PretrainConfig, [*required_argv(PretrainConfig), "--pushgateway", "http://pg:9091"]
    )
    assert pretrain.pushgateway_url == "http://pg:9091"
    evaluate = from_argv(EvaluateConfig, [*required_argv(EvaluateConfig), "--num-batches", "3"])
    assert evaluate.eval_batches == 3


def test_the_cli_starts_without_tensorflow():
    code = (
        "import sys, mlm.cli\n"
        "mlm.cli.build_parser()\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'numpy', 'kfp', 'yaml') "
        "if m in sys.modules))\n"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert output.returncode == 0, output.stderr
    assert "tensorflow" not in output.stdout and "keras" not in output.stdout


# --- config <-> argv ----------------------------------------------------------------------------


def test_pretrain_config_round_trips_through_argv():
    """Every kind of value: groups, dicts, floats, switches on and off, None over a default."""
    config = PretrainConfig.create(
        shard_dir="gs://b/shards", tokenizer_dir="/tok", output_dir="out dir",
        variant="small", model_overrides={"num_layers": 2, "hidden_act": "gelu"},
        tie_word_embeddings=False, mask_ratio=0.2, random_token_ratio=0.05,
        whole_word_masking=True, max_predictions_per_seq=20, batch_size=64, steps=500,
        learning_rate=2e-4, warmup_ratio=0.0, schedule="constant", optimizer="lamb",
        weight_decay=0.0, gradient_clipping=None, gradient_accumulation_steps=4,
        precision="mixed_bfloat16", jit_compile=True, checkpoint_every_steps=None,
        checkpoint_every_minutes=2.5, keep_checkpoints=1, log_every_steps=7,
        validation_batches=0, pushgateway_url="http://pg:9091", run_id="run-1", seed=3,
        quiet=True,
    )  # fmt: skip
    argv = to_argv(config)
    assert from_argv(PretrainConfig, argv) == config
    assert argv[argv.index("--gradient-clipping") + 1] == "0"  # None where the default is 1.0
    assert "--no-tie-word-embeddings" in argv  # on by default (the default recipe's)
    # Defaults stay defaults: only what differs travels.
    paths = REQUIRED[PretrainConfig]
    assert to_argv(PretrainConfig.create(**paths)) == required_argv(PretrainConfig)
    # A value that the recipe would replace travels, even where it is a class default, and so
    # does another recipe: the worker gets the same settings.
    for recipe in ("fast", "seed"):
        for learning_rate in (PretrainConfig.learning_rate, 2e-3):
            given = PretrainConfig.create(**paths, recipe=recipe, learning_rate=learning_rate)
            assert given.learning_rate == learning_rate
            assert from_argv(PretrainConfig, to_argv(given)) == given
    # A switch that is on by default travels as its --no- form.
    finetune = FinetuneConfig.create(**REQUIRED[FinetuneConfig], baseline=False)
    assert "--no-baseline" in to_argv(finetune)
    assert from_argv(FinetuneConfig, to_argv(finetune)) == finetune
    # A list of JSON objects (the job's tolerations) travels as one JSON argument.
    launch = PretrainLaunchConfig.create(
        **paths, launcher="tfjob", worker_node_selector={"pool": "gpu"},
        worker_tolerations=[{"key": "dedicated", "operator": "Exists"}],
    )  # fmt: skip
    argv = to_argv(launch)
    assert (
        argv[argv.index("--worker-tolerations") + 1]
        == '[{"key": "dedicated", "operator": "Exists"}]'
    )
    assert from_argv(PretrainLaunchConfig, argv) == launch


@pytest.mark.parametrize("config_class", list(REQUIRED))
def test_every_config_round_trips_with_its_defaults(config_class):
    config = config_class.create(**REQUIRED[config_class])
    assert from_argv(config_class, to_argv(config)) == config
    assert config_class.from_dict(config.to_dict()) == config


# --- KFP ----------------------------------------------------------------------------------------

# The components whose parameters are generated from a settings class, and the settings KFP
# names differently.
KFP_NAMES = {"tokenize": TOKENIZE_NAMES, "shard": SHARD_NAMES, "finetune": FINETUNE_NAMES}
KFP_CONFIGS = {
    "tokenize": TokenizeConfig,
    "shard": ShardConfig,
    "pretrain": PretrainLaunchConfig,
    "evaluate": EvaluateConfig,
    "finetune": FinetuneConfig,
}


@pytest.mark.parametrize("step", list(KFP_CONFIGS))
def test_component_parameters_are_the_config_settings(step):
    """Each optional setting is a component parameter with the setting's type and default (some
    under an older name: `KFP_NAMES`); the function KFP reads has exactly those."""
    module = __import__(f"mlm_components.{step}", fromlist=[step])
    component = getattr(module, step)
    fields = {f.name: f for f in KFP_CONFIGS[step].fields()}
    by_setting = {p.setting: p for p in module.PARAMETERS}
    for name, field in fields.items():
        if field.required or name not in by_setting:
            continue
        parameter = by_setting[name]
        assert parameter.name == KFP_NAMES.get(step, {}).get(name, name)
        assert parameter.default == field.kfp_default and parameter.kind is field.kind
    # Only inputs the component takes as artifacts (or computes) are not parameters.
    left_out = {n for n, f in fields.items() if not f.required and n not in by_setting}
    assert left_out <= {"corpus", "previous_model"}, left_out
    signature = inspect.signature(component.python_func).parameters
    assert list(signature) == [*module.INPUTS, *(p.name for p in module.PARAMETERS)]
    for parameter in module.PARAMETERS:
        assert signature[parameter.name].default == parameter.default
        assert signature[parameter.name].annotation is parameter.kind


def test_pipeline_defaults_are_the_component_defaults():
    """Every pipeline parameter that feeds a component has that component parameter's default."""
    from google.protobuf import json_format

    from mlm_pipelines.mlm_pipeline import mlm_pretraining_pipeline

    spec = json_format.MessageToDict(mlm_pretraining_pipeline.pipeline_spec)
    pipeline_defaults = {
        name: value.get("defaultValue")
        for name, value in spec["root"]["inputDefinitions"]["parameters"].items()
    }
    checked = set()
    # The steps run inside the exit handler's DAG, whose inputs are `pipelinechannel--<name>`.
    dags = [spec["root"]["dag"]] + [
        component["dag"] for component in spec["components"].values() if "dag" in component
    ]
    for task in (task for dag in dags for task in dag["tasks"].values()):
        component = spec["components"][task["componentRef"]["name"]]
        if "dag" in component:
            continue
        component_params = component["inputDefinitions"].get("parameters", {})
        for name, source in task["inputs"].get("parameters", {}).items():
            pipeline_param = source.get("componentInputParameter")
            if pipeline_param is not None:
                pipeline_param = pipeline_param.removeprefix("pipelinechannel--")
            if pipeline_param not in pipeline_defaults or name not in component_params:
                # A constant, a task option (the pod's GPU count), or a task's output handed
                # into a loop's DAG (the fingerprint, a partition number).
                continue
            checked.add(pipeline_param)
            if "defaultValue" not in component_params[name]:
                assert name in ("corpus_uri", "labels_uri")  # a required input of the step
                continue
            assert pipeline_defaults[pipeline_param] == component_params[name]["defaultValue"], (
                pipeline_param,
                name,
            )
    # Only the pretrain pod's own GPU request is not a component parameter.
    assert set(pipeline_defaults) - checked == {"pretrain_pod_gpus"}


# --- bad values ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["shard", "--tokenizer", "t", "--output", "o", "--num-shards", "0"],
         "num_shards=0: must be at least 1"),
        (["shard", "--tokenizer", "t", "--output", "o", "--layout", "pages"],
         "layout='pages': use one of lines, documents"),
        (["tokenize", "--vocab-size", "100"], "missing required setting(s): output_dir (--output)"),
        (["finetune", "--encoder", "e", "--data", "d", "--output", "o", "--pooling", "max"],
         "pooling='max': use one of cls, pooled, mean"),
        (["evaluate", "--model", "m", "--shards", "s", "--tokenizer", "t", "--output", "o",
          "--batch-size", "0"], "batch_size=0: must be at least 1"),
        (["pretrain", "--shards", "s", "--tokenizer", "t", "--output", "o",
          "--random-token-ratio", "0.6", "--unchanged-ratio", "0.6"],
         "random_token_ratio=0.6 + unchanged_ratio=0.6: their sum must be at most 1"),
        (["pretrain", "--shards", "s", "--tokenizer", "t", "--output", "o", "--workers", "0"],
         "workers=0: must be at least 1"),
        (["pretrain", "--shards", "s", "--tokenizer", "t", "--output", "o",
          "--worker-tolerations", '["dedicated"]'],
         "worker_tolerations=['dedicated']: expected a list of JSON objects, e.g. "
         '[{"key": "dedicated", "operator": "Exists"}]'),
        (["pretrain", "--shards", "s", "--tokenizer", "t", "--output", "o",
          "--launcher", "slurm"], "launcher='slurm': use one of local, trainjob, tfjob"),
    ],
)  # fmt: skip
def test_bad_values_are_one_line_errors_naming_the_setting(argv, message, capsys, tmp_path):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == f"mlm {argv[0]}: error: {message}\n"


def test_bad_config_files_are_one_line_errors(tmp_path, capsys):
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("output_dir: o\nbatchsize: 3\n")
    assert main(["tokenize", "--config", str(unknown)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mlm tokenize: error: unknown setting 'batchsize' in {unknown};")
    assert err.count("\n") == 1

    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("shard_dir: s\ntokenizer_dir: t\noutput_dir: o\nmasking: {mask_ratio: lots}\n")
    assert main(["pretrain", "--config", str(wrong)]) == 2
    assert capsys.readouterr().err == (
        f"mlm pretrain: error: --config {wrong}: mask_ratio='lots': expected a number\n"
    )

    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    assert main(["export", "--config", str(listing)]) == 2
    assert "expected a mapping of settings" in capsys.readouterr().err


def test_python_api_errors_name_the_setting():
    with pytest.raises(UserInputError, match=r"^steps=0: must be at least 1$"):
        PretrainConfig.create(**REQUIRED[PretrainConfig], steps=0)
    with pytest.raises(UserInputError, match=r"^unknown setting 'step'"):
        PretrainConfig.create(**REQUIRED[PretrainConfig], step=10)
    with pytest.raises(UserInputError, match=r"^learning_rate=inf: must be a finite number$"):
        FinetuneConfig.create(**REQUIRED[FinetuneConfig], learning_rate=float("inf"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        PretrainConfig.create(**REQUIRED[PretrainConfig]).steps = 3


def test_replace_changes_settings_by_name_and_keeps_the_rest():
    base = PretrainConfig.create(
        **REQUIRED[PretrainConfig], model_overrides={"num_layers": 2}, steps=9
    )
    changed = base.replace(model_overrides={"hidden_size": 64}, mask_ratio=0.3)
    assert changed.model.model_overrides == {"hidden_size": 64}  # replaced, not merged
    assert (changed.masking.mask_ratio, changed.steps) == (0.3, 9)
    assert base.masking.mask_ratio == 0.4  # the default recipe's
    with pytest.raises(UserInputError, match=r"^mask_ratio=0.0: must be greater than 0$"):
        base.replace(mask_ratio=0)


def test_a_recipe_sets_defaults_that_explicit_settings_override(tmp_path):
    recipe = settings.recipe_settings("fast")
    plain = PretrainConfig.create(**REQUIRED[PretrainConfig], recipe="fast")
    assert plain.learning_rate == recipe["learning_rate"] != PretrainConfig.learning_rate
    assert plain.model.model_overrides == recipe["model_overrides"]
    assert plain.model.tie_word_embeddings is True
    # Flags beat the recipe; model_overrides merge key by key.
    argv = ["--shards", "s", "--tokenizer", "t", "--output", "o", "--recipe", "fast"]
    argv += ["--learning-rate", "1e-3", "--model-overrides", '{"num_layers": 2}']
    config = from_argv(PretrainConfig, argv)
    assert config.learning_rate == 1e-3 and config.schedule == recipe["schedule"]
    assert config.model.model_overrides == {**recipe["model_overrides"], "num_layers": 2}
    assert from_argv(PretrainConfig, to_argv(config)) == config
    # A config file naming the recipe works the same way; the seed recipe is the class defaults.
    path = tmp_path / "run.yaml"
    path.write_text("recipe: fast\nsteps: 7\n")
    parser = build_parser()
    args = parser.parse_args(["pretrain", "--config", str(path), *argv[:6]])
    from_file = settings.from_args(PretrainConfig, args)
    assert (from_file.learning_rate, from_file.steps) == (recipe["learning_rate"], 7)
    seed = PretrainConfig.create(**REQUIRED[PretrainConfig], recipe="seed")
    assert seed == PretrainConfig(**REQUIRED[PretrainConfig], recipe="seed")
    # Without a recipe named, the default one's settings are the defaults, and the fields say so
    # (what --help, the KFP parameters and the job argv compare with).
    assert settings.DEFAULT_RECIPE == "fast"
    assert PretrainConfig.create(**REQUIRED[PretrainConfig]) == plain
    defaults = {field.name: field.default for field in PretrainConfig.fields()}
    assert {key: defaults[key] for key in recipe} == recipe
    with pytest.raises(UserInputError, match=r"recipe='nope': unknown recipe; use one of"):
        PretrainConfig.create(**REQUIRED[PretrainConfig], recipe="nope")


def test_empty_values_mean_not_set_everywhere():
    """KFP's "" / 0 / {} and the command line's 0 are None for optional settings."""
    config = PretrainConfig.create(
        **REQUIRED[PretrainConfig], model_overrides={}, run_id="", gradient_clipping=0,
        checkpoint_every_steps=0, max_predictions_per_seq=0, recipe="seed",
    )  # fmt: skip
    assert config.model.model_overrides is None and config.run_id is None
    # Not set under the default recipe: the recipe's value.
    default = PretrainConfig.create(**REQUIRED[PretrainConfig], model_overrides={})
    assert default.model.model_overrides == settings.recipe_settings("fast")["model_overrides"]
    assert config.gradient_clipping is None and config.checkpoint_every_steps is None
    assert config.masking.max_predictions_per_seq is None
    assert TokenizeConfig.create(corpus="", output_dir="t", tokenizer="").corpus is None


def test_yaml_sections_and_flags_override_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "shard_dir": "s", "tokenizer_dir": "t", "output_dir": "o", "steps": 100,
                "learning_rate": "1e-4",  # YAML 1.1 reads this as a string: still a number
                "model": {"variant": "small", "model_overrides": {"num_layers": 4}},
                "masking": {"mask_ratio": 0.2, "whole_word_masking": True},
                "workers": 2,
            }
        )
    )  # fmt: skip
    parser = subparser("pretrain")
    args = parser.parse_args(
        ["--config", str(path), "--steps", "7", "--no-whole-word-masking", "--output", "o2"]
    )
    config = settings.from_args(PretrainLaunchConfig, args)
    assert (config.steps, config.output_dir, config.workers) == (7, "o2", 2)
    assert config.learning_rate == 1e-4
    fast = settings.recipe_settings("fast")
    assert config.model == settings.ModelConfig(
        variant="small",
        model_overrides={**fast["model_overrides"], "num_layers": 4},
        tie_word_embeddings=True,
        token_embedding_init="cooccurrence",
    )
    assert config.masking.mask_ratio == 0.2 and config.masking.whole_word_masking is False
    # A config's own dict is a valid --config file.
    dumped = tmp_path / "dumped.yaml"
    dumped.write_text(yaml.safe_dump(config.to_dict()))
    again = settings.from_args(PretrainLaunchConfig, parser.parse_args(["--config", str(dumped)]))
    assert again == config


# --- every step through --config, for real ------------------------------------------------------


def _write_yaml(path: Path, values: dict) -> str:
    path.write_text(yaml.safe_dump(values))
    return str(path)


CORPUS_WORDS = "the model reads text and learns which word fits each masked position"


def _corpus(path: Path) -> str:
    rng = random.Random(0)
    words = CORPUS_WORDS.split(" ")
    lines = [" ".join(rng.choices(words, k=rng.randint(5, 12))) + "." for _ in range(300)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _labels(path: Path) -> str:
    rows = ["text,label"]
    for i in range(12):
        rows += [f"the model reads text number {i},reading", f"which word fits position {i},words"]
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def test_every_step_runs_from_a_config_file_with_flag_overrides(tmp_path, capsys):
    corpus = _corpus(tmp_path / "corpus.txt")
    tok, shards, model = tmp_path / "tok", tmp_path / "shards", tmp_path / "model"

    config = _write_yaml(
        tmp_path / "tokenize.yaml",
        {"corpus": [corpus], "output_dir": str(tok), "vocab_size": 500, "min_frequency": 1},
    )
    assert main(["tokenize", "--config", config, "--vocab-size", "120"]) == 0
    assert json.loads(capsys.readouterr().out)["info"]["vocab_size"] <= 120

    config = _write_yaml(
        tmp_path / "shard.yaml",
        {"corpus": [corpus], "tokenizer_dir": str(tok), "output_dir": str(shards),
         "max_seq_length": 64, "num_shards": 1, "validation_fraction": 0.1},
    )  # fmt: skip
    assert main(["shard", "--config", config, "--max-seq-length", "16"]) == 0
    assert json.loads(capsys.readouterr().out)["manifest"]["seq_length"] == 16

    config = _write_yaml(
        tmp_path / "pretrain.yaml",
        {"shard_dir": str(shards), "tokenizer_dir": str(tok), "output_dir": str(model),
         "model": {"model_overrides": TINY_MODEL}, "batch_size": 4, "steps": 50,
         "validation_batches": 1, "quiet": True},
    )  # fmt: skip
    assert main(["pretrain", "--config", config, "--steps", "2", "--batch-size", "8"]) == 0
    metrics = json.loads((model / "metrics.json").read_text())
    assert (metrics["steps"], metrics["global_batch_size"]) == (2, 8)
    capsys.readouterr()

    config = _write_yaml(
        tmp_path / "evaluate.yaml",
        {"model_dir": str(model), "shard_dir": str(shards), "tokenizer_dir": str(tok),
         "output_dir": str(tmp_path / "eval"), "eval_batches": 5, "num_samples": 1},
    )  # fmt: skip
    assert main(["evaluate", "--config", config, "--eval-batches", "1"]) == 0
    capsys.readouterr()
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["num_batches"] == 1

    config = _write_yaml(
        tmp_path / "export.yaml",
        {"model_dir": str(model), "tokenizer_dir": str(tok), "output_dir": str(tmp_path / "x")},
    )
    assert main(["export", "--config", config, "--evaluation", str(tmp_path / "eval")]) == 0
    capsys.readouterr()
    facts = json.loads((tmp_path / "x" / "export.json").read_text())
    assert facts["evaluation"]["num_batches"] == 1

    config = _write_yaml(
        tmp_path / "finetune.yaml",
        {"encoder_dir": str(tmp_path / "x"), "data": _labels(tmp_path / "labels.csv"),
         "output_dir": str(tmp_path / "ft"), "max_seq_length": 16, "batch_size": 8,
         "epochs": 3, "baseline": True},
    )  # fmt: skip
    assert main(["finetune", "--config", config, "--epochs", "1", "--no-baseline"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert "pretrained_accuracy" in scores and not any(k.startswith("baseline") for k in scores)
    saved = json.loads((tmp_path / "ft" / "metrics.json").read_text())
    assert saved["settings"]["epochs"] == 1


def test_with_a_recipe_the_ui_values_left_at_their_defaults_take_the_recipe_values():
    """KFP passes every pipeline parameter; `changed_settings` keeps only those changed, so a
    recipe chosen in the UI is not hidden by the defaults of the other parameters."""
    from mlm.config import PretrainLaunchConfig, changed_settings

    # The UI shows the default recipe's values (fast) as the parameters' defaults.
    fast = settings.recipe_settings("fast")
    ui = {"variant": "tiny", "batch_size": 32, "steps": 50, "learning_rate": 2e-3,
          "model_overrides": fast["model_overrides"], "pushgateway_url": "", "seed": 0,
          "recipe": "seed"}  # fmt: skip
    changed = changed_settings(PretrainLaunchConfig, ui)
    assert changed == {"steps": 50, "recipe": "seed"}
    config = PretrainLaunchConfig.create(**REQUIRED[PretrainConfig], **changed)
    assert config.learning_rate == PretrainConfig.learning_rate != ui["learning_rate"]
    assert config.model.model_overrides is None and config.masking.mask_ratio == 0.15
    assert config.steps == 50  # changed in the UI: wins over the recipe
    # Left at their defaults, the same parameters give the default recipe.
    config = PretrainLaunchConfig.create(
        **REQUIRED[PretrainConfig],
        **changed_settings(PretrainLaunchConfig, {**ui, "recipe": "fast"}),
    )
    assert (config.learning_rate, config.model.model_overrides) == (2e-3, fast["model_overrides"])


def test_the_pipeline_offers_a_recipe_and_passes_it_to_pretrain():
    from google.protobuf import json_format

    from mlm_pipelines.mlm_pipeline import mlm_pretraining_pipeline

    spec = json_format.MessageToDict(mlm_pretraining_pipeline.pipeline_spec)
    recipe = spec["root"]["inputDefinitions"]["parameters"]["recipe"]
    assert recipe["parameterType"] == "STRING" and recipe["defaultValue"] == "fast"
    # The UI shows the values a run gets: the default recipe's, not the class defaults.
    parameters = spec["root"]["inputDefinitions"]["parameters"]
    fast = settings.recipe_settings("fast")
    assert parameters["learning_rate"]["defaultValue"] == fast["learning_rate"]
    assert parameters["mask_ratio"]["defaultValue"] == fast["mask_ratio"]
    assert parameters["model_overrides"]["defaultValue"] == fast["model_overrides"]
    assert "recipe" in spec["components"]["comp-pretrain"]["inputDefinitions"]["parameters"]


def test_kfp_numbers_are_given_back_as_written():
    """KFP passes dict and list parameters as protobuf Structs: every number a float."""
    from mlm.config import from_kfp

    passed = {"num_layers": 2.0, "initializer_range": 0.02, "nested": [{"k": 3.0}, "x"], "on": True}
    assert from_kfp(passed) == {
        "num_layers": 2, "initializer_range": 0.02, "nested": [{"k": 3}, "x"], "on": True
    }  # fmt: skip
    assert type(from_kfp(passed)["num_layers"]) is int
    assert from_kfp(passed)["on"] is True
