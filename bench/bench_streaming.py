"""Benchmark of pre-training on object-store shards: time to the first step and local disk as the
corpus grows, streamed against copied first.

One synthetic corpus is sharded once; larger shard sets are made by repeating its train files
under new names (the manifest lists them with their sizes and CRC32Cs) and uploaded to moto's S3
server (a real S3 API on loopback). For each size, `mlm pretrain --steps 3` (the tiny model, one
worker, in a fresh process) runs two ways, interleaved:

- streamed (the default): `--input-window-files 4`, each file fetched a few ahead and deleted
  once read;
- copied first (the peer: what `pretrain` did before streaming): `--input-window-files 0`, every
  shard staged to local disk before the first step.

Reported: seconds from process start to the first step's progress line, and the local disk
high-water mark, polled from outside the process (every byte under the `TMPDIR` it is given).

Usage: python bench/bench_streaming.py [--sizes-mb 10 100 1000] [--repeats 2]
       [--output bench/results]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
TINY_MODEL = {"hidden_size": 64, "num_layers": 2, "num_heads": 2, "intermediate_size": 128}
AWS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class DiskHighWater:
    """Polls the bytes under `root` (every file, any depth) until stopped; keeps the most seen."""

    def __init__(self, root: Path) -> None:
        self.root, self.bytes = root, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.01):
            total = 0
            for directory, _, files in os.walk(self.root):
                for name in files:
                    with contextlib.suppress(OSError):  # deleted while listed
                        total += os.path.getsize(os.path.join(directory, name))
            self.bytes = max(self.bytes, total)

    def __enter__(self) -> DiskHighWater:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def start_moto(workdir: str) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(os.path.join(workdir, "moto.log"), "wb")  # noqa: SIM115 (lives with the server)
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).read()
            return server, endpoint
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto's server did not start (log: {log.name})") from None
            time.sleep(0.2)


def base_shards(workdir: str, megabytes: float) -> tuple[str, str]:
    """A tokenizer and a shard directory of a synthetic corpus of about `megabytes` MB."""
    from mlm.data.default_corpus import default_corpus_dir
    from mlm.steps.shard import shard
    from mlm.steps.tokenize import tokenize

    words = []
    for name in sorted(os.listdir(default_corpus_dir())):
        words += Path(default_corpus_dir(), name).read_text(encoding="utf-8").lower().split()
    rng = random.Random(0)
    corpus = os.path.join(workdir, "corpus.txt")
    with open(corpus, "w", encoding="utf-8") as file:
        while file.tell() < megabytes * 1e6:
            lines = (" ".join(rng.choices(words, k=rng.randint(6, 40))) for _ in range(2000))
            file.write(".\n".join(lines) + ".\n")
    tokenizer = os.path.join(workdir, "tokenizer")
    tokenize(corpus, tokenizer, vocab_size=4000)
    shards = os.path.join(workdir, "shards")
    shard(corpus, tokenizer, shards, max_seq_length=128, num_shards=8, validation_fraction=0.01)
    return tokenizer, shards


def repeated_shards(base: str, target_mb: float, directory: str) -> float:
    """A shard directory whose train split repeats `base`'s train files (renamed) until it holds
    `target_mb` MB; returns its train megabytes."""
    manifest = json.loads(Path(base, "manifest.json").read_text())
    train = manifest["splits"]["train"]
    files, info = list(train["files"]), manifest["file_info"]
    file_bytes = sum(info[name]["bytes"] for name in files)
    copies = max(1, round(target_mb * 1e6 / file_bytes))
    os.makedirs(directory)
    names = []
    for _ in range(copies):
        for name in files:
            new = f"train-{len(names):05d}.tfrecord"
            os.link(os.path.join(base, name), os.path.join(directory, new))
            info[new] = info[name]
            names.append(new)
    for name in manifest["splits"]["validation"]["files"]:
        shutil.copy(os.path.join(base, name), directory)
    for name in files:
        del info[name]
    train.update(files=names, examples=train["examples"] * copies, tokens=train["tokens"] * copies)
    Path(directory, "manifest.json").write_text(json.dumps(manifest))
    return file_bytes * copies / 1e6


def pretrain_argv(shards: str, tokenizer: str, output: str, window_files: int) -> list[str]:
    """`mlm pretrain --steps 3` of the tiny model on `shards`, a progress line per step."""
    return [
        sys.executable, "-m", "mlm.cli", "pretrain", "--shards", shards, "--tokenizer", tokenizer,
        "--output", output, "--model-overrides", json.dumps(TINY_MODEL), "--batch-size", "16",
        "--steps", "3", "--log-every-steps", "1", "--validation-batches", "0",
        "--input-window-files", str(window_files),
    ]  # fmt: skip


def first_step(argv: list[str], env: dict[str, str], scratch: Path) -> dict:
    """Seconds from start to the first progress line, and the local disk high-water mark."""
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    start = time.perf_counter()
    with DiskHighWater(scratch) as disk:
        process = subprocess.Popen(
            argv, env={**env, "TMPDIR": str(scratch)}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        seconds, lines = None, []
        for line in process.stdout:
            lines.append(line)
            if seconds is None and line.startswith("step 1/"):
                seconds = time.perf_counter() - start
        process.wait()
    if process.returncode or seconds is None:
        raise RuntimeError("pretrain failed:\n" + "".join(lines[-30:]))
    return {"seconds": seconds, "disk_mb": disk.bytes / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--base-mb", type=float, default=4.0, help="text sharded once")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).parent))
    import bench_peers  # machine_line: the CPU and its bfloat16 instructions

    from mlm import storage

    workdir = tempfile.mkdtemp(prefix="bench-streaming-")
    server, endpoint = start_moto(workdir)
    os.environ.update(AWS, AWS_ENDPOINT_URL=endpoint)
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    rows = []
    try:
        tokenizer, base = base_shards(workdir, args.base_mb)
        import boto3

        boto3.client("s3").create_bucket(Bucket="bench")
        for size in args.sizes_mb:
            local = os.path.join(workdir, f"shards-{size:g}")
            train_mb = repeated_shards(base, size, local)
            uri = f"s3://bench/shards-{size:g}"
            storage.upload_dir(local, uri)
            shutil.rmtree(local)
            runs: dict[str, list[dict]] = {"streamed": [], "copied": []}
            for repeat in range(args.repeats):
                for mode, window in (("streamed", 4), ("copied", 0)):
                    output = os.path.join(workdir, f"out-{size:g}-{mode}-{repeat}")
                    argv = pretrain_argv(uri, tokenizer, output, window)
                    runs[mode].append(first_step(argv, env, Path(workdir, "scratch")))
            rows.append((size, train_mb, runs))
            print(f"  measured {train_mb:.0f} MB", file=sys.stderr)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(workdir, ignore_errors=True)

    lines = [
        "# Pre-training on object-store shards: time to the first step and local disk",
        "",
        bench_peers.machine_line(),
        "",
        f"Command: `{' '.join([os.path.basename(sys.executable), *sys.argv])}`; "
        f"{os.cpu_count()} CPUs; moto's S3 server on loopback; `mlm pretrain --steps 3`, tiny "
        f"model, one worker, a fresh process each; medians of {args.repeats} interleaved runs.",
        "",
        "| train shards MB | first step, streamed s | first step, copied first s | copied / "
        "streamed | disk high-water streamed MB | copied first MB |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for _, train_mb, runs in rows:
        streamed = {
            k: statistics.median(r[k] for r in runs["streamed"]) for k in runs["streamed"][0]
        }
        copied = {k: statistics.median(r[k] for r in runs["copied"]) for k in runs["copied"][0]}
        lines.append(
            f"| {train_mb:.0f} | {streamed['seconds']:.1f} | {copied['seconds']:.1f} | "
            f"{copied['seconds'] / streamed['seconds']:.2f}x | {streamed['disk_mb']:.1f} | "
            f"{copied['disk_mb']:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "streaming.md").write_text(text)


if __name__ == "__main__":
    main()
