"""Step `shard`: tokenize a corpus with a tokenizer directory into packed TFRecord shards."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlm.artifacts import SHARD_MANIFEST_FILE, check_replaceable
from mlm.config import ShardConfig
from mlm.data.shard_parts import files_digest
from mlm.errors import UserInputError

if TYPE_CHECKING:
    from mlm.data.corpus import CorpusStats
    from mlm.data.shards import ShardManifest


@dataclasses.dataclass
class ShardResult:
    """What `shard` wrote: the directory, its manifest, corpus counts and throughput."""

    output_dir: str
    manifest: dict[str, Any]
    corpus: dict[str, int]  # of the text read (with cache_dir: only the files sharded now)
    seconds: float
    megabytes_per_second: float
    # With cache_dir: {"dir", "files", "reused", "sharded", "other_tokenizer"} (counts of files).
    cache: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def shard(
    corpus: str | Sequence[str] | None, tokenizer_dir: str, output_dir: str, **settings: Any
) -> ShardResult:
    """Write a shard directory for `corpus` (see `mlm.data.shards`).

    Args:
        corpus: files, directories, globs, `.gz` or `gs://` URIs; None uses the built-in corpus.
        tokenizer_dir: a directory written by `tokenize` (local or `gs://`).
        output_dir: the shard directory (local or `gs://`).
        **settings: `mlm.config.ShardConfig` settings by name, e.g. `max_seq_length=128`,
            `num_shards=8`, `validation_fraction=0.05`, `compression="gzip"`, `processes=4`
            (partitions sharded in parallel processes and joined), `partition=1, partitions=8`
            (write one partition, for `merge_shards`).

    Returns:
        A `ShardResult`.
    """
    return shard_from_config(
        ShardConfig.create(
            corpus=corpus, tokenizer_dir=tokenizer_dir, output_dir=output_dir, **settings
        )
    )


def shard_from_config(config: ShardConfig) -> ShardResult:
    """`shard` with its settings as a `ShardConfig`: the whole corpus in one process, in
    `processes` partitions joined at the end, or one `partition` for `merge_shards`."""
    from mlm.data.corpus import partition_files, resolve_corpus
    from mlm.data.default_corpus import default_corpus_dir
    from mlm.data.tokenizer import check_tokenizer_dir

    check_replaceable(config.output_dir, SHARD_MANIFEST_FILE, "shard")
    start = time.perf_counter()
    tokenizer_info = check_tokenizer_dir(config.tokenizer_dir)
    files = resolve_corpus(config.corpus if config.corpus is not None else default_corpus_dir())
    part = None
    if config.partition is not None:
        groups = partition_files(files, config.partitions)
        if config.partition > len(groups):
            raise UserInputError(
                f"partition={config.partition}: the corpus has {len(files)} files, so it is cut "
                f"into {len(groups)} partitions (a file is never split); run partitions 1 to "
                f"{len(groups)}"
            )
        part = {"number": config.partition, "count": len(groups), "files": files_digest(files)}
        files = groups[config.partition - 1]
    cache = None
    if config.cache_dir:
        manifest, stats, cache = _write_with_cache(config, files, part, tokenizer_info.content_hash)
    elif part is not None:
        manifest, stats = _write_part(config, files, part, progress="shard")
    elif config.processes > 1 and len(files) > 1:
        manifest, stats = _write_in_processes(config, files)
    else:
        manifest, stats = _write_part(config, files, None, progress="shard")
    seconds = time.perf_counter() - start
    return ShardResult(
        output_dir=config.output_dir,
        manifest=manifest.to_dict(),
        corpus=stats.to_dict(),
        seconds=round(seconds, 3),
        megabytes_per_second=round(stats.bytes / 1e6 / seconds, 3),
        cache=cache,
    )


def _write_part(
    config: ShardConfig,
    files: list[str],
    part: dict[str, Any] | None,
    output_dir: str | None = None,
    progress: str | None = None,
) -> tuple[ShardManifest, CorpusStats]:
    """Shards `files` into `output_dir` (default: the config's), as partition `part` if given."""
    from mlm.data.corpus import CorpusStats, read_units_by_file
    from mlm.data.shards import write_shards
    from mlm.data.tokenizer import load_backend_tokenizer, read_tokenizer_info

    stats = CorpusStats()
    units = read_units_by_file(
        files,
        layout=config.layout,
        strict_utf8=config.strict_utf8,
        clean=config.clean,
        min_words=config.min_words,
        max_words=config.max_words,
        stats=stats,
        progress=progress,
        require_text=part is None,
    )
    manifest = write_shards(
        units,
        load_backend_tokenizer(config.tokenizer_dir),
        read_tokenizer_info(config.tokenizer_dir),
        output_dir or config.output_dir,
        max_seq_length=config.max_seq_length,
        num_shards=config.num_shards,
        validation_fraction=config.validation_fraction,
        line_by_line=config.line_by_line,
        compression=config.compression,
        part=part,
    )
    return manifest, stats


def _write_in_processes(config: ShardConfig, files: list[str]) -> tuple[ShardManifest, CorpusStats]:
    """Shards partitions of `files` in parallel processes into scratch, then joins them."""
    from mlm import storage
    from mlm.data.corpus import check_has_text, partition_files
    from mlm.data.shard_parts import merge_shard_parts

    count = min(config.processes, len(files))
    groups = partition_files(files, count)
    digest = files_digest(files)
    scratch = storage.scratch_dir(f"shard-parts-{os.getpid()}")
    jobs = [
        (
            config,
            group,
            {"number": index + 1, "count": count, "files": digest},
            os.path.join(scratch, f"part-{index:05d}"),
        )
        for index, group in enumerate(groups)
    ]
    try:
        stats = _run_jobs(jobs, count)
        check_has_text(files, stats, config.layout, config.min_words, config.max_words)
        manifest = merge_shard_parts([job[3] for job in jobs], config.output_dir, move=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return manifest, stats


def _write_with_cache(
    config: ShardConfig, files: list[str], part: dict[str, Any] | None, tokenizer_hash: str
) -> tuple[ShardManifest, CorpusStats, dict[str, Any]]:
    """Shards the files that have no part in `config.cache_dir` yet (see
    `mlm.data.shard_cache`), then joins every file's part into the output directory."""
    from mlm.data import shard_cache
    from mlm.data.shard_parts import join_manifests, write_joined
    from mlm.data.shards import read_manifest

    found = shard_cache.lookup(config.cache_dir, files, config.to_dict(), tokenizer_hash)
    if found.other_tokenizer:
        print(
            f"shard: {found.other_tokenizer} cached parts in {config.cache_dir} were made with "
            f"another tokenizer than {tokenizer_hash[:12]}: sharding those files again",
            file=sys.stderr,
        )
    total = sum(size or 0 for size in found.sizes.values())
    jobs = [
        (
            config.replace(
                num_shards=shard_cache.shards_for_file(config.num_shards, found.sizes[uri], total)
            ),
            [uri],
            {"number": 1, "count": 1, "files": found.keys[uri]},
            found.part_dirs[uri],
        )
        for uri in found.missing
    ]
    stats = _run_jobs(jobs, min(config.processes, len(jobs)))
    parts = [
        found.reused.get(uri) or read_manifest(found.part_dirs[uri], allow_part=True)
        for uri in files
    ]
    joined, placements = join_manifests(parts, part=part)
    write_joined(joined, placements, config.output_dir)
    return (
        joined,
        stats,
        {
            "dir": config.cache_dir,
            "files": len(files),
            "reused": len(found.reused),
            "sharded": len(found.missing),
            "other_tokenizer": found.other_tokenizer,
        },
    )


def _run_jobs(
    jobs: list[tuple[ShardConfig, list[str], dict[str, Any], str]], processes: int
) -> CorpusStats:
    """Runs `_write_part_job`s, in `processes` parallel processes when more than one, and sums
    their corpus counts."""
    import multiprocessing

    from mlm.data.corpus import CorpusStats
    from mlm.progress import ProgressMeter

    stats = CorpusStats()
    if not jobs:
        return stats
    meter = ProgressMeter(len(jobs), label="shard: parts", unit="")

    def add(part_stats: dict[str, int]) -> None:
        for key, value in part_stats.items():
            setattr(stats, key, getattr(stats, key) + value)
        meter.update(meter.done + 1)

    if processes <= 1:
        for job in jobs:
            add(_write_part_job(job))
        meter.finish()
        return stats
    # "spawn": the children start clean (the tokenizer's thread pool does not survive a fork),
    # and each tokenizes with its share of the cores. A `ProcessPoolExecutor`, unlike a
    # `multiprocessing.Pool`, fails instead of starting process after process when one dies.
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    executor = ProcessPoolExecutor(
        processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_limit_threads,
        initargs=(max(1, (os.cpu_count() or 1) // processes),),
    )
    finished = False
    try:
        for future in as_completed([executor.submit(_write_part_job, job) for job in jobs]):
            add(future.result())
        finished = True
    except BrokenProcessPool as error:
        raise UserInputError(
            f"shard: a process of processes={processes} ended without its result (killed, out "
            "of memory, or started by a script that calls shard(..., processes=N) outside an "
            '`if __name__ == "__main__":` block, which spawned processes need); re-run, with '
            "processes=1 to shard in this process"
        ) from error
    finally:
        if not finished:  # a failed or interrupted run leaves no process behind
            for process in list((getattr(executor, "_processes", None) or {}).values()):
                process.terminate()
        executor.shutdown(wait=True, cancel_futures=True)
    meter.finish()
    return stats


def _limit_threads(threads: int) -> None:
    """A partition process's start: the tokenizer's share of the cores; Ctrl-C is the parent's
    to handle (it stops the children)."""
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _write_part_job(job: tuple[ShardConfig, list[str], dict[str, Any], str]) -> dict[str, int]:
    config, files, part, output_dir = job
    _manifest, stats = _write_part(config, files, part, output_dir)
    return stats.to_dict()


def run_cli(config: ShardConfig) -> int:
    """Runs `mlm shard` and prints its result as JSON."""
    print(json.dumps(shard_from_config(config).to_dict(), indent=2))
    return 0
