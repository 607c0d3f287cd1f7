"""What the generated components run in their pods: one `run_<step>` per step.

A component's function (written from the settings by `mlm_components.parameters.define`) hands its
arguments here. This module imports no KFP: in a pod, KFP's executor runs with `_KFP_RUNTIME`
set, where `kfp.dsl` has no `component` decorator, so the modules that declare the components
cannot be imported there. The artifacts arrive as KFP's artifact objects; every other argument
is a setting, under its parameter name (`*_NAMES` maps the ones KFP names differently).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Parameter names of settings whose KFP-facing names differ from the settings' (setting ->
# parameter): older pipeline names, and names that would clash with an artifact's.
TOKENIZE_NAMES = {
    "tokenizer": "pretrained_tokenizer_uri",
    "cache_dir": "cache_uri",
    "retrain": "retrain_tokenizer",
}
SHARD_NAMES = {"cache_dir": "cache_uri"}
FINETUNE_NAMES = {"validation_data": "validation_uri", "test_data": "test_uri"}


def settings_of(arguments: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """The settings (by setting name) that the arguments (by parameter name) give, with the
    numbers of dict and list values as written: KFP hands them over as protobuf Structs, whose
    numbers are all floats (`mlm.config.from_kfp`)."""
    from mlm.config import from_kfp

    setting = {parameter: name for name, parameter in names.items()}
    return {setting.get(key, key): from_kfp(value) for key, value in arguments.items()}


def run_tokenize(corpus_uri, corpus_fingerprint, tokenizer, **arguments) -> None:
    """Checks the store, runs `mlm.steps.tokenize` and records its result."""
    from mlm.errors import install_excepthook

    install_excepthook("tokenize")  # a known failure ends the step with one line, status 2

    from mlm import storage
    from mlm.config import TokenizeConfig
    from mlm.steps.tokenize import tokenize_from_config

    # The store the next steps and the training workers use: fail now if it cannot be.
    storage.check_store(tokenizer.uri)
    config = TokenizeConfig.create(
        corpus=corpus_uri,  # "" = the built-in corpus
        output_dir=tokenizer.path,
        **settings_of(arguments, TOKENIZE_NAMES),
    )
    result = tokenize_from_config(config)
    tokenizer.metadata.update({**result.to_dict(), "corpus_fingerprint": corpus_fingerprint})


def run_shard(corpus_uri, corpus_fingerprint, tokenizer, shards, **arguments) -> None:
    """Checks the store, runs `mlm.steps.shard` and records its result."""
    from mlm.errors import install_excepthook

    install_excepthook("shard")  # a known failure ends the step with one line, status 2

    from mlm import storage
    from mlm.config import ShardConfig
    from mlm.steps.shard import shard_from_config

    # The store the next steps and the training workers use: fail now if it cannot be.
    storage.check_store(shards.uri)
    config = ShardConfig.create(
        corpus=corpus_uri,  # "" = the built-in corpus
        tokenizer_dir=tokenizer.path,
        output_dir=shards.path,
        **settings_of(arguments, SHARD_NAMES),
    )
    result = shard_from_config(config)
    shards.metadata.update({**result.to_dict(), "corpus_fingerprint": corpus_fingerprint})


def run_pretrain(shards, tokenizer, model, metrics, task_config, **arguments) -> None:
    """Checks the store, runs the settings with their launcher (`mlm.launch.pretrain`) and logs
    the final metrics to the `metrics` artifact."""
    from mlm.errors import install_excepthook

    install_excepthook("pretrain")  # a known failure ends the step with one line, status 2

    import json

    from mlm import launch, storage
    from mlm.artifacts import METRICS_FILE
    from mlm.config import PretrainLaunchConfig, changed_settings

    settings = settings_of(arguments, {})
    if settings.get("recipe"):
        # KFP always passes every parameter: one still at its default was not chosen, so it
        # must not hide the recipe's value.
        settings = changed_settings(PretrainLaunchConfig, settings)
    # Before any job: a store the workers cannot use fails here, in seconds, with one line.
    storage.check_store(model.uri)
    local = settings.get("launcher", "local") == "local"
    # Remote artifact URIs outlive the pod: train there, so a retry finds the checkpoints. A
    # cluster job's pods read and write the artifacts' URIs.
    output_dir = model.uri if "://" in model.uri or not local else model.path
    config = PretrainLaunchConfig.create(
        shard_dir=shards.path if local else shards.uri,
        tokenizer_dir=tokenizer.path if local else tokenizer.uri,
        output_dir=output_dir,
        **settings,
    )
    launch.pretrain(config, env_vars=list(task_config.env or []) if task_config else [])

    result = json.loads(storage.read_text(storage.join(output_dir, METRICS_FILE)))
    for key, value in result.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            metrics.log_metric(key, value)
    model.metadata.update(
        {"framework": "keras", "variant": config.model.variant, "steps": config.steps}
    )


def run_evaluate(model, shards, tokenizer, metrics, report, **arguments) -> None:
    """Runs `mlm.steps.evaluate` and logs its metrics and report."""
    from mlm.errors import install_excepthook

    install_excepthook("evaluate")  # a known failure ends the step with one line, status 2

    import shutil
    import tempfile

    from mlm.config import EvaluateConfig
    from mlm.registry import initial_model
    from mlm.steps.evaluate import evaluate_from_config

    with tempfile.TemporaryDirectory() as workdir:
        config = EvaluateConfig.create(
            model_dir=model.path,
            shard_dir=shards.path,
            tokenizer_dir=tokenizer.path,
            output_dir=workdir,
            # The model the artifact continued from (pretrain's init_from), if any.
            previous_model=initial_model(model.path) or "",
            **settings_of(arguments, {}),
        )
        result = evaluate_from_config(config)
        shutil.copyfile(result.report_path, report.path)
    for key, value in result.metrics.items():
        metrics.log_metric(key, value)


def run_finetune(
    encoder, labels_uri, classifier, metrics, confusion_matrix, report, **arguments
) -> None:
    """Runs `mlm.steps.finetune` and logs its metrics, confusion matrix and report."""
    from mlm.errors import install_excepthook

    install_excepthook("finetune")  # a known failure ends the step with one line, status 2

    import os
    import tempfile

    from mlm import storage
    from mlm.config import FinetuneConfig
    from mlm.steps.finetune import finetune_from_config

    if not labels_uri:  # the built-in labelled set
        from mlm.data.default_corpus import write_default_labels

        labels_uri = write_default_labels(os.path.join(tempfile.mkdtemp(), "labels.csv"))
    config = FinetuneConfig.create(
        encoder_dir=encoder.path,
        data=labels_uri,
        output_dir=classifier.path,
        **settings_of(arguments, FINETUNE_NAMES),
    )
    result = finetune_from_config(config)
    for key, value in result.flat_metrics().items():
        metrics.log_metric(key, value)
    if result.confusion_matrix is not None:
        confusion_matrix.log_confusion_matrix(result.label_names, result.confusion_matrix)
    storage.write_text(report.path, storage.read_text(result.report_path))
