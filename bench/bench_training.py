"""Benchmark of the pre-training step: MLM head gather vs. dense, XLA, oneDNN, inter-op threads.

All on one synthetic batch and a small BERT, timed as interleaved rounds (A B C, A B C, ...) so
that the CPU's run-to-run drift hits every variant alike; prints the median seconds per step and
the median of the per-round ratios.

- gather: the training step of `mlm pretrain` (`mlm.training.loop.make_train_step`), which
  projects to the vocabulary only at the masked positions (`masked_lm_forward`);
- dense (the peer): the same model and masking, but full logits `[batch, length, vocab]` and the
  loss taken over the masked positions afterwards (the seed README's `train_step`);
- gather, static: the gather step with a fixed number of predictions per sequence
  (`max_predictions_per_seq=20`, 15% of 128 rounded up), the shapes XLA needs;
- gather + XLA: that step with `jit_compile=True` (with a dynamic prediction count XLA computes
  the head at every position);
- process settings: the gather step in fresh processes by default, with oneDNN off
  (`TF_ENABLE_ONEDNN_OPTS=0`) and with one inter-op thread (`TF_NUM_INTEROP_THREADS=1`: kernels
  one at a time, each using all cores), interleaved.

Writes a Markdown table to `<output>/training.md`. Three other modes write their own table:
`--tail-bound` (the step with dropout, LayerNorm and GELU made free, each and all together: what
fusing them can save at most; `tail_bound.md`), `--xla-bisection` (graph vs XLA for growing parts
of the step, then for each of its matmul shapes alone with the element type XLA computes it in;
`xla_bisection.md`, with `--precision mixed_bfloat16` `xla_bisection_mixed_bfloat16.md`) and
`--xla-flags` (the static step in graph mode and under XLA in fresh processes, one per setting of
XLA's CPU library flags and per precision, `xla_flags.md`).

Usage: python bench/bench_training.py [--hidden 256] [--layers 4] [--vocab 30522] [--length 128]
       [--batch 32] [--steps 3] [--rounds 3] [--onednn-pairs 2] [--output bench/results]
       [--tail-bound | --xla-bisection [--precision float32] | --xla-flags [--xla-flags-pairs 1]]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import bench_peers as peers  # machine_line: the CPU and its bfloat16 instructions

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


STATIC_PREDICTIONS = 20  # per sequence of 128: 15% rounded up


def build(args: argparse.Namespace, max_predictions: int | None = None, dropout: float = 0.1):
    """A seeded BERT masked-LM model (`max_predictions` per sequence, None: dynamic; `dropout`
    on the hidden states and the attention probabilities), its AdamW optimizer and one synthetic
    batch."""
    import keras
    import tensorflow as tf

    from mlm.encoders.bert import BERT
    from mlm.model import MaskedLanguageModel

    keras.utils.set_random_seed(0)
    encoder = BERT(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        num_layers=args.layers,
        num_heads=max(1, args.hidden // 64),
        intermediate_size=4 * args.hidden,
        max_position_embeddings=args.length,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    model = MaskedLanguageModel(
        encoder, vocab_size=args.vocab, mask_token_id=4, max_predictions_per_seq=max_predictions
    )
    model.build(None)
    optimizer = keras.optimizers.AdamW(learning_rate=1e-4)
    optimizer.build(model.trainable_variables)
    ids = tf.random.stateless_uniform(
        (args.batch, args.length), seed=(1, 2), minval=5, maxval=args.vocab, dtype=tf.int32
    )
    batch = {"input_ids": ids, "attention_mask": tf.ones_like(ids)}
    return model, optimizer, batch


def dense_step(model, optimizer):
    """The peer: full-vocabulary logits at every position, loss over the masked ones."""
    import tensorflow as tf

    @tf.function
    def step(batch, seed):
        masked_inputs, labels, mask = model.mask_inputs(batch, seed=seed)
        with tf.GradientTape() as tape:
            logits = model(masked_inputs, training=True)
            losses = tf.keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True
            )
            weights = tf.cast(mask, tf.float32)
            loss = tf.reduce_sum(losses * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)
        variables = model.trainable_variables
        gradients = tape.gradient(loss, variables)
        pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
        optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        return loss

    return lambda batch, i: step(batch, tf.constant([0, i], tf.int64))


def gather_step(model, optimizer, batch, jit_compile: bool):
    """The product's step on an endless iterator over the batch."""
    import tensorflow as tf

    from mlm.training.loop import make_train_step

    strategy = tf.distribute.get_strategy()
    train_step = make_train_step(model, optimizer, strategy, jit_compile=jit_compile)
    iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
    no_requests = tf.zeros([2])  # neither save nor stop
    return lambda _batch, i: train_step(iterator, tf.constant(i, tf.int64), no_requests)


def seconds_per_step(step, batch, steps: int) -> float:
    start = time.perf_counter()
    for i in range(steps):
        result = step(batch, i)
    float(result.numpy().ravel()[0])  # wait for the last step
    return (time.perf_counter() - start) / steps


def measure(args: argparse.Namespace, names: list[str]) -> dict[str, list[float]]:
    """Interleaved rounds of the named variants; returns seconds per step of each round."""
    steps = {}
    for name in names:  # a fresh model per variant: every variant starts from the same weights
        static = name in ("gather, static", "gather+xla")
        model, optimizer, batch = build(args, STATIC_PREDICTIONS if static else None)
        if name == "dense":
            steps[name] = dense_step(model, optimizer)
        else:
            steps[name] = gather_step(model, optimizer, batch, jit_compile=name == "gather+xla")
        seconds_per_step(steps[name], batch, 2)  # trace / compile
    return interleaved(args, steps, batch)


def interleaved(args: argparse.Namespace, steps: dict, batch) -> dict[str, list[float]]:
    """`args.rounds` interleaved rounds of the traced `steps` after one untimed round; seconds
    per step of each round."""
    # The untimed round: a variant built before the others ran its first timed steps up to 7
    # times slower (small models), which skewed the first round.
    for step in steps.values():
        seconds_per_step(step, batch, args.steps)
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            times[name].append(seconds_per_step(step, batch, args.steps))
    return times


# Parts of the elementwise tail made free (dropout off, LayerNorm and GELU as the identity), each
# alone and all together: the step without them bounds what any fused kernel for them can save.
TAIL_VARIANTS = {
    "the step (gather)": (),
    "no dropout": ("dropout",),
    "LayerNorm as the identity": ("LayerNorm",),
    "GELU as the identity": ("GELU",),
    "all three": ("dropout", "LayerNorm", "GELU"),
}


def tail_bound(args: argparse.Namespace) -> list[str]:
    """The gather step with parts of its elementwise tail made free (`TAIL_VARIANTS`), as a
    Markdown table of milliseconds and ratios to the step."""
    import contextlib
    from unittest import mock

    from mlm.encoders.activations import ACTIVATIONS
    from mlm.layers import LayerNormalization

    steps = {}
    for name, parts in TAIL_VARIANTS.items():
        with contextlib.ExitStack() as patches:  # in place while the step is traced
            if "LayerNorm" in parts:
                identity_norm = mock.patch.object(LayerNormalization, "call", lambda _, x: x)
                patches.enter_context(identity_norm)
            if "GELU" in parts:  # the encoder's feed-forward and the MLM head's transform
                patches.enter_context(mock.patch.dict(ACTIVATIONS, {"gelu": lambda x: x}))
            model, optimizer, batch = build(args, dropout=0.0 if "dropout" in parts else 0.1)
            steps[name] = gather_step(model, optimizer, batch, jit_compile=False)
            seconds_per_step(steps[name], batch, 2)
    return tail_bound_table(interleaved(args, steps, batch))


def tail_bound_table(times: dict[str, list[float]]) -> list[str]:
    """Markdown rows from `{variant: [seconds per step of each round]}`, the first variant the
    reference: median milliseconds, the median of the per-round ratios to the reference, and its
    inverse, the speed-up that making those parts free would give."""
    reference = next(iter(times))
    lines = [
        "| variant | ms/step | / the step | the step's speed-up at most |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, seconds in times.items():
        share = ratio(times, name, reference)
        lines.append(
            f"| {name} | {statistics.median(seconds) * 1000:,.0f} | {share:.3f} "
            f"| {1 / share:.2f}x |"
        )
    return lines


def ratio(times: dict[str, list[float]], a: str, b: str) -> float:
    return statistics.median(x / y for x, y in zip(times[a], times[b]))


# Process-wide settings, each against the default in fresh processes (A B C, A B C, ...).
PROCESS_SETTINGS = {
    "default": {},
    "oneDNN off": {"TF_ENABLE_ONEDNN_OPTS": "0"},
    "one inter-op thread": {"TF_NUM_INTEROP_THREADS": "1"},
}


def process_settings(args: argparse.Namespace) -> list[str]:
    """The gather step under each of `PROCESS_SETTINGS`, as report lines against the default."""
    child = [sys.executable, __file__, "--child", *sys.argv[1:]]
    times: dict[str, list[float]] = {name: [] for name in PROCESS_SETTINGS}
    for _ in range(args.onednn_pairs):
        for name, setting in PROCESS_SETTINGS.items():
            env = {**os.environ, **setting}
            out = subprocess.run(child, env=env, capture_output=True, text=True, check=True)
            times[name].append(float(out.stdout.strip().splitlines()[-1]))
    default = statistics.median(times["default"]) * 1000
    return [
        f"- {name} / default: {ratio(times, name, 'default'):.2f} (above 1: the default is "
        f"faster; {statistics.median(times[name]) * 1000:.0f} vs {default:.0f} ms, "
        + " ".join(f"{k}={v}" for k, v in PROCESS_SETTINGS[name].items())
        + ")"
        for name in PROCESS_SETTINGS
        if name != "default"
    ]


# XLA's CPU backend emits its own loops for dots unless told to call a library; each setting runs
# in fresh processes (XLA reads XLA_FLAGS once per process).
XLA_LIBRARY_FLAGS = {
    "XLA's own code (no flags)": "",
    "oneDNN": "--xla_cpu_use_onednn=true",
    "XNNPACK": "--xla_cpu_use_xnnpack=true",
    "oneDNN for each dot": "--xla_cpu_experimental_onednn_fusion_type=individual_dot",
    "XNNPACK for each dot": "--xla_cpu_experimental_xnn_fusion_type=individual_dot",
}
PRECISIONS = ("float32", "mixed_bfloat16")


def xla_flags(args: argparse.Namespace) -> list[str]:
    """The static step in graph mode and under XLA, per XLA_FLAGS setting and precision, as a
    Markdown table; each process times both, so its XLA / graph ratio is free of drift between
    processes (`xla_flags_table`)."""
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    for _ in range(args.xla_flags_pairs):
        for precision in PRECISIONS:
            for name, flags in XLA_LIBRARY_FLAGS.items():
                child = [sys.executable, __file__, *sys.argv[1:], "--xla-child", precision]
                env = {**os.environ, "XLA_FLAGS": flags}
                out = subprocess.run(child, env=env, capture_output=True, text=True, check=True)
                runs.setdefault((precision, name), []).append(
                    json.loads(out.stdout.splitlines()[-1])
                )
                print(f"  {precision}, {name}: {runs[precision, name][-1]}", flush=True)
    return xla_flags_table(runs)


def xla_flags_table(runs: dict[tuple[str, str], list[dict[str, float]]]) -> list[str]:
    """Markdown rows from `{(precision, setting): [{variant: seconds per step, "dot": XLA's dot
    element type}, ...]}`: median milliseconds of each variant, the median of each process's own
    XLA / graph ratio, and the element type XLA gave a matmul of that precision."""
    lines = [
        "| XLA_FLAGS | precision | graph ms | XLA ms | XLA / graph (below 1: XLA faster) "
        "| XLA's dot type |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for (precision, name), results in runs.items():
        graph = statistics.median(r["gather, static"] for r in results) * 1000
        xla = statistics.median(r["gather+xla"] for r in results) * 1000
        ratios = statistics.median(r["gather+xla"] / r["gather, static"] for r in results)
        flags = XLA_LIBRARY_FLAGS[name]
        lines.append(
            f"| {name}{f' (`{flags}`)' if flags else ''} | {precision} | {graph:,.0f} | "
            f"{xla:,.0f} | {ratios:.2f} | {', '.join(sorted({r['dot'] for r in results}))} |"
        )
    return lines


def dot_types(optimized_hlo: str) -> list[str]:
    """Element types of the dots in XLA's optimized HLO text, in order (`f32`, `bf16`, ...)."""
    return re.findall(r"= (\w+)\[[^\]]*\]\S* dot\(", optimized_hlo)


def xla_dot_type(precision: str) -> str:
    """The element type XLA's CPU backend gives a matmul of `precision` operands under this
    process's XLA_FLAGS: `bf16` inputs come out `f32` where XLA converts them to float32 for its
    own dot loops (its float normalization for types it has no dot lowering for)."""
    import tensorflow as tf

    dtype = tf.bfloat16 if "bfloat16" in precision else tf.float32
    (dot,) = xla_dots(
        tf.function(_matmul, jit_compile=True), tf.ones([64, 32], dtype), tf.ones([32, 16], dtype)
    )
    return dot


def _matmul(a, b):
    import tensorflow as tf

    return tf.matmul(a, b)


def xla_dots(compiled, *inputs) -> list[str]:
    """Element types of the dots XLA compiles the `jit_compile` function `compiled` to."""
    return dot_types(compiled.experimental_get_compiler_ir(*inputs)("optimized_hlo"))


def step_matmuls(args: argparse.Namespace) -> list[str]:
    """Each dense matmul shape of the step, graph mode against XLA, in float32 and bfloat16, with
    the element type of XLA's dot: where XLA computes a bfloat16 dot in float32, its bfloat16 step
    cannot reach the graph step's oneDNN bfloat16 matmuls."""
    import tensorflow as tf

    tokens, hidden = args.batch * args.length, args.hidden
    shapes = {
        "QKV projection": (tokens, hidden, 3 * hidden),
        "attention output": (tokens, hidden, hidden),
        "feed-forward in": (tokens, hidden, 4 * hidden),
        "feed-forward out": (tokens, 4 * hidden, hidden),
        "vocabulary head (masked positions)": (args.batch * STATIC_PREDICTIONS, hidden, args.vocab),
    }
    lines = [
        "| matmul [m, k] x [k, n] | precision | graph ms (GFLOP/s) | XLA ms (GFLOP/s) "
        "| XLA's dot type |",
        "| --- | --- | ---: | ---: | --- |",
    ]
    for name, (m, k, n) in shapes.items():
        for precision, dtype in (("float32", tf.float32), ("bfloat16", tf.bfloat16)):
            a = tf.cast(tf.random.stateless_normal([m, k], seed=(1, 2)), dtype)
            b = tf.cast(tf.random.stateless_normal([k, n], seed=(3, 4)), dtype)
            compiled = tf.function(_matmul, jit_compile=True)
            graph = _best_ms(tf.function(_matmul), (a, b), calls=10, rounds=5)
            xla = _best_ms(compiled, (a, b), calls=10, rounds=5)
            types = xla_dots(compiled, a, b)
            gflop = 2 * m * k * n / 1e9
            lines.append(
                f"| {name} [{m}, {k}] x [{k}, {n}] | {precision} | {graph:,.2f} "
                f"({gflop / graph * 1e3:,.0f}) | {xla:,.2f} ({gflop / xla * 1e3:,.0f}) "
                f"| {', '.join(types)} |"
            )
            print(lines[-1], flush=True)
    return lines


def _best_ms(fn, inputs: tuple, calls: int = 3, rounds: int = 3) -> float:
    """Milliseconds per call of a tf.function: the best of `rounds` rounds of `calls` calls."""
    import tensorflow as tf

    fn(*inputs)
    fn(*inputs)  # tracing and compilation
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            result = fn(*inputs)
        tf.nest.map_structure(lambda t: t.numpy(), result)
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1000


def xla_bisection(args: argparse.Namespace) -> list[str]:
    """Graph mode against XLA for growing parts of the step (static predictions), and for one
    encoder block: where XLA loses (docs/performance.md, "Why the XLA step was slower")."""
    import keras
    import tensorflow as tf

    from mlm.encoders.bert import TransformerEncoderBlock

    def parts(dropout: float) -> dict:
        model, optimizer, batch = build(args, STATIC_PREDICTIONS, dropout)
        seed = tf.constant([0, 1], tf.int64)

        def forward(batch, seed):
            return model.masked_lm_forward(batch, training=True, seed=seed)["loss"]

        def backward(batch, seed):
            with tf.GradientTape() as tape:
                loss = forward(batch, seed)
            gradients = tape.gradient(loss, model.trainable_variables)
            return tf.add_n([tf.reduce_sum(g) for g in gradients if g is not None])

        def with_optimizer(batch, seed):
            variables = model.trainable_variables
            with tf.GradientTape() as tape:
                loss = forward(batch, seed)
            gradients = tape.gradient(loss, variables)
            pairs = [(g, v) for g, v in zip(gradients, variables) if g is not None]
            optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
            return loss

        def masking(batch, seed):
            return tf.reduce_sum(model._masked_batch(batch, seed)[0]["input_ids"])

        def encoder(batch, seed):
            return tf.reduce_sum(model._encode(batch, True))

        cases = {"masking alone": masking} if dropout else {}
        cases.update({
            f"encoder forward, dropout {dropout}": encoder,
            f"forward and loss, dropout {dropout}": forward,
            f"forward, loss, backward, dropout {dropout}": backward,
            f"forward, loss, backward, optimizer, dropout {dropout}": with_optimizer,
        })  # fmt: skip
        return {name: (fn, (batch, seed)) for name, fn in cases.items()}

    def block(attention_dropout: float) -> dict:
        layer = TransformerEncoderBlock(
            args.hidden, max(1, args.hidden // 64), 4 * args.hidden,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=attention_dropout,
        )  # fmt: skip
        layer.build((args.batch, args.length, args.hidden))
        x = tf.random.stateless_normal((args.batch, args.length, args.hidden), seed=(1, 2))

        def forward_backward(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                total = tf.reduce_sum(layer(x, training=True))
            return tape.gradient(total, x)

        name = f"one encoder block, forward and backward, attention dropout {attention_dropout}"
        return {name: (forward_backward, (x,))}

    cases = {**parts(0.1), **parts(0.0), **block(0.0), **block(0.1)}
    lines = ["| what was compiled | graph ms | XLA ms |", "| --- | ---: | ---: |"]
    for name, (fn, inputs) in cases.items():
        keras.utils.set_random_seed(0)
        graph = _best_ms(tf.function(fn), inputs)
        xla = _best_ms(tf.function(fn, jit_compile=True), inputs)
        lines.append(f"| {name} | {graph:,.1f} | {xla:,.1f} |")
        print(lines[-1], flush=True)
    return lines


def write_report(path: Path, lines: list[str]) -> None:
    """Prints a Markdown report and writes it to `path` (its directory created)."""
    text = "\n".join(lines) + "\n"
    print(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=Path("bench/results"))
    parser.add_argument(
        "--onednn-pairs", type=int, default=2,
        help="rounds of the process settings (oneDNN off, one inter-op thread); 0 skips them",
    )  # fmt: skip
    parser.add_argument(
        "--xla-bisection", action="store_true",
        help="instead: graph vs XLA for growing parts of the step (writes xla_bisection.md)",
    )  # fmt: skip
    parser.add_argument(
        "--tail-bound", action="store_true",
        help="instead: the step with dropout, LayerNorm and GELU made free (writes tail_bound.md)",
    )  # fmt: skip
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="float32",
        help="the Keras dtype policy of the model in --xla-bisection mode",
    )  # fmt: skip
    parser.add_argument(
        "--xla-flags", action="store_true",
        help="instead: graph vs XLA per setting of XLA's CPU library flags (writes xla_flags.md)",
    )  # fmt: skip
    parser.add_argument(
        "--xla-flags-pairs", type=int, default=1,
        help="fresh processes per XLA_FLAGS setting and precision in --xla-flags mode",
    )  # fmt: skip
    # A fresh process's share: the gather step's median (process settings), or the static step
    # in graph mode and under XLA in a precision (--xla-flags).
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--xla-child", choices=PRECISIONS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.precision != "float32" and not args.xla_bisection:
        parser.error("--precision applies to --xla-bisection only; add --xla-bisection or drop it")
    if args.xla_child:
        import keras

        keras.mixed_precision.set_global_policy(args.xla_child)
        times = measure(args, ["gather, static", "gather+xla"])
        result = {name: statistics.median(v) for name, v in times.items()}
        print(json.dumps({**result, "dot": xla_dot_type(args.xla_child)}))
        return 0
    if args.xla_flags:
        lines = [
            "# XLA's CPU library flags",
            "",
            f"Command: `{' '.join([os.path.basename(sys.executable), *sys.argv])}`; BERT hidden "
            f"{args.hidden}, {args.layers} layers, vocabulary {args.vocab}; batch {args.batch} x "
            f"{args.length}, {STATIC_PREDICTIONS} predictions per sequence; {args.rounds} "
            f"interleaved rounds of {args.steps} steps per process, {args.xla_flags_pairs} "
            f"process(es) per setting; medians. {peers.machine_line()}",
            "",
            *xla_flags(args),
        ]
        write_report(args.output / "xla_flags.md", lines)
        return 0

    if args.tail_bound:
        lines = [
            "# What fusing the elementwise tail can save at most",
            "",
            f"Command: `{' '.join([os.path.basename(sys.executable), *sys.argv])}`; BERT hidden "
            f"{args.hidden}, {args.layers} layers, vocabulary {args.vocab}; batch {args.batch} x "
            f"{args.length}; float32; {args.rounds} interleaved rounds of {args.steps} steps; "
            f"medians and the median of the per-round ratios. {peers.machine_line()}",
            "",
            *tail_bound(args),
        ]
        write_report(args.output / "tail_bound.md", lines)
        return 0

    if args.xla_bisection:
        import keras

        keras.mixed_precision.set_global_policy(args.precision)
        lines = [
            "# Graph mode vs XLA, part by part",
            "",
            f"Command: `{' '.join([os.path.basename(sys.executable), *sys.argv])}`; BERT hidden "
            f"{args.hidden}, {args.layers} layers, vocabulary {args.vocab}; batch {args.batch} x "
            f"{args.length}, {STATIC_PREDICTIONS} predictions per sequence, {args.precision}; "
            f"best of 3 rounds of 3 calls. {peers.machine_line()}",
            "",
            *xla_bisection(args),
            "",
            "Each dense matmul of the step alone, best of 5 rounds of 10 calls; XLA's dot type is "
            "the element type of the dot in XLA's optimized HLO:",
            "",
            *step_matmuls(args),
        ]
        suffix = "" if args.precision == "float32" else f"_{args.precision}"
        write_report(args.output / f"xla_bisection{suffix}.md", lines)
        return 0

    if args.child:  # one process setting, in a fresh process
        print(json.dumps(statistics.median(measure(args, ["gather"])["gather"])))
        return 0

    times = measure(args, ["gather", "dense", "gather, static", "gather+xla"])
    lines = [
        "# Training-step variants (mlm's own design choices)",
        "",
        f"Command: `{' '.join([os.path.basename(sys.executable), *sys.argv])}`; BERT hidden "
        f"{args.hidden}, {args.layers} layers, vocabulary {args.vocab}; batch {args.batch} x "
        f"{args.length}; {args.rounds} interleaved rounds of {args.steps} steps; medians. "
        f"{peers.machine_line()}",
        "",
        "| variant | ms/step |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {statistics.median(v) * 1000:.0f} |" for name, v in times.items()]
    lines += [
        "",
        f"- gather / dense (vocabulary logits only at the masked positions / at every position): "
        f"{ratio(times, 'gather', 'dense'):.2f} (below 1: gather faster)",
        f"- XLA / graph mode, both static: {ratio(times, 'gather+xla', 'gather, static'):.2f} "
        "(below 1: XLA faster)",
    ]
    if args.onednn_pairs:
        lines += process_settings(args)
    write_report(args.output / "training.md", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
