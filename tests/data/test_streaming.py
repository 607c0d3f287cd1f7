"""Object-store shards read as a stream (`mlm.data.streaming`), on moto's S3 server (the first
test also on fake-gcs-server and as minio://).

The shard files are uploaded to a real S3 API server and read through `pretraining_dataset`, as
training reads them: what is asserted is what a worker would see (every example once per pass,
its own files only, a bounded local footprint, a resumable position).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mlm import storage
from mlm.data import pretraining_dataset, read_manifest
from mlm.data.streaming import stream_summary
from mlm.errors import UserInputError
from tests.data.conftest import make_lines

tf = pytest.importorskip("tensorflow")

NUM_FILES = 10


@pytest.fixture(scope="module")
def local_shards(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Ten train files (about 40 examples of 16 tokens each) and one validation file."""
    from mlm.steps.shard import shard
    from mlm.steps.tokenize import tokenize

    root = tmp_path_factory.mktemp("streaming")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(make_lines(500, seed=3)) + "\n")
    tokenize(str(corpus), str(root / "tokenizer"), vocab_size=120, min_frequency=1)
    shard(
        str(corpus),
        str(root / "tokenizer"),
        str(root / "shards"),
        max_seq_length=16,
        num_shards=NUM_FILES,
        validation_fraction=0.05,
    )
    return str(root / "shards")


@pytest.fixture
def s3_shards(s3_emulator, local_shards) -> str:
    uri = f"s3://{s3_emulator.create_bucket()}/shards"
    storage.upload_dir(local_shards, uri)
    return uri


@pytest.fixture
def store_shards(object_store, local_shards) -> str:
    """The shards on each object store the tests start (gs://, s3://, minio://)."""
    uri = f"{object_store}/shards"
    storage.upload_dir(local_shards, uri)
    return uri


def rows(dataset, batches: int | None = None) -> list[tuple[int, ...]]:
    """The examples of `dataset`'s batches (all, or the first `batches`) as tuples of ids."""
    out = []
    for number, batch in enumerate(dataset):
        if batches is not None and number == batches:
            break
        out.extend(tuple(row) for row in batch["input_ids"].numpy().tolist())
    return out


def test_one_pass_reads_every_example_once_within_the_window(store_shards, local_shards):
    windows = []
    dataset = pretraining_dataset(
        store_shards, 4, repeat=False, drop_remainder=False, seed=5, window_files=2, windows=windows
    )
    streamed = rows(dataset)
    local = rows(pretraining_dataset(local_shards, 4, repeat=False, drop_remainder=False))
    assert sorted(streamed) == sorted(local)
    copied_first = pretraining_dataset(
        store_shards, 4, repeat=False, drop_remainder=False, window_files=0
    )
    assert sorted(rows(copied_first)) == sorted(local)
    assert len(streamed) == read_manifest(local_shards).splits["train"].examples

    (window,) = windows
    sizes = {path.name: path.stat().st_size for path in Path(local_shards).glob("train-*")}
    assert sorted(window.fetched) == sorted(sizes)  # each file fetched once
    # At most 2 files on disk at once, so the high-water mark is below the two largest files.
    largest_two = sum(sorted(sizes.values())[-2:])
    assert 0 < window.high_water_bytes <= largest_two < sum(sizes.values()) / 3
    summary = stream_summary(windows)
    assert summary["window_files"] == 2
    assert summary["local_high_water_bytes"] == window.high_water_bytes
    assert summary["streamed_files"] == sorted(sizes)


def test_files_read_are_deleted_and_only_the_window_is_on_disk(s3_shards):
    windows = []
    dataset = pretraining_dataset(
        s3_shards, 4, shuffle=False, window_files=3, windows=windows, shuffle_buffer=1
    )
    iterator = iter(dataset)
    (window,) = windows
    on_disk = []
    for _ in range(40):
        next(iterator)
        on_disk.append(len(os.listdir(window.local_dir)))
    assert max(on_disk) <= 3
    assert len(window.fetched) > 3  # it went past the first window (and deleted what it read)
    window.close()  # does not wait: a fetch still under way deletes its file when it ends
    for _ in range(200):
        left = os.listdir(window.local_dir) if os.path.exists(window.local_dir) else []
        if not left:
            break
        time.sleep(0.05)
    assert left == []


def test_each_input_pipeline_streams_only_its_own_files(s3_shards):
    names = {}
    for index in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=index)
        windows = []
        rows(pretraining_dataset(s3_shards, 4, input_context=context, repeat=False,
                                 drop_remainder=False, windows=windows))  # fmt: skip
        names[index] = set(windows[0].fetched)
    assert names[0].isdisjoint(names[1])
    assert len(names[0]) == len(names[1]) == NUM_FILES // 2
    assert names[0] | names[1] == {f"train-{i:05d}-of-{NUM_FILES:05d}.tfrecord" for i in range(10)}


def test_the_order_is_seeded_and_changes_every_pass(s3_shards):
    def first_batches(seed: int) -> list:
        windows = []
        dataset = pretraining_dataset(s3_shards, 4, seed=seed, window_files=2, windows=windows)
        batches = rows(dataset, 50)  # more than two passes over the ~40 examples... of 10 files
        return batches, windows[0]

    first, window = first_batches(11)
    again, _ = first_batches(11)
    assert first == again
    orders = [[window.order(k) for k in range(p * NUM_FILES, (p + 1) * NUM_FILES)] for p in (0, 1)]
    assert sorted(orders[0]) == sorted(orders[1]) == list(range(NUM_FILES))
    assert orders[0] != orders[1]
    assert first_batches(12)[0] != first


def test_a_restored_iterator_continues_where_it_was_saved_in_a_fresh_window(s3_shards, tmp_path):
    windows = []

    def dataset():
        return pretraining_dataset(
            s3_shards, 4, seed=3, window_files=2, shuffle_buffer=8, windows=windows
        )

    iterator = iter(dataset())
    for _ in range(7):  # past the first file (about 4 examples each)
        next(iterator)
    path = tf.train.Checkpoint(iterator=iterator).write(str(tmp_path / "input"))
    expected = [next(iterator)["input_ids"].numpy().tolist() for _ in range(15)]
    del iterator
    windows.pop().close()  # the pod is gone, and its disk with it

    fresh = iter(dataset())
    assert os.listdir(windows[0].local_dir) == []
    tf.train.Checkpoint(iterator=fresh).read(path).assert_consumed()
    resumed = [next(fresh)["input_ids"].numpy().tolist() for _ in range(15)]
    assert resumed == expected


def test_a_shard_truncated_in_the_store_is_refused_before_training(s3_shards):
    name = f"train-00003-of-{NUM_FILES:05d}.tfrecord"
    data = storage.read_bytes(f"{s3_shards}/{name}")
    storage.write_bytes(f"{s3_shards}/{name}", data[:-5])
    with pytest.raises(UserInputError, match=f"{name} is {len(data) - 5} bytes but its manifest"):
        pretraining_dataset(s3_shards, 4)


def test_a_shard_corrupted_in_the_store_fails_with_one_line_naming_it(s3_shards):
    name = f"train-00000-of-{NUM_FILES:05d}.tfrecord"
    data = bytearray(storage.read_bytes(f"{s3_shards}/{name}"))
    data[len(data) // 2] ^= 0xFF  # same size: only the CRC32C finds it
    storage.write_bytes(f"{s3_shards}/{name}", bytes(data))
    dataset = pretraining_dataset(s3_shards, 4, shuffle=False, window_files=1)
    with pytest.raises(Exception) as caught:
        rows(dataset, 3)
    from mlm.errors import user_message

    message = user_message(caught.value)
    assert message.startswith(f"{s3_shards}/{name} has CRC32C ")
    assert message.endswith("the shard is corrupted; re-run `mlm shard`")
    assert "\n" not in message and "Traceback" not in message


def test_window_files_must_not_be_negative(s3_shards):
    with pytest.raises(UserInputError, match="window_files=-1"):
        pretraining_dataset(s3_shards, 4, window_files=-1)


def test_collecting_an_abandoned_iterator_while_it_waits_for_a_fetch_does_not_hang(
    s3_shards, monkeypatch
):
    """The deadlock this guards against: Python's garbage collector, running in the thread a
    fetch needs (s3fs's event loop), destroys an iterator whose `tf.data` thread waits in
    `ShardWindow.path` for that fetch; TensorFlow's iterator destructor waits for that thread."""
    import gc
    import threading

    from mlm.data.streaming import ShardWindow

    entered, collected = threading.Event(), threading.Event()
    real_fetch = ShardWindow._fetch

    def fetch_that_needs_the_collecting_thread(self, uri, local):
        if "00001-of" in uri:  # the second file: finishes only after the collection
            entered.set()
            collected.wait(timeout=120)
        return real_fetch(self, uri, local)

    monkeypatch.setattr(ShardWindow, "_fetch", fetch_that_needs_the_collecting_thread)
    dataset = pretraining_dataset(s3_shards, 2, shuffle=False, window_files=1, shuffle_buffer=1)
    iterator = iter(dataset)
    for _ in range(100):  # read the first file; tf.data then waits for the second one
        if entered.wait(timeout=0.2):
            break
        next(iterator)
    assert entered.is_set()
    cycle = [iterator, dataset]
    cycle.append(cycle)  # only the cyclic collector can free them
    del iterator, dataset, cycle

    def collect() -> None:
        gc.collect()
        collected.set()

    collector = threading.Thread(target=collect, daemon=True)
    collector.start()
    collector.join(timeout=60)
    assert collected.is_set(), "the collection hung on the iterator's destruction"


def test_a_shard_missing_from_the_store_is_found_by_one_listing(s3_shards, monkeypatch):
    name = f"train-00004-of-{NUM_FILES:05d}.tfrecord"
    storage.remove(f"{s3_shards}/{name}")
    from mlm.storage import ops

    asked = []
    real_stat = ops._stat
    monkeypatch.setattr(ops, "_stat", lambda uri: asked.append(uri) or real_stat(uri))
    with pytest.raises(UserInputError, match=f"is incomplete: {s3_shards}/{name} is listed"):
        pretraining_dataset(s3_shards, 4)
    # No request per shard file: the store's answer for all of them comes from one listing.
    assert [uri for uri in asked if uri.endswith(".tfrecord")] == []
