"""CheckpointKeeper: keep the last K, resume from the newest complete one, on disk and in stores."""

from __future__ import annotations

import os

import pytest

from mlm import storage
from mlm.errors import UserInputError
from mlm.training.checkpoints import CheckpointKeeper


def make_state():
    import tensorflow as tf

    step = tf.Variable(0, dtype=tf.int64)
    weights = tf.Variable([0.0, 0.0, 0.0])
    return tf.train.Checkpoint(step=step, weights=weights), step, weights


def save_steps(keeper: CheckpointKeeper, step, weights, steps) -> None:
    for number in steps:
        step.assign(number)
        weights.assign([float(number)] * 3)
        keeper.save(number, {"history": {"step": list(range(1, number + 1))}})


def test_keeps_the_last_k_and_restores_the_newest(tmp_path):
    checkpoint, step, weights = make_state()
    keeper = CheckpointKeeper(str(tmp_path / "ckpt"), checkpoint, keep=2)
    assert keeper.restore_latest() is None
    save_steps(keeper, step, weights, [3, 6, 9])
    names = sorted(os.listdir(tmp_path / "ckpt"))
    assert names == [
        "checkpoint",
        "ckpt-6.data-00000-of-00001", "ckpt-6.index", "ckpt-6.json",
        "ckpt-9.data-00000-of-00001", "ckpt-9.index", "ckpt-9.json",
    ]  # fmt: skip
    keeper.close()

    fresh, fresh_step, fresh_weights = make_state()
    sidecar = CheckpointKeeper(str(tmp_path / "ckpt"), fresh, keep=2).restore_latest()
    assert int(fresh_step.numpy()) == 9
    assert fresh_weights.numpy().tolist() == [9.0, 9.0, 9.0]
    assert sidecar == {"history": {"step": list(range(1, 10))}}


def test_a_partial_checkpoint_is_never_the_latest(tmp_path):
    """A save killed before the state file was updated leaves files that must be ignored."""
    checkpoint, step, weights = make_state()
    directory = tmp_path / "ckpt"
    save_steps(CheckpointKeeper(str(directory), checkpoint, keep=3), step, weights, [2, 4])
    # What a process killed in the middle of saving step 6 leaves behind: data, no index entry.
    (directory / "ckpt-6.data-00000-of-00001").write_bytes(b"\0" * 10)
    (directory / "ckpt-6.index").write_bytes(b"truncated")
    (directory / "ckpt-6.json").write_text('{"history": {}}')
    (directory / "ckpt-6_temp").mkdir()

    fresh, fresh_step, _ = make_state()
    keeper = CheckpointKeeper(str(directory), fresh, keep=3)
    assert keeper.latest == str(directory / "ckpt-4")
    keeper.restore_latest()
    assert int(fresh_step.numpy()) == 4


def test_non_chief_saves_to_scratch_and_restores_from_the_chief(tmp_path):
    checkpoint, step, weights = make_state()
    directory = tmp_path / "ckpt"
    chief = CheckpointKeeper(str(directory), checkpoint, keep=2)
    save_steps(chief, step, weights, [5])

    other, other_step, _ = make_state()
    worker = CheckpointKeeper(str(directory), other, is_chief=False, keep=2)
    assert worker.restore_latest() == {"history": {"step": [1, 2, 3, 4, 5]}}
    assert int(other_step.numpy()) == 5
    other_step.assign(7)
    assert worker.save(7) is None  # written to scratch and deleted
    assert not (directory / "ckpt-7.index").exists()
    assert not any(name.startswith("worker") for name in os.listdir(worker._scratch))
    worker.close()
    assert not os.path.exists(worker._scratch)


def test_object_store_checkpoints_round_trip(object_store):
    """gs:// on fake-gcs-server, s3:// and minio:// on moto's S3 server."""
    directory = f"{object_store}/run/checkpoints"
    checkpoint, step, weights = make_state()
    keeper = CheckpointKeeper(directory, checkpoint, keep=2)
    assert keeper.restore_latest() is None
    save_steps(keeper, step, weights, [1, 2, 3])
    keeper.close()
    remote = sorted(uri.rsplit("/", 1)[1] for uri in storage.glob(f"{directory}/*"))
    assert remote == [
        "checkpoint",
        "ckpt-2.data-00000-of-00001", "ckpt-2.index", "ckpt-2.json",
        "ckpt-3.data-00000-of-00001", "ckpt-3.index", "ckpt-3.json",
    ]  # fmt: skip

    fresh, fresh_step, fresh_weights = make_state()
    restored = CheckpointKeeper(directory, fresh, keep=2)
    assert restored.restore_latest()["history"]["step"] == [1, 2, 3]
    assert int(fresh_step.numpy()) == 3
    assert fresh_weights.numpy().tolist() == [3.0, 3.0, 3.0]

    other, other_step, _ = make_state()
    CheckpointKeeper(directory, other, is_chief=False).restore_latest()
    assert int(other_step.numpy()) == 3


def test_keep_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="at least 1"):
        CheckpointKeeper(str(tmp_path), make_state()[0], keep=0)


def test_a_checkpoint_of_another_model_is_a_user_error(tmp_path):
    import tensorflow as tf

    checkpoint, step, weights = make_state()
    save_steps(CheckpointKeeper(str(tmp_path), checkpoint), step, weights, [1])
    other = tf.train.Checkpoint(step=tf.Variable(0, dtype=tf.int64), weights=tf.Variable([0.0]))
    with pytest.raises(UserInputError, match=r"cannot resume from checkpoint .*ckpt-1.*different"):
        CheckpointKeeper(str(tmp_path), other).restore_latest()


@pytest.mark.parametrize("remote", [False, True])
def test_input_positions_are_kept_per_worker_and_restored(tmp_path, gcs_emulator, remote):
    """Each worker's iterator state is saved with the checkpoint (the last `keep` of them), local
    or on gs://, and a new iterator restored from it continues where the old one stopped."""
    import tensorflow as tf

    directory = (
        f"gs://{gcs_emulator.create_bucket()}/run/checkpoints"
        if remote
        else str(tmp_path / "checkpoints")
    )
    dataset = tf.data.Dataset.range(1000).shuffle(50, seed=1).prefetch(2)
    checkpoint, step, _weights = make_state()
    iterator = iter(dataset)
    keeper = CheckpointKeeper(directory, checkpoint, is_chief=False, keep=2)
    keeper.track_input(iterator, worker=1, num_workers=2)
    for number in (3, 5, 7):
        while int(step.numpy()) < number:
            next(iterator)
            step.assign_add(1)
        keeper.save(number)
    expected = [int(next(iterator)) for _ in range(5)]  # what follows step 7
    keeper.close()
    states = storage.join(directory, "input", "worker-1-of-2")
    assert [uri.rsplit("/", 1)[1] for uri in storage.glob(storage.join(states, "*"))] == [
        "ckpt-5", "ckpt-7",
    ]  # fmt: skip
    assert storage.exists(storage.join(states, "ckpt-7", "DONE"))

    fresh = iter(dataset)
    restorer = CheckpointKeeper(directory, make_state()[0], is_chief=False)
    restorer.track_input(fresh, worker=1, num_workers=2)
    assert not restorer.restore_input(3)  # dropped: only the last `keep` are kept
    assert restorer.restore_input(7)
    assert [int(next(fresh)) for _ in range(5)] == expected
    other_count = CheckpointKeeper(directory, make_state()[0], is_chief=False)
    other_count.track_input(iter(dataset), worker=1, num_workers=3)
    assert not other_count.restore_input(7)  # another worker count: another pipeline
