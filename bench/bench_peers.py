"""MLM training throughput of mlm against Hugging Face (PyTorch) and keras-hub, side by side.

Each implementation trains BERT with the masked-LM objective on the same synthetic batches
(sequence 128, batch 32, 15% masking with 80/10/10 replacement, vocabulary 30522, AdamW with
weight decay 0.01, dropout 0.1, float32) in its own worker process:

- `mlm`: the training step of `mlm pretrain` (`mlm.training.loop.make_train_step`), which projects
  to the vocabulary only at the masked positions;
- `hf-torch`: transformers `BertForMaskedLM` on PyTorch CPU in eager mode, masked by its
  `DataCollatorForLanguageModeling` every step, `torch.optim.AdamW` (a plain training loop, what
  `Trainer` runs without its bookkeeping);
- `keras-hub`: `keras_hub.models.BertMaskedLM` (logits at up to 24 masked positions per sequence)
  trained with `fit` on a `tf.data` pipeline that masks with `keras_hub.layers.MaskedLMMaskGenerator`;
- `mlm-bf16`: the `mlm` step with `mixed_bfloat16` (what `mlm pretrain --precision mixed_bfloat16`
  runs), shown for reference: the peers run float32, and the targets compare `mlm` in float32.

The workers are built and warmed up first; then the driver asks them in turn for a few steps each
(round robin, so the machine's drift hits all alike) and reports the median tokens/s, the median of
the per-round ratios against the faster peer, and the FLOP rate as a fraction of this machine's
best float32 matmul rate, measured in the same run with TensorFlow and PyTorch.

Needs the bench virtualenv (`make bench` creates `.venv-bench` from `bench/requirements.txt`).

Usage: python bench/bench_peers.py [--configs tiny,small] [--rounds 5] [--steps 3]
       [--output bench/results]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

VOCAB = 30522
LENGTH = 128
BATCH = 32
MASK_RATE = 0.15
KERAS_HUB_MASK_LENGTH = 24  # keras-hub's preprocessor default (96 of 512), scaled to 128
SPECIAL_IDS = (0, 1, 2, 3, 4)  # [PAD] [UNK] [CLS] [SEP] [MASK]
MASK_ID = 4
WEIGHT_DECAY = 0.01
LEARNING_RATE = 1e-4
POOL = 4  # distinct batches cycled through by the peers
PIPELINE_BATCHES = 200  # batches timed through mlm's input pipeline alone


@dataclass(frozen=True)
class Config:
    layers: int
    hidden: int
    heads: int

    @property
    def intermediate(self) -> int:
        return 4 * self.hidden


CONFIGS = {"tiny": Config(4, 256, 4), "small": Config(6, 512, 8)}
IMPLEMENTATIONS = ("mlm", "hf-torch", "keras-hub", "mlm-bf16")
PEERS = ("hf-torch", "keras-hub")
TARGETS = {"tiny": 1.5, "small": 1.4}  # tokens/s of mlm over the faster peer
# Fraction of the positions at which each implementation computes vocabulary logits.
LOGIT_FRACTION = {
    "mlm": MASK_RATE,
    "mlm-bf16": MASK_RATE,
    "hf-torch": 1.0,
    "keras-hub": KERAS_HUB_MASK_LENGTH / LENGTH,
}


def training_flops_per_token(config: Config, logit_fraction: float) -> float:
    """Matmul FLOPs of one training step per token: 3x the forward pass (forward, and the two
    gradient matmuls of the backward pass).

    The forward pass counts the Q/K/V/output and feed-forward projections, the two attention
    matmuls (`QK^T` and `PV`) and the MLM head (transform and vocabulary projection) at
    `logit_fraction` of the positions. Embedding lookups, norms and softmax are not counted.
    """
    h, layers = config.hidden, config.layers
    projections = 2 * (4 * h * h + 2 * h * config.intermediate)
    attention = 2 * 2 * LENGTH * h
    head = 2 * (h * h + h * VOCAB) * logit_fraction
    return 3 * (layers * (projections + attention) + head)


# --- workers ----------------------------------------------------------------------------------


def synthetic_ids(seed: int):
    """`[POOL, BATCH, LENGTH]` int32 ids: [CLS] text [SEP], text ids drawn uniformly."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(len(SPECIAL_IDS), VOCAB, size=(POOL, BATCH, LENGTH), dtype=np.int32)
    ids[:, :, 0], ids[:, :, -1] = 2, 3
    return ids


class MlmWorker:
    """The product's training step on the product's input pipeline.

    Batches come from `mlm.data.pretraining_dataset` over shards that `mlm tokenize` and `mlm
    shard` wrote from the built-in corpus (the vocabulary stays 30522, so the model is the
    peers'). The output projection is tied to the token embedding, as in both peers
    (`mlm pretrain --tie-word-embeddings`).
    """

    def __init__(self, config: Config, workdir: Path, precision: str = "float32") -> None:
        import keras
        import tensorflow as tf

        from mlm.data import read_tokenizer_info
        from mlm.data.dataset import pretraining_dataset
        from mlm.encoders.bert import BERT
        from mlm.model import MaskedLanguageModel
        from mlm.optimization import optimizer_builder
        from mlm.training.loop import make_train_step

        keras.utils.set_random_seed(0)
        keras.config.set_dtype_policy(precision)  # what `mlm pretrain --precision` sets
        info = read_tokenizer_info(str(workdir / "tokenizer"))
        encoder = BERT(
            vocab_size=VOCAB,
            hidden_size=config.hidden,
            num_layers=config.layers,
            num_heads=config.heads,
            intermediate_size=config.intermediate,
        )
        model = MaskedLanguageModel(
            encoder, vocab_size=VOCAB, mask_ratio=MASK_RATE, mask_token_id=info.mask_token_id,
            special_token_ids=tuple(info.special_token_ids), tie_word_embeddings=True,
        )  # fmt: skip
        model.build(None)
        optimizer = optimizer_builder(
            {"type": "adamw", "weight_decay": WEIGHT_DECAY}, LEARNING_RATE
        )
        optimizer.build(model.trainable_variables)

        def batches():
            return iter(pretraining_dataset(str(workdir / "shards"), BATCH, seed=0))

        # The input pipeline alone, from a fresh iterator after a warm-up.
        iterator = batches()
        for _ in range(10):
            next(iterator)
        start = time.perf_counter()
        for _ in range(PIPELINE_BATCHES):
            next(iterator)
        self.pipeline_batches_per_second = PIPELINE_BATCHES / (time.perf_counter() - start)
        self.iterator = batches()
        self.step_fn = make_train_step(model, optimizer, tf.distribute.get_strategy())
        self.step = 0
        self.tf = tf

    def run(self, steps: int) -> float:
        tf = self.tf
        start = time.perf_counter()
        for _ in range(steps):
            sums = self.step_fn(self.iterator, tf.constant(self.step, tf.int64), tf.constant(0.0))
            self.step += 1
        sums.numpy()  # the steps run asynchronously until a result is read
        return time.perf_counter() - start


class HuggingFaceWorker:
    def __init__(self, config: Config, workdir: Path) -> None:
        import torch
        from transformers import (
            BertConfig,
            BertForMaskedLM,
            BertTokenizerFast,
            DataCollatorForLanguageModeling,
        )

        torch.manual_seed(0)
        vocab_file = workdir / "vocab.txt"
        words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        words += [f"w{i}" for i in range(VOCAB - len(words))]
        vocab_file.write_text("\n".join(words) + "\n")
        tokenizer = BertTokenizerFast(vocab_file=str(vocab_file))
        self.collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=MASK_RATE)
        bert_config = BertConfig(
            vocab_size=VOCAB,
            hidden_size=config.hidden,
            num_hidden_layers=config.layers,
            num_attention_heads=config.heads,
            intermediate_size=config.intermediate,
        )
        self.model = BertForMaskedLM(bert_config).train()
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY
        )
        self.batches = [
            [{"input_ids": row.tolist()} for row in batch] for batch in synthetic_ids(0)
        ]
        self.step = 0

    def run(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            batch = self.collator(self.batches[self.step % POOL])
            loss = self.model(**batch).loss
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
        loss.item()
        return time.perf_counter() - start


class KerasHubWorker:
    def __init__(self, config: Config) -> None:
        import keras
        import keras_hub
        import tensorflow as tf

        keras.utils.set_random_seed(0)
        backbone = keras_hub.models.BertBackbone(
            vocabulary_size=VOCAB,
            num_layers=config.layers,
            num_heads=config.heads,
            hidden_dim=config.hidden,
            intermediate_dim=config.intermediate,
            max_sequence_length=512,
        )
        self.model = keras_hub.models.BertMaskedLM(backbone, preprocessor=None)
        self.model.compile(
            optimizer=keras.optimizers.AdamW(learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY)
        )
        masker = keras_hub.layers.MaskedLMMaskGenerator(
            vocabulary_size=VOCAB,
            mask_selection_rate=MASK_RATE,
            mask_token_id=MASK_ID,
            mask_selection_length=KERAS_HUB_MASK_LENGTH,
            unselectable_token_ids=list(SPECIAL_IDS),
        )

        def preprocess(ids):
            masked = masker(ids)
            inputs = {
                "token_ids": masked["token_ids"],
                "segment_ids": tf.zeros_like(ids),
                "padding_mask": tf.ones_like(ids, dtype=tf.bool),
                "mask_positions": masked["mask_positions"],
            }
            return inputs, masked["mask_ids"], masked["mask_weights"]

        ids = synthetic_ids(0).reshape(-1, LENGTH)
        dataset = tf.data.Dataset.from_tensor_slices(ids).repeat()
        dataset = dataset.batch(BATCH, drop_remainder=True).map(preprocess).prefetch(2)
        self.dataset = dataset

    def run(self, steps: int) -> float:
        start = time.perf_counter()
        self.model.fit(self.dataset, steps_per_epoch=steps, epochs=1, verbose=0)
        return time.perf_counter() - start


def matmul_gflops(framework: str, sizes=(1024, 2048, 3072), repeats: int = 5) -> float:
    """Best float32 matmul rate (GFLOP/s) over square sizes, median of `repeats` timings each."""
    best = 0.0
    for n in sizes:
        if framework == "tensorflow":
            import tensorflow as tf

            pair = (tf.random.normal((n, n)), tf.random.normal((n, n)))
            matmul = tf.function(lambda a, b: tf.reduce_sum(tf.matmul(a, b)))

            def once(matmul=matmul, pair=pair):
                return float(matmul(*pair))
        else:
            import torch

            a, b = torch.randn(n, n), torch.randn(n, n)

            def once(a=a, b=b):
                return float(torch.mm(a, b)[0, 0])

        once()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            once()
            times.append(time.perf_counter() - start)
        best = max(best, 2 * n**3 / statistics.median(times) / 1e9)
    return best


def worker_main(name: str, config_name: str, workdir: Path) -> int:
    """Builds one implementation, warms it up, then answers `steps` lines with seconds."""
    config = CONFIGS[config_name]
    if name == "mlm":
        worker = MlmWorker(config, workdir)
    elif name == "mlm-bf16":
        worker = MlmWorker(config, workdir, precision="mixed_bfloat16")
    elif name == "hf-torch":
        worker = HuggingFaceWorker(config, workdir)
    else:
        worker = KerasHubWorker(config)
    worker.run(3)  # tracing, allocation, first-step costs
    pipeline = getattr(worker, "pipeline_batches_per_second", None)
    print(json.dumps({"ready": True, "pipeline_batches_per_second": pipeline}), flush=True)
    for line in sys.stdin:
        print(json.dumps(worker.run(int(line))), flush=True)
    return 0


# --- driver -----------------------------------------------------------------------------------


class Worker:
    """One worker process, asked for steps over its stdin."""

    def __init__(self, name: str, config: str, workdir: Path, env: dict | None = None) -> None:
        self.name = name
        command = [sys.executable, __file__, "--worker", name, "--config", config]
        command += ["--workdir", str(workdir)]
        self.log = workdir / f"worker-{name}-{config}.log"
        with self.log.open("w") as log:  # TensorFlow's and PyTorch's chatter goes here
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env={**os.environ, **(env or {})},
            )

    def wait_ready(self) -> None:
        line = self.process.stdout.readline()
        try:
            self.pipeline_batches_per_second = json.loads(line)["pipeline_batches_per_second"]
        except (ValueError, KeyError, TypeError):
            self.process.kill()
            tail = "\n".join(self.log.read_text().splitlines()[-20:])
            message = f"worker {self.name} failed (exit {self.process.wait()}):\n{tail}"
            raise SystemExit(message) from None

    def seconds(self, steps: int) -> float:
        self.process.stdin.write(f"{steps}\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"worker {self.name} died (exit {self.process.wait()})")
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


def prepare_shards(workdir: Path) -> None:
    """`mlm tokenize` + `mlm shard` of the built-in corpus into `workdir` (for the mlm worker)."""
    from mlm.steps.shard import shard
    from mlm.steps.tokenize import tokenize

    tokenize(None, str(workdir / "tokenizer"), vocab_size=VOCAB)
    shard(None, str(workdir / "tokenizer"), str(workdir / "shards"), max_seq_length=LENGTH)


def measure_config(
    config: str, args: argparse.Namespace, pipelines: dict[str, float]
) -> dict[str, list[float]]:
    """Tokens/s per round of each implementation, interleaved round robin; records the input
    pipeline's batches/s of the mlm worker in `pipelines[config]`."""
    workers = []
    for name in IMPLEMENTATIONS:  # one at a time, so that warm-ups do not overlap
        worker = Worker(name, config, args.output)
        worker.wait_ready()
        workers.append(worker)
        if name == "mlm":
            pipelines[config] = worker.pipeline_batches_per_second
    rates: dict[str, list[float]] = {w.name: [] for w in workers}
    try:
        for round_index in range(args.rounds):
            order = workers if round_index % 2 == 0 else workers[::-1]
            for worker in order:
                seconds = worker.seconds(args.steps)
                rates[worker.name].append(args.steps * BATCH * LENGTH / seconds)
            print(
                f"  {config} round {round_index + 1}/{args.rounds}: "
                + ", ".join(f"{n} {r[-1]:,.0f}" for n, r in rates.items())
                + " tokens/s",
                flush=True,
            )
    finally:
        for worker in workers:
            worker.close()
    return rates


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("mlm", "tensorflow", "keras", "keras-hub", "torch", "transformers"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def report(
    results: dict, peak: dict[str, float], pipelines: dict[str, float], args: argparse.Namespace
) -> str:
    best_matmul = max(peak.values())
    lines = [
        "# MLM training throughput: mlm vs Hugging Face (PyTorch) vs keras-hub",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} CPUs. Versions: "
        + ", ".join(f"{k} {v}" for k, v in versions().items())
        + ".",
        f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        f"Setup: sequence {LENGTH}, batch {BATCH}, vocabulary {VOCAB}, {MASK_RATE:.0%} masking "
        f"(80/10/10), AdamW (weight decay {WEIGHT_DECAY}), dropout 0.1, output projection tied "
        f"to the token embedding (all three); {args.rounds} interleaved rounds of {args.steps} "
        "steps after 3 warm-up steps; medians.",
        "Best float32 matmul (square, 1024-3072): "
        + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items())
        + f"; the limit used below is {best_matmul:.0f} GFLOP/s.",
        "",
        "`mlm-bf16` runs mixed_bfloat16 (this CPU has AVX512-BF16); the others run float32. "
        "Model FLOPs count the MLM head at the masked positions only (the same work for all); "
        "executed FLOPs count it where each implementation computes it (all positions for "
        "Hugging Face, 24 per sequence for keras-hub).",
        "",
        "| config | implementation | tokens/s | vs faster peer | model GFLOP/s (% of matmul) "
        "| executed GFLOP/s (% of matmul) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    verdicts = []
    for config, rates in results.items():
        medians = {name: statistics.median(values) for name, values in rates.items()}
        faster_peer = max(PEERS, key=lambda name: medians[name])
        for name in IMPLEMENTATIONS:
            ratio = statistics.median(
                a / b for a, b in zip(rates[name], rates[faster_peer], strict=True)
            )
            model = medians[name] * training_flops_per_token(CONFIGS[config], MASK_RATE) / 1e9
            executed = (
                medians[name] * training_flops_per_token(CONFIGS[config], LOGIT_FRACTION[name])
            ) / 1e9
            lines.append(
                f"| {config} | {name} | {medians[name]:,.0f} | {ratio:.2f}x "
                f"| {model:.0f} ({model / best_matmul:.0%}) "
                f"| {executed:.0f} ({executed / best_matmul:.0%}) |"
            )
            if name == "mlm":
                target = TARGETS[config]
                met = "met" if ratio >= target else "NOT met"
                verdicts.append(
                    f"- {config}: mlm {ratio:.3f}x {faster_peer}; target {target}x: {met}."
                )
    lines += ["", "Targets (tokens/s of mlm over the faster peer):", *verdicts, ""]
    lines.append(
        "Input pipeline (`mlm.data.pretraining_dataset` over shards of the built-in corpus, "
        f"batch {BATCH} x {LENGTH}, read alone) against what the float32 training step consumes:"
    )
    for config, rate in pipelines.items():
        steps_per_second = statistics.median(results[config]["mlm"]) / (BATCH * LENGTH)
        lines.append(
            f"- {config}: {rate:,.0f} batches/s vs {steps_per_second:.2f} steps/s "
            f"({rate / steps_per_second:,.0f}x headroom)."
        )
    lines.append("")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = list(results)
    figure, axis = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(IMPLEMENTATIONS)
    for index, name in enumerate(IMPLEMENTATIONS):
        medians = [statistics.median(results[c][name]) for c in configs]
        positions = [
            i + (index - (len(IMPLEMENTATIONS) - 1) / 2) * width for i in range(len(configs))
        ]
        bars = axis.bar(positions, medians, width, label=name)
        axis.bar_label(bars, labels=[f"{m:,.0f}" for m in medians], fontsize=8)
    for i, config in enumerate(configs):  # the target: a multiple of the faster peer
        target = TARGETS[config] * max(statistics.median(results[config][p]) for p in PEERS)
        axis.hlines(target, i - 0.45, i + 0.45, colors="black", linestyles="dashed")
        axis.annotate(f"target {TARGETS[config]}x faster peer", (i + 0.45, target), fontsize=8,
                      xytext=(0, 3), textcoords="offset points", ha="right")  # fmt: skip
    axis.set_xticks(range(len(configs)), [f"BERT {c}" for c in configs])
    axis.set_ylabel("training tokens/s (median)")
    axis.set_title(
        f"MLM training on CPU, seq {LENGTH}, batch {BATCH}, vocab {VOCAB}\n"
        "float32, except mlm-bf16 (mixed bfloat16)"
    )
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="tiny,small")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps per worker and round")
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker_main(args.worker, args.config, args.workdir)
    if args.prepare:
        prepare_shards(args.workdir)
        return 0

    configs = [c for c in args.configs.split(",") if c]
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown:
        parser.error(f"--configs: unknown {unknown}; use any of {sorted(CONFIGS)}")
    from importlib.util import find_spec

    missing = [name for name in ("keras_hub", "torch", "transformers") if find_spec(name) is None]
    if missing:
        parser.error(f"{missing} not installed: run `make bench`, which creates .venv-bench")
    args.output.mkdir(parents=True, exist_ok=True)

    peak = {}
    for framework in ("tensorflow", "torch"):
        out = subprocess.run(
            [sys.executable, "-c", f"import bench_peers as b; print(b.matmul_gflops({framework!r}))"],
            cwd=Path(__file__).parent, capture_output=True, text=True, check=True,
        )  # fmt: skip
        peak[framework] = float(out.stdout.split()[-1])
        print(f"best float32 matmul, {framework}: {peak[framework]:.0f} GFLOP/s", flush=True)

    print("tokenizing and sharding the built-in corpus for the mlm worker", flush=True)
    with (args.output / "prepare.log").open("w") as log:
        subprocess.run(
            [sys.executable, __file__, "--prepare", "--workdir", str(args.output)],
            stdout=log, stderr=log, check=True,
        )  # fmt: skip
    pipelines: dict[str, float] = {}
    results = {config: measure_config(config, args, pipelines) for config in configs}
    text = report(results, peak, pipelines, args)
    print(text)
    (args.output / "peers.md").write_text(text + "\n")
    (args.output / "peers.json").write_text(
        json.dumps(
            {
                "matmul_gflops": peak,
                "tokens_per_second": results,
                "pipeline_batches_per_second": pipelines,
            },
            indent=1,
        )
        + "\n"
    )
    plot(results, args.output / "peers.png")
    print(f"wrote {args.output / 'peers.md'} and {args.output / 'peers.png'}")
    return 0 if math.isfinite(max(peak.values())) else 1


if __name__ == "__main__":
    sys.exit(main())
