"""Under MirroredStrategy: one `fit` step over two replicas equals the single-device step, and
the evaluator masks and sums each replica's part of a batch as documented.

Runs in child processes, because the two logical CPU devices must be configured before
TensorFlow starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

CHILD = textwrap.dedent(
    """
    import json
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from core_helpers import CustomEncoder
    from mlm.model import MaskedLanguageModel

    ids = np.random.default_rng(0).integers(5, 60, size=(4, 8)).astype("int32")
    ids[:2, 3:] = 0  # uneven padding: the two replicas hold different numbers of tokens
    data = tf.data.Dataset.from_tensor_slices(
        {"input_ids": ids, "attention_mask": (ids != 0).astype("int32")}
    ).batch(4)

    def one_step(strategy, weights):
        with strategy.scope():
            # Every maskable token is selected and becomes [MASK]: the step is deterministic.
            model = MaskedLanguageModel(
                CustomEncoder(60, 16), vocab_size=60, mask_token_id=4,
                special_token_ids=[0, 1, 2, 3, 4], mask_ratio=1.0, random_token_ratio=0.0,
                unchanged_ratio=0.0, mlm_head_dropout=0.0,
            )
            model.build()
            if weights is not None:
                model.set_weights(weights)
            start = model.get_weights()
            model.compile(optimizer=keras.optimizers.SGD(learning_rate=1.0))
        loss = model.fit(data, epochs=1, verbose=0).history["loss"][0]
        return start, model.get_weights(), loss, strategy.num_replicas_in_sync

    start, single, single_loss, _ = one_step(tf.distribute.get_strategy(), None)
    _, mirrored, mirrored_loss, replicas = one_step(
        tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]), start
    )
    print(json.dumps({
        "replicas": replicas,
        "losses": [single_loss, mirrored_loss],
        "largest_update": max(float(np.abs(a - b).max()) for a, b in zip(single, start)),
        "largest_difference": max(float(np.abs(a - b).max()) for a, b in zip(single, mirrored)),
    }))
    """
)


EVALUATE_CHILD = textwrap.dedent(
    """
    import json
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from core_helpers import CustomEncoder
    from mlm.evaluation import masked_lm_metrics
    from mlm.model import MaskedLanguageModel

    ids = np.random.default_rng(1).integers(5, 60, size=(8, 12)).astype("int32")
    ids[1, 6:] = 0
    inputs = {"input_ids": ids, "attention_mask": (ids != 0).astype("int32")}
    data = tf.data.Dataset.from_tensor_slices(inputs).batch(4)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = MaskedLanguageModel(
            CustomEncoder(60, 16), vocab_size=60, mask_token_id=4,
            special_token_ids=[0, 1, 2, 3, 4], mask_ratio=0.4,
        )
        model.build()
    metrics = masked_lm_metrics(model, data, num_batches=2, seed=3, strategy=strategy)
    # By hand: global batch i is split in two halves; replica r masks its half with [3, 2i + r].
    sums = np.zeros(3)
    for index in range(2):
        for replica in range(2):
            rows = slice(4 * index + 2 * replica, 4 * index + 2 * replica + 2)
            part = {key: value[rows] for key, value in inputs.items()}
            out = model.masked_lm_forward(part, training=False, seed=[3, 2 * index + replica])
            sums += [float(out[key]) for key in ("loss_sum", "num_masked", "num_correct")]
    print(json.dumps({"metrics": metrics, "by_hand": sums.tolist()}))
    """
)


def _run_child(script: str) -> dict:
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), str(here.parents[1] / "src")])}
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_mirrored_fit_step_equals_the_single_device_step():
    report = _run_child(CHILD)
    assert report["replicas"] == 2
    np.testing.assert_allclose(report["losses"][0], report["losses"][1], rtol=1e-5)
    assert report["largest_update"] > 1e-3
    assert report["largest_difference"] < 1e-5 * max(1.0, report["largest_update"])


def test_mirrored_evaluation_masks_each_replica_part_with_its_own_seed():
    report = _run_child(EVALUATE_CHILD)
    metrics, (loss_sum, num_masked, num_correct) = report["metrics"], report["by_hand"]
    assert metrics["num_masked"] == num_masked > 0
    np.testing.assert_allclose(metrics["loss"], loss_sum / num_masked, rtol=1e-6)
    np.testing.assert_allclose(metrics["accuracy"], num_correct / num_masked, rtol=1e-6)
