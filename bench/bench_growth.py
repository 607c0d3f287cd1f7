"""Benchmark of how the data path's cost grows with the corpus: one table for 10 MB, 100 MB, 1 GB.

For each size, a synthetic corpus of 8 files (sentences drawn from the built-in corpus's words;
the same generator as bench_data.py), and each measurement in a fresh process:

- tokenize (`--vocab-size 8000`, the default `--sample-bytes`): seconds and peak RSS, the
  WordPiece trainer's memory;
- `mlm shard` with 1 and with 2 processes (`--num-shards 32`): MB/s and peak RSS (the parent's,
  and the largest of its partition processes');
- the peer, Hugging Face `run_mlm.py`'s preprocessing (`datasets.load_dataset("text")`, batched
  `map` of the same fast tokenizer with `num_proc` = 2, then `group_texts`), same corpus and
  sequence length: MB/s and peak RSS (parent, largest worker);
- a recurring run: `mlm shard --cache-dir` with 2 processes over the corpus, then over the corpus
  plus one new file of 1% of its size: seconds, and how many files the second run sharded;
- pre-training on those shards in moto's S3 server (a real S3 API on loopback), streamed
  (`--input-window-files 4`): seconds to the first step and the local disk high-water mark
  (bench_streaming.py compares streaming with copying first).

Usage: python bench/bench_growth.py [--sizes-mb 10 100 1000] [--output bench/results]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).parent))

import bench_data  # (the corpus generator and the shard / HF / tokenize children)
import bench_streaming  # (moto, the first-step timer)

FILES = 8
NUM_SHARDS = 32
SEQ_LENGTH = "128"


def _words() -> list[str]:
    from mlm.data.default_corpus import default_corpus_dir

    words = []
    for name in sorted(os.listdir(default_corpus_dir())):
        words += Path(default_corpus_dir(), name).read_text(encoding="utf-8").lower().split()
    return words


def _shard_child(corpus: str, tokenizer: str, work: str, processes: int, **settings) -> dict:
    settings = {"num_shards": NUM_SHARDS, **settings}
    return bench_data._run_child(
        "shard", corpus, tokenizer, work, str(processes), json.dumps(settings)
    )


def _measure(size: float, words: list[str], tmp: str, s3_root: str, env: dict) -> dict:
    """Every column of one row of the table, for a corpus of `size` MB."""
    corpus = os.path.join(tmp, "corpus")
    for index in range(FILES):
        bench_data._write_synthetic(
            os.path.join(corpus, f"part-{index}.txt"), size / FILES, words, seed=index
        )
    megabytes = sum(os.path.getsize(os.path.join(corpus, f)) for f in os.listdir(corpus)) / 1e6
    row: dict = {"megabytes": megabytes}
    row["tokenize"] = bench_data._run_child(
        "tokenize", corpus, os.path.join(tmp, "tok-run"), "100000000"
    )
    tokenizer = os.path.join(tmp, "tok-run", "tok")
    row["shard-1"] = _shard_child(corpus, tokenizer, os.path.join(tmp, "s1"), 1)
    shutil.rmtree(os.path.join(tmp, "s1"))
    row["shard-2"] = _shard_child(corpus, tokenizer, os.path.join(tmp, "s2"), 2)
    row["hf-2"] = bench_data._run_child(
        "hf", corpus, tokenizer, os.path.join(tmp, "hf"), "2", SEQ_LENGTH
    )
    shutil.rmtree(os.path.join(tmp, "hf"), ignore_errors=True)
    print(f"  {size:g} MB: tokenize, shard and the peer measured", file=sys.stderr)

    cache = os.path.join(tmp, "cache")
    row["cached-first"] = _shard_child(corpus, tokenizer, os.path.join(tmp, "c1"), 2,
                                       cache_dir=cache)  # fmt: skip
    bench_data._write_synthetic(os.path.join(corpus, "new.txt"), size / 100, words, seed=99)
    row["cached-second"] = _shard_child(corpus, tokenizer, os.path.join(tmp, "c2"), 2,
                                        cache_dir=cache)  # fmt: skip
    for name in ("c1", "c2", "cache"):
        shutil.rmtree(os.path.join(tmp, name))
    print(f"  {size:g} MB: recurring run measured", file=sys.stderr)

    from mlm import storage

    uri = f"{s3_root}/shards-{size:g}"
    storage.upload_dir(os.path.join(tmp, "s2", "shards"), uri)
    row["shard_files"] = len(os.listdir(os.path.join(tmp, "s2", "shards"))) - 1
    row["shards_mb"] = sum(p.stat().st_size for p in Path(tmp, "s2", "shards").iterdir()) / 1e6
    shutil.rmtree(os.path.join(tmp, "s2"))
    argv = bench_streaming.pretrain_argv(uri, tokenizer, os.path.join(tmp, "pretrain"), 4)
    row["stream"] = bench_streaming.first_step(argv, env, Path(tmp, "scratch"))
    shutil.rmtree(os.path.join(tmp, "pretrain"), ignore_errors=True)
    print(f"  {size:g} MB: first streamed step measured", file=sys.stderr)
    return row


def _lines(rows: list[dict]) -> list[str]:
    lines = [
        "| corpus MB | tokenize s | tokenizer peak RSS MB | shard 1 proc MB/s | shard 2 procs "
        "MB/s | shard peak RSS MB (parent / process) | HF num_proc=2 MB/s | HF peak RSS MB "
        "(parent / worker) | mlm 2 procs / HF | recurring run: first s | +1% file: s "
        "(files sharded) | shards MB (files) | first streamed step s | disk high-water MB |",
        "|---:|---:|---:|---:|---:|---|---:|---|---:|---:|---|---|---:|---:|",
    ]
    for r in rows:
        s2, hf, second = r["shard-2"], r["hf-2"], r["cached-second"]
        lines.append(
            f"| {r['megabytes']:.0f} | {r['tokenize']['seconds']:.1f} "
            f"| {r['tokenize']['peak_rss_mb']:.0f} | {r['shard-1']['mb_s']:.2f} "
            f"| {s2['mb_s']:.2f} | {s2['peak_rss_mb']:.0f} / {s2['children_peak_rss_mb']:.0f} "
            f"| {hf['mb_s']:.2f} | {hf['peak_rss_mb']:.0f} / {hf['children_peak_rss_mb']:.0f} "
            f"| {s2['mb_s'] / hf['mb_s']:.2f}x | {r['cached-first']['seconds']:.1f} "
            f"| {second['seconds']:.1f} ({second['cache']['sharded']} of "
            f"{second['cache']['files']}) | {r['shards_mb']:.0f} ({r['shard_files']}) "
            f"| {r['stream']['seconds']:.1f} | {r['stream']['disk_mb']:.1f} |"
        )
    first, last = rows[0], rows[-1]
    growth = last["megabytes"] / first["megabytes"]

    def ratio(key: str, field: str) -> float:
        return last[key][field] / first[key][field]

    lines += [
        "",
        f"From {first['megabytes']:.0f} to {last['megabytes']:.0f} MB ({growth:.0f}x): "
        f"tokenizer peak RSS {ratio('tokenize', 'peak_rss_mb'):.2f}x, shard peak RSS "
        f"{ratio('shard-2', 'peak_rss_mb'):.2f}x (processes "
        f"{ratio('shard-2', 'children_peak_rss_mb'):.2f}x), HF peak RSS "
        f"{ratio('hf-2', 'peak_rss_mb'):.2f}x (workers {ratio('hf-2', 'children_peak_rss_mb'):.2f}x), "
        f"first streamed step {ratio('stream', 'seconds'):.2f}x, disk high-water "
        f"{ratio('stream', 'disk_mb'):.2f}x. The recurring run over the corpus plus 1% "
        "took "
        + ", ".join(
            f"{r['cached-second']['seconds'] / r['shard-2']['seconds'] * 100:.0f}%" for r in rows
        )
        + " of the time of sharding the corpus with 2 processes (by size).",
        "mlm shard with 2 processes against 1: "
        + ", ".join(f"{r['shard-2']['mb_s'] / r['shard-1']['mb_s']:.2f}x" for r in rows)
        + "; against the HF peer with num_proc=2: "
        + ", ".join(f"{r['shard-2']['mb_s'] / r['hf-2']['mb_s']:.2f}x" for r in rows)
        + ". mlm writes TFRecord shards with a manifest and checksums; the peer writes Arrow "
        "cache files.",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    args = parser.parse_args()

    words = _words()
    workdir = tempfile.mkdtemp(prefix="bench-growth-")
    server, endpoint = bench_streaming.start_moto(workdir)
    os.environ.update(bench_streaming.AWS, AWS_ENDPOINT_URL=endpoint)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    rows = []
    start = time.perf_counter()
    try:
        import boto3

        boto3.client("s3").create_bucket(Bucket="bench")
        for size in args.sizes_mb:
            tmp = os.path.join(workdir, f"size-{size:g}")
            os.makedirs(tmp)
            rows.append(_measure(size, words, tmp, "s3://bench", env))
            shutil.rmtree(tmp)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(workdir, ignore_errors=True)

    lines = [
        "# How cost grows with the corpus: tokenize, shard, recurring runs, streaming",
        "",
        *bench_data._machine_lines(),
        f"Command: `{' '.join([os.path.basename(sys.executable), *sys.argv])}`; "
        f"{os.cpu_count()} CPUs; {FILES} files per corpus, sequence length {SEQ_LENGTH}, "
        f"`--num-shards {NUM_SHARDS}`; one run of each, in a fresh process; "
        f"{time.perf_counter() - start:.0f} s in all.",
        "",
        *_lines(rows),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "growth.md").write_text(text)


if __name__ == "__main__":
    main()
