"""Recurring runs with a cache directory: each input file is sharded once, a run over a corpus
that gained a file shards only that file, and the output is what sharding everything gives."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from mlm import storage
from mlm.data.dataset import pretraining_dataset
from mlm.data.shard_cache import PARTS_DIR
from mlm.data.shards import read_manifest
from mlm.steps.merge_shards import merge_shards
from mlm.steps.shard import shard
from mlm.steps.tokenize import tokenize
from tests.data.conftest import make_lines

SEQ = 16
SETTINGS = {"max_seq_length": SEQ, "num_shards": 4, "validation_fraction": 0.2}


def _write_corpus(root: Path, sizes: dict[str, int]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for index, (name, lines) in enumerate(sorted(sizes.items())):
        (root / name).write_text("\n".join(make_lines(lines, seed=40 + index)) + "\n")
    return root


def _totals(manifest: dict) -> dict:
    return {name: (s["examples"], s["tokens"]) for name, s in manifest["splits"].items()}


def _rows(shard_dir: str) -> int:
    return sum(1 for _ in pretraining_dataset(shard_dir, 1, shuffle=False, repeat=False))


def test_a_recurring_run_shards_only_the_new_file(tmp_path, capsys):
    corpus = _write_corpus(tmp_path / "corpus", {"a.txt": 120, "b.txt": 60, "c.txt": 90})
    cache = str(tmp_path / "cache")
    first_tok = tokenize(str(corpus), str(tmp_path / "tok1"), vocab_size=150, min_frequency=1,
                         cache_dir=cache)  # fmt: skip
    assert first_tok.trained and first_tok.cached_to == os.path.join(cache, "tokenizer")
    first = shard(str(corpus), str(tmp_path / "tok1"), str(tmp_path / "s1"), cache_dir=cache,
                  **SETTINGS)  # fmt: skip
    assert first.cache == {"dir": cache, "files": 3, "reused": 0, "sharded": 3,
                           "other_tokenizer": 0}  # fmt: skip
    # The same totals as sharding without a cache, and about num_shards files per split.
    plain = shard(str(corpus), str(tmp_path / "tok1"), str(tmp_path / "p1"), **SETTINGS)
    assert _totals(first.manifest) == _totals(plain.manifest)
    assert 3 <= len(first.manifest["splits"]["train"]["files"]) <= 5

    # The corpus gains a file: the tokenizer is kept, only the new file is read and sharded.
    _write_corpus(corpus, {"d.txt": 50})
    second_tok = tokenize(str(corpus), str(tmp_path / "tok2"), vocab_size=150, min_frequency=1,
                          cache_dir=cache)  # fmt: skip
    assert not second_tok.trained and second_tok.corpus["files"] == 0
    assert second_tok.cached_from == os.path.join(cache, "tokenizer")
    assert second_tok.info["content_hash"] == first_tok.info["content_hash"]
    assert "kept the tokenizer cached in" in capsys.readouterr().err
    second = shard(str(corpus), str(tmp_path / "tok2"), str(tmp_path / "s2"), cache_dir=cache,
                   **SETTINGS)  # fmt: skip
    assert second.cache["reused"] == 3 and second.cache["sharded"] == 1
    assert second.corpus["files"] == 1 and second.corpus["lines"] == 50  # only d.txt was read
    everything = shard(str(corpus), str(tmp_path / "tok2"), str(tmp_path / "p2"), **SETTINGS)
    assert _totals(second.manifest) == _totals(everything.manifest)
    assert _rows(str(tmp_path / "s2")) == second.manifest["splits"]["train"]["examples"]
    # The first run's output is untouched (its files are links to, not the, cached parts).
    assert _rows(str(tmp_path / "s1")) == first.manifest["splits"]["train"]["examples"]

    # A file rewritten is sharded again; the others are not.
    _write_corpus(corpus, {"b.txt": 70})
    third = shard(str(corpus), str(tmp_path / "tok2"), str(tmp_path / "s3"), cache_dir=cache,
                  **SETTINGS)  # fmt: skip
    assert (third.cache["reused"], third.cache["sharded"]) == (3, 1)
    assert third.corpus["lines"] == 70

    # A tokenizer trained again (here with another vocabulary) makes every part again, said once.
    retrained = tokenize(str(corpus), str(tmp_path / "tok3"), vocab_size=140, min_frequency=1,
                         cache_dir=cache, retrain=True)  # fmt: skip
    assert retrained.trained and retrained.info["content_hash"] != first_tok.info["content_hash"]
    capsys.readouterr()
    fourth = shard(str(corpus), str(tmp_path / "tok3"), str(tmp_path / "s4"), cache_dir=cache,
                   **SETTINGS)  # fmt: skip
    assert (fourth.cache["reused"], fourth.cache["sharded"]) == (0, 4)
    assert fourth.cache["other_tokenizer"] == 4
    err = capsys.readouterr().err
    assert "4 cached parts in" in err and "another tokenizer" in err
    # And the retrained tokenizer is the one later runs keep.
    kept = tokenize(str(corpus), str(tmp_path / "tok4"), cache_dir=cache)
    assert kept.info["content_hash"] == retrained.info["content_hash"]


def test_other_example_settings_use_other_parts_and_a_damaged_part_is_made_again(
    tmp_path, tokenizer_dir
):
    corpus = _write_corpus(tmp_path / "corpus", {"a.txt": 80, "b.txt": 40})
    cache = str(tmp_path / "cache")
    (corpus / "one-line.txt").write_text(make_lines(1, seed=5)[0] + "\n")
    run = shard(str(corpus), str(tokenizer_dir), str(tmp_path / "s1"), cache_dir=cache, **SETTINGS)
    assert run.cache["sharded"] == 3
    # The one-line file's part has an empty split: its empty file is left out of the join.
    for info in run.manifest["splits"].values():
        counts = [run.manifest["file_info"][name]["examples"] for name in info["files"]]
        assert all(counts) and sum(counts) == info["examples"]
    # num_shards only spreads the examples: the parts are reused.
    again = shard(str(corpus), str(tokenizer_dir), str(tmp_path / "s2"), cache_dir=cache,
                  **{**SETTINGS, "num_shards": 2})  # fmt: skip
    assert again.cache["reused"] == 3
    # Another sequence length makes other examples: other parts.
    longer = shard(str(corpus), str(tokenizer_dir), str(tmp_path / "s3"), cache_dir=cache,
                   **{**SETTINGS, "max_seq_length": 2 * SEQ})  # fmt: skip
    assert longer.cache["sharded"] == 3
    # A part missing one of its files is made again, not joined.
    settings_dirs = list((tmp_path / "cache" / PARTS_DIR).iterdir())
    assert len(settings_dirs) == 2
    part = next(p for p in settings_dirs[0].iterdir())
    victim = read_manifest(str(part), allow_part=True).splits["train"].files[0]
    os.remove(part / victim)
    repaired = shard(str(corpus), str(tokenizer_dir), str(tmp_path / "s4"), cache_dir=cache,
                     **SETTINGS)  # fmt: skip
    assert repaired.cache["sharded"] + shard(
        str(corpus), str(tokenizer_dir), str(tmp_path / "s5"), cache_dir=cache,
        **{**SETTINGS, "max_seq_length": 2 * SEQ},
    ).cache["sharded"] == 1  # fmt: skip


def test_partitions_in_pods_and_processes_use_the_cache_on_an_object_store(
    tmp_path, tokenizer_dir, s3_emulator
):
    bucket = s3_emulator.create_bucket()
    local = _write_corpus(tmp_path / "corpus", {f"f{i}.txt": 30 + 20 * i for i in range(5)})
    corpus = f"s3://{bucket}/corpus"
    storage.upload_dir(str(local), corpus)
    cache = f"s3://{bucket}/cache"
    whole = shard(corpus, str(tokenizer_dir), str(tmp_path / "whole"), **SETTINGS)

    # Three partitions, as the pipeline's pods run them, fill the cache; the join is the whole.
    def partitions(prefix: str) -> list:
        return [
            shard(
                corpus,
                str(tokenizer_dir),
                f"s3://{bucket}/{prefix}-{n}",
                cache_dir=cache,
                partition=n,
                partitions=3,
                **SETTINGS,
            )
            for n in (1, 2, 3)
        ]

    runs = partitions("part")
    assert sum(run.cache["sharded"] for run in runs) == 5
    merged = merge_shards([f"s3://{bucket}/part-{n}" for n in (2, 3, 1)], str(tmp_path / "m1"))
    assert _totals(merged.manifest) == _totals(whole.manifest)

    # A new object: whichever partition holds it shards it, and only it.
    (local / "f9.txt").write_text("\n".join(make_lines(45, seed=99)) + "\n")
    storage.write_bytes(f"{corpus}/f9.txt", (local / "f9.txt").read_bytes())
    runs = partitions("again")
    assert [run.cache["sharded"] for run in runs].count(1) == 1
    assert sum(run.cache["sharded"] for run in runs) == 1
    merged = merge_shards([f"s3://{bucket}/again-{n}" for n in (1, 2, 3)], str(tmp_path / "m2"))
    grown = shard(corpus, str(tokenizer_dir), str(tmp_path / "grown"), **SETTINGS)
    assert _totals(merged.manifest) == _totals(grown.manifest)

    # Processes over the same cache: everything is reused; a fresh cache shards in 2 processes.
    reused = shard(corpus, str(tokenizer_dir), f"s3://{bucket}/out", cache_dir=cache,
                   processes=2, **SETTINGS)  # fmt: skip
    assert (reused.cache["reused"], reused.cache["sharded"]) == (6, 0)
    fresh = shard(corpus, str(tokenizer_dir), str(tmp_path / "fresh"),
                  cache_dir=str(tmp_path / "cache2"), processes=2, **SETTINGS)  # fmt: skip
    assert fresh.cache["sharded"] == 6
    assert _totals(fresh.manifest) == _totals(reused.manifest) == _totals(grown.manifest)
    assert _rows(f"s3://{bucket}/out") == grown.manifest["splits"]["train"]["examples"]
    json.dumps(reused.to_dict())  # the result is what `mlm shard` prints
    shutil.rmtree(tmp_path / "cache2")
