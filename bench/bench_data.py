"""Benchmark of the data steps: tokenize + shard throughput and peak memory vs. corpus size.

Measures, each in a fresh subprocess (so peak RSS is that of one run):

- `tokenize` (WordPiece training) and `shard` (tokenize + pack + write TFRecords) on the built-in
  corpus and on synthetic corpora of 10 MB and 100 MB: MB/s and peak RSS. Flat RSS from 10 MB
  to 100 MB shows that both steps stream;
- the peer: the seed README's `create_mlm_dataset` (one `tf.py_function` tokenizer call per line)
  with the same tokenizer, on a small slice, extrapolated to MB/s; and this package's
  `create_mlm_dataset` (batched tokenization) on the same slice.

- sharding in parallel and the Hugging Face peer: `shard` with 1 and 2 processes
  (`--processes`) on a corpus of several files (`--scaling-mb`), against the preprocessing of
  Hugging Face's `run_mlm.py` (`datasets.load_dataset("text")`, `map` of the fast tokenizer,
  batched, then `group_texts`, with `num_proc` 1 and the CPU count) with the same tokenizer and
  sequence length, interleaved in the same run;

- tokenizer training on a sample: `tokenize` on corpora whose vocabulary keeps growing (every line
  adds words never seen before, the worst case for the trainer's memory) with `--sample-bytes`
  (`--sample-mb`) and with the whole text (`--sample-bytes 0`): peak RSS against corpus size.

Prints a Markdown table and the ratios against the peer measured in the same run, and writes
them to `<output>/data.md`. The input pipeline's batches/s against the training step's
consumption is measured by bench_input.py.

Usage: python bench/bench_data.py [--sizes-mb 10 100] [--peer-mb 1] [--pairs 3]
       [--sample-mb 10] [--scaling-mb 40] [--only tokenizer-memory|shard-scaling]
       [--output bench/results]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def _children_peak_rss_mb() -> float:
    """The largest peak RSS of this process's finished children (its worker processes)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _child_steps(corpus: str, workdir: str) -> dict:
    from mlm.steps.shard import shard
    from mlm.steps.tokenize import tokenize

    megabytes = sum(os.path.getsize(os.path.join(corpus, f)) for f in os.listdir(corpus)) / 1e6
    start = time.perf_counter()
    tokenize(corpus, os.path.join(workdir, "tok"), vocab_size=8000)
    tokenize_s = time.perf_counter() - start
    start = time.perf_counter()
    shard(corpus, os.path.join(workdir, "tok"), os.path.join(workdir, "shards"))
    shard_s = time.perf_counter() - start
    return {
        "megabytes": megabytes,
        "tokenize_mb_s": megabytes / tokenize_s,
        "shard_mb_s": megabytes / shard_s,
        "both_mb_s": megabytes / (tokenize_s + shard_s),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _child_shard(
    corpus: str, tokenizer_dir: str, workdir: str, processes: str, *settings_json: str
) -> dict:
    """`shard` with `processes` (and further settings as a JSON object) into workdir/shards."""
    from mlm.steps.shard import shard

    settings = json.loads(settings_json[0]) if settings_json else {}
    megabytes = sum(os.path.getsize(os.path.join(corpus, f)) for f in os.listdir(corpus)) / 1e6
    start = time.perf_counter()
    result = shard(
        corpus, tokenizer_dir, os.path.join(workdir, "shards"), processes=int(processes),
        **settings,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    splits = result.manifest["splits"]
    return {
        "seconds": seconds,
        "mb_s": megabytes / seconds,
        "tokens": sum(split["tokens"] for split in splits.values()),
        "cache": result.cache,
        "peak_rss_mb": _peak_rss_mb(),
        "children_peak_rss_mb": _children_peak_rss_mb(),
    }


def _child_hf(corpus: str, tokenizer_dir: str, workdir: str, num_proc: str, seq: str) -> dict:
    """Hugging Face run_mlm.py's preprocessing (not line_by_line): tokenize, then group_texts."""
    import datasets
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    files = sorted(os.path.join(corpus, f) for f in os.listdir(corpus))
    megabytes = sum(os.path.getsize(f) for f in files) / 1e6
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    seq_length, procs = int(seq), int(num_proc)
    start = time.perf_counter()
    raw = datasets.load_dataset(
        "text", data_files={"train": files}, cache_dir=os.path.join(workdir, "hf-cache")
    )

    def tokenize_function(examples):
        return tokenizer(examples["text"], return_special_tokens_mask=True)

    tokenized = raw.map(tokenize_function, batched=True, num_proc=procs, remove_columns=["text"])

    def group_texts(examples):
        concatenated = {k: list(itertools.chain(*examples[k])) for k in examples}  # as run_mlm
        total = (len(concatenated["input_ids"]) // seq_length) * seq_length
        return {
            k: [t[i : i + seq_length] for i in range(0, total, seq_length)]
            for k, t in concatenated.items()
        }

    grouped = tokenized.map(group_texts, batched=True, num_proc=procs)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "mb_s": megabytes / seconds,
        "examples": len(grouped["train"]),
        "peak_rss_mb": _peak_rss_mb(),
        "children_peak_rss_mb": _children_peak_rss_mb(),
    }


def _shard_scaling(megabytes: float, pairs: int, words: list[str], tmp: str) -> list[dict]:
    """Interleaved rounds of: mlm shard with 1 and 2 processes, HF with num_proc 1 and N."""
    from mlm.steps.tokenize import tokenize

    corpus = os.path.join(tmp, "scaling")
    for index in range(8):  # 8 files: a partition per process, and per HF worker
        _write_synthetic(os.path.join(corpus, f"part-{index}.txt"), megabytes / 8, words, index)
    tokenizer_dir = os.path.join(tmp, "scaling-tok")
    tokenize(corpus, tokenizer_dir, vocab_size=8000)
    cpus = str(os.cpu_count() or 1)
    rounds = []
    for round_ in range(pairs):
        row = {}
        for name, args in (
            ("mlm-1", ("shard", corpus, tokenizer_dir, "1")),
            ("mlm-2", ("shard", corpus, tokenizer_dir, "2")),
            ("hf-1", ("hf", corpus, tokenizer_dir, "1", "128")),
            (f"hf-{cpus}", ("hf", corpus, tokenizer_dir, cpus, "128")),
        ):
            work = os.path.join(tmp, f"scaling-{name}-{round_}")
            row[name] = _run_child(args[0], args[1], args[2], work, *args[3:])
            shutil.rmtree(work, ignore_errors=True)
        rounds.append(row)
        print(f"  shard scaling round {round_ + 1}/{pairs}", file=sys.stderr)
    return rounds


def _shard_scaling_lines(rounds: list[dict], megabytes: float) -> list[str]:
    names = list(rounds[0])
    median = {name: statistics.median(r[name]["mb_s"] for r in rounds) for name in names}
    hf_best = max(n for n in names if n.startswith("hf-"))
    lines = [
        "",
        f"## Sharding in parallel, and Hugging Face run_mlm's preprocessing ({megabytes:g} MB, "
        f"8 files, sequence length 128, {len(rounds)} interleaved rounds, medians)",
        "",
        "| run | MB/s | peak RSS MB (parent) |",
        "|---|---:|---:|",
    ]
    for name in names:
        rss = statistics.median(r[name]["peak_rss_mb"] for r in rounds)
        lines.append(f"| {name} | {median[name]:.2f} | {rss:.0f} |")
    lines += [
        "",
        f"mlm shard, 2 processes vs 1: {median['mlm-2'] / median['mlm-1']:.2f}x (rounds "
        + ", ".join(f"{r['mlm-2']['mb_s'] / r['mlm-1']['mb_s']:.2f}x" for r in rounds)
        + f"). mlm shard with 2 processes vs Hugging Face with num_proc={hf_best[3:]}: "
        f"{median['mlm-2'] / median[hf_best]:.2f}x (rounds "
        + ", ".join(f"{r['mlm-2']['mb_s'] / r[hf_best]['mb_s']:.2f}x" for r in rounds)
        + "). mlm writes TFRecord shards with manifest and checksums; the peer writes Arrow "
        "cache files. The tokenizer is this run's WordPiece (vocabulary 8000) in both.",
    ]
    return lines


def _child_tokenize(corpus: str, workdir: str, sample_bytes: str) -> dict:
    from mlm.steps.tokenize import tokenize

    megabytes = sum(os.path.getsize(os.path.join(corpus, f)) for f in os.listdir(corpus)) / 1e6
    start = time.perf_counter()
    result = tokenize(
        corpus, os.path.join(workdir, "tok"), vocab_size=8000, sample_bytes=int(sample_bytes)
    )
    return {
        "megabytes": megabytes,
        "seconds": time.perf_counter() - start,
        "sample_fraction": result.sample_fraction,
        "peak_rss_mb": _peak_rss_mb(),
    }


def _write_open_vocabulary(path: str, megabytes: float, words: list[str], seed: int) -> None:
    """Like `_write_synthetic`, but every line also holds two words never seen before, so the
    number of distinct words grows with the corpus (what a trainer's memory grows with)."""
    rng = random.Random(seed)
    fresh = 0
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        while file.tell() < megabytes * 1e6:
            lines = []
            for _ in range(2000):
                fresh += 2
                rare = f"{rng.choice(words)}{seed}x{fresh} {rng.choice(words)}{seed}y{fresh}"
                lines.append(" ".join(rng.choices(words, k=rng.randint(6, 30))) + " " + rare)
            file.write("\n".join(lines) + "\n")


def _tokenizer_memory(sizes_mb: list[float], sample_mb: float, words: list[str], tmp: str) -> list:
    """Peak RSS of `tokenize` with a sample and with all the text, per corpus size."""
    rows = []
    for size in sizes_mb:
        corpus = os.path.join(tmp, f"open-{size:g}mb")
        _write_open_vocabulary(os.path.join(corpus, "part.txt"), size, words, seed=int(size))
        for sample_bytes in (int(sample_mb * 1e6), 0):
            workdir = os.path.join(tmp, f"tok-{size:g}-{sample_bytes}")
            rows.append(
                (size, sample_bytes, _run_child("tokenize", corpus, workdir, str(sample_bytes)))
            )
            print(f"  measured tokenize {size:g} MB, sample {sample_bytes}", file=sys.stderr)
        shutil.rmtree(corpus)
    return rows


def _tokenizer_memory_lines(rows: list, sample_mb: float) -> list[str]:
    lines = [
        "",
        "## Tokenizer training on a sample",
        "",
        f"`tokenize --vocab-size 8000` on corpora whose vocabulary grows with their size (two new "
        f"words per line), with `--sample-bytes {int(sample_mb * 1e6)}` and with all the text "
        "(`--sample-bytes 0`); each run in a fresh process.",
        "",
        "| corpus MB | sample | share trained on | seconds | peak RSS MB |",
        "|---:|---|---:|---:|---:|",
    ]
    for size, sample_bytes, r in rows:
        sample = f"{sample_bytes / 1e6:g} MB" if sample_bytes else "all the text"
        lines.append(
            f"| {size:g} | {sample} | {r['sample_fraction']:.3f} | {r['seconds']:.1f} "
            f"| {r['peak_rss_mb']:.0f} |"
        )
    sampled = [r for _, s, r in rows if s]
    whole = [r for _, s, r in rows if not s]
    if len(sampled) > 1:
        lines.append(
            f"\nPeak RSS from the smallest to the largest corpus: with the sample "
            f"{sampled[-1]['peak_rss_mb'] / sampled[0]['peak_rss_mb']:.2f}x, with all the text "
            f"{whole[-1]['peak_rss_mb'] / whole[0]['peak_rss_mb']:.2f}x, for a "
            f"{sampled[-1]['megabytes'] / sampled[0]['megabytes']:.0f}x larger corpus."
        )
    return lines


def _seed_create_mlm_dataset(text_file, tokenizer, batch_size=32, max_length=128):
    """The seed README's version: one `tf.py_function` tokenizer call per line (no shuffle).

    Two changes make it run on TensorFlow 2.21: `tf.py_function` returns a list (it rejects a
    dict of output types) and the ids are cast from int64 to the declared int32.
    """
    import tensorflow as tf

    names = ("input_ids", "attention_mask", "token_type_ids")
    dataset = tf.data.TextLineDataset(text_file)

    def tokenize_function(text):
        encoded = tokenizer(
            text.numpy().decode("utf-8"),
            max_length=max_length,
            truncation=True,
            padding="max_length",
            return_tensors="np",
        )
        return [encoded[name][0].astype("int32") for name in names]

    def to_features(text):
        values = tf.py_function(tokenize_function, [text], [tf.int32] * 3)
        return {name: tf.ensure_shape(v, [max_length]) for name, v in zip(names, values)}

    dataset = dataset.map(to_features, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def _child_peer(text_file: str, tokenizer_dir: str, which: str) -> dict:
    import tensorflow  # noqa: F401

    from mlm.data.dataset import create_mlm_dataset
    from mlm.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_dir)
    # Timed from construction: create_mlm_dataset reads the corpus once there to count it.
    start = time.perf_counter()
    if which == "seed":
        dataset = _seed_create_mlm_dataset(text_file, tokenizer)
    else:
        dataset = create_mlm_dataset(text_file, tokenizer, buffer_size=1)
    batches = sum(1 for _ in dataset)
    seconds = time.perf_counter() - start
    megabytes = os.path.getsize(text_file) / 1e6
    return {"megabytes": megabytes, "mb_s": megabytes / seconds, "batches": batches}


def _machine_lines() -> list[str]:
    import bench_peers  # machine_line: the CPU and its bfloat16 instructions

    return [bench_peers.machine_line(), ""]


def _run_child(*args: str) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def _write_synthetic(path: str, megabytes: float, words: list[str], seed: int) -> None:
    """Sentences of 6-40 words drawn from the built-in corpus's word distribution."""
    rng = random.Random(seed)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        while file.tell() < megabytes * 1e6:
            lines = [
                " ".join(rng.choices(words, k=rng.randint(6, 40))).capitalize() + "."
                for _ in range(2000)
            ]
            file.write("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[10, 100])
    parser.add_argument("--peer-mb", type=float, default=1.0)
    parser.add_argument("--pairs", type=int, default=3, help="interleaved peer/ours repetitions")
    parser.add_argument("--sample-mb", type=float, default=10.0, help="tokenizer sample size")
    parser.add_argument("--scaling-mb", type=float, default=40.0, help="parallel-shard corpus")
    parser.add_argument(
        "--only", choices=["tokenizer-memory", "shard-scaling"], help="run one section alone"
    )
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        child = {
            "steps": _child_steps,
            "tokenize": _child_tokenize,
            "peer": _child_peer,
            "shard": _child_shard,
            "hf": _child_hf,
        }[kind]
        print(json.dumps(child(*rest)))
        return

    from mlm.data.default_corpus import default_corpus_dir

    default_dir = default_corpus_dir()
    words = []
    for name in sorted(os.listdir(default_dir)):
        with open(os.path.join(default_dir, name), encoding="utf-8") as file:
            words += file.read().lower().split()

    sections = {
        "tokenizer-memory": lambda tmp: _tokenizer_memory_lines(
            _tokenizer_memory(args.sizes_mb, args.sample_mb, words, tmp), args.sample_mb
        ),
        "shard-scaling": lambda tmp: _shard_scaling_lines(
            _shard_scaling(args.scaling_mb, args.pairs, words, tmp), args.scaling_mb
        ),
    }
    if args.only:
        with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
            text = "\n".join(_machine_lines() + sections[args.only](tmp)) + "\n"
        print(text)
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / f"data-{args.only}.md").write_text(text)
        return

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        memory = _tokenizer_memory(args.sizes_mb, args.sample_mb, words, tmp)
        scaling = _shard_scaling(args.scaling_mb, args.pairs, words, tmp)
        corpora = [("built-in", default_dir)]
        for size in args.sizes_mb:
            corpus = os.path.join(tmp, f"synthetic-{size:g}mb")
            _write_synthetic(os.path.join(corpus, "part.txt"), size, words, seed=int(size))
            corpora.append((f"synthetic {size:g} MB", corpus))
        for name, corpus in corpora:
            result = _run_child("steps", corpus, os.path.join(tmp, name.replace(" ", "-")))
            rows.append((name, result))
            print(f"  measured {name}", file=sys.stderr)

        peer_file = os.path.join(tmp, "peer", "slice.txt")
        _write_synthetic(peer_file, args.peer_mb, words, seed=7)
        tokenizer_dir = os.path.join(tmp, "built-in", "tok")
        # Interleaved A B A B: the CPU is shared, so compare per-pair ratios and medians.
        pairs = []
        for _ in range(args.pairs):
            seed = _run_child("peer", peer_file, tokenizer_dir, "seed")
            ours = _run_child("peer", peer_file, tokenizer_dir, "ours")
            pairs.append((seed["mb_s"], ours["mb_s"]))

    seed_mb_s = statistics.median(p[0] for p in pairs)
    ours_mb_s = statistics.median(p[1] for p in pairs)
    largest_name, largest = rows[-1]
    lines = [
        "# Data steps: tokenize + shard throughput and peak memory",
        "",
        *_machine_lines(),
        f"Command: `{' '.join([os.path.basename(sys.executable), *sys.argv])}`; "
        f"{os.cpu_count()} CPUs; each step in a fresh process (peak RSS is one run's).",
        "",
        "| corpus | MB | tokenize MB/s | shard MB/s | both MB/s | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r['megabytes']:.1f} | {r['tokenize_mb_s']:.2f} "
            f"| {r['shard_mb_s']:.2f} | {r['both_mb_s']:.2f} | {r['peak_rss_mb']:.0f} |"
        )
    lines += [
        "",
        f"Peer on a {args.peer_mb:g} MB slice, {len(pairs)} interleaved pairs, medians: the seed "
        "README's `create_mlm_dataset` (one `tf.py_function` tokenizer call per line) "
        f"{seed_mb_s:.3f} MB/s; this package's batched `create_mlm_dataset` {ours_mb_s:.3f} MB/s "
        f"({ours_mb_s / seed_mb_s:.1f}x; pairs "
        + ", ".join(f"{o / s:.1f}x" for s, o in pairs)
        + f"); the shard step on {largest_name} {largest['shard_mb_s']:.3f} MB/s "
        f"({largest['shard_mb_s'] / seed_mb_s:.1f}x).",
    ]
    if len(rows) > 2:
        small_name, small = rows[-2]
        lines.append(
            f"Peak RSS {largest_name} / {small_name}: "
            f"{largest['peak_rss_mb'] / small['peak_rss_mb']:.2f} for a "
            f"{largest['megabytes'] / small['megabytes']:.0f}x larger corpus (the steps stream)."
        )
    lines += _tokenizer_memory_lines(memory, args.sample_mb)
    lines += _shard_scaling_lines(scaling, args.scaling_mb)
    text = "\n".join(lines) + "\n"
    print(text)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "data.md").write_text(text)


if __name__ == "__main__":
    main()
