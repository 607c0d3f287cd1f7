"""`make run`: the whole pipeline on this machine through KFP's local runner, no cluster needed.

Usage: python pipelines/run_local.py [--output DIR] [--corpus URI] [--labels URI] [--param K=V ...]

It runs the same `mlm_pretraining_pipeline` that `make compile` compiles, with
`kfp.local.SubprocessRunner(use_venv=False)` (each step is a subprocess of this Python
environment), on the built-in corpus (Python standard-library docstrings) and labelled set unless
`--corpus` / `--labels` are given, with the small demo settings in `DEMO_SETTINGS` (sized for a
laptop CPU; `--param` overrides any pipeline parameter). It ends with a summary: held-out
perplexity, fine-tuned accuracy from the pre-trained encoder vs the random-init baseline, and
where the artifacts are.
"""

from __future__ import annotations

import argparse
import builtins
import glob
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# Sizes for a 2-core CPU in well under 15 minutes, large enough that pre-training helps the
# downstream classifier (see the README section for measured numbers). How it trains is left to
# the defaults a user gets: the `fast` pre-training recipe and `mlm finetune`'s procedure.
DEMO_SETTINGS: dict[str, Any] = {
    "vocab_size": 2000,
    "max_seq_length": 64,
    "num_shards": 2,
    "variant": "tiny",
    "model_overrides": {
        "hidden_size": 128,
        "num_layers": 2,
        "num_heads": 2,
        "intermediate_size": 256,
        "max_position_embeddings": 64,
    },
    "batch_size": 32,
    "steps": 3000,
    "eval_batches": 0,
    # Few-shot fine-tuning (20 labelled paragraphs per class, the other 60 held out): the regime
    # where pre-training pays off, and a large held-out set for a stable comparison.
    "finetune_validation_fraction": 0.75,
    "finetune_max_seq_length": 64,
    "baseline": True,
    "seed": 0,
}


def latest_run_dir(pipeline_root: str, pipeline_name: str) -> str:
    """The newest run directory kfp.local wrote under `pipeline_root` for `pipeline_name`."""
    runs = sorted(
        glob.glob(os.path.join(pipeline_root, f"{pipeline_name}-*")), key=os.path.getmtime
    )
    if not runs:
        raise FileNotFoundError(f"no {pipeline_name} run under {pipeline_root}")
    return runs[-1]


def run_local(
    output: str,
    corpus: str | None = None,
    labels: str | None = None,
    params: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Runs the pipeline locally and returns its summary.

    Args:
        output: Directory for the labelled demo data and the pipeline artifacts.
        corpus: Corpus URI (None: the built-in corpus).
        labels: Labelled data URI (None: the built-in labelled set, written under `output`).
        params: Pipeline parameters overriding `DEMO_SETTINGS`.

    Returns:
        The summary dict (also written to `<output>/summary.json`).
    """
    from kfp import local

    from mlm import storage
    from mlm.artifacts import EXPORT_FILE, METRICS_FILE
    from mlm.data.default_corpus import default_corpus_dir, write_default_labels
    from mlm_pipelines.mlm_pipeline import PIPELINE_NAME, TASK_ORDER, mlm_pretraining_pipeline

    output = os.path.abspath(output)
    os.makedirs(output, exist_ok=True)
    corpus = corpus or default_corpus_dir()
    labels = labels or write_default_labels(os.path.join(output, "data", "labels.csv"))
    pipeline_root = os.path.join(output, "artifacts")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=pipeline_root)

    arguments = {**DEMO_SETTINGS, **(params or {})}
    started = time.monotonic()
    # kfp.local runs a ParallelFor's iterations in threads, each swapping `builtins.print` for
    # an indenting one and back (kfp/local/logging_utils.py `indented_print`, kfp 2.17): when
    # they interleave, an indenting print stays installed after the run. Put the real one back.
    real_print = builtins.print
    try:
        mlm_pretraining_pipeline(corpus_uri=corpus, labels_uri=labels, **arguments)
    finally:
        builtins.print = real_print
    seconds = time.monotonic() - started

    run_dir = latest_run_dir(pipeline_root, PIPELINE_NAME)
    exported = json.loads(Path(run_dir, "export", "encoder", EXPORT_FILE).read_text())
    finetuned = json.loads(Path(run_dir, "finetune", "classifier", METRICS_FILE).read_text())
    summary = {
        "seconds": round(seconds, 1),
        "corpus": corpus,
        "labels": labels,
        "settings": arguments,
        "perplexity": exported["evaluation"].get("perplexity"),
        "masked_accuracy": exported["evaluation"].get("accuracy"),
        "finetune": finetuned["metrics"],
        "artifacts": {task: os.path.join(run_dir, task) for task in TASK_ORDER},
    }
    storage.write_json(os.path.join(output, "summary.json"), summary)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """The human-readable end-of-run summary."""
    finetune = summary["finetune"]
    pretrained = finetune["pretrained"]
    lines = [
        "",
        f"mlm local pipeline finished in {summary['seconds'] / 60:.1f} min",
        f"  held-out masked-LM perplexity: {summary['perplexity']:.2f} "
        f"(masked-token accuracy {summary['masked_accuracy']:.3f})",
        f"  fine-tuned, pre-trained encoder: accuracy {pretrained['accuracy']:.3f}, "
        f"macro-F1 {pretrained.get('macro_f1', pretrained.get('entity_f1', 0.0)):.3f}",
    ]
    if "baseline" in finetune:
        baseline = finetune["baseline"]
        lines.append(
            f"  fine-tuned, random-init baseline: accuracy {baseline['accuracy']:.3f}, "
            f"macro-F1 {baseline.get('macro_f1', baseline.get('entity_f1', 0.0)):.3f}"
        )
    lines.append("  artifacts:")
    lines += [f"    {task:<12} {path}" for task, path in summary["artifacts"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="runs/local", help="output directory")
    parser.add_argument("--corpus", default=None, help="corpus file/dir/glob or gs:// / s3:// URI")
    parser.add_argument("--labels", default=None, help="labelled CSV/TSV/JSONL (text,label)")
    parser.add_argument(
        "--param", action="append", default=[], metavar="KEY=VALUE", help="pipeline parameter"
    )
    args = parser.parse_args(argv)
    from mlm.errors import UserInputError
    from mlm.kfp_client import parse_params

    try:
        summary = run_local(args.output, args.corpus, args.labels, parse_params(args.param))
    except UserInputError as error:
        print(f"make run: error: {error}", file=sys.stderr)
        return 2
    print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
