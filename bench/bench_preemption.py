"""What preemption costs: the start of a resume at step 100 vs 10,000, and a checkpoint's save time.

Resume: a checkpoint "at step N" is made by reading N batches from the training pipeline (no
training; the model is the freshly built one) and saving model, optimizer, step and input
position with `CheckpointKeeper`. Then `train_loop` is timed from the call until the first step
after the resume is done (restore, tracing, one step), once with the saved input position and
once without it (the fallback that skips the N consumed batches); the median of `--repeats`.
The input part alone (a new iterator positioned at N, to its first batch) is timed as well.
Model: BERT with 2 layers of width 64, global batch 8 of 64-token examples from the built-in
corpus.

Save: one `CheckpointKeeper.save` of a MaskedLanguageModel with a built AdamW (weights plus two
moment slots) of each variant, vocabulary 30,522, to local disk; the median of `--repeats`.
These times size `terminationGracePeriodSeconds` (see docs/training.md, "Resuming and failures").

Usage: python bench/bench_preemption.py [--steps 100,10000] [--variants tiny,small,base]
       [--repeats 3] [--output bench/results]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SMALL_MODEL = {"num_layers": 2, "hidden_size": 64, "num_heads": 2, "intermediate_size": 128}


def make_data(work: Path) -> dict[str, str]:
    """A tokenizer and 4 shards of 64-token examples of the built-in corpus."""
    mlm = [sys.executable, "-m", "mlm.cli"]
    tokenizer, shards = str(work / "tok"), str(work / "shards")
    for command in (
        ["tokenize", "--output", tokenizer, "--vocab-size", "2000"],
        ["shard", "--tokenizer", tokenizer, "--output", shards, "--num-shards", "4",
         "--max-seq-length", "64"],
    ):  # fmt: skip
        subprocess.run([*mlm, *command], check=True, stdout=subprocess.DEVNULL)
    return {"tokenizer": tokenizer, "shards": shards}


def build(variant: str, vocab_size: int, overrides: dict | None = None):
    """A MaskedLanguageModel with a built AdamW, a step counter and their checkpoint."""
    import keras
    import tensorflow as tf

    from mlm.encoders.bert import BERT
    from mlm.model import MaskedLanguageModel

    keras.utils.set_random_seed(0)
    encoder = BERT.from_variant(variant, vocab_size=vocab_size, **(overrides or {}))
    model = MaskedLanguageModel(encoder, vocab_size=vocab_size, mask_token_id=4)
    model.build(None)
    optimizer = keras.optimizers.AdamW(learning_rate=1e-4)
    optimizer.build(model.trainable_variables)
    step = tf.Variable(0, dtype=tf.int64)
    return model, optimizer, step, tf.train.Checkpoint(model=model, optimizer=optimizer, step=step)


def resume_seconds(
    data: dict[str, str], directory: str, steps: int, input_saved: bool
) -> tuple[float, float, float]:
    """Seconds from calling `train_loop` until step `steps + 1` is done, resuming at `steps`;
    seconds until the input alone yields its first batch after `steps`; MB of the input state."""
    import tensorflow as tf

    from mlm.data import pretraining_dataset, read_tokenizer_info
    from mlm.training.checkpoints import CheckpointKeeper
    from mlm.training.loop import LoopConfig, train_loop

    vocab = read_tokenizer_info(data["tokenizer"]).vocab_size
    strategy = tf.distribute.get_strategy()

    def make(context):
        return pretraining_dataset(data["shards"], 8, seed=0, input_context=context)

    shutil.rmtree(directory, ignore_errors=True)
    _model, _optimizer, step, checkpoint = build("tiny", vocab, SMALL_MODEL)
    keeper = CheckpointKeeper(directory, checkpoint)
    iterator = iter(make(tf.distribute.InputContext()))
    for _ in range(steps):
        next(iterator)
    keeper.track_input(iterator)
    step.assign(steps)
    keeper.save(steps)
    keeper.close()
    input_dir = Path(directory, "input")
    input_mb = sum(p.stat().st_size for p in input_dir.rglob("*") if p.is_file()) / 1e6
    if not input_saved:
        shutil.rmtree(input_dir)

    model, optimizer, step, checkpoint = build("tiny", vocab, SMALL_MODEL)
    keeper = CheckpointKeeper(directory, checkpoint)
    started = time.perf_counter()
    train_loop(
        model, optimizer, strategy, make, LoopConfig(total_steps=steps + 1),
        step_counter=step, checkpoints=keeper, log=lambda _m: None,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    keeper.close()

    # The input part alone: a new iterator positioned at `steps` and its first batch.
    keeper = CheckpointKeeper(directory, checkpoint)
    started = time.perf_counter()
    iterator = iter(make(tf.distribute.InputContext()))
    keeper.track_input(iterator)
    if not keeper.restore_input(steps):
        iterator = iter(make(tf.distribute.InputContext()).skip(steps))
    next(iterator)
    input_seconds = time.perf_counter() - started
    keeper.close()
    return seconds, input_seconds, input_mb


def save_seconds(variant: str, directory: str, repeats: int) -> tuple[int, float, float]:
    """(parameters, median seconds of a save, MB on disk) of a variant's checkpoint."""
    from mlm.training.checkpoints import CheckpointKeeper

    model, _optimizer, _step, checkpoint = build(variant, 30522)
    times = []
    for repeat in range(repeats):
        shutil.rmtree(directory, ignore_errors=True)
        keeper = CheckpointKeeper(directory, checkpoint, keep=1)
        started = time.perf_counter()
        keeper.save(repeat + 1)
        times.append(time.perf_counter() - started)
        keeper.close()
    size = sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())
    return int(model.count_params()), statistics.median(times), size / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", default="100,10000")
    parser.add_argument("--variants", default="tiny,small,base")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    lines = ["## Preemption: resume start and checkpoint save", ""]
    with tempfile.TemporaryDirectory(prefix="mlm-bench-") as workdir:
        work = Path(workdir)
        data = make_data(work)
        lines += ["| resume at step | input position saved | seconds to the first step | of which input | input state MB |",
                  "|---:|---|---:|---:|---:|"]  # fmt: skip
        resume_seconds(data, str(work / "ckpt"), 10, True)  # warm-up: imports, first tracing
        for steps in (int(s) for s in args.steps.split(",")):
            for input_saved in (True, False):
                runs = [
                    resume_seconds(data, str(work / "ckpt"), steps, input_saved)
                    for _ in range(args.repeats)
                ]
                seconds = statistics.median(r[0] for r in runs)
                input_seconds = statistics.median(r[1] for r in runs)
                saved = "yes" if input_saved else "no (skip)"
                lines.append(
                    f"| {steps:,} | {saved} | {seconds:.2f} | {input_seconds:.2f} | "
                    f"{runs[0][2]:.1f} |"
                )
                print(lines[-1], flush=True)
        lines += [
            "",
            "| variant | parameters | checkpoint MB | save seconds |",
            "|---|---:|---:|---:|",
        ]
        for variant in args.variants.split(","):
            params, seconds, size = save_seconds(variant, str(work / "save"), args.repeats)
            lines.append(f"| {variant} | {params:,} | {size:.0f} | {seconds:.2f} |")
            print(lines[-1], flush=True)
    (args.output / "preemption.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
