"""Partitions of a shard directory: written apart (processes, or `--partition` runs as pods
would), joined by merge-shards into what one writer gives; every wrong join refused."""

from __future__ import annotations

import filecmp
import json
import os
import shutil
from pathlib import Path

import pytest

from mlm.data.corpus import partition_files
from mlm.data.dataset import pretraining_dataset
from mlm.data.shards import read_manifest
from mlm.errors import UserInputError
from mlm.steps.merge_shards import merge_shards
from mlm.steps.shard import shard
from tests.data.conftest import make_lines

SEQ = 16


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Five files of different sizes (so partitions differ in size), one sentence per line."""
    root = tmp_path_factory.mktemp("multi-file-corpus")
    for index, lines in enumerate((120, 40, 75, 10, 60)):
        (root / f"f{index}.txt").write_text("\n".join(make_lines(lines, seed=10 + index)) + "\n")
    return root


def _shard(corpus: Path, tokenizer_dir: Path, output: Path, **settings):
    return shard(str(corpus), str(tokenizer_dir), str(output), max_seq_length=SEQ,
                 num_shards=2, validation_fraction=0.2, **settings)  # fmt: skip


def _totals(manifest: dict) -> dict:
    return {name: (s["examples"], s["tokens"]) for name, s in manifest["splits"].items()}


def test_partition_files_balances_by_size_and_never_splits_a_file(corpus):
    files = sorted(str(path) for path in corpus.iterdir())
    groups = partition_files(files, 3)
    assert sorted(f for group in groups for f in group) == files
    sizes = [sum(os.path.getsize(f) for f in group) for group in groups]
    assert max(sizes) - min(sizes) <= max(os.path.getsize(f) for f in files)
    assert partition_files(list(reversed(files)), 3) == groups  # the order given does not matter
    assert len(partition_files(files, 9)) == 5  # at most one partition per file
    with pytest.raises(UserInputError, match="partitions=0"):
        partition_files(files, 0)


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_partitions_and_processes_give_the_totals_of_one_writer(
    corpus, tokenizer_dir, tmp_path, compression
):
    whole = _shard(corpus, tokenizer_dir, tmp_path / "whole", compression=compression).manifest
    parts = [
        _shard(
            corpus,
            tokenizer_dir,
            tmp_path / f"part-{n}",
            partition=n,
            partitions=3,
            compression=compression,
        )
        for n in (1, 2, 3)
    ]
    assert len({json.dumps(p.manifest["part"]) for p in parts}) == 3
    assert all(p.manifest["part"]["count"] == 3 for p in parts)
    # In any order: the join sorts the partitions by number.
    merged = merge_shards([str(tmp_path / f"part-{n}") for n in (3, 1, 2)], str(tmp_path / "m"))
    assert merged.parts == 3
    assert _totals(merged.manifest) == _totals(whole)
    assert "part" not in merged.manifest
    for split, info in merged.manifest["splits"].items():
        suffix = ".tfrecord.gz" if compression else ".tfrecord"
        assert info["files"] == [f"{split}-{i:05d}-of-00006{suffix}" for i in range(6)]
    # The parts' files were linked, not moved: the partitions are still whole.
    assert read_manifest(str(tmp_path / "part-1"), allow_part=True)

    in_processes = _shard(corpus, tokenizer_dir, tmp_path / "p", processes=3,
                          compression=compression)  # fmt: skip
    assert _totals(in_processes.manifest) == _totals(whole)
    assert in_processes.manifest == merged.manifest
    names = sorted(os.listdir(tmp_path / "m"))
    assert names == sorted(os.listdir(tmp_path / "p"))
    assert filecmp.cmpfiles(tmp_path / "m", tmp_path / "p", names, shallow=False)[0] == names

    # The joined directory trains: every example of the manifest is read.
    rows = pretraining_dataset(str(tmp_path / "m"), 1, shuffle=False, repeat=False)
    assert sum(1 for _ in rows) == merged.manifest["splits"]["train"]["examples"]


def test_wrong_joins_are_refused_in_one_line(corpus, tokenizer_dir, tmp_path):
    for n in (1, 2):
        _shard(corpus, tokenizer_dir, tmp_path / f"p{n}", partition=n, partitions=2)
    parts = [str(tmp_path / "p1"), str(tmp_path / "p2")]
    output = str(tmp_path / "out")

    with pytest.raises(UserInputError, match=r"need each of the 2 partitions once.*missing \[2\]"):
        merge_shards(parts[:1], output)
    with pytest.raises(UserInputError, match=r"got partitions \[1, 1, 2\]"):
        merge_shards([*parts, parts[0]], output)
    # Partition 2 of another corpus (a file more), or written with another sequence length.
    bigger = tmp_path / "bigger"
    shutil.copytree(corpus, bigger)
    (bigger / "f9.txt").write_text("\n".join(make_lines(30, seed=99)) + "\n")
    _shard(bigger, tokenizer_dir, tmp_path / "other", partition=2, partitions=2)
    with pytest.raises(UserInputError, match="different corpora"):
        merge_shards([parts[0], str(tmp_path / "other")], output)
    shard(str(corpus), str(tokenizer_dir), str(tmp_path / "long"), max_seq_length=SEQ * 2,
          num_shards=2, validation_fraction=0.2, partition=2, partitions=2)  # fmt: skip
    with pytest.raises(UserInputError, match=r"long has seq_length 32 but .*p1 has 16"):
        merge_shards([parts[0], str(tmp_path / "long")], output)
    # A whole directory is not a partition; a partition is not something to train on.
    _shard(corpus, tokenizer_dir, tmp_path / "whole")
    with pytest.raises(UserInputError, match="is a whole shard directory"):
        merge_shards([str(tmp_path / "whole")], output)
    with pytest.raises(UserInputError, match=r"is partition 1 of 2 .*`mlm merge-shards`"):
        pretraining_dataset(parts[0], 1)
    # A byte flipped in a partition's file (same size): named, by its CRC32C.
    damaged = tmp_path / "damaged"
    shutil.copytree(parts[1], damaged)
    name = read_manifest(str(damaged), allow_part=True).splits["train"].files[0]
    data = bytearray((damaged / name).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (damaged / name).write_bytes(bytes(data))
    with pytest.raises(UserInputError, match=f"{name} does not have the CRC32C"):
        merge_shards([parts[0], str(damaged)], output)
    assert not os.path.exists(output)
    # More partitions asked for than the corpus has files.
    with pytest.raises(UserInputError, match="has 5 files, so it is cut into 5 partitions"):
        _shard(corpus, tokenizer_dir, tmp_path / "p6", partition=6, partitions=8)


def test_processes_from_a_script_without_a_main_guard_fail_instead_of_hanging(
    corpus, tokenizer_dir, tmp_path
):
    """Spawned processes import the caller's script again; unguarded, each would start a pool
    of its own. That ends in one error within seconds, not in processes started forever."""
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text(
        "from mlm.steps.shard import shard\n"
        f"shard({str(corpus)!r}, {str(tokenizer_dir)!r}, {str(tmp_path / 'out')!r}, processes=2)\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode != 0
    assert 'outside an `if __name__ == "__main__":` block' in done.stderr
    assert not (tmp_path / "out").exists()
