"""MLM training throughput of mlm against Hugging Face (PyTorch) and keras-hub, each at its best.

Each implementation trains BERT with the masked-LM objective on the same synthetic batches
(sequence 128, batch 32, 15% masking with 80/10/10 replacement, vocabulary 30522, AdamW with
weight decay 0.01, dropout 0.1, output projection tied to the token embedding) in its own worker
process, in every variant a user would try:

- `mlm`: the training step of `mlm pretrain` (`mlm.training.loop.make_train_step`), which projects
  to the vocabulary only at the masked positions, in float32 and `mixed_bfloat16`
  (`--precision`); XLA (`--jit-compile`) on request (`--variants`), as on CPU it is no faster;
- `hf-torch`: transformers `BertForMaskedLM` on PyTorch, masked every step by its
  `DataCollatorForLanguageModeling` (on the id tensor, as a DataLoader worker would), AdamW, in
  float32 and bfloat16 autocast, eager and `torch.compile`d;
- `keras-hub`: `keras_hub.models.BertMaskedLM` (logits at up to 24 masked positions per sequence),
  masked in a `tf.data` pipeline by `keras_hub.layers.MaskedLMMaskGenerator`, stepped by the
  train function `fit` runs on one long-lived iterator, in float32 and `mixed_bfloat16`, with
  `jit_compile` off and on.

The workers are built and warmed up first (warm-up covers tracing and compilation and is not
timed); a variant that fails to build or compile is reported as failed with its reason. Then the
driver asks the workers in turn for a few steps each (round robin, reversed every other round, so
the machine's drift hits all alike). The report compares like with like: mlm's best float32
variant against the best float32 peer variant, mlm's best bfloat16 variant against the best
bfloat16 peer variant (medians of the per-round ratios), and gives each step's model-FLOP rate as a
fraction of this machine's matmul rate in that precision, measured in the same run for the
precisions of the variants asked for only (on a CPU without bfloat16 instructions the bfloat16
rate is measured on smaller matrices, and every matmul measurement has a time limit).

Needs the bench virtualenv (`make bench` creates `.venv-bench` from `bench/requirements.txt`).

Usage: python bench/bench_peers.py [--configs tiny,small] [--rounds 3] [--steps 2]
       [--variants KEY,...] [--quick] [--output bench/results]
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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

VOCAB = 30522
LENGTH = 128
BATCH = 32
MASK_RATE = 0.15
SPECIAL_IDS = (0, 1, 2, 3, 4)  # [PAD] [UNK] [CLS] [SEP] [MASK]
MASK_ID = 4
WEIGHT_DECAY = 0.01
LEARNING_RATE = 1e-4
POOL = 4  # distinct batches cycled through by the peers
WARMUP_STEPS = 3


@dataclass(frozen=True)
class Config:
    layers: int
    hidden: int
    heads: int

    @property
    def intermediate(self) -> int:
        return 4 * self.hidden


CONFIGS = {
    "tiny": Config(4, 256, 4),
    "small": Config(6, 512, 8),
    "base": Config(12, 768, 12),
    "large": Config(24, 1024, 16),
}
PRECISIONS = ("float32", "bfloat16")
# Tokens/s of mlm's best variant over the best peer variant of the same precision.
TARGETS = {"tiny": 1.5, "small": 1.4}
MATMUL_TARGET = 0.75  # the step's model-FLOP rate over the matmul rate of its precision


@dataclass(frozen=True)
class Shape:
    """Sequence length and batch size of one training step."""

    length: int = LENGTH
    batch: int = BATCH

    def max_predictions(self) -> int:
        """Masked positions per sequence that keras-hub (and XLA-compiled mlm) computes logits at:
        keras-hub's preprocessor default, 96 of 512, scaled to the length."""
        return max(1, round(self.length * 96 / 512))


@dataclass(frozen=True)
class Variant:
    """One way to run one implementation: its precision class and whether it is compiled."""

    implementation: str  # "mlm", "hf-torch" or "keras-hub"
    precision: str  # "float32" or "bfloat16" (mixed: bfloat16 compute, float32 variables)
    compiled: bool

    @property
    def key(self) -> str:
        """The variant's name on the command line and in the JSON results."""
        return f"{self.implementation}:{self.precision}:{'compiled' if self.compiled else 'eager'}"

    @property
    def label(self) -> str:
        """The variant's name in the report: the setting a user would write."""
        settings = {
            "mlm": ("--precision float32", "--precision mixed_bfloat16"),
            "hf-torch": ("float32", "bf16 autocast"),
            "keras-hub": ("float32", "mixed_bfloat16"),
        }[self.implementation]
        text = settings[PRECISIONS.index(self.precision)]
        if self.compiled:
            text += {"mlm": " --jit-compile", "hf-torch": " + torch.compile"}.get(
                self.implementation, ", jit_compile"
            )
        elif self.implementation == "hf-torch":
            text += " eager"
        return f"{self.implementation} {text}"

    @property
    def is_peer(self) -> bool:
        return self.implementation != "mlm"

    def logit_fraction(self, shape: Shape) -> float:
        """Fraction of the positions at which this variant computes vocabulary logits."""
        if self.implementation == "hf-torch":
            return 1.0
        if self.implementation == "keras-hub" or self.compiled:
            return shape.max_predictions() / shape.length
        return MASK_RATE


ALL_VARIANTS = tuple(
    Variant(implementation, precision, compiled)
    for implementation in ("mlm", "hf-torch", "keras-hub")
    for precision in PRECISIONS
    for compiled in (False, True)
)
# On CPU XLA does not make mlm's step faster (bench/bench_training.py): asked for by name.
DEFAULT_VARIANTS = tuple(v for v in ALL_VARIANTS if not (v.implementation == "mlm" and v.compiled))
VARIANTS_BY_KEY = {v.key: v for v in ALL_VARIANTS}


def training_flops_per_token(config: Config, logit_fraction: float, length: int = LENGTH) -> float:
    """Matmul FLOPs of one training step per token: 3x the forward pass (forward, and the two
    gradient matmuls of the backward pass).

    The forward pass counts the Q/K/V/output and feed-forward projections, the two attention
    matmuls (`QK^T` and `PV`) and the MLM head (transform and vocabulary projection) at
    `logit_fraction` of the positions. Embedding lookups, norms and softmax are not counted.
    """
    h, layers = config.hidden, config.layers
    projections = 2 * (4 * h * h + 2 * h * config.intermediate)
    attention = 2 * 2 * length * h
    head = 2 * (h * h + h * VOCAB) * logit_fraction
    return 3 * (layers * (projections + attention) + head)


def model_flops_per_token(config: Config, length: int = LENGTH) -> float:
    """The model FLOPs: the MLM head counted at the masked positions only (the same for all)."""
    return training_flops_per_token(config, MASK_RATE, length)


# --- workers ----------------------------------------------------------------------------------


def synthetic_ids(seed: int, shape: Shape):
    """`[POOL, batch, length]` int32 ids: [CLS] text [SEP], text ids drawn uniformly."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ids = rng.integers(len(SPECIAL_IDS), VOCAB, size=(POOL, shape.batch, shape.length))
    ids = ids.astype(np.int32)
    ids[:, :, 0], ids[:, :, -1] = 2, 3
    return ids


def shard_dir(workdir: Path, length: int) -> Path:
    return workdir / f"shards-{length}"


class MlmWorker:
    """The product's training step on the product's input pipeline.

    Batches come from `mlm.data.pretraining_dataset` over shards that `mlm tokenize` and `mlm
    shard` wrote from the built-in corpus (the vocabulary stays 30522, so the model is the
    peers'). The output projection is tied to the token embedding, as in both peers
    (`mlm pretrain --tie-word-embeddings`). XLA needs static shapes: compiled, the step predicts
    at a fixed number of positions per sequence (`--max-predictions-per-seq`), as keras-hub does.
    """

    def __init__(self, config: Config, shape: Shape, variant: Variant, workdir: Path) -> None:
        import keras
        import tensorflow as tf

        from mlm.data import read_tokenizer_info
        from mlm.data.dataset import pretraining_dataset
        from mlm.encoders.bert import BERT
        from mlm.model import MaskedLanguageModel
        from mlm.optimization import optimizer_builder
        from mlm.training.loop import make_train_step

        keras.utils.set_random_seed(0)
        # What `mlm pretrain --precision` sets.
        keras.config.set_dtype_policy(
            "mixed_bfloat16" if variant.precision == "bfloat16" else "float32"
        )
        info = read_tokenizer_info(str(workdir / "tokenizer"))
        encoder = BERT(
            vocab_size=VOCAB,
            hidden_size=config.hidden,
            num_layers=config.layers,
            num_heads=config.heads,
            intermediate_size=config.intermediate,
            max_position_embeddings=max(512, shape.length),
        )
        model = MaskedLanguageModel(
            encoder, vocab_size=VOCAB, mask_ratio=MASK_RATE, mask_token_id=info.mask_token_id,
            special_token_ids=tuple(info.special_token_ids), tie_word_embeddings=True,
            max_predictions_per_seq=shape.max_predictions() if variant.compiled else None,
        )  # fmt: skip
        model.build(None)
        optimizer = optimizer_builder(
            {"type": "adamw", "weight_decay": WEIGHT_DECAY}, LEARNING_RATE
        )
        optimizer.build(model.trainable_variables)
        dataset = pretraining_dataset(str(shard_dir(workdir, shape.length)), shape.batch, seed=0)
        self.iterator = iter(dataset)
        self.step_fn = make_train_step(
            model, optimizer, tf.distribute.get_strategy(), jit_compile=variant.compiled
        )
        self.requests = tf.zeros([2])  # neither save nor stop
        self.step = 0
        self.tf = tf

    def run(self, steps: int) -> float:
        tf = self.tf
        start = time.perf_counter()
        for _ in range(steps):
            sums = self.step_fn(self.iterator, tf.constant(self.step, tf.int64), self.requests)
            self.step += 1
        sums.numpy()  # the steps run asynchronously until a result is read
        return time.perf_counter() - start


class HuggingFaceWorker:
    """transformers' `BertForMaskedLM` with a plain PyTorch loop (what `Trainer` runs without its
    bookkeeping).

    Masking is the library's: `DataCollatorForLanguageModeling.torch_mask_tokens` on the batch's
    id tensor, every step, inside the timed region (its `__call__` on lists of dicts pads and
    converts in Python, which a DataLoader would do in separate worker processes). Sequences are
    packed without padding, so no attention mask is passed (PyTorch's SDPA then runs unmasked).
    bfloat16 is `torch.autocast`; compiled is `torch.compile(model)` (the forward and, through
    AOTAutograd, the backward; the optimizer runs eager), as `Trainer(torch_compile=True)` does.
    """

    def __init__(
        self, config: Config, shape: Shape, variant: Variant, workdir: Path, device: str = "cpu"
    ) -> None:
        import torch
        from transformers import (
            BertConfig,
            BertForMaskedLM,
            BertTokenizerFast,
            DataCollatorForLanguageModeling,
        )

        if device == "cpu":
            # One intra-op thread per CPU (PyTorch's default counts physical cores only).
            torch.set_num_threads(os.cpu_count() or 1)
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
            max_position_embeddings=max(512, shape.length),
        )
        model = BertForMaskedLM(bert_config).to(device).train()
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY
        )
        self.model = torch.compile(model) if variant.compiled else model
        self.autocast = torch.autocast(
            device_type=device, dtype=torch.bfloat16, enabled=variant.precision == "bfloat16"
        )
        ids = torch.from_numpy(synthetic_ids(0, shape)).long()
        self.batches = [(row, row < len(SPECIAL_IDS)) for row in ids]
        self.device = device
        self.step = 0
        self.torch = torch

    def run(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            ids, special = self.batches[self.step % POOL]
            inputs, labels = self.collator.torch_mask_tokens(
                ids.clone(), special_tokens_mask=special
            )
            inputs, labels = inputs.to(self.device), labels.to(self.device)
            with self.autocast:
                loss = self.model(input_ids=inputs, labels=labels).loss
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
        loss.item()  # waits for the device
        return time.perf_counter() - start


class KerasHubWorker:
    """keras-hub's `BertMaskedLM`, stepped by the train function that `fit` runs, on one
    long-lived iterator of a `tf.data` pipeline that masks with `MaskedLMMaskGenerator`."""

    def __init__(self, config: Config, shape: Shape, variant: Variant) -> None:
        import keras
        import keras_hub
        import tensorflow as tf

        keras.utils.set_random_seed(0)
        keras.config.set_dtype_policy(
            "mixed_bfloat16" if variant.precision == "bfloat16" else "float32"
        )
        backbone = keras_hub.models.BertBackbone(
            vocabulary_size=VOCAB,
            num_layers=config.layers,
            num_heads=config.heads,
            hidden_dim=config.hidden,
            intermediate_dim=config.intermediate,
            max_sequence_length=max(512, shape.length),
        )
        self.model = keras_hub.models.BertMaskedLM(backbone, preprocessor=None)
        self.model.compile(
            optimizer=keras.optimizers.AdamW(
                learning_rate=LEARNING_RATE, weight_decay=WEIGHT_DECAY
            ),
            jit_compile=variant.compiled,
        )
        masker = keras_hub.layers.MaskedLMMaskGenerator(
            vocabulary_size=VOCAB,
            mask_selection_rate=MASK_RATE,
            mask_token_id=MASK_ID,
            mask_selection_length=shape.max_predictions(),
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

        ids = synthetic_ids(0, shape).reshape(-1, shape.length)
        dataset = tf.data.Dataset.from_tensor_slices(ids).repeat()
        dataset = dataset.batch(shape.batch, drop_remainder=True)
        dataset = dataset.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE)
        self.iterator = iter(dataset.prefetch(tf.data.AUTOTUNE))
        self.model.make_train_function()

    def run(self, steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            logs = self.model.train_function(self.iterator)
        float(logs["loss"])  # the steps run asynchronously until a result is read
        return time.perf_counter() - start


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_gflops(
    framework: str, precision: str = "float32", sizes=(1024, 2048, 3072), repeats: int = 5
) -> float:
    """Best matmul rate (GFLOP/s) over square sizes, median of `repeats` timings each; bfloat16
    multiplies bfloat16 operands (what mixed precision's matmuls do)."""
    best = 0.0
    for n in sizes:
        if framework == "tensorflow":
            import tensorflow as tf

            dtype = tf.bfloat16 if precision == "bfloat16" else tf.float32
            pair = tuple(tf.cast(tf.random.normal((n, n)), dtype) for _ in range(2))
            matmul = tf.function(lambda a, b: tf.cast(tf.matmul(a, b)[0, 0], tf.float32))

            def once(matmul=matmul, pair=pair):
                return float(matmul(*pair))
        else:
            import torch

            torch.set_num_threads(os.cpu_count() or 1)
            dtype = torch.bfloat16 if precision == "bfloat16" else torch.float32
            a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)

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


def worker_main(args: argparse.Namespace) -> int:
    """Builds one variant, warms it up, then answers each stdin line: a step count with the
    seconds those steps took, `memory` with the peak RSS in MB."""
    variant = VARIANTS_BY_KEY[args.worker]
    config, shape = CONFIGS[args.config], Shape(args.length, args.batch)
    if variant.implementation == "mlm":
        worker = MlmWorker(config, shape, variant, args.workdir)
    elif variant.implementation == "hf-torch":
        worker = HuggingFaceWorker(config, shape, variant, args.workdir, device=args.device)
    else:
        worker = KerasHubWorker(config, shape, variant)
    warmup = worker.run(args.warmup)  # tracing, compilation, allocation, first-step costs
    print(json.dumps({"ready": True, "warmup_seconds": warmup}), flush=True)
    for line in sys.stdin:
        answer = peak_rss_mb() if line.strip() == "memory" else worker.run(int(line))
        print(json.dumps(answer), flush=True)
    return 0


# --- driver -----------------------------------------------------------------------------------


class Worker:
    """One worker process running one variant, asked for steps over its stdin.

    `failure` holds the reason once the worker failed (to build, to compile, or mid-run); a
    failed worker is left out of the rounds, not the end of the run.
    """

    def __init__(
        self,
        variant: Variant,
        config: str,
        shape: Shape,
        workdir: Path,
        *,
        device: str = "cpu",
        warmup: int = WARMUP_STEPS,
    ) -> None:
        self.variant = variant
        self.failure: str | None = None
        self.warmup_seconds = math.nan
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", variant.key]
        command += ["--config", config, "--length", str(shape.length), "--batch", str(shape.batch)]
        command += ["--workdir", str(workdir), "--device", device, "--warmup", str(warmup)]
        name = variant.key.replace(":", "-")
        self.log = workdir / f"worker-{name}-{config}-{shape.length}.log"
        with self.log.open("w") as log:  # TensorFlow's and PyTorch's chatter goes here
            self.process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
            )

    def _fail(self) -> None:
        self.process.kill()
        code = self.process.wait()
        lines = [line.strip() for line in self.log.read_text().splitlines() if line.strip()]
        errors = [line for line in lines if "Error" in line or "error" in line]
        reason = (errors or lines or [f"exit {code}"])[-1]
        self.failure = reason[:200] + (" ..." if len(reason) > 200 else "")

    def wait_ready(self) -> bool:
        """Waits for the warm-up; False (and `failure` set) when the worker failed."""
        try:
            self.warmup_seconds = json.loads(self.process.stdout.readline())["warmup_seconds"]
            return True
        except (ValueError, KeyError, TypeError):
            self._fail()
            return False

    def ask(self, request: str):
        """Sends one request line and returns the decoded answer (None once failed)."""
        if self.failure:
            return None
        try:
            self.process.stdin.write(f"{request}\n")
            self.process.stdin.flush()
            return json.loads(self.process.stdout.readline())
        except (OSError, ValueError):
            self._fail()
            return None

    def close(self) -> None:
        if self.failure is None:
            self.process.stdin.close()
            self.process.wait(timeout=120)


def prepare_shards(workdir: Path, lengths: list[int]) -> None:
    """`mlm tokenize` + `mlm shard` of the built-in corpus into `workdir` (for the mlm worker)."""
    from mlm.steps.shard import shard
    from mlm.steps.tokenize import tokenize

    tokenize(None, str(workdir / "tokenizer"), vocab_size=VOCAB)
    for length in lengths:
        shard(
            None, str(workdir / "tokenizer"), str(shard_dir(workdir, length)), max_seq_length=length
        )


def run_prepare(workdir: Path, lengths: list[int]) -> None:
    """`prepare_shards` in a child process (keeps TensorFlow out of the driver)."""
    print("tokenizing and sharding the built-in corpus for the mlm workers", flush=True)
    command = [sys.executable, str(Path(__file__).resolve()), "--prepare", "--workdir"]
    command += [str(workdir), "--lengths", ",".join(map(str, lengths))]
    with (workdir / "prepare.log").open("w") as log:
        subprocess.run(command, stdout=log, stderr=log, check=True)


def start_workers(
    variants: list[Variant], config: str, shape: Shape, workdir: Path, **options
) -> tuple[list[Worker], dict[str, str]]:
    """Starts and warms up the variants one at a time (so that warm-ups do not overlap);
    returns the ready workers and the failure reason of each variant that failed."""
    ready, failed = [], {}
    for variant in variants:
        start = time.perf_counter()
        worker = Worker(variant, config, shape, workdir, **options)
        if worker.wait_ready():
            ready.append(worker)
            print(f"  {config}: {variant.label} ready ({time.perf_counter() - start:.0f} s)",
                  flush=True)  # fmt: skip
        else:
            failed[variant.key] = worker.failure
            print(f"  {config}: {variant.label} FAILED: {worker.failure}", flush=True)
    return ready, failed


def interleaved_rates(
    workers: list[Worker], rounds: int, steps: int, tokens_per_step: int, label: str
) -> dict[str, list[float]]:
    """Tokens/s per round of each worker, round robin (reversed every other round)."""
    rates: dict[str, list[float]] = {w.variant.key: [] for w in workers}
    for round_index in range(rounds):
        order = workers if round_index % 2 == 0 else workers[::-1]
        for worker in order:
            seconds = worker.ask(str(steps))
            if seconds is not None:
                rates[worker.variant.key].append(steps * tokens_per_step / seconds)
        print(
            f"  {label} round {round_index + 1}/{rounds}: "
            + ", ".join(f"{k} {r[-1]:,.0f}" for k, r in rates.items() if r)
            + " tokens/s",
            flush=True,
        )
    return {key: values for key, values in rates.items() if len(values) == rounds}


def measure_config(config: str, variants: list[Variant], args: argparse.Namespace) -> dict:
    """Every variant's tokens/s per round, and the failures with their reasons.

    The precision classes run one after the other, each as its own interleaved rounds: the
    comparisons are within a class, and half the workers at a time halves the memory.
    """
    shape = Shape()
    rates: dict[str, list[float]] = {}
    failed: dict[str, str] = {}
    for precision in PRECISIONS:
        group = [v for v in variants if v.precision == precision]
        if not group:
            continue
        workers, group_failed = start_workers(group, config, shape, args.output)
        failed.update(group_failed)
        per_round = sum(args.steps * w.warmup_seconds / WARMUP_STEPS for w in workers)
        print(f"  {config} {precision}: {args.rounds} rounds, at most about "
              f"{args.rounds * per_round / 60:.1f} min (from the warm-ups)", flush=True)  # fmt: skip
        try:
            rates.update(interleaved_rates(
                workers, args.rounds, args.steps, shape.batch * shape.length, f"{config} {precision}"
            ))  # fmt: skip
        finally:
            for worker in workers:
                worker.close()
        for worker in workers:
            if worker.failure:
                failed[worker.variant.key] = f"failed mid-run: {worker.failure}"
    return {"tokens_per_second": rates, "failed": failed}


def cpu_name() -> str:
    """The CPU's model name, with its family and model numbers (a hypervisor may show only a
    generic name)."""
    try:
        fields = dict(
            (key.strip(), value.strip())
            for key, _, value in (ln.partition(":") for ln in
                                  Path("/proc/cpuinfo").read_text().splitlines())
        )  # fmt: skip
    except OSError:
        return platform.processor() or "unknown"
    name = fields.get("model name") or platform.processor() or "unknown"
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def bf16_instructions() -> list[str]:
    """The CPU's bfloat16 instruction sets, as /proc/cpuinfo names them."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines()
                  if ln.startswith("flags")), [])  # fmt: skip
    return [flag for flag in ("avx512_bf16", "amx_bf16", "amx_tile") if flag in flags]


def machine_line() -> str:
    instructions = bf16_instructions()
    bf16 = ", ".join(instructions) if instructions else "none (bfloat16 is emulated)"
    return f"Machine: {cpu_name()}, {os.cpu_count()} CPUs; bfloat16 instructions: {bf16}."


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in ("mlm", "tensorflow", "keras", "keras-hub", "torch", "transformers"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


# A CPU without bfloat16 instructions emulates bfloat16 matmuls (PyTorch's took over 5 minutes
# for one call on an AMD EPYC with AVX2 only): there the rate comes from smaller sizes, and each
# measurement has a time limit; a measurement over it is reported as not measured.
EMULATED_MATMUL_SIZES = (512, 1024)
MATMUL_TIMEOUT_S = 180


def measure_matmul(precisions: Sequence[str]) -> dict[str, dict[str, float]]:
    """Matmul GFLOP/s by precision (only those asked for) and framework, each in a fresh
    process; NaN where the time limit ran out."""
    native_bf16 = bool(bf16_instructions())
    peak: dict[str, dict[str, float]] = {p: {} for p in precisions}
    for precision in precisions:
        emulated = precision == "bfloat16" and not native_bf16
        sizes = f", sizes={EMULATED_MATMUL_SIZES!r}" if emulated else ""
        for framework in ("tensorflow", "torch"):
            code = (
                f"import bench_peers as b; "
                f"print(b.matmul_gflops({framework!r}, {precision!r}{sizes}))"
            )
            try:
                out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent,
                                     capture_output=True, text=True, check=True,
                                     timeout=MATMUL_TIMEOUT_S)  # fmt: skip
            except subprocess.TimeoutExpired:
                peak[precision][framework] = math.nan
                print(f"{precision} matmul, {framework}: over {MATMUL_TIMEOUT_S} s, not measured",
                      flush=True)  # fmt: skip
                continue
            peak[precision][framework] = float(out.stdout.split()[-1])
            print(f"best {precision} matmul, {framework}: {peak[precision][framework]:.0f} GFLOP/s"
                  + (" (emulated, sizes 512-1024)" if emulated else ""), flush=True)  # fmt: skip
    return peak


def matmul_limit(values: dict[str, float]) -> float:
    """The faster framework's matmul rate; NaN when neither was measured."""
    return max((v for v in values.values() if math.isfinite(v)), default=math.nan)


def best_in_class(rates: dict[str, list[float]], precision: str, peer: bool) -> str | None:
    """The key of the fastest (median) measured variant of one side in one precision class."""
    keys = [k for k in rates if VARIANTS_BY_KEY[k].precision == precision
            and VARIANTS_BY_KEY[k].is_peer == peer]  # fmt: skip
    return max(keys, key=lambda k: statistics.median(rates[k]), default=None)


def comparisons(results: dict, peak: dict) -> list[dict]:
    """Like for like, per config and precision: mlm's best variant against the best peer
    variant (median of the per-round ratios), and mlm's model-FLOP rate over the matmul rate."""
    rows = []
    for config, result in results.items():
        rates = result["tokens_per_second"]
        for precision in peak:
            ours, peer = (
                best_in_class(rates, precision, False),
                best_in_class(rates, precision, True),
            )
            if ours is None or peer is None:
                continue
            ratio = statistics.median(a / b for a, b in zip(rates[ours], rates[peer], strict=True))
            flops = statistics.median(rates[ours]) * model_flops_per_token(CONFIGS[config]) / 1e9
            rows.append({"config": config, "precision": precision, "mlm": ours, "peer": peer,
                         "ratio": ratio, "target": TARGETS.get(config),
                         "model_gflops": flops, "matmul_fraction": flops / matmul_limit(peak[precision])})  # fmt: skip
    return rows


def report(results: dict, peak: dict, args: argparse.Namespace) -> str:
    limit = {precision: matmul_limit(values) for precision, values in peak.items()}
    lines = [
        "# MLM training throughput: mlm vs Hugging Face (PyTorch) vs keras-hub, each at its best",
        "",
        machine_line(),
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()) + ".",
        f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        f"Setup: sequence {LENGTH}, batch {BATCH}, vocabulary {VOCAB}, {MASK_RATE:.0%} masking "
        f"(80/10/10), AdamW (weight decay {WEIGHT_DECAY}), dropout 0.1, output projection tied "
        f"to the token embedding (all three); {WARMUP_STEPS} untimed warm-up steps (tracing, "
        f"compilation), then {args.rounds} interleaved rounds of {args.steps} steps; medians.",
        "",
        "Matmul rate (square, 1024-3072; 512-1024 where the CPU emulates bfloat16; only the "
        "precisions measured), the limit for the step's FLOP rate in each precision:",
        "",
        "| precision | TensorFlow GFLOP/s | PyTorch GFLOP/s | limit used |",
        "|---|---:|---:|---:|",
    ]
    for precision, values in peak.items():
        lines.append(f"| {precision} | {values['tensorflow']:.0f} | {values['torch']:.0f} "
                     f"| {limit[precision]:.0f} |")  # fmt: skip
    lines += [
        "",
        "Every variant. Model FLOPs count the MLM head at the masked positions only (the same "
        "work for all); executed FLOPs count it where each variant computes it (all positions "
        "for Hugging Face, a fixed number per sequence for keras-hub and XLA-compiled mlm). "
        "Percentages are of the matmul limit of the variant's precision.",
        "",
        "| config | variant | tokens/s | vs best peer, same precision "
        "| model GFLOP/s (% of matmul) | executed GFLOP/s (% of matmul) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    shape = Shape()
    for config, result in results.items():
        rates = result["tokens_per_second"]
        for variant in [VARIANTS_BY_KEY[k] for k in args.variant_keys]:
            if variant.key in result["failed"]:
                lines.append(f"| {config} | {variant.label} | failed: "
                             f"{result['failed'][variant.key].replace('|', '/')} | | | |")  # fmt: skip
                continue
            values = rates[variant.key]
            median = statistics.median(values)
            peer = best_in_class(rates, variant.precision, True)
            ratio = (
                f"{statistics.median(a / b for a, b in zip(values, rates[peer], strict=True)):.2f}x"
                if peer
                else "-"
            )
            rate = limit[variant.precision]
            model = median * model_flops_per_token(CONFIGS[config]) / 1e9
            executed = (
                median
                * training_flops_per_token(CONFIGS[config], variant.logit_fraction(shape))
                / 1e9
            )
            lines.append(f"| {config} | {variant.label} | {median:,.0f} | {ratio} "
                         f"| {model:.0f} ({model / rate:.0%}) | {executed:.0f} ({executed / rate:.0%}) |")  # fmt: skip
    lines += [
        "",
        "Targets, like for like (same run): mlm's best variant over the best peer variant of "
        "the same precision (median of the per-round ratios): "
        + ", ".join(f"{c} {t}x" for c, t in TARGETS.items())
        + f"; and mlm's step at {MATMUL_TARGET:.0%} or more of its precision's matmul rate on "
        "model FLOPs.",
        "",
        "| config | precision | mlm, best variant | best peer variant | ratio | target | met? "
        "| mlm % of matmul | target | met? |",
        "|---|---|---|---|---:|---:|---|---:|---:|---|",
    ]
    for row in comparisons(results, peak):
        target = row["target"]
        met = "-" if target is None else ("yes" if row["ratio"] >= target else "**no**")
        matmul_met = "yes" if row["matmul_fraction"] >= MATMUL_TARGET else "**no**"
        lines.append(
            f"| {row['config']} | {row['precision']} | {VARIANTS_BY_KEY[row['mlm']].label} "
            f"| {VARIANTS_BY_KEY[row['peer']].label} | {row['ratio']:.2f}x "
            f"| {'-' if target is None else f'{target}x'} | {met} "
            f"| {row['matmul_fraction']:.0%} | {MATMUL_TARGET:.0%} | {matmul_met} |"
        )
    lines.append("")
    return "\n".join(lines)


def plot(results: dict, args: argparse.Namespace, path: Path) -> None:
    """One panel per precision: every measured variant's median tokens/s per config, with the
    target (a multiple of the best peer variant) dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = list(results)
    figure, axes = plt.subplots(1, len(PRECISIONS), figsize=(12, 4.5), sharey=True)
    for axis, precision in zip(axes, PRECISIONS, strict=True):
        variants = [VARIANTS_BY_KEY[k] for k in args.variant_keys
                    if VARIANTS_BY_KEY[k].precision == precision]  # fmt: skip
        width = 0.8 / max(1, len(variants))
        for index, variant in enumerate(variants):
            medians = [statistics.median(results[c]["tokens_per_second"].get(variant.key) or [0])
                       for c in configs]  # fmt: skip
            positions = [i + (index - (len(variants) - 1) / 2) * width for i in range(len(configs))]
            bars = axis.bar(positions, medians, width, label=variant.label)
            axis.bar_label(bars, labels=[f"{m:,.0f}" if m else "failed" for m in medians],
                           fontsize=6, rotation=90, padding=2)  # fmt: skip
        for i, config in enumerate(configs):
            rates = results[config]["tokens_per_second"]
            peer = best_in_class(rates, precision, True)
            if peer is None or config not in TARGETS:
                continue
            target = TARGETS[config] * statistics.median(rates[peer])
            axis.hlines(target, i - 0.45, i + 0.45, colors="black", linestyles="dashed")
            axis.annotate(f"target {TARGETS[config]}x best peer", (i + 0.45, target), fontsize=7,
                          xytext=(0, 3), textcoords="offset points", ha="right")  # fmt: skip
        axis.set_xticks(range(len(configs)), [f"BERT {c}" for c in configs])
        axis.set_title(f"{precision} class")
        axis.margins(y=0.2)  # room for the bar labels under the legend
        axis.legend(fontsize=7, loc="upper right")
    axes[0].set_ylabel("training tokens/s (median)")
    figure.suptitle(f"MLM training on CPU ({cpu_name()}, {os.cpu_count()} CPUs), "
                    f"seq {LENGTH}, batch {BATCH}, vocab {VOCAB}")  # fmt: skip
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def parse_variants(text: str | None, parser: argparse.ArgumentParser) -> list[str]:
    if not text:
        return [v.key for v in DEFAULT_VARIANTS]
    keys = [k for k in text.split(",") if k]
    unknown = sorted(set(keys) - set(VARIANTS_BY_KEY))
    if unknown:
        parser.error(f"--variants: unknown {unknown}; use any of {sorted(VARIANTS_BY_KEY)}")
    return keys


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """The hidden arguments a worker process (and the shard preparation) is started with."""
    for name in ("--worker", "--config", "--device"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    for name, default in (("--length", LENGTH), ("--batch", BATCH), ("--warmup", WARMUP_STEPS)):
        parser.add_argument(name, type=int, default=default, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--lengths", default=str(LENGTH), help=argparse.SUPPRESS)


def require_peers(parser: argparse.ArgumentParser) -> None:
    from importlib.util import find_spec

    missing = [name for name in ("keras_hub", "torch", "transformers") if find_spec(name) is None]
    if missing:
        parser.error(f"{missing} not installed: run `make bench`, which creates .venv-bench")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="tiny,small")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2, help="steps per worker and round")
    parser.add_argument("--variants", help="comma-separated keys (default: all but mlm XLA): "
                        + ", ".join(VARIANTS_BY_KEY))  # fmt: skip
    parser.add_argument("--quick", action="store_true",
                        help="a check that it runs: tiny, eager variants, 1 round of 1 step")  # fmt: skip
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    add_worker_arguments(parser)
    args = parser.parse_args()
    if args.worker:
        return worker_main(args)
    if args.prepare:
        prepare_shards(args.workdir, [int(n) for n in args.lengths.split(",")])
        return 0

    if args.quick:
        args.configs, args.rounds, args.steps = "tiny", 1, 1
        args.variants = args.variants or ",".join(v.key for v in DEFAULT_VARIANTS if not v.compiled)
    args.variant_keys = parse_variants(args.variants, parser)
    configs = [c for c in args.configs.split(",") if c]
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown:
        parser.error(f"--configs: unknown {unknown}; use any of {sorted(CONFIGS)}")
    require_peers(parser)
    args.output = args.output.resolve()
    args.output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    print(machine_line(), flush=True)

    variants = [VARIANTS_BY_KEY[k] for k in args.variant_keys]
    peak = measure_matmul([p for p in PRECISIONS if any(v.precision == p for v in variants)])
    run_prepare(args.output, [LENGTH])
    results = {config: measure_config(config, variants, args) for config in configs}
    text = report(results, peak, args)
    print(text)
    (args.output / "peers.md").write_text(text + "\n")
    summary = {"matmul_gflops": peak, "results": results, "comparisons": comparisons(results, peak)}
    (args.output / "peers.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot(results, args, args.output / "peers.png")
    print(f"wrote {args.output / 'peers.md'} and {args.output / 'peers.png'} "
          f"({(time.perf_counter() - started) / 60:.1f} min)")  # fmt: skip
    return 0 if all(math.isfinite(matmul_limit(values)) for values in peak.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
