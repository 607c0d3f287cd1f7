"""What the `mlm` command prints besides its result: progress with an ETA, and no start-up noise.

TensorFlow 2.21 on a CPU machine prints oneDNN, CUDA-driver, cuInit and absl lines when it starts;
the subprocess tests run real interpreters without `TF_CPP_MIN_LOG_LEVEL` in the environment and
check that those lines appear without `mlm.startup.quiet_tensorflow` and not with it.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from mlm.progress import ProgressMeter, byte_unit, keras_progress
from mlm.startup import NOISE, filter_noise

REPO = Path(__file__).resolve().parents[1]
TF_START = (
    "import tensorflow as tf\n"
    "print(float(tf.reduce_sum(tf.ones([3]))))\n"
    "print(len(tf.config.list_physical_devices('GPU')))\n"
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_meter_prints_each_tenth_with_an_eta_then_the_end_once():
    out, clock = io.StringIO(), FakeClock()
    meter = ProgressMeter(200, label="shard: read", unit="KiB", scale=2, stream=out, clock=clock)
    clock.now += 10
    meter.update(20)  # 10% in 10 s: 90 s left
    meter.update(30)  # still the first tenth: no line
    clock.now += 30
    meter.update(100, {"loss": 1.5})  # 50% in 40 s
    meter.update(200)
    meter.finish()  # the last update printed the end already
    assert out.getvalue().splitlines() == [
        "shard: read 10/100 KiB (10%) | eta 0:01:30",
        "shard: read 50/100 KiB (50%) | loss 1.5000 | eta 0:00:40",
        "shard: read 100/100 KiB (100%) | eta 0:00:00",
    ]


def test_quiet_meter_prints_only_the_end_also_when_work_stops_early():
    out = io.StringIO()
    meter = ProgressMeter(10, quiet=True, stream=out, clock=FakeClock())
    for step in range(1, 8):
        meter.update(step, lambda: {"loss": 0.25})
    meter.finish()
    assert out.getvalue() == "step 7/10 (70%) | loss 0.2500 | eta 0:00:00\n"


def test_byte_units_show_at_least_ten():
    assert byte_unit(9) == ("B", 1) and byte_unit(10 * 1024 - 1) == ("B", 1)
    assert byte_unit(10 * 1024) == ("KiB", 1024) and byte_unit(3 * 2**30) == ("MiB", 2**20)


def test_keras_callback_reports_training_batches():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(
        "sgd",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    x, y = np.ones((16, 4), "float32"), np.arange(16) % 2
    out = io.StringIO()
    callback = keras_progress(8, label="finetune: step", stream=out)
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[callback])
    lines = out.getvalue().splitlines()
    assert len(lines) == 8  # each batch is another eighth, so every one crosses a tenth
    pattern = r"finetune: step (\d)/8 \(\d+%\) \| loss \d\.\d{4} \| acc \d\.\d{4} \| eta \S+"
    assert [int(re.fullmatch(pattern, line).group(1)) for line in lines] == list(range(1, 9))
    assert lines[-1].endswith("| eta 0:00:00")


def test_noise_filter_keeps_other_lines():
    text = (
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
        "I0000 00:00:1795970939.880034   22684 port.cc:153] oneDNN custom operations are on.\n"
        "E0000 00:00:1795970948.772609   22684 cuda_platform.cc:52] failed call to cuInit: "
        "INTERNAL: CUDA error\n"
        "E0000 00:00:1795970948.772609   22684 other.cc:1] a real error\n"
        "Traceback (most recent call last):\n"
    )
    assert filter_noise(text) == (
        "E0000 00:00:1795970948.772609   22684 other.cc:1] a real error\n"
        "Traceback (most recent call last):\n"
    )


def _python(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """A fresh interpreter on this checkout, without TensorFlow or Keras settings in its env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CPP_", "KERAS_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
    return subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True)


def test_tensorflow_starts_quietly_in_the_mlm_command(tmp_path):
    loud = _python("-c", TF_START, cwd=tmp_path)
    assert loud.returncode == 0, loud.stderr
    # On this CPU machine TensorFlow does print its start-up lines ...
    assert any(NOISE.match(line) for line in loud.stderr.splitlines()), loud.stderr
    # `mlm.cli.main` sets the process up first thing (here `mlm tokenize --help`, which exits).
    entry = (
        "from mlm.cli import main\n"
        "try:\n    main(['tokenize', '--help'])\nexcept SystemExit:\n    pass\n"
    )
    quiet = _python("-c", entry + TF_START, cwd=tmp_path)
    # ... and none once the `mlm` command's start-up ran (same results after the help text).
    assert (quiet.returncode, quiet.stderr) == (0, "")
    assert quiet.stdout.endswith(loud.stdout) and quiet.stdout.startswith("usage: mlm tokenize")


def test_mlm_tokenize_prints_only_progress_on_stderr(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "\n".join(f"line {i} of the small corpus for the tokenizer" for i in range(500))
    )
    result = _python(
        "-m", "mlm.cli", "tokenize", "--corpus", str(corpus), "--output", "tok",
        "--vocab-size", "60", "--min-frequency", "1", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["corpus"]["units"] == 500
    lines = result.stderr.splitlines()
    assert len(lines) == 10, result.stderr
    assert all(re.fullmatch(r"tokenize: read \d+/\d+ KiB \(\d+%\) \| eta \S+", x) for x in lines)
