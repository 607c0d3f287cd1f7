"""Quality benchmark: does pre-training pay off on real text within a small budget?

On the shared real-text data (see `<data>/README.md`; never part of the repository):

1. tokenize and shard State of the Union prose plus the AG News training texts, one line (a
   news text or a paragraph) per 64-token example (`--pack`: packed across lines instead);
2. pre-train `mlm` for a fixed number of steps (a step budget, not a wall-clock one, so runs on a
   busy machine compare), saving checkpoints along the way; the masked-LM validation loss of each
   checkpoint gives the loss against tokens and seconds;
3. the peer, in the same run: the Hugging Face `run_mlm` recipe (`BertForMaskedLM`,
   `DataCollatorForLanguageModeling`, AdamW with linear warm-up and decay) on the same shards,
   tokenizer, architecture and batch, at its own peak learning rate (`--peer-learning-rate`), for
   as many training seconds as `mlm` took to reach one of its checkpoints (`--peer-point`; its
   schedule runs on the clock and ends at zero when the time is up), its validation loss measured
   along the way and compared with `mlm`'s at that checkpoint: equal seconds, the peer's schedule
   finished while `mlm`'s is still at a high learning rate;
4. export the encoder and fine-tune AG News topic classifiers (`mlm finetune`) on 25 and 250
   labelled rows per class, early-stopped on a disjoint dev slice and scored on a stratified
   subsample of the AG News test set, against the random-init baseline of the same architecture
   and fine-tuning budget; each side runs the procedures of `downstream.AG_NEWS_PROCEDURES`
   (`--procedures` names others) and is judged by the one its dev score picks; every procedure runs
   with `--seeds` seeds and each side's accuracy is the mean over them (one seed is too noisy at
   250 rows per class);
5. frozen-feature linear probes (ridge classifiers) at every slice size: the pre-trained and a
   random encoder's last layer, the pre-trained token-embedding table, and a count-based reference
   (PPMI-SVD vectors of the same shards: what co-occurrence counts alone give);
6. CoNLL-2003 named-entity recognition (`bench_ner.py`, when `<data>/conll2003/` is there):
   entity F1 at 200 and 2,000 training sentences, the procedure chosen on valid.txt, scored once
   on test.txt, pre-trained against random init, each side choosing among
   `downstream.DEFAULT_PROCEDURES` (`--ner-procedures`; `--ner-pretrain-text` adds the CoNLL
   training sentences' words, without tags, to the pre-training text).

Writes `<output>/quality.md`, `<output>/quality.json` and `<output>/quality.png` (validation loss
against tokens and seconds). Without the data it writes a note and exits 0.

Usage: python bench/bench_quality.py [--data ../shared/data] [--recipe fast] [--steps 3000]
       [--shots 25 250] [--test-rows 2000] [--seeds 2] [--no-peer] [--procedures NAME ...]
       [--ner-procedures NAME ...] [--output bench/results]
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import bench_ner
from downstream import (
    AG_NEWS_PROCEDURES,
    DEFAULT_PROCEDURES,
    PROCEDURES,
    best_against_best,
    default_procedure,
    finetune_run,
    mean_over_seeds,
    one_thread,
    target_verdict,
)

ROOT = Path(__file__).resolve().parent.parent
TARGET_GAIN_POINTS = {25: 10, 250: 5}  # pre-trained over random init, accuracy points
MODEL = {"hidden_size": 128, "num_layers": 2, "num_heads": 2, "intermediate_size": 512}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- data ---------------------------------------------------------------------------------------


def read_tsv(path: Path) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8", newline="") as file:
        return [(row["text"], row["label"]) for row in csv.DictReader(file, delimiter="\t")]


def write_corpus(data: Path, directory: Path, ner_text: bool = False) -> int:
    """SOTU paragraphs plus the AG News training texts (with `ner_text`, plus the CoNLL-2003
    training sentences' words), one per line; returns the byte count."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = []
    for path in sorted((data / "sotu").glob("*.txt")):
        lines += [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    lines += [text.strip() for text, _ in read_tsv(data / "agnews" / "train.tsv")]
    if ner_text:
        lines += bench_ner.words_text(data)
    text = "\n".join(line for line in lines if line) + "\n"
    (directory / "train.txt").write_text(text, encoding="utf-8")
    return len(text.encode())


def write_labelled(rows: list[tuple[str, str]], path: Path) -> str:
    with open(path, "w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return str(path)


def per_class(rows: list[tuple[str, str]], count: int, skip: int = 0) -> list[tuple[str, str]]:
    """`count` rows of each label, after skipping the first `skip` of each (rows pre-shuffled)."""
    seen: dict[str, int] = {}
    taken = []
    for text, label in rows:
        seen[label] = seen.get(label, 0) + 1
        if skip < seen[label] <= skip + count:
            taken.append((text, label))
    return taken


# --- pre-training -------------------------------------------------------------------------------


def pretrain_mlm(args, tokenizer: str, shards: str, output: str) -> dict[str, Any]:
    from mlm.config import recipe_settings
    from mlm.steps.pretrain import pretrain

    every = max(1, args.steps // args.curve_points)
    recipe = recipe_settings(args.recipe)
    settings = {
        **recipe,
        "model_overrides": {
            **MODEL,
            **recipe.get("model_overrides", {}),
            **json.loads(args.model or "{}"),
        },
        "batch_size": args.batch_size,
        "steps": args.steps,
        "checkpoint_every_steps": every,
        "checkpoint_every_minutes": None,
        "keep_checkpoints": args.curve_points + 1,
        "validation_batches": args.validation_batches,
        "log_every_steps": every,
        "quiet": True,
    }
    if args.learning_rate:
        settings["learning_rate"] = args.learning_rate
    start = time.perf_counter()
    result = pretrain(shards, tokenizer, output, **settings)
    seconds = time.perf_counter() - start
    return {"settings": settings, "metrics": result.metrics, "seconds": seconds}


def real_tokens_per_step(run: dict) -> float:
    """Tokens per step that are not padding: what `mlm pretrain` counts in its tokens and
    tokens/s (the peer counts its own batches' attention masks)."""
    return run["metrics"]["tokens"] / run["metrics"]["steps"]


def mlm_curve(args, run: dict, shards: str, output: str) -> list[dict[str, float]]:
    """Validation loss of every kept checkpoint: [{step, tokens, seconds, loss, accuracy}]."""
    import keras
    import tensorflow as tf

    import mlm
    from mlm.evaluation import masked_lm_metrics

    mlm.register_serializables()
    model = keras.models.load_model(os.path.join(output, "mlm_model.keras"))
    # Scored at BERT's 15% masking whatever the recipe trains with, like the peer.
    model.mask_ratio = 0.15
    history = json.loads(Path(output, "history.json").read_text())
    tokens_per_step = real_tokens_per_step(run)
    elapsed, previous, clock = {}, 0, 0.0
    for step, rate in zip(history["step"], history["tokens_per_second"]):
        clock += (step - previous) * tokens_per_step / max(rate, 1e-9)
        elapsed[int(step)], previous = clock, step
    points = []
    for index in sorted(glob.glob(os.path.join(output, "checkpoints", "ckpt-*.index"))):
        path = index[: -len(".index")]
        step = int(path.rsplit("-", 1)[1])
        tf.train.Checkpoint(model=model).read(path).expect_partial()
        scores = masked_lm_metrics(model, validation_batches(args, shards), args.validation_batches)
        points.append(
            {
                "step": step,
                "tokens": round(step * tokens_per_step),
                "seconds": elapsed.get(step, float("nan")),
                "loss": scores["loss"],
                "accuracy": scores["accuracy"],
            }
        )
    return sorted(points, key=lambda p: p["step"])


def validation_batches(args, shards: str) -> Any:
    from mlm.data import pretraining_dataset

    return pretraining_dataset(
        shards, args.batch_size, split="validation", shuffle=False, repeat=True
    )


def peer_budget(run: dict, mlm_points: list[dict[str, float]], point: int) -> float:
    """The peer's training seconds: what `mlm` took to reach its `point`-th checkpoint of the
    curve (1-based; the last one is its whole run), its count-based initialization included."""
    if not 1 <= point <= len(mlm_points):
        raise ValueError(f"--peer-point {point}: give 1 to {len(mlm_points)} (--curve-points)")
    return mlm_points[point - 1]["seconds"] + run["metrics"].get("token_embedding_init_seconds", 0)


def pretrain_peer(args, run: dict, tokenizer: str, shards: str, budget: float) -> dict[str, Any]:
    """The Hugging Face run_mlm recipe on the same shards, for `budget` training seconds.

    Its schedule is on the clock (linear warm-up over the recipe's warm-up share of the time,
    then linear decay to zero when the time is up), so it gets exactly that wall-clock budget on
    this machine; its validation loss is measured on the same batches at evenly spaced points of
    that time.
    """
    import numpy as np
    import torch
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        BertTokenizerFast,
        DataCollatorForLanguageModeling,
    )

    from mlm.data import pretraining_dataset

    settings = run["settings"]
    model_args = {**MODEL, **json.loads(args.model or "{}")}
    torch.manual_seed(0)
    hf_tokenizer = BertTokenizerFast.from_pretrained(tokenizer)
    collator = DataCollatorForLanguageModeling(hf_tokenizer, mlm_probability=0.15)
    seq_length = run["metrics"]["seq_length"]
    config = BertConfig(
        vocab_size=len(hf_tokenizer),
        hidden_size=model_args["hidden_size"],
        num_hidden_layers=model_args["num_layers"],
        num_attention_heads=model_args["num_heads"],
        intermediate_size=model_args["intermediate_size"],
        max_position_embeddings=max(512, seq_length),
        pad_token_id=hf_tokenizer.pad_token_id,
    )
    model = BertForMaskedLM(config)
    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {
            "params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
            "weight_decay": 0.01,
        },
        {
            "params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)],
            "weight_decay": 0.0,
        },
    ]
    peak = args.peer_learning_rate
    optimizer = torch.optim.AdamW(groups, lr=peak, eps=1e-6)
    warmup_share = settings.get("warmup_ratio", 0.1)
    # Read all batches first, so that no tf.data thread competes with PyTorch while it trains.
    train_batches = pretraining_dataset(shards, args.batch_size, split="train", seed=0)
    train = iter(list(train_batches.take(args.steps).as_numpy_iterator()))
    validation = [
        batch
        for _, batch in zip(
            range(args.validation_batches),
            validation_batches(args, shards).as_numpy_iterator(),
        )
    ]

    def collate(batch: dict, generator_seed: int | None = None) -> dict:
        if generator_seed is not None:
            torch.manual_seed(generator_seed)
        examples = [{"input_ids": row.tolist()} for row in batch["input_ids"]]
        collated = collator(examples)
        collated["attention_mask"] = torch.from_numpy(batch["attention_mask"].astype(np.int64))
        return collated

    def evaluate() -> dict[str, float]:
        model.eval()
        state = torch.random.get_rng_state()
        total = correct = count = 0.0
        with torch.no_grad():
            for index, batch in enumerate(validation):
                inputs = collate(batch, generator_seed=1000 + index)
                logits = model(**{k: v for k, v in inputs.items() if k != "labels"}).logits
                labels = inputs["labels"]
                selected = labels != -100
                total += float(
                    torch.nn.functional.cross_entropy(
                        logits[selected], labels[selected], reduction="sum"
                    )
                )
                correct += float((logits[selected].argmax(-1) == labels[selected]).sum())
                count += float(selected.sum())
        torch.random.set_rng_state(state)
        model.train()
        return {"loss": total / count, "accuracy": correct / count}

    def learning_rate(elapsed: float) -> float:
        share = elapsed / budget
        if share < warmup_share:
            return peak * share / warmup_share
        return peak * max(0.0, 1.0 - share) / (1.0 - warmup_share)

    marks = [budget * (index + 1) / args.curve_points for index in range(args.curve_points)]
    points, seconds, step, tokens = [], 0.0, 0, 0
    model.train()
    while seconds < budget and step < args.steps:
        start = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(seconds)
        batch = next(train)
        inputs = collate(batch)
        loss = model(**inputs).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        seconds += time.perf_counter() - start
        step += 1
        tokens += int(batch["attention_mask"].sum())  # real tokens, as the mlm loop counts them
        if seconds >= marks[len(points)] or seconds >= budget:
            scores = evaluate()
            points.append({"step": step, "tokens": tokens, "seconds": seconds, **scores})
            log(f"peer: step {step}: validation loss {scores['loss']:.3f} ({seconds:.0f} s)")
            if len(points) == len(marks):
                break
    if step and (not points or points[-1]["step"] != step):
        # Out of batches (all `args.steps` of them) before the time was up: score where it ended.
        points.append({"step": step, "tokens": tokens, "seconds": seconds, **evaluate()})
    return {
        "curve": points,
        "seconds": seconds,
        "tokens_per_second": tokens / seconds,
    }


def run_peer(args, run: dict, curves: dict, tokenizer: str, shards: str) -> dict[str, Any]:
    """The peer for `mlm`'s seconds up to checkpoint `--peer-point`; its curve joins `curves`."""
    budget = peer_budget(run, curves["mlm"], args.peer_point)
    log(f"peer: Hugging Face BertForMaskedLM, {budget:.0f} s (mlm's checkpoint {args.peer_point})")
    peer = {**pretrain_peer(args, run, tokenizer, shards, budget), "budget": budget}
    curves["hf-run_mlm"] = peer["curve"]
    return peer


# --- downstream ---------------------------------------------------------------------------------


def finetune_slices(args, export_dir: str, rows, test_csv: str, workdir: Path) -> dict:
    """{shots: {procedure: {pretrained, baseline, seconds}}} on the AG News slices.

    Every procedure runs with `args.seeds` seeds on the same slices (the seed sets the head's
    initialisation, the random-init baseline's weights and the batch order); each side's
    accuracy is the mean over seeds, with the per-seed figures kept beside it. The runs go to
    `args.finetune_processes` processes at a time; a procedure's seconds are its runs' own.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    dev_csv = write_labelled(per_class(rows, args.dev_per_class), workdir / "dev.csv")
    jobs: dict[tuple[int, str], list] = {}
    procedures: dict[int, dict[str, dict]] = {}
    with ProcessPoolExecutor(
        args.finetune_processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=one_thread,
    ) as pool:
        for shots in args.shots:
            train_csv = write_labelled(
                per_class(rows, shots, skip=args.dev_per_class), workdir / f"train-{shots}.csv"
            )
            procedures[shots] = (
                {"custom": json.loads(args.finetune)}
                if args.finetune
                else {name: PROCEDURES[name] for name in args.procedures}
            )
            for name, settings in procedures[shots].items():
                jobs[shots, name] = [
                    pool.submit(
                        finetune_run,
                        export_dir,
                        train_csv,
                        str(workdir / f"finetune-{shots}-{name}-seed{seed}"),
                        {
                            **settings,
                            "seed": seed,
                            "validation_data": dev_csv,
                            "test_data": test_csv,
                            "max_seq_length": args.finetune_seq_length,
                        },
                    )
                    for seed in range(args.seeds)
                ]
        results: dict[int, dict[str, Any]] = {shots: {} for shots in args.shots}
        for (shots, name), futures in jobs.items():
            runs = [future.result() for future in futures]
            results[shots][name] = {
                "settings": procedures[shots][name],
                **mean_over_seeds(runs),
                "seconds": sum(run["seconds"] for run in runs),
            }
            log(
                f"finetune {shots}/class, {name}: pretrained "
                f"{results[shots][name]['pretrained']['accuracy']:.3f}, baseline "
                f"{results[shots][name]['baseline']['accuracy']:.3f} "
                f"(mean of {args.seeds} seed(s))"
            )
    return results


def features(encoder: Any, tokenizer: Any, texts: list[str], length: int) -> Any:
    """Mean-pooled and [CLS] hidden states, side by side: [N, 2H]."""
    import numpy as np

    parts = []
    for start in range(0, len(texts), 64):
        batch = tokenizer(
            texts[start : start + 64],
            max_length=length,
            truncation=True,
            padding="max_length",
            return_tensors="np",
        )
        inputs = {k: batch[k].astype(np.int32) for k in ("input_ids", "attention_mask")}
        hidden = np.asarray(encoder(inputs, training=False)["last_hidden_state"])
        mask = inputs["attention_mask"][..., None].astype(np.float32)
        mean = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1.0)
        parts.append(np.concatenate([mean, hidden[:, 0]], axis=1))
    return np.concatenate(parts)


PROBE_PENALTIES = (0.01, 0.1, 1.0, 10.0)  # each probe reports its best ridge penalty


def ridge_probe(train_x, train_y, test_x, test_y, classes: int, penalty: float = 1.0) -> float:
    """Accuracy of a ridge (least-squares, one-hot targets) classifier on standardized features."""
    import numpy as np

    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    a = np.hstack([(train_x - mean) / std, np.ones((len(train_x), 1))])
    b = np.hstack([(test_x - mean) / std, np.ones((len(test_x), 1))])
    targets = np.eye(classes)[train_y]
    weights = np.linalg.solve(a.T @ a + penalty * len(a) * np.eye(a.shape[1]), a.T @ targets)
    return float(((b @ weights).argmax(1) == test_y).mean())


def bag_of_embeddings(table: Any, tokenizer: Any, texts: list[str], length: int) -> Any:
    """Mean of the embedding-table rows of each text's tokens (no special tokens): [N, dim]."""
    import numpy as np

    ids = tokenizer(texts, add_special_tokens=False, max_length=length, truncation=True)
    return np.stack([table[row].mean(0) if row else table[0] * 0 for row in ids["input_ids"]])


def linear_probe(args, export_dir: str, shards: str, rows, test_rows) -> dict[str, dict]:
    """{shots: {features: accuracy}}: ridge probes of frozen features at every slice size.

    Features: the pre-trained encoder's and a random encoder's last layer (mean + [CLS]), the
    pre-trained token-embedding table (bag of embeddings) and the count-based reference.
    """
    import keras
    import numpy as np
    from transformers import AutoTokenizer

    import mlm
    from mlm.data import pretraining_dataset
    from mlm.training.embedding_init import cooccurrence_embeddings

    mlm.register_serializables()
    encoder = keras.models.load_model(os.path.join(export_dir, "encoder.keras"))
    keras.utils.set_random_seed(1)
    random_encoder = type(encoder).from_config(encoder.get_config())
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(export_dir, "tokenizer"))
    batches = pretraining_dataset(shards, 256, split="train", shuffle=False, repeat=False)
    reference = cooccurrence_embeddings(
        (batch["input_ids"] for batch in batches.as_numpy_iterator()),
        encoder.vocab_size,
        encoder.hidden_size,
    )
    length = args.finetune_seq_length
    extractors = {
        "pre-trained encoder": lambda texts: features(encoder, tokenizer, texts, length),
        "random encoder": lambda texts: features(random_encoder, tokenizer, texts, length),
        "pre-trained token embeddings": lambda texts: bag_of_embeddings(
            np.asarray(encoder.token_embedding.embeddings), tokenizer, texts, length
        ),
        "count-based reference": lambda texts: bag_of_embeddings(
            reference, tokenizer, texts, length
        ),
    }
    names = sorted({label for _, label in test_rows})
    dev = per_class(rows, args.dev_per_class)
    dev_y = np.array([names.index(label) for _, label in dev])
    test_y = np.array([names.index(label) for _, label in test_rows])
    dev_x = {name: extract([t for t, _ in dev]) for name, extract in extractors.items()}
    test_x = {name: extract([t for t, _ in test_rows]) for name, extract in extractors.items()}
    scores: dict[str, dict] = {}
    for shots in args.shots:
        train = per_class(rows, shots, skip=args.dev_per_class)
        train_y = np.array([names.index(label) for _, label in train])
        scores[str(shots)] = {}
        for name, extract in extractors.items():
            train_x = extract([t for t, _ in train])
            # The penalty is chosen on the dev rows; the test rows are scored once, with it.
            penalty = max(
                PROBE_PENALTIES,
                key=lambda p: ridge_probe(train_x, train_y, dev_x[name], dev_y, len(names), p),
            )
            scores[str(shots)][name] = ridge_probe(
                train_x, train_y, test_x[name], test_y, len(names), penalty
            )
        log(f"linear probe, {shots}/class: {scores[str(shots)]}")
    return scores


# --- report -------------------------------------------------------------------------------------


def plot(curves: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, points in curves.items():
        if not points:
            continue
        axes[0].plot(
            [p["tokens"] / 1e6 for p in points], [p["loss"] for p in points], "o-", label=name
        )
        axes[1].plot([p["seconds"] for p in points], [p["loss"] for p in points], "o-", label=name)
    axes[0].set_xlabel("training tokens (millions)")
    axes[1].set_xlabel("training seconds (this machine)")
    for axis in axes:
        axis.set_ylabel("masked-LM validation loss")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def seed_cell(side: dict[str, Any]) -> str:
    """`mean (seed 0, seed 1, ...)`, or just the accuracy for a single seed."""
    per_seed = side.get("per_seed", [])
    if len(per_seed) < 2:
        return f"{side['accuracy']:.3f}"
    return f"{side['accuracy']:.3f} ({', '.join(f'{a:.3f}' for a in per_seed)})"


def procedure_flags(args) -> str:
    """The reproduce line's `--procedures` / `--ner-procedures`, each only where not the default."""
    return "".join(
        f" {flag} {' '.join(chosen)}"
        for flag, chosen, default in (
            ("--procedures", args.procedures, AG_NEWS_PROCEDURES),
            ("--ner-procedures", args.ner_procedures, DEFAULT_PROCEDURES),
        )
        if chosen != list(default)
    )


def report(args, facts: dict) -> str:
    mlm_run, curves = facts["mlm"], facts["curves"]
    lines = [
        "## Quality: pre-training on real text (AG News + State of the Union)",
        "",
        f"Recipe `{args.recipe}`, model {json.dumps({**MODEL, **json.loads(args.model or '{}')})}, "
        f"{args.steps} steps of {args.batch_size} x {mlm_run['metrics']['seq_length']} tokens "
        f"({'packed across lines' if args.pack else 'one line per example'}), "
        f"vocabulary {args.vocab_size}; corpus {facts['corpus_mb']:.1f} MB. Fine-tuning scored on "
        f"{facts['test_rows']} AG News test rows (stratified subsample), early-stopped on "
        f"{args.dev_per_class} dev rows per class. Measured on a shared machine "
        f"({os.cpu_count()} cores): seconds are indicative only.",
        "",
        "| pre-training | steps | tokens | train seconds | tokens/s | validation loss | "
        "masked accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, points in curves.items():
        if not points:
            continue
        last = points[-1]
        rate = last["tokens"] / last["seconds"] if last["seconds"] else float("nan")
        lines.append(
            f"| {name} | {last['step']} | {last['tokens']:,} | {last['seconds']:.0f} | "
            f"{rate:,.0f} | {last['loss']:.3f} | {last['accuracy']:.3f} |"
        )
    lines += [
        "",
        "Validation loss (15% masking, the same batches) along each run, at evenly spaced points "
        "of its own budget:",
        "",
        "| point | " + " | ".join(f"{name}: step, seconds, loss" for name in curves) + " |",
        "|---|" + "---|" * len(curves),
    ]
    for index in range(max(len(points) for points in curves.values())):
        cells = []
        for points in curves.values():
            point = points[index] if index < len(points) else None
            cells.append(
                f"{point['step']}, {point['seconds']:.0f}, {point['loss']:.3f}" if point else ""
            )
        lines.append(f"| {index + 1} | " + " | ".join(cells) + " |")
    if curves.get("hf-run_mlm"):
        ours, peer = curves["mlm"][args.peer_point - 1], curves["hf-run_mlm"][-1]
        lines += [
            "",
            f"At equal seconds ({facts['peer'].get('budget', peer['seconds']):.0f} s of training, count-based "
            f"initialization included: mlm's checkpoint {args.peer_point} of "
            f"{len(curves['mlm'])}, the peer's whole schedule): validation loss mlm "
            f"{ours['loss']:.3f}, Hugging Face recipe {peer['loss']:.3f} (target: mlm below the "
            f"peer: {'met' if ours['loss'] < peer['loss'] else 'not met'}).",
        ]
    if facts["finetune"]:
        lines += [
            "",
            "AG News accuracy by fine-tuning procedure (both sides run every procedure of a "
            "slice; "
            f"mean of {args.seeds} seed(s), each seed's figure in brackets):",
            "",
            "| labelled rows per class | procedure | settings | pre-trained | random init |",
            "|---|---|---|---|---|",
        ]
        for shots, by_procedure in facts["finetune"].items():
            for name, scores in by_procedure.items():
                lines.append(
                    f"| {shots} | {name} | `{json.dumps(scores['settings'])}` | "
                    f"{seed_cell(scores['pretrained'])} | {seed_cell(scores['baseline'])} |"
                )
        lines += [
            "",
            "Best against best: each side's procedure chosen by its accuracy on the dev rows "
            "(mean over seeds), then its test accuracy, scored once; each side chose among the "
            "procedures of its slice (the number in the last column). Target: +10 points at 25 "
            "rows per class, +5 at 250:",
            "",
            "| labelled rows per class | pre-trained (procedure) | random init (procedure) | "
            "gain (points) | target | procedures tried per side |",
            "|---|---|---|---|---|---|",
        ]
        for shots, by_procedure in facts["finetune"].items():
            best = best_against_best(by_procedure)
            verdict = target_verdict(best["gain_points"], TARGET_GAIN_POINTS.get(int(shots)))
            lines.append(
                f"| {shots} | {best['pretrained']['accuracy']:.3f} "
                f"({best['pretrained']['procedure']}) | {best['baseline']['accuracy']:.3f} "
                f"({best['baseline']['procedure']}) | {best['gain_points']:+.1f} | {verdict} "
                f"| {best['tried']} |"
            )
    probe = facts.get("probe")
    if probe:
        kinds = list(next(iter(probe.values())))
        lines += [
            "",
            "Frozen features, ridge probe (standardized features; the penalty of "
            f"{', '.join(map(str, PROBE_PENALTIES))} chosen on the dev rows, for every feature "
            "set alike), AG News test accuracy:",
            "",
            "| labelled rows per class | " + " | ".join(kinds) + " |",
            "|---|" + "---|" * len(kinds),
        ]
        for shots, by_kind in probe.items():
            lines.append(f"| {shots} | " + " | ".join(f"{by_kind[k]:.3f}" for k in kinds) + " |")
    if facts.get("ner"):
        lines += bench_ner.report(args, facts["ner"])
    procedures_flag = procedure_flags(args)
    lines += [
        "",
        "Fine-tuning: `mlm finetune` defaults where a procedure does not say (mean pooling, "
        "10 epochs, patience 3, batch 16, head-only peak learning rate 3e-3); `mlm finetune` "
        "without flags is procedure "
        f"`{default_procedure() or 'none of these'}`. Total wall time "
        f"{facts['seconds'] / 60:.1f} min.",
        "",
        f"Reproduce: `python bench/bench_quality.py --recipe {args.recipe} --steps {args.steps} "
        f"--batch-size {args.batch_size} --seq-length {args.seq_length}"
        f"{' --pack' if args.pack else ''} --test-rows {args.test_rows} --seeds {args.seeds}"
        f" --ner-sentences {' '.join(map(str, args.ner_sentences))}"
        f"{' --ner-pretrain-text' if args.ner_pretrain_text else ''}"
        f"{procedures_flag}{'' if args.peer_point == 2 else f' --peer-point {args.peer_point}'}`.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    parser.add_argument("--workdir", type=Path, help="keep the intermediate files here")
    parser.add_argument("--recipe", default="fast", help="a named pre-training recipe")
    parser.add_argument("--model", help="BERT overrides as JSON (default: 2 layers, 128 wide)")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, help="default: the recipe's")
    parser.add_argument("--seq-length", type=int, default=64)
    parser.add_argument(
        "--pack",
        action="store_true",
        help="pack lines across document boundaries into full sequences (default: one line per "
        "example, padded, long lines split: the encoder's context then stays within one text, "
        "and its frozen features probe 3 points better at 250 rows per class)",
    )
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--curve-points", type=int, default=5)
    parser.add_argument("--validation-batches", type=int, default=20)
    parser.add_argument("--shots", type=int, nargs="+", default=[25, 250])
    parser.add_argument("--dev-per-class", type=int, default=50)
    parser.add_argument("--test-rows", type=int, default=2000)
    parser.add_argument("--finetune-seq-length", type=int, default=64)
    parser.add_argument("--finetune", help="mlm finetune settings as JSON")
    parser.add_argument(
        "--seeds",
        type=int,
        default=2,
        help="fine-tune every procedure with this many seeds and compare the mean accuracies "
        "(at 250 rows per class one seed moves each side by up to 3 points; each seed adds "
        "about 2 minutes)",
    )
    parser.add_argument(
        "--finetune-processes",
        type=int,
        default=2,
        help="fine-tuning runs at a time, one thread each (the machine's 2 cores: 2)",
    )
    parser.add_argument(
        "--peer-learning-rate",
        type=float,
        default=2e-3,
        help="the peer's peak learning rate: its post-norm BERT with dropout stalls near loss 7 "
        "at 5e-3, and 2e-3 is where it trained best in our runs (the fast recipe's peak too)",
    )
    parser.add_argument("--ner-sentences", type=int, nargs="+", default=[200, 2000])
    parser.add_argument("--ner-dev-sentences", type=int, default=500)
    parser.add_argument("--ner-seq-length", type=int, default=96)
    parser.add_argument(
        "--ner-pretrain-text",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="add the CoNLL-2003 training sentences' words (no tags) to the pre-training text "
        "(off: with them the entity-F1 gains were +14.5 / +14.5, without +15.0 / +14.0)",
    )
    parser.add_argument("--no-ner", action="store_true", help="leave out CoNLL-2003")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument(
        "--peer-point",
        type=int,
        default=2,
        help="the peer trains for the seconds mlm took to reach this checkpoint of its curve "
        "(1 to --curve-points; the last: mlm's whole run) and is compared with mlm there "
        "(default 2 of 5: it keeps the benchmark within 30 minutes)",
    )
    for flag, default, task in (
        ("--procedures", AG_NEWS_PROCEDURES, "AG News"),
        ("--ner-procedures", DEFAULT_PROCEDURES, "CoNLL-2003"),
    ):
        parser.add_argument(
            flag,
            nargs="+",
            choices=tuple(PROCEDURES),
            default=list(default),
            help=f"{task} fine-tuning procedures each side runs and chooses from on the dev "
            f"split (default: {' '.join(default)}; see bench/downstream.py for why)",
        )
    parser.add_argument("--no-probe", action="store_true")
    parser.add_argument("--no-finetune", action="store_true", help="pre-training only")
    parser.add_argument(
        "--reuse", action="store_true", help="fine-tune the encoder already in --workdir"
    )
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds {args.seeds}: give at least 1 fine-tuning seed")
    if not 1 <= args.peer_point <= args.curve_points:
        parser.error(
            f"--peer-point {args.peer_point}: give 1 to --curve-points {args.curve_points}"
        )
    if args.finetune_processes < 1:
        parser.error(f"--finetune-processes {args.finetune_processes}: give at least 1")
    args.output.mkdir(parents=True, exist_ok=True)
    if not (args.data / "agnews" / "train.tsv").is_file():
        (args.output / "quality.md").write_text(
            "## Quality\n\nSkipped: no real-text data at "
            f"`{args.data}` (see bench/bench_quality.py).\n"
        )
        log(f"no data at {args.data}: skipped")
        return 0

    from mlm.steps.export import export
    from mlm.steps.shard import shard
    from mlm.steps.tokenize import tokenize

    started = time.perf_counter()
    has_ner = not args.no_ner and (args.data / "conll2003" / "train.txt").is_file()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mlm-quality-"))
    workdir.mkdir(parents=True, exist_ok=True)
    args.ner_pretrain_text &= has_ner
    corpus_bytes = write_corpus(args.data, workdir / "corpus", args.ner_pretrain_text)
    tokenizer, shards = str(workdir / "tokenizer"), str(workdir / "shards")
    output, export_dir = str(workdir / "pretrain"), str(workdir / "export")
    facts_path = workdir / "pretrain-facts.json"
    if args.reuse and facts_path.is_file():
        # Fine-tuning experiments on an encoder this script pre-trained before.
        saved = json.loads(facts_path.read_text())
        mlm_run, curves, peer = saved["mlm"], saved["curves"], saved["peer"]
        log(f"reusing the pre-trained encoder in {workdir}")
        if peer is None and not args.no_peer:
            peer = run_peer(args, mlm_run, curves, tokenizer, shards)
            facts_path.write_text(json.dumps({"mlm": mlm_run, "curves": curves, "peer": peer}))
    else:
        log(f"corpus {corpus_bytes / 1e6:.1f} MB in {workdir}; tokenize and shard")
        tokenize(str(workdir / "corpus"), tokenizer, vocab_size=args.vocab_size)
        shard(
            str(workdir / "corpus"),
            tokenizer,
            shards,
            max_seq_length=args.seq_length,
            line_by_line=not args.pack,
        )
        log(f"mlm pretrain: {args.steps} steps, recipe {args.recipe}")
        mlm_run = pretrain_mlm(args, tokenizer, shards, output)
        curves = {"mlm": mlm_curve(args, mlm_run, shards, output)}
        log(f"mlm: {curves['mlm'][-1]}")
        export(output, tokenizer, export_dir)
        peer = None
        if not args.no_peer:
            peer = run_peer(args, mlm_run, curves, tokenizer, shards)
        facts_path.write_text(json.dumps({"mlm": mlm_run, "curves": curves, "peer": peer}))

    rows = read_tsv(args.data / "agnews" / "train.tsv")
    random.Random(0).shuffle(rows)
    test_rows = read_tsv(args.data / "agnews" / "test.tsv")
    random.Random(1).shuffle(test_rows)
    test_rows = per_class(test_rows, args.test_rows // 4)
    test_csv = write_labelled(test_rows, workdir / "test.csv")
    facts: dict[str, Any] = {
        "corpus_mb": corpus_bytes / 1e6,
        "test_rows": len(test_rows),
        "mlm": mlm_run,
        "peer": peer,
        "curves": curves,
        "finetune": {}
        if args.no_finetune
        else finetune_slices(args, export_dir, rows, test_csv, workdir),
    }
    if not args.no_probe and not args.no_finetune:
        facts["probe"] = linear_probe(args, export_dir, shards, rows, test_rows)
    if has_ner and not args.no_finetune:
        facts["ner"] = bench_ner.ner_slices(args, export_dir, args.data, workdir)
    facts["seconds"] = time.perf_counter() - started
    plot(curves, args.output / "quality.png")
    text = report(args, facts)
    (args.output / "quality.md").write_text(text)
    (args.output / "quality.json").write_text(json.dumps(facts, indent=2, default=str))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
