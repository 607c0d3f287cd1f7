"""`fit` under MirroredStrategy: one step over two replicas equals the single-device step.

Runs in a child process, because the two logical CPU devices must be configured before
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


def test_mirrored_fit_step_equals_the_single_device_step():
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(here), str(here.parents[1] / "src")])}
    result = subprocess.run(
        [sys.executable, "-c", CHILD],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    np.testing.assert_allclose(report["losses"][0], report["losses"][1], rtol=1e-5)
    assert report["largest_update"] > 1e-3
    assert report["largest_difference"] < 1e-5 * max(1.0, report["largest_update"])
