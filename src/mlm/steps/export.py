"""Step 5, export: the pre-trained encoder alone, ready for fine-tuning and serving.

Output directory:

- `encoder.keras`: the encoder (`keras.models.load_model` after `import mlm`);
- `saved_model/`: a TensorFlow SavedModel whose `serving_default` signature takes int32
  `input_ids` and `attention_mask` [batch, length] and returns `last_hidden_state`
  [batch, length, hidden] and `pooled_output` [batch, hidden] (the [CLS] position's hidden state;
  masked-LM pre-training does not train BERT's pooler, so it is not used);
- `tokenizer/`: the tokenizer the encoder was trained with;
- `README.md`: a model card (architecture, tokenizer, pre-training run, evaluation metrics);
- `export.json` (written last): the same facts as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from typing import Any

from mlm import storage
from mlm.artifacts import (
    ENCODER_FILE,
    EXPORT_FILE,
    METRICS_FILE,
    MODEL_CARD_FILE,
    SAVED_MODEL_DIR,
    TOKENIZER_DIR,
    check_replaceable,
    copy_tree,
    find_file,
    load_keras,
    local_copy,
    output_directory,
    read_step_json,
)
from mlm.config import ExportConfig

SERVING_INPUTS = ("input_ids", "attention_mask")
_ARCHITECTURE_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_layers",
    "num_heads",
    "intermediate_size",
    "hidden_act",
    "max_position_embeddings",
    "type_vocab_size",
    "normalization_type",
    "norm_first",
    "position_embedding_type",
)


@dataclasses.dataclass
class ExportResult:
    """Where `export` wrote the encoder and what it recorded about it."""

    output_dir: str
    encoder_path: str
    saved_model_path: str
    tokenizer_dir: str
    model_card_path: str
    num_parameters: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def write_saved_model(encoder: Any, path: str) -> None:
    """Writes `encoder` as a TensorFlow SavedModel with the serving signature described above."""
    import keras
    import tensorflow as tf

    archive = keras.export.ExportArchive()
    archive.track(encoder)

    def serve(input_ids: tf.Tensor, attention_mask: tf.Tensor) -> dict[str, tf.Tensor]:
        outputs = encoder(
            {"input_ids": input_ids, "attention_mask": attention_mask}, training=False
        )
        hidden = outputs["last_hidden_state"]
        return {"last_hidden_state": hidden, "pooled_output": hidden[:, 0, :]}

    # The first endpoint is also published as "serving_default" (what TF Serving calls).
    archive.add_endpoint(
        "serve",
        serve,
        input_signature=[tf.TensorSpec([None, None], tf.int32, name=n) for n in SERVING_INPUTS],
    )
    archive.write_out(path, verbose=False)


def export(
    model_dir: str,
    tokenizer_dir: str,
    output_dir: str,
    *,
    evaluation_metrics: Mapping[str, Any] | None = None,
    **settings: Any,
) -> ExportResult:
    """Exports the encoder of a pre-training run.

    Args:
        model_dir: Pretrain output directory (`encoder.keras`, `metrics.json`), local or object store.
        tokenizer_dir: The tokenizer directory the model was trained with.
        output_dir: The export directory (replaced as a whole).
        evaluation_metrics: Metrics for the model card (e.g. from `mlm evaluate`).
        **settings: `mlm.config.ExportConfig` settings by name: `evaluation_dir` (an
            `mlm evaluate` output directory to read the card's metrics from).

    Returns:
        An `ExportResult`.
    """
    config = ExportConfig.create(
        model_dir=model_dir, tokenizer_dir=tokenizer_dir, output_dir=output_dir, **settings
    )
    return export_from_config(config, evaluation_metrics)


def export_from_config(
    config: ExportConfig, evaluation_metrics: Mapping[str, Any] | None = None
) -> ExportResult:
    """`export` with its settings as an `ExportConfig`."""
    model_dir, tokenizer_dir, output_dir = config.model_dir, config.tokenizer_dir, config.output_dir
    from mlm.data.tokenizer import check_tokenizer_dir, check_tokenizer_matches

    check_replaceable(output_dir, EXPORT_FILE, "export")

    info = check_tokenizer_dir(tokenizer_dir)
    with local_copy(model_dir) as local:
        encoder = load_keras(
            find_file(
                local, ENCODER_FILE, "a pretrain output directory", "run `mlm pretrain` first"
            )
        )
        metrics_path = os.path.join(local, METRICS_FILE)
        pretrain_metrics = (
            read_step_json(metrics_path, "pretrain") if os.path.isfile(metrics_path) else {}
        )
    check_tokenizer_matches(info, encoder.vocab_size, info.mask_token_id)
    evaluation = dict(evaluation_metrics or {})
    if config.evaluation_dir:
        evaluation.update(
            read_step_json(storage.join(config.evaluation_dir, METRICS_FILE), "evaluate")
        )

    config = encoder.get_config()
    facts = {
        "source": model_dir,
        "architecture": {k: config[k] for k in _ARCHITECTURE_KEYS if k in config},
        "num_parameters": int(encoder.count_params()),
        "tokenizer": info.to_dict(),
        "pretraining": pretrain_metrics,
        "evaluation": evaluation,
        "serving_signature": {
            "inputs": {name: "int32 [batch, length]" for name in SERVING_INPUTS},
            "outputs": {
                "last_hidden_state": "float32 [batch, length, hidden_size]",
                "pooled_output": "float32 [batch, hidden_size] ([CLS] hidden state)",
            },
        },
    }
    with output_directory(output_dir, EXPORT_FILE, "export") as staging:
        encoder.save(os.path.join(staging, ENCODER_FILE))
        write_saved_model(encoder, os.path.join(staging, SAVED_MODEL_DIR))
        copy_tree(tokenizer_dir, os.path.join(staging, TOKENIZER_DIR))
        with open(os.path.join(staging, MODEL_CARD_FILE), "w", encoding="utf-8") as file:
            file.write(model_card(facts))
        with open(os.path.join(staging, EXPORT_FILE), "w", encoding="utf-8") as file:
            json.dump(facts, file, indent=2, default=str)
            file.write("\n")
    return ExportResult(
        output_dir=output_dir,
        encoder_path=storage.join(output_dir, ENCODER_FILE),
        saved_model_path=storage.join(output_dir, SAVED_MODEL_DIR),
        tokenizer_dir=storage.join(output_dir, TOKENIZER_DIR),
        model_card_path=storage.join(output_dir, MODEL_CARD_FILE),
        num_parameters=facts["num_parameters"],
    )


def _table(values: Mapping[str, Any]) -> list[str]:
    rows = ["| | |", "|---|---|"]
    for key, value in values.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        if isinstance(value, (str, int, float, bool)):
            rows.append(f"| {key} | {value} |")
    return rows if len(rows) > 2 else ["(none recorded)"]


def model_card(facts: Mapping[str, Any]) -> str:
    """The model card (Markdown) of an export."""
    tokenizer = facts["tokenizer"]
    lines = [
        "# BERT encoder pre-trained with masked language modelling",
        "",
        f"A {facts['architecture'].get('num_layers', '?')}-layer BERT-style text encoder "
        f"({facts['num_parameters']:,} parameters) pre-trained with the masked-language-model "
        f"objective by `mlm pretrain`, exported from `{facts['source']}`.",
        "",
        "## Architecture",
        "",
        *_table(facts["architecture"]),
        "",
        "## Tokenizer",
        "",
        f"WordPiece, {tokenizer['vocab_size']} tokens, "
        f"{'lowercased' if tokenizer['lowercase'] else 'cased'}, content hash "
        f"`{tokenizer['content_hash'][:16]}`; in `tokenizer/` "
        "(`transformers.AutoTokenizer.from_pretrained`).",
        "",
        "## Pre-training",
        "",
        *_table(facts["pretraining"]),
        "",
        "## Evaluation (held-out masked-LM)",
        "",
        *_table(facts["evaluation"]),
        "",
        "## Use",
        "",
        "```python",
        "import keras, mlm",
        "from transformers import AutoTokenizer",
        "",
        "mlm.register_serializables()",
        f'encoder = keras.models.load_model("{ENCODER_FILE}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{TOKENIZER_DIR}")',
        'batch = tokenizer(["a sentence"], return_tensors="np")',
        'outputs = encoder({"input_ids": batch["input_ids"], '
        '"attention_mask": batch["attention_mask"]})',
        'outputs["last_hidden_state"]  # [batch, length, hidden_size]',
        "```",
        "",
        "Serving: `saved_model/` has the `serving_default` signature "
        "(int32 `input_ids`, `attention_mask` [batch, length] → `last_hidden_state`, "
        "`pooled_output` = the [CLS] hidden state). Fine-tune with "
        "`mlm finetune --encoder <this directory> --data labels.csv --output <dir>`.",
        "",
        "## Limitations",
        "",
        "The encoder knows only the language of its pre-training corpus; its pooler layer is "
        "untrained (masked-LM pre-training does not use it).",
        "",
    ]
    return "\n".join(lines)


def run_cli(config: ExportConfig) -> int:
    """Runs `mlm export` and prints its result as JSON."""
    print(json.dumps(export_from_config(config).to_dict(), indent=2))
    return 0
