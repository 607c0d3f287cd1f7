"""Step 6, fine-tune: train a classifier on an exported encoder and score it on held-out data.

Sequence classification reads a labelled CSV, TSV (header with `text` and `label` columns) or
JSONL file (one `{"text": ..., "label": ...}` object per line). Token classification (NER, tagging)
reads CoNLL/IOB files: one token per line with its tag in the last column, blank lines between
sentences (readers and splits: `mlm.data.labelled`). Without `validation_data` the rows are
split deterministically (stratified by label for sequence tasks). Training uses AdamW with linear
warm-up and decay (`mlm.optimization`; with `layer_decay` below 1 the encoder's blocks train at
decaying fractions of the head's rate, `LayerwiseAdamW`) and early stopping on the validation
loss. With `test_data` that file is scored after training, else the held-out data. The scores
are computed with numpy (`mlm.metrics`): accuracy, macro-F1 and the
confusion matrix; entity-level precision/recall/F1 for NER.

With `baseline=True` the same architecture is also trained from random initialisation on the same
data with the same budget, so the value of pre-training shows in one report.

Output directory: `classifier.keras`, `tokenizer/`, `labels.json`, `report.md` and `metrics.json`
(written last).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from typing import Any

import numpy as np

from mlm import storage
from mlm.artifacts import (
    CLASSIFIER_FILE,
    ENCODER_FILE,
    LABELS_FILE,
    METRICS_FILE,
    REPORT_FILE,
    TOKENIZER_DIR,
    check_replaceable,
    copy_tree,
    find_file,
    load_keras,
    local_copy,
    output_directory,
)
from mlm.config import FinetuneConfig
from mlm.errors import UserInputError
from mlm.metrics import classification_metrics, entity_metrics
from mlm.progress import keras_progress
from mlm.steps.finetune_data import encoded_data

IGNORE_INDEX = -100  # label of word pieces after the first one of a word (not scored)


# --- models -------------------------------------------------------------------------------------


# Scoring (the held-out data each epoch, the test data once) runs in batches this many times the
# training batch: without gradients or optimizer state a batch takes a fraction of a training
# batch's memory, and on CPU the larger matrix products cut the fine-tuning time of a 200-sentence
# CoNLL-2003 run by 12%. The scores do not depend on it (up to float rounding).
SCORING_BATCH_FACTOR = 8


def build_classifier(encoder: Any, task_config: Any, max_seq_length: int) -> Any:
    """A Keras functional model: `{input_ids, attention_mask}` [B, max_seq_length] → encoder →
    the task's head (`mlm.heads.create_nlp_head`) → logits."""
    import keras

    from mlm.heads import create_nlp_head

    inputs = {
        name: keras.Input(shape=(max_seq_length,), dtype="int32", name=name)
        for name in ("input_ids", "attention_mask")
    }
    head = create_nlp_head(task_config, input_dim=encoder.hidden_size)
    set_encoder_trainable(encoder, task_config, True)
    return keras.Model(inputs, head(encoder(inputs)), name=f"{task_config.name}_classifier")


def set_encoder_trainable(encoder: Any, task_config: Any, trainable: bool) -> None:
    """Freezes or unfreezes the encoder; the pooler stays frozen when the head does not use it."""
    encoder.trainable = trainable
    pooler = getattr(encoder, "pooler", None)
    if pooler is not None and (
        task_config.task_type.is_token_level or task_config.pooling != "pooled"
    ):
        pooler.trainable = False  # unused by this head: no gradient, no weight decay


def layerwise_learning_rate_multipliers(
    encoder: Any, variables: list[Any], layer_decay: float
) -> dict[str, float]:
    """Learning-rate factors by variable path for layer-wise learning-rate decay.

    The head keeps the full rate; the encoder's top block gets `layer_decay`, each block below
    one more factor of it, and the embeddings `layer_decay ** (num_layers + 1)` (Clark et al.,
    2020). Low layers of a pre-trained encoder change least, so fine-tuning keeps what
    pre-training learned. Encoder variables outside the blocks and embeddings (the pooler) count
    as the top block. Returns {} when `layer_decay` is 1 (one rate for all).
    """
    if layer_decay == 1.0:
        return {}
    num_layers = int(getattr(encoder, "num_layers", 0))
    prefix = f"{encoder.name}/"
    multipliers = {}
    for variable in variables:
        path = variable.path
        if not path.startswith(prefix):
            continue  # the head
        part = path[len(prefix) :].split("/", 1)[0]
        if part.startswith("transformer_layer_"):
            depth = int(part.rsplit("_", 1)[1]) + 1
        elif part.endswith("embedding") or part == "embeddings_norm":
            depth = 0
        else:
            depth = num_layers
        multipliers[path] = float(layer_decay ** (num_layers + 1 - depth))
    return multipliers


def _train(
    model: Any,
    train: tuple[dict, np.ndarray, np.ndarray | None],
    validation: tuple[dict, np.ndarray, np.ndarray | None],
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    warmup_ratio: float,
    weight_decay: float,
    patience: int,
    seed: int,
    learning_rate_multipliers: dict[str, float],
) -> dict[str, list[float]]:
    import keras

    from mlm.optimization import learning_rate_schedule_builder, optimizer_builder

    total_steps = epochs * math.ceil(len(train[1]) / batch_size)
    schedule = learning_rate_schedule_builder(
        {
            "type": "polynomial_decay",
            "learning_rate": learning_rate,
            "decay_steps": total_steps,
            "warmup_steps": int(warmup_ratio * total_steps),
            "power": 1.0,
            "end_learning_rate": 0.0,
        }
    )
    optimizer = optimizer_builder(
        {
            "type": "adamw",
            "weight_decay": weight_decay,
            "gradient_clipping_by_norm": 1.0,
            "learning_rate_multipliers": learning_rate_multipliers,
        },
        schedule,
    )
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    x, y, weights = train
    history = model.fit(
        x,
        y,
        sample_weight=weights,
        validation_data=validation if validation[2] is not None else validation[:2],
        epochs=epochs,
        batch_size=batch_size,
        validation_batch_size=SCORING_BATCH_FACTOR * batch_size,
        shuffle=True,
        callbacks=[
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=patience, restore_best_weights=True
            ),
            keras_progress(total_steps, label="finetune: step"),
        ],
        verbose=0,
    )
    return {key: [float(v) for v in values] for key, values in history.history.items()}


# --- the step -----------------------------------------------------------------------------------


@dataclasses.dataclass
class FinetuneResult:
    """What `finetune` wrote and measured.

    `metrics` maps "pretrained" (and "baseline" when trained) to the held-out scores;
    `confusion_matrix` is the pretrained model's (sequence tasks only).
    """

    output_dir: str
    task: str
    label_names: list[str]
    num_train: int
    num_validation: int
    metrics: dict[str, dict[str, Any]]
    confusion_matrix: list[list[int]] | None
    report_path: str

    def flat_metrics(self) -> dict[str, float]:
        """The scalar scores as `<model>_<metric>` (e.g. `pretrained_accuracy`)."""
        return {
            f"{model}_{key}": float(value)
            for model, scores in self.metrics.items()
            for key, value in scores.items()
            if isinstance(value, (int, float))
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def finetune(encoder_dir: str, data: str, output_dir: str, **settings: Any) -> FinetuneResult:
    """Fine-tunes a classifier on an exported encoder and scores it on held-out data.

    Args:
        encoder_dir: An `mlm export` directory (`encoder.keras` and `tokenizer/`), local or gs://.
        data: Labelled file: CSV/TSV/JSONL for sequence tasks, CoNLL/IOB for token tasks.
        output_dir: Where the classifier, metrics and report go (replaced as a whole).
        **settings: `mlm.config.FinetuneConfig` settings by name, e.g. `task="ner"`,
            `validation_data=...`, `epochs=10`, `learning_rate=1e-3`, `baseline=False`.

    Returns:
        A `FinetuneResult`.
    """
    config = FinetuneConfig.create(
        encoder_dir=encoder_dir, data=data, output_dir=output_dir, **settings
    )
    return finetune_from_config(config)


def finetune_from_config(config: FinetuneConfig) -> FinetuneResult:
    """`finetune` with its settings as a `FinetuneConfig`."""
    from mlm.data.tokenizer import check_tokenizer_dir, load_tokenizer

    check_replaceable(config.output_dir, METRICS_FILE, "fine-tune")
    task_type = _task_type(config.task)
    with local_copy(config.encoder_dir) as local_encoder_dir:
        # Staged copy of a gs:// export: it must live until the tokenizer is copied out.
        encoder_path = find_file(
            local_encoder_dir, ENCODER_FILE, "an exported encoder", "run `mlm export` first"
        )
        tokenizer_dir = os.path.join(os.path.dirname(encoder_path), TOKENIZER_DIR)
        check_tokenizer_dir(tokenizer_dir)
        tokenizer = load_tokenizer(tokenizer_dir)
        encoder = load_keras(encoder_path)
        limit = getattr(encoder, "max_position_embeddings", None)
        if limit is not None and config.max_seq_length > limit:
            raise UserInputError(
                f"max_seq_length={config.max_seq_length} exceeds the encoder's "
                f"max_position_embeddings={limit}; use at most {limit}"
            )
        data = encoded_data(config, task_type, tokenizer)
        runs = _train_both_sides(config, task_type, encoder, data)
        return _write_outputs(config, task_type, tokenizer_dir, data, runs)


def _task_type(task: str) -> Any:
    from mlm.heads import NLPTaskType

    try:
        return NLPTaskType(task)
    except ValueError:
        choices = ", ".join(sorted({t.value for t in NLPTaskType} | {"ner"}))
        raise UserInputError(f"task={task!r}: unknown task; use one of {choices}") from None


def _budget(config: FinetuneConfig) -> dict[str, Any]:
    """The training settings both sides share (recorded in metrics.json and the report)."""
    return {
        "epochs": config.epochs,
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "warmup_ratio": config.warmup_ratio,
        "weight_decay": config.weight_decay,
        "patience": config.patience,
        "layer_decay": config.layer_decay,
        "head_only_epochs": config.head_only_epochs,
        "head_only_learning_rate": config.head_only_learning_rate,
        "seed": config.seed,
    }


def _train_head_only(
    config: FinetuneConfig,
    model: Any,
    encoder: Any,
    task_config: Any,
    data: dict[str, Any],
    train_budget: dict[str, Any],
) -> dict[str, list[float]]:
    """The `head_only_epochs` on the frozen encoder at their own learning rate (none: {})."""
    if not config.head_only_epochs:
        return {}
    set_encoder_trainable(encoder, task_config, False)
    history = _train(
        model,
        data["train"],
        data["validation"],
        learning_rate_multipliers={},
        **{
            **train_budget,
            "epochs": config.head_only_epochs,
            "learning_rate": config.head_only_learning_rate,
        },
    )
    set_encoder_trainable(encoder, task_config, True)
    return history


def _train_both_sides(
    config: FinetuneConfig, task_type: Any, encoder: Any, data: dict[str, Any]
) -> dict[str, Any]:
    """Trains the classifier on the pre-trained encoder and (with `baseline`) on the same
    architecture from random weights; their scores, histories and models."""
    import keras

    from mlm.heads import NLPTaskConfig

    seed, batch_size, label_names = config.seed, config.batch_size, data["label_names"]
    task_config = NLPTaskConfig(
        name=task_type.value,
        task_type=task_type,
        num_classes=len(label_names),
        dropout_rate=config.dropout_rate,
        pooling=config.pooling,
    )
    budget = _budget(config)
    starts = {"pretrained": encoder}
    if config.baseline:
        # Same architecture and config, fresh random weights.
        keras.utils.set_random_seed(seed + 1)
        starts["baseline"] = type(encoder).from_config(encoder.get_config())
    train_budget = {
        k: v
        for k, v in budget.items()
        if k not in ("layer_decay", "head_only_epochs", "head_only_learning_rate")
    }
    train, validation, test = data["train"], data["validation"], data["test"]
    scored = test if test is not None else validation
    runs: dict[str, Any] = {
        "budget": budget, "task_config": task_config, "metrics": {}, "histories": {}, "models": {}
    }  # fmt: skip
    for name, start in starts.items():
        keras.utils.set_random_seed(seed)  # same head init and batch order for both
        model = build_classifier(start, task_config, config.max_seq_length)
        head_history = _train_head_only(config, model, start, task_config, data, train_budget)
        multipliers = layerwise_learning_rate_multipliers(
            start, model.trainable_variables, config.layer_decay
        )
        history = _train(
            model, train, validation, learning_rate_multipliers=multipliers, **train_budget
        )
        if head_history:
            history = {key: head_history.get(key, []) + values for key, values in history.items()}
        score = functools.partial(
            _score,
            model,
            token_level=task_type.is_token_level,
            batch_size=batch_size,
            names=label_names,
        )
        metrics = score(scored, data["scored_tags"])
        metrics["epochs_trained"] = len(history["loss"])
        if test is not None:
            # The held-out score too, so that choices between runs (learning rate, procedure)
            # can be made on it and the test data scored only once.
            held_out = score(validation, data["dataset"].get("validation_tags"))
            for key in ("accuracy", "entity_f1"):
                if key in held_out:
                    metrics[f"validation_{key}"] = held_out[key]
        runs["metrics"][name], runs["histories"][name], runs["models"][name] = (
            metrics,
            history,
            model,
        )
    return runs


def _write_outputs(
    config: FinetuneConfig,
    task_type: Any,
    tokenizer_dir: str,
    data: dict[str, Any],
    runs: dict[str, Any],
) -> FinetuneResult:
    """The classifier, its tokenizer, labels, report and metrics.json (last), in one piece."""
    metrics, label_names = runs["metrics"], data["label_names"]
    train, validation, test = data["train"], data["validation"], data["test"]
    matrix = metrics["pretrained"].pop("confusion_matrix", None)
    for scores in metrics.values():
        scores.pop("confusion_matrix", None)
    scored_on = (
        f"{len(test[1])} test examples ({config.test_data})"
        if test is not None
        else f"the {len(validation[1])} held-out examples"
    )
    report = _report(
        task_type.value, label_names, data["dataset"], metrics, matrix, runs["budget"], scored_on
    )
    with output_directory(config.output_dir, METRICS_FILE, "fine-tune") as staging:
        runs["models"]["pretrained"].save(os.path.join(staging, CLASSIFIER_FILE))
        copy_tree(tokenizer_dir, os.path.join(staging, TOKENIZER_DIR))
        _write_json(
            os.path.join(staging, LABELS_FILE),
            {
                "task": task_type.value,
                "label_names": label_names,
                "max_seq_length": config.max_seq_length,
                "head": runs["task_config"].to_dict(),
            },
        )
        with open(os.path.join(staging, REPORT_FILE), "w", encoding="utf-8") as file:
            file.write(report)
        settings = runs["budget"] | {"max_seq_length": config.max_seq_length, "data": config.data}
        _write_json(
            os.path.join(staging, METRICS_FILE),
            {
                "task": task_type.value,
                "label_names": label_names,
                "num_train": len(train[1]),
                "num_validation": len(validation[1]),
                "metrics": metrics,
                "confusion_matrix": matrix,
                "history": runs["histories"],
                "settings": settings,
            },
        )
    return FinetuneResult(
        output_dir=config.output_dir,
        task=task_type.value,
        label_names=label_names,
        num_train=len(train[1]),
        num_validation=len(validation[1]),
        metrics=metrics,
        confusion_matrix=matrix,
        report_path=storage.join(config.output_dir, REPORT_FILE),
    )


def _score(
    model, scored, gold_tags, token_level: bool, batch_size: int, names: list[str]
) -> dict[str, Any]:
    x, y, weights = scored
    predictions = np.argmax(
        model.predict(x, batch_size=SCORING_BATCH_FACTOR * batch_size, verbose=0), axis=-1
    )
    if not token_level:
        return classification_metrics(y, predictions, len(names))
    predicted_tags = []
    for row, gold in enumerate(gold_tags):
        scored = np.flatnonzero(weights[row] > 0)
        tags = [names[i] for i in predictions[row, scored]]
        # Words cut off by max_seq_length get no prediction: count them as "O".
        predicted_tags.append(tags + ["O"] * (len(gold) - len(tags)))
    return entity_metrics(gold_tags, predicted_tags)


def _report(task, label_names, dataset, metrics, matrix, budget, scored_on) -> str:
    keys = [k for k in next(iter(metrics.values())) if isinstance(metrics["pretrained"][k], float)]
    lines = [
        f"# Fine-tuning: {task}",
        "",
        f"{len(dataset['train'][1])} training and {len(dataset['validation'][1])} held-out "
        f"examples, {len(label_names)} labels: {', '.join(label_names)}. Scored on {scored_on}.",
        "",
        "| model | " + " | ".join(keys) + " | epochs |",
        "|---|" + "---|" * (len(keys) + 1),
    ]
    for model, scores in metrics.items():
        values = " | ".join(f"{scores[k]:.4f}" for k in keys)
        lines.append(f"| {model} | {values} | {scores['epochs_trained']} |")
    lines += [
        "",
        "`pretrained` starts from the exported encoder; `baseline` is the same architecture from "
        "random initialisation, trained on the same data with the same budget.",
        "",
        "Budget: " + ", ".join(f"{k}={v}" for k, v in budget.items()),
    ]
    if matrix is not None:
        lines += ["", "## Confusion matrix (pretrained; rows: true, columns: predicted)", ""]
        lines.append("| | " + " | ".join(label_names) + " |")
        lines.append("|---|" + "---|" * len(label_names))
        for name, row in zip(label_names, matrix):
            lines.append(f"| **{name}** | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _write_json(path: str, value: Any) -> None:
    with open(path, "w", encoding="utf-8") as file:
        json.dump(value, file, indent=2)
        file.write("\n")


# --- command line -------------------------------------------------------------------------------


def run_cli(config: FinetuneConfig) -> int:
    """Runs `mlm finetune` and prints its held-out scores as JSON."""
    print(json.dumps(finetune_from_config(config).flat_metrics(), indent=2))
    return 0
