"""Step 4, evaluate: masked-LM perplexity and accuracy of a pre-trained model on held-out shards.

The metrics come from `mlm.evaluation.masked_lm_metrics` (the training step's own computation)
with a fixed mask seed and `mask_ratio` (15% unless set, whatever ratio the model trained with),
so the same model and shards always give the same numbers. The step also
writes a Markdown report with the metrics and the seed README's prediction visualisation.

Output directory: `report.md` and `metrics.json` (written last): `perplexity` (exp of the mean
cross-entropy at the masked positions), `accuracy` (masked tokens predicted exactly), `loss`,
`num_masked`, `num_batches`, `num_examples`. With a `previous_model` (the model a continual
pre-training run started from), that model is scored on the same batches with the same masks
and the metrics add `previous_perplexity`, `previous_accuracy`, `previous_loss` and
`perplexity_change` (this model's perplexity minus the previous one's: negative is better).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

from mlm import storage
from mlm.artifacts import (
    METRICS_FILE,
    MLM_MODEL_FILE,
    REPORT_FILE,
    check_replaceable,
    find_file,
    load_keras,
    local_copy,
    output_directory,
)
from mlm.config import EvaluateConfig
from mlm.errors import UserInputError


@dataclasses.dataclass
class EvaluateResult:
    """What `evaluate` measured and where it wrote it."""

    output_dir: str
    metrics: dict[str, float]
    report_path: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_pretrained_model(model_dir: str) -> Any:
    """Loads the `MaskedLanguageModel` of a pretrain output directory (or a `.keras` file)."""
    model_file = storage.join(model_dir, MLM_MODEL_FILE)
    if storage.is_remote(model_dir) and storage.exists(model_file):
        model_dir = model_file  # fetch the model alone, not the checkpoints beside it
    with local_copy(model_dir) as local:
        path = find_file(
            local, MLM_MODEL_FILE, "a pretrain output directory", "run `mlm pretrain` first"
        )
        return load_keras(path)


def _load_previous_model(uri: str, info: Any) -> Any:
    """The model to compare with: an earlier pretrain output, or the Hugging Face checkpoint a
    continual run started from (masking with this run's tokenizer's ids)."""
    from mlm.encoders.hf_checkpoint import is_hf_checkpoint, load_hf_bert_checkpoint

    if is_hf_checkpoint(uri):
        return load_hf_bert_checkpoint(
            uri,
            mask_token_id=info.mask_token_id,
            special_token_ids=tuple(info.special_token_ids),
        )
    return load_pretrained_model(uri)


def evaluate(
    model_dir: str, shard_dir: str, tokenizer_dir: str, output_dir: str, **settings: Any
) -> EvaluateResult:
    """Scores a pre-trained masked language model on a shard split.

    Args:
        model_dir: Pretrain output directory (with `mlm_model.keras`), local or object store.
        shard_dir: Shard directory written by `mlm shard` with the same tokenizer.
        tokenizer_dir: The tokenizer directory (decodes the sample predictions).
        output_dir: Where `metrics.json` and `report.md` go (replaced as a whole).
        **settings: `mlm.config.EvaluateConfig` settings by name: `split` ("validation" or
            "train"), `batch_size`, `eval_batches` (None: the whole split, the last batch may be
            smaller), `seed` (batch `i` is masked with `[seed, i]`), `num_samples` (sequences in
            the report's prediction visualisation), `previous_model` (an earlier pretrain output
            directory to compare with on the same batches).

    Returns:
        An `EvaluateResult`.
    """
    return evaluate_from_config(
        EvaluateConfig.create(
            model_dir=model_dir,
            shard_dir=shard_dir,
            tokenizer_dir=tokenizer_dir,
            output_dir=output_dir,
            **settings,
        )
    )


def evaluate_from_config(config: EvaluateConfig) -> EvaluateResult:
    """`evaluate` with its settings as an `EvaluateConfig`."""
    from mlm.data import pretraining_dataset
    from mlm.data.shards import read_manifest
    from mlm.data.tokenizer import check_tokenizer_dir, check_tokenizer_matches, load_tokenizer
    from mlm.evaluation import masked_lm_metrics, visualize_mlm_predictions

    check_replaceable(config.output_dir, METRICS_FILE, "evaluation")

    model_dir, shard_dir, tokenizer_dir = config.model_dir, config.shard_dir, config.tokenizer_dir
    split, batch_size, seed = config.split, config.batch_size, config.seed
    num_batches = config.eval_batches
    info = check_tokenizer_dir(tokenizer_dir)
    manifest = read_manifest(shard_dir, tokenizer_hash=info.content_hash)
    if split not in manifest.splits:
        raise UserInputError(
            f"shard directory {shard_dir} has no {split!r} split (it has "
            f"{sorted(manifest.splits)}); re-shard with a validation fraction or pass --split train"
        )
    examples = manifest.splits[split].examples
    available = math.ceil(examples / batch_size)
    num_batches = available if num_batches is None else min(num_batches, available)

    model = load_pretrained_model(model_dir)
    check_tokenizer_matches(info, model.vocab_size, model.mask_token_id)
    model.mask_ratio = config.mask_ratio
    dataset = pretraining_dataset(
        shard_dir,
        batch_size,
        split=split,
        shuffle=False,
        repeat=False,
        drop_remainder=False,
        tokenizer_hash=info.content_hash,
    )
    metrics = masked_lm_metrics(model, dataset, num_batches=num_batches, seed=seed)
    if config.previous_model:
        previous = _load_previous_model(config.previous_model, info)
        check_tokenizer_matches(info, previous.vocab_size, previous.mask_token_id)
        previous.mask_ratio = config.mask_ratio
        # The one evaluator, the same batches and masks: the difference is the models'.
        before = masked_lm_metrics(previous, dataset, num_batches=num_batches, seed=seed)
        metrics.update(
            {f"previous_{key}": before[key] for key in ("perplexity", "accuracy", "loss")}
        )
        metrics["perplexity_change"] = metrics["perplexity"] - before["perplexity"]
    metrics.update(
        num_batches=float(num_batches),
        num_examples=float(min(examples, num_batches * batch_size)),
    )
    samples = visualize_mlm_predictions(
        model, next(iter(dataset)), load_tokenizer(tokenizer_dir), config.num_samples, seed=seed
    )
    report = _report(model_dir, shard_dir, split, seed, metrics, samples, config.previous_model)
    with output_directory(config.output_dir, METRICS_FILE, "evaluation") as staging:
        with open(os.path.join(staging, REPORT_FILE), "w", encoding="utf-8") as file:
            file.write(report)
        with open(os.path.join(staging, METRICS_FILE), "w", encoding="utf-8") as file:
            json.dump(metrics, file, indent=2)
            file.write("\n")
    return EvaluateResult(config.output_dir, metrics, storage.join(config.output_dir, REPORT_FILE))


def _report(
    model_dir: str,
    shard_dir: str,
    split: str,
    seed: int,
    metrics: dict,
    samples: str,
    previous_model: str | None = None,
) -> str:
    comparison = []
    if previous_model:
        comparison = [
            "",
            f"Against the previous model `{previous_model}` (same batches and masks): "
            f"perplexity {metrics['previous_perplexity']:.3f} → {metrics['perplexity']:.3f} "
            f"({metrics['perplexity_change']:+.3f}), masked-token accuracy "
            f"{metrics['previous_accuracy']:.4f} → {metrics['accuracy']:.4f}.",
        ]
    return "\n".join(
        [
            "# Masked-LM evaluation",
            "",
            f"Model `{model_dir}` on the {split} split of `{shard_dir}` "
            f"({int(metrics['num_examples'])} sequences, mask seed {seed}).",
            "",
            "| metric | value |",
            "|---|---|",
            f"| perplexity | {metrics['perplexity']:.3f} |",
            f"| masked-token accuracy | {metrics['accuracy']:.4f} |",
            f"| mean cross-entropy | {metrics['loss']:.4f} |",
            f"| masked tokens | {int(metrics['num_masked'])} |",
            *comparison,
            "",
            "## Sample predictions",
            "",
            "```",
            samples,
            "```",
            "",
        ]
    )


def run_cli(config: EvaluateConfig) -> int:
    """Runs `mlm evaluate` and prints its metrics as JSON."""
    print(json.dumps(evaluate_from_config(config).metrics, indent=2))
    return 0
