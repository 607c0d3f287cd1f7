"""Benchmark of the data steps: tokenize + shard throughput and peak memory vs. corpus size.

Measures, each in a fresh subprocess (so peak RSS is that of one run):

- `tokenize` (WordPiece training) and `shard` (tokenize + pack + write TFRecords) on the built-in
  corpus and on synthetic corpora of 10 MB and 100 MB: MB/s and peak RSS. Flat RSS from 10 MB
  to 100 MB shows that both steps stream;
- the peer: the seed README's `create_mlm_dataset` (one `tf.py_function` tokenizer call per line)
  with the same tokenizer, on a small slice, extrapolated to MB/s; and this package's
  `create_mlm_dataset` (batched tokenization) on the same slice.

Prints a Markdown table and the ratios against the peer measured in the same run, and writes
them to `<output>/data.md`. The input pipeline's batches/s against the training step's
consumption is measured by bench_input.py.

Usage: python bench/bench_data.py [--sizes-mb 10 100] [--peer-mb 1] [--pairs 3]
       [--output bench/results]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


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
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        result = _child_steps(*rest) if kind == "steps" else _child_peer(*rest)
        print(json.dumps(result))
        return

    from mlm.data.default_corpus import default_corpus_dir

    default_dir = default_corpus_dir()
    words = []
    for name in sorted(os.listdir(default_dir)):
        with open(os.path.join(default_dir, name), encoding="utf-8") as file:
            words += file.read().lower().split()

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
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
    text = "\n".join(lines) + "\n"
    print(text)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "data.md").write_text(text)


if __name__ == "__main__":
    main()
