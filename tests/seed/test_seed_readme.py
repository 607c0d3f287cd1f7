"""Every code example of the seed README, run against the mlm package as written.

The only adaptations: imports come from `mlm` / `mlm.data`; a tiny WordPiece tokenizer trained
here stands in for `BertTokenizer.from_pretrained("bert-base-uncased")`; models are tiny
(hidden 32, 2 layers, sequences of 32); data files are small ones written here; epochs are
1-3. Each adaptation is marked with a comment. Everything runs in a temporary working directory.
One pre-training run (Steps 1-5 of the workflow) is shared by the snippets that start from a
trained model.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import math
import os
import re
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from mlm import (
    BERT,
    MLM_PRESETS,
    MaskedLanguageModel,
    NLPTaskConfig,
    NLPTaskType,
    create_mlm_dataset,
    create_mlm_training_model,
    create_nlp_head,
    learning_rate_schedule_builder,
    optimizer_builder,
    visualize_mlm_predictions,
)
from mlm import calculate_perplexity as mlm_calculate_perplexity
from mlm.data import augment_text_dataset, preprocess_wiki_dump, train_wordpiece

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "machine learning is a subset of artificial intelligence",
    "natural language processing enables computers to understand human language",
    "the capital of france is paris",
    "a lazy dog sleeps under the warm sun",
    "the brown fox runs quickly through the forest",
    "computers learn patterns from large amounts of text",
    "paris is a large city in france",
    "the model reads text and learns which word fits each masked position",
    "human language is full of patterns that computers can learn",
    "the warm sun shines over the forest and the city",
    "a quick model learns from text with masked words",
    "artificial intelligence helps people understand large amounts of data",
    "the dog and the fox are friends in the forest",
    "language models predict the missing word from its context",
    "learning from unlabeled text needs no human labels",
]
# Tiny stand-ins for the README's model sizes ("base": 768 wide, 12 layers; sequences of 128).
TINY = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64}
SEQ = 32
BATCH = 8


@contextlib.contextmanager
def global_policy(name: str):
    """Sets the global Keras dtype policy for a block; restores the previous one afterwards."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def flat_weights(model: keras.Model) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(w)) for w in model.get_weights()])


def encode(tokenizer, texts) -> dict:
    """Fixed-length int32 features of `texts` (the README's labelled datasets are assumed)."""
    enc = tokenizer(
        list(texts), max_length=SEQ, truncation=True, padding="max_length", return_tensors="np"
    )
    return {k: enc[k].astype(np.int32) for k in ("input_ids", "attention_mask", "token_type_ids")}


# --- shared fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def workdir(tmp_path_factory):
    """A temporary working directory for the whole module (the snippets use relative paths)."""
    path = tmp_path_factory.mktemp("seed_readme")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(path)
        yield path


@pytest.fixture(scope="module")
def text_file(workdir):
    """`data/wiki_corpus.txt`: one sentence per line, as the README's "Text File Format"."""
    (workdir / "data").mkdir(exist_ok=True)
    path = workdir / "data" / "wiki_corpus.txt"
    path.write_text("\n".join(SENTENCES * 2) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def tokenizer(text_file):
    # Stands in for BertTokenizer.from_pretrained("bert-base-uncased").
    with open(text_file) as corpus:
        return train_wordpiece(corpus.read().splitlines(), vocab_size=120, min_frequency=1)


@pytest.fixture(scope="module")
def train_dataset(text_file, tokenizer):
    """Pre-training Workflow, Step 1 (example usage)."""
    # README: batch_size=64, max_length=128.
    return create_mlm_dataset(text_file, tokenizer, batch_size=BATCH, max_length=SEQ)


@pytest.fixture(scope="module")
def workflow(tokenizer, train_dataset):
    """Pre-training Workflow, Steps 2-5, run as written; returns the namespace it leaves."""
    keras.utils.set_random_seed(0)

    # Step 2: Create the MLM Model
    encoder = BERT.from_variant(
        "tiny",  # README: "base"
        vocab_size=tokenizer.vocab_size,
        max_position_embeddings=SEQ,  # README: 128
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        **TINY,
    )
    mlm_model = MaskedLanguageModel(
        encoder=encoder,
        vocab_size=tokenizer.vocab_size,
        mask_ratio=0.15,  # 15% of tokens
        mask_token_id=tokenizer.mask_token_id,
        special_token_ids=tokenizer.all_special_ids,
        mlm_head_activation="gelu",
        mlm_head_dropout=0.1,
    )

    # Step 3: Configure Training
    num_epochs = 3  # README: 5
    steps_per_epoch = len(train_dataset)
    total_steps = num_epochs * steps_per_epoch
    warmup_steps = int(0.1 * total_steps)  # 10% warmup
    lr_config = {
        "type": "cosine_decay",
        "learning_rate": 5e-5,
        "decay_steps": total_steps,
        "warmup_steps": warmup_steps,
        "warmup_start_lr": 1e-8,
        "alpha": 1e-6,  # Minimum LR
    }
    optimizer_config = {
        "type": "adamw",
        "weight_decay": 0.01,
        "gradient_clipping_by_norm": 1.0,
    }
    lr_schedule = learning_rate_schedule_builder(lr_config)
    optimizer = optimizer_builder(optimizer_config, lr_schedule)
    mlm_model.compile(
        optimizer=optimizer,
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="mlm_accuracy")],
    )

    # Step 4: Train the Model
    callbacks = [
        keras.callbacks.ModelCheckpoint(
            "checkpoints/mlm_model_{epoch:02d}.keras", save_freq="epoch", save_best_only=False
        ),
        keras.callbacks.TensorBoard(log_dir="logs/mlm_pretraining", update_freq="batch"),
        keras.callbacks.EarlyStopping(monitor="loss", patience=3, restore_best_weights=True),
    ]
    history = mlm_model.fit(train_dataset, epochs=num_epochs, callbacks=callbacks, verbose=1)

    # Step 5: Extract Pretrained Encoder
    os.makedirs("models", exist_ok=True)  # added: Keras' save() does not create directories
    pretrained_encoder = mlm_model.encoder
    pretrained_encoder.save("models/pretrained_bert_base.keras")
    mlm_model.save("models/mlm_model_complete.keras")
    return types.SimpleNamespace(**locals())


@pytest.fixture(scope="module")
def encoder_file(workflow):
    """Working with BERT / "Extracting and Saving the Encoder": the save half."""
    mlm_model = workflow.mlm_model
    pretrained_encoder = mlm_model.encoder
    pretrained_encoder.save("pretrained_bert.keras")
    return "pretrained_bert.keras"


# --- Quick Start ------------------------------------------------------------------------------


def test_quick_start(tmp_path, monkeypatch, tokenizer, train_dataset):
    monkeypatch.chdir(tmp_path)  # its pretrained_bert.keras stays apart from the shared one
    encoder = BERT.from_variant("tiny", vocab_size=tokenizer.vocab_size, **TINY)  # README: "base"
    mlm_model = MaskedLanguageModel(
        encoder=encoder,
        vocab_size=tokenizer.vocab_size,
        mask_token_id=tokenizer.mask_token_id,
        special_token_ids=tokenizer.all_special_ids,
    )
    mlm_model.compile(optimizer=keras.optimizers.AdamW(learning_rate=5e-5, weight_decay=0.01))
    history = mlm_model.fit(train_dataset, epochs=1)  # README: epochs=5
    pretrained_encoder = mlm_model.encoder
    pretrained_encoder.save("pretrained_bert.keras")

    assert history.history["loss"][0] > 0 and math.isfinite(history.history["loss"][0])
    assert 0.0 <= history.history["mlm_accuracy"][0] <= 1.0
    loaded = keras.models.load_model("pretrained_bert.keras")
    ids = {"input_ids": np.array([[2, 10, 11, 3]], np.int32)}
    np.testing.assert_allclose(
        loaded(ids)["last_hidden_state"], encoder(ids)["last_hidden_state"], atol=1e-5
    )


# --- Pre-training Workflow ----------------------------------------------------------------------


def test_step1_dataset_batches_and_length(text_file, tokenizer, train_dataset):
    assert len(train_dataset) == len(SENTENCES) * 2 // BATCH
    batches = list(train_dataset)
    assert len(batches) == len(train_dataset)
    for batch in batches:
        assert sorted(batch) == ["attention_mask", "input_ids", "token_type_ids"]
        for value in batch.values():
            assert value.dtype == tf.int32 and tuple(value.shape) == (BATCH, SEQ)
    # Every line comes back exactly once per epoch, tokenized as the tokenizer does it.
    expected = sorted(tuple(row) for row in encode(tokenizer, SENTENCES * 2)["input_ids"])
    got = sorted(tuple(row) for b in batches for row in b["input_ids"].numpy())
    assert got == expected


def seed_create_mlm_dataset(
    text_file: str,
    tokenizer,
    batch_size: int = 32,
    max_length: int = 128,
    buffer_size: int = 10000,
):
    """The README's own Step 1 function, verbatim (one `tf.py_function` call per line)."""
    dataset = tf.data.TextLineDataset(text_file)
    dataset = dataset.shuffle(buffer_size)

    def tokenize_function(text):
        encoded = tokenizer(
            text.numpy().decode("utf-8"),
            max_length=max_length,
            truncation=True,
            padding="max_length",
            return_tensors="np",
        )

        return {
            "input_ids": encoded["input_ids"][0],
            "attention_mask": encoded["attention_mask"][0],
            "token_type_ids": encoded["token_type_ids"][0],
        }

    dataset = dataset.map(
        lambda x: tf.py_function(
            tokenize_function,
            [x],
            {
                "input_ids": tf.int32,
                "attention_mask": tf.int32,
                "token_type_ids": tf.int32,
            },
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    dataset = dataset.map(
        lambda x: {
            "input_ids": tf.ensure_shape(x["input_ids"], [max_length]),
            "attention_mask": tf.ensure_shape(x["attention_mask"], [max_length]),
            "token_type_ids": tf.ensure_shape(x["token_type_ids"], [max_length]),
        }
    )
    dataset = dataset.batch(batch_size, drop_remainder=True)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    return dataset


def test_step1_readme_function_is_replaced_by_create_mlm_dataset(text_file, tokenizer):
    """The README's hand-written pipeline does not run on TensorFlow 2.21: `tf.py_function`
    takes no dict as `Tout`. `mlm.create_mlm_dataset` has the same signature and works (the
    tests above and below use it)."""
    with pytest.raises(TypeError, match="to a TensorFlow DType"):
        seed_create_mlm_dataset(text_file, tokenizer, batch_size=BATCH, max_length=SEQ)


def test_steps2to4_train_with_the_readme_configuration(workflow):
    w = workflow
    assert w.steps_per_epoch == 4 and w.total_steps == 12 and w.warmup_steps == 1
    # The optimizer is what the config says: AdamW, decay 0.01, global-norm clipping 1.0.
    assert isinstance(w.optimizer, keras.optimizers.AdamW)
    assert w.optimizer.weight_decay == pytest.approx(0.01)
    assert w.optimizer.global_clipnorm == pytest.approx(1.0)
    assert float(w.lr_schedule(0)) == pytest.approx(1e-8)
    assert float(w.lr_schedule(w.warmup_steps)) == pytest.approx(5e-5)
    assert float(w.lr_schedule(w.total_steps)) == pytest.approx(1e-6)
    # The compiled SparseCategoricalAccuracy replaces the built-in accuracy under its name.
    names = [m.name for m in w.mlm_model.metrics]
    assert names.count("mlm_accuracy") == 1 and "loss" in names
    assert any(isinstance(m, keras.metrics.SparseCategoricalAccuracy) for m in w.mlm_model.metrics)
    history = w.history.history
    assert w.history.epoch == [0, 1, 2]
    assert all(math.isfinite(v) and v > 0 for v in history["loss"])
    assert all(0.0 <= v <= 1.0 for v in history["mlm_accuracy"])
    assert int(w.optimizer.iterations) == w.total_steps
    # Callbacks: one checkpoint per epoch, TensorBoard event files.
    for epoch in (1, 2, 3):
        assert os.path.isfile(f"checkpoints/mlm_model_{epoch:02d}.keras")
    events = [f for _, _, files in os.walk("logs/mlm_pretraining") for f in files]
    assert any(f.startswith("events.out.tfevents") for f in events)


def test_step5_saved_encoder_and_complete_model_load(workflow, train_dataset):
    batch = next(iter(train_dataset))
    encoder = keras.models.load_model("models/pretrained_bert_base.keras")
    assert isinstance(encoder, BERT)
    np.testing.assert_allclose(
        encoder(batch)["last_hidden_state"],
        workflow.mlm_model.encoder(batch)["last_hidden_state"],
        atol=1e-5,
    )
    complete = keras.models.load_model("models/mlm_model_complete.keras")
    assert isinstance(complete, MaskedLanguageModel)
    np.testing.assert_allclose(complete(batch), workflow.mlm_model(batch), atol=1e-4)


# --- Configuration Guide ------------------------------------------------------------------------


def test_parameter_defaults_match_the_configuration_guide():
    defaults = {
        name: p.default
        for name, p in inspect.signature(MaskedLanguageModel.__init__).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
    assert defaults["mask_ratio"] == 0.15 and defaults["mask_token_id"] == 103
    assert defaults["random_token_ratio"] == 0.1 and defaults["unchanged_ratio"] == 0.1
    assert list(defaults["special_token_ids"]) == []
    assert defaults["mlm_head_activation"] == "gelu"
    assert defaults["initializer_range"] == 0.02 and defaults["mlm_head_dropout"] == 0.1
    assert defaults["layer_norm_eps"] == 1e-12


STANDARD = {
    "mask_ratio": 0.15,
    "mask_token_id": 103,
    "random_token_ratio": 0.1,
    "unchanged_ratio": 0.1,
    "mlm_head_activation": "gelu",
    "initializer_range": 0.02,
    "mlm_head_dropout": 0.1,
}
LOW_RESOURCE = {
    "mask_ratio": 0.20,  # More aggressive masking
    "random_token_ratio": 0.05,
    "unchanged_ratio": 0.05,
    "mlm_head_dropout": 0.15,  # Higher dropout for regularization
}
DOMAIN_ADAPTATION = {
    "mask_ratio": 0.10,  # Gentler masking for fine-tuning
    "random_token_ratio": 0.05,
    "unchanged_ratio": 0.05,
    "mlm_head_dropout": 0.05,  # Lower dropout when adapting
}


@pytest.mark.parametrize(
    "preset, mlm_config",
    [
        ("standard", STANDARD),
        ("low_resource", LOW_RESOURCE),
        ("domain_adaptation", DOMAIN_ADAPTATION),
    ],
)
def test_recommended_configurations(preset, mlm_config, tokenizer):
    # MLM_PRESETS holds the README's dicts, less the tokenizer-specific mask_token_id (which
    # create_mlm_training_model takes as its own argument).
    expected = {k: v for k, v in mlm_config.items() if k != "mask_token_id"}
    assert MLM_PRESETS[preset] == expected

    def encoder():
        return BERT.from_variant("tiny", vocab_size=tokenizer.vocab_size, **TINY)

    # The README's dicts are MaskedLanguageModel keyword arguments.
    model = MaskedLanguageModel(encoder(), vocab_size=tokenizer.vocab_size, **mlm_config)
    built = create_mlm_training_model(
        encoder(), tokenizer.vocab_size, tokenizer.mask_token_id, preset=preset
    )
    for m in (model, built):
        assert m.mask_ratio == pytest.approx(mlm_config["mask_ratio"])
        assert m.random_token_ratio == pytest.approx(mlm_config["random_token_ratio"])
        assert m.unchanged_ratio == pytest.approx(mlm_config["unchanged_ratio"])
        assert m.mlm_dropout.rate == pytest.approx(mlm_config["mlm_head_dropout"])
    assert model.mask_token_id == mlm_config.get("mask_token_id", 103)
    assert built.mask_token_id == tokenizer.mask_token_id and built.optimizer is not None


# --- Working with BERT ----------------------------------------------------------------------------


def test_bert_variants():
    encoder_tiny = BERT.from_variant("tiny")  # 4 layers, 256 hidden
    encoder_small = BERT.from_variant("small")  # 6 layers, 512 hidden
    encoder_base = BERT.from_variant("base")  # 12 layers, 768 hidden
    encoder_large = BERT.from_variant("large")  # 24 layers, 1024 hidden
    expected = [(encoder_tiny, 4, 256), (encoder_small, 6, 512)]
    expected += [(encoder_base, 12, 768), (encoder_large, 24, 1024)]
    for encoder, layers, hidden in expected:
        assert (encoder.num_layers, encoder.hidden_size, encoder.vocab_size) == (
            layers,
            hidden,
            30522,
        )
        assert len(encoder.transformer_layers) == layers
    # Weights are built for tiny and small only (base and large would be slow here).
    ids = np.array([[2, 7, 9, 3]], np.int32)
    for encoder, _, hidden in expected[:2]:
        assert encoder({"input_ids": ids})["last_hidden_state"].shape == (1, 4, hidden)

    encoder_custom = BERT.from_variant(
        "base",
        normalization_type="rms_norm",  # Use RMSNorm instead of LayerNorm
        use_stochastic_depth=True,  # Enable stochastic depth
        stochastic_depth_rate=0.1,
    )
    assert encoder_custom.normalization_type == "rms_norm"
    rates = encoder_custom.drop_path_rates()
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.1) and len(rates) == 12
    assert isinstance(encoder_custom.embeddings_norm, keras.layers.RMSNormalization)
    # The same features on a tiny model: stochastic depth is random in training only.
    small_custom = BERT.from_variant(
        "tiny",
        normalization_type="rms_norm",
        use_stochastic_depth=True,
        stochastic_depth_rate=0.5,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        vocab_size=50,
        **TINY,
    )
    ids = np.tile(np.array([[2, 7, 9, 11, 13, 3]], np.int32), (16, 1))
    inference = small_custom({"input_ids": ids}, training=False)["last_hidden_state"]
    training = small_custom({"input_ids": ids}, training=True)["last_hidden_state"]
    np.testing.assert_allclose(inference[0], inference[-1], atol=1e-6)
    assert not np.allclose(training, inference, atol=1e-4)


def test_extracting_and_saving_the_encoder(workflow, encoder_file, tokenizer):
    loaded_encoder = keras.models.load_model("pretrained_bert.keras")
    test_inputs = {
        # README: shape (1, 128), ids below 30522.
        "input_ids": tf.random.uniform((1, SEQ), 0, tokenizer.vocab_size, dtype=tf.int32),
        "attention_mask": tf.ones((1, SEQ), dtype=tf.int32),
    }
    outputs = loaded_encoder(test_inputs)
    print(outputs["last_hidden_state"].shape)  # (1, 128, 768) in the README
    assert tuple(outputs["last_hidden_state"].shape) == (1, SEQ, TINY["hidden_size"])
    np.testing.assert_allclose(
        outputs["last_hidden_state"],
        workflow.mlm_model.encoder(test_inputs)["last_hidden_state"],
        atol=1e-5,
    )


# --- Data Preparation -----------------------------------------------------------------------------


def test_preprocess_wiki_dump():
    dump = [
        "<page><title>Fox</title></page>",
        "<p>The quick brown fox jumps over the lazy dog every single day.</p>",
        "Too short to keep.",
        "Machine learning is a <b>subset</b> of artificial intelligence and statistics.",
    ]
    with open("data/enwiki-latest-pages-articles.xml", "w", encoding="utf-8") as dump_file:
        dump_file.write("\n".join(dump) + "\n")
    preprocess_wiki_dump("data/enwiki-latest-pages-articles.xml", "data/wiki_processed.txt")
    with open("data/wiki_processed.txt", encoding="utf-8") as processed:
        assert processed.read().splitlines() == [
            "The quick brown fox jumps over the lazy dog every single day.",
            "Machine learning is a subset of artificial intelligence and statistics.",
        ]


def test_augment_text_dataset():
    texts = [" ".join(f"w{i}_{j}" for j in range(20)) for i in range(200)]
    dataset = tf.data.Dataset.from_tensor_slices(texts)
    augmented = [t.decode() for t in augment_text_dataset(dataset).as_numpy_iterator()]
    assert len(augmented) == len(texts)
    changed = 0
    for original, result in zip(texts, augmented):
        words = result.split()
        # Word dropout only: the result is the original with some words left out, in order.
        remaining = iter(original.split())
        assert all(word in remaining for word in words)
        changed += result != original
    # augmentation_prob=0.3 and 10% word dropout: about 30% of the texts change.
    assert 30 <= changed <= 90, changed


# --- Training Strategies ----------------------------------------------------------------------


def test_learning_rate_schedules():
    total_steps = 1000
    lr_schedule = learning_rate_schedule_builder(
        {
            "type": "cosine_decay",
            "learning_rate": 5e-5,
            "decay_steps": total_steps,
            "warmup_steps": int(0.1 * total_steps),
            "warmup_start_lr": 1e-8,
            "alpha": 1e-6,
        }
    )
    assert float(lr_schedule(0)) == pytest.approx(1e-8)
    assert float(lr_schedule(50)) == pytest.approx((1e-8 + 5e-5) / 2, rel=1e-3)
    assert float(lr_schedule(100)) == pytest.approx(5e-5)
    assert float(lr_schedule(550)) == pytest.approx((5e-5 + 1e-6) / 2, rel=1e-3)
    assert float(lr_schedule(total_steps)) == pytest.approx(1e-6)

    lr_schedule = learning_rate_schedule_builder(
        {
            "type": "polynomial_decay",
            "learning_rate": 5e-5,
            "decay_steps": total_steps,
            "warmup_steps": int(0.1 * total_steps),
            "power": 1.0,  # Linear
        }
    )
    assert float(lr_schedule(100)) == pytest.approx(5e-5)
    assert float(lr_schedule(550)) == pytest.approx(2.5e-5, rel=1e-3)
    assert float(lr_schedule(total_steps)) == pytest.approx(0.0, abs=1e-12)
    assert float(lr_schedule(50)) == pytest.approx(2.5e-5, rel=1e-3)  # warmup from 0


def test_multi_gpu_training_with_mirrored_strategy(tokenizer, train_dataset):
    """MirroredStrategy with the machine's default device (one CPU replica here)."""
    strategy = tf.distribute.MirroredStrategy()
    with strategy.scope():
        encoder = BERT.from_variant("tiny", vocab_size=tokenizer.vocab_size, **TINY)  # "base"
        mlm_model = MaskedLanguageModel(
            encoder=encoder,
            vocab_size=tokenizer.vocab_size,
            mask_token_id=tokenizer.mask_token_id,
        )
        num_gpus = strategy.num_replicas_in_sync
        scaled_lr = 5e-5 * num_gpus
        mlm_model.compile(
            optimizer=keras.optimizers.AdamW(learning_rate=scaled_lr, weight_decay=0.01)
        )
    history = mlm_model.fit(train_dataset, epochs=1)  # README: epochs=5

    assert num_gpus == 1
    assert float(mlm_model.optimizer.learning_rate.numpy()) == pytest.approx(5e-5)
    assert mlm_model.distribute_strategy is strategy
    assert math.isfinite(history.history["loss"][0])


def test_mixed_precision_training(tokenizer, train_dataset):
    with global_policy("mixed_float16"):
        # The README reuses an encoder made earlier; one made after the policy is set is what
        # "automatically uses mixed precision".
        encoder = BERT.from_variant("tiny", vocab_size=tokenizer.vocab_size, **TINY)
        mlm_model = MaskedLanguageModel(
            encoder=encoder,
            vocab_size=tokenizer.vocab_size,
            mask_token_id=tokenizer.mask_token_id,
        )
        mlm_model.compile(
            optimizer=keras.optimizers.AdamW(learning_rate=5e-5),
            loss_scale="dynamic",  # Prevents underflow
        )
        history = mlm_model.fit(train_dataset.take(2), epochs=1)

        assert isinstance(mlm_model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert encoder.compute_dtype == "float16" and encoder.variable_dtype == "float32"
        assert math.isfinite(history.history["loss"][0])
        logits = mlm_model(next(iter(train_dataset)))
        assert logits.dtype == tf.float32  # the head's output stays float32 for the loss
    assert keras.mixed_precision.global_policy().name == "float32"


def test_gradient_accumulation_with_the_optimizer(tokenizer, train_dataset):
    """The README's GradientAccumulationModel is a stub (its train_step is `pass`); the working
    equivalent is the optimizer's `gradient_accumulation_steps` (Keras accumulates and applies
    the mean gradient every N steps)."""
    encoder = BERT.from_variant("tiny", vocab_size=tokenizer.vocab_size, **TINY)
    mlm_model = MaskedLanguageModel(
        encoder=encoder, vocab_size=tokenizer.vocab_size, mask_token_id=tokenizer.mask_token_id
    )
    optimizer = optimizer_builder(
        {"type": "adamw", "gradient_accumulation_steps": 4}, 5e-4
    )  # Effective batch size = 4x
    mlm_model.compile(optimizer=optimizer)
    mlm_model.build()
    snapshots = [flat_weights(encoder)]
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: snapshots.append(flat_weights(encoder))
    )
    mlm_model.fit(train_dataset.take(4), epochs=1, verbose=0, callbacks=[record])
    for step in (1, 2, 3):  # accumulated only
        np.testing.assert_array_equal(snapshots[step], snapshots[0])
    assert not np.allclose(snapshots[4], snapshots[0])  # applied on the 4th step
    assert optimizer.gradient_accumulation_steps == 4


# --- Fine-tuning for Downstream Tasks -------------------------------------------------------


def test_text_classification_fine_tuning(encoder_file, tokenizer):
    num_classes = 2
    labels = np.array([int("fox" in s or "dog" in s) for s in SENTENCES], np.int32)
    labeled_dataset = tf.data.Dataset.from_tensor_slices((encode(tokenizer, SENTENCES), labels))
    labeled_dataset = labeled_dataset.batch(BATCH)

    pretrained_encoder = keras.models.load_model("pretrained_bert.keras")
    pretrained_encoder.trainable = True  # Allow fine-tuning
    before = flat_weights(pretrained_encoder)
    inputs = {
        "input_ids": keras.Input(shape=(SEQ,), dtype="int32"),  # README: shape=(128,)
        "attention_mask": keras.Input(shape=(SEQ,), dtype="int32"),
        "token_type_ids": keras.Input(shape=(SEQ,), dtype="int32"),
    }
    encoder_outputs = pretrained_encoder(inputs)
    cls_token = encoder_outputs["last_hidden_state"][:, 0, :]  # [CLS] token
    dropout = keras.layers.Dropout(0.1)(cls_token)
    logits = keras.layers.Dense(num_classes)(dropout)
    classifier = keras.Model(inputs, logits)
    classifier.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=2e-5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = classifier.fit(labeled_dataset, epochs=2)  # README: epochs=3

    assert math.isfinite(history.history["loss"][-1])
    assert classifier.predict(labeled_dataset, verbose=0).shape == (len(SENTENCES), num_classes)
    assert not np.allclose(flat_weights(pretrained_encoder), before)  # the encoder fine-tuned


def test_ner_fine_tuning(encoder_file, tokenizer):
    num_entity_tags = 5
    pretrained_encoder = keras.models.load_model("pretrained_bert.keras")
    inputs = {
        "input_ids": keras.Input(shape=(SEQ,), dtype="int32"),
        "attention_mask": keras.Input(shape=(SEQ,), dtype="int32"),
        "token_type_ids": keras.Input(shape=(SEQ,), dtype="int32"),
    }
    encoder_outputs = pretrained_encoder(inputs)
    sequence_output = encoder_outputs["last_hidden_state"]
    dropout = keras.layers.Dropout(0.1)(sequence_output)
    logits = keras.layers.Dense(num_entity_tags)(dropout)
    ner_model = keras.Model(inputs, logits)
    ner_model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=2e-5),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    features = encode(tokenizer, SENTENCES[:BATCH])
    tags = features["input_ids"] % num_entity_tags  # a tag per token
    result = ner_model.train_on_batch(features, tags, return_dict=True)
    assert math.isfinite(result["loss"])
    assert ner_model.predict(features, verbose=0).shape == (BATCH, SEQ, num_entity_tags)


def test_nlp_heads(encoder_file, tokenizer):
    pretrained_encoder = keras.models.load_model("pretrained_bert.keras")
    task_config = NLPTaskConfig(
        name="sentiment", task_type=NLPTaskType.SENTIMENT_ANALYSIS, num_classes=3
    )
    sentiment_head = create_nlp_head(
        task_config=task_config, input_dim=pretrained_encoder.hidden_size
    )
    inputs = {
        "input_ids": keras.Input(shape=(SEQ,), dtype="int32"),
        "attention_mask": keras.Input(shape=(SEQ,), dtype="int32"),
    }
    encoder_outputs = pretrained_encoder(inputs)
    task_outputs = sentiment_head(encoder_outputs)
    sentiment_model = keras.Model(inputs, task_outputs)

    features = encode(tokenizer, SENTENCES[:4])
    features.pop("token_type_ids")
    logits = sentiment_model.predict(features, verbose=0)
    assert logits.shape == (4, 3) and np.all(np.isfinite(logits))
    # The head reads the [CLS] position: the same as its layers on the encoder's first vector.
    hidden = pretrained_encoder(features)["last_hidden_state"][:, 0, :]
    np.testing.assert_allclose(logits, sentiment_head.classifier(hidden), atol=1e-5)


# --- Visualization and Evaluation ---------------------------------------------------------------


def test_visualize_mlm_predictions(workflow, train_dataset, tokenizer, capsys):
    mlm_model = workflow.mlm_model
    sample_batch = next(iter(train_dataset))
    visualize_mlm_predictions(
        mlm_model=mlm_model, inputs=sample_batch, tokenizer=tokenizer, num_samples=4
    )
    lines = capsys.readouterr().out.splitlines()

    # The corpus lines as the model sees them (truncated to SEQ tokens), decoded.
    rows = encode(tokenizer, SENTENCES)["input_ids"]
    texts = {tokenizer.decode(row, skip_special_tokens=True) for row in rows}
    rule, double = "-" * 80, "=" * 80
    assert lines[:3] == [double, "MLM Prediction Visualization", double]
    assert len(lines) == 3 + 4 * 5 + 1 and lines[-1] == rule
    masked_any = False
    for sample in range(4):
        block = lines[3 + 5 * sample : 3 + 5 * (sample + 1)]
        assert block[0] == rule and block[1] == f"Sample {sample + 1}"
        original = re.fullmatch(r"Original:     (.*)", block[2]).group(1)
        masked = re.fullmatch(r"Masked Input: (.*)", block[3]).group(1)
        prediction = re.fullmatch(r"Prediction:   (.*)", block[4]).group(1)
        assert original in texts  # decoded text of the row, without [CLS]/[SEP]/[PAD]
        masked_any |= "[MASK]" in masked
        assert prediction
    assert masked_any


def test_training_metrics_plot(workflow):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    history = workflow.history
    plt.figure(figsize=(12, 4))
    plt.subplot(1, 2, 1)
    plt.plot(history.history["loss"])
    plt.title("Training Loss")
    plt.xlabel("Epoch")
    plt.ylabel("Loss")
    plt.grid(True)
    plt.subplot(1, 2, 2)
    plt.plot(history.history["mlm_accuracy"])
    plt.title("MLM Accuracy")
    plt.xlabel("Epoch")
    plt.ylabel("Accuracy")
    plt.grid(True)
    plt.tight_layout()
    plt.savefig("mlm_training_curves.png")
    plt.close("all")

    with open("mlm_training_curves.png", "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"


def calculate_perplexity(mlm_model, dataset, num_batches=100):
    """Calculate perplexity on a dataset (the README's function, verbatim)."""
    total_loss = 0.0
    total_tokens = 0

    for i, batch in enumerate(dataset.take(num_batches)):  # noqa: B007 (verbatim)
        # Apply masking
        masked_inputs, labels, mask = mlm_model._mask_tokens(batch)

        # Get predictions
        logits = mlm_model(masked_inputs, training=False)

        # Compute loss
        loss = mlm_model.compute_loss(y=labels, y_pred=logits, sample_weight=mask)

        # Accumulate
        num_masked = tf.reduce_sum(tf.cast(mask, tf.float32))
        total_loss += loss * num_masked
        total_tokens += num_masked

    # Calculate perplexity
    avg_loss = total_loss / total_tokens
    perplexity = tf.exp(avg_loss)

    return perplexity.numpy()


def test_perplexity_calculation(workflow, text_file, tokenizer, capsys, monkeypatch):
    mlm_model = workflow.mlm_model
    # buffer_size=1: no shuffling, so every pass sees the same batches in the same order.
    test_dataset = create_mlm_dataset(
        text_file, tokenizer, batch_size=BATCH, max_length=SEQ, buffer_size=1
    )
    perplexity = calculate_perplexity(mlm_model, test_dataset)
    print(f"Perplexity: {perplexity:.2f}")
    assert re.fullmatch(r"Perplexity: \d+\.\d\d\n", capsys.readouterr().out)
    assert np.isfinite(perplexity) and perplexity > 1.0

    ours = mlm_calculate_perplexity(mlm_model, test_dataset, seed=0)
    # Random masks: the README's value differs from ours by sampling noise only.
    assert 0.5 < perplexity / ours < 2.0, (perplexity, ours)
    # With the masks our function uses (batch i masked with seed [0, i]) the README's body
    # computes the same value: full logits + compute_loss equal the training step's math.
    unseeded = mlm_model._mask_tokens
    counter = itertools.count()
    monkeypatch.setattr(
        mlm_model, "_mask_tokens", lambda batch: unseeded(batch, seed=[0, next(counter)])
    )
    seeded = calculate_perplexity(mlm_model, test_dataset)
    assert seeded == pytest.approx(ours, rel=1e-4)
    # A barely trained tiny model is close to uniform: perplexity near the vocabulary size.
    assert ours < 3 * tokenizer.vocab_size


# --- Advanced Usage -----------------------------------------------------------------------------


@keras.saving.register_keras_serializable()
class CustomEncoder(keras.Model):
    """The README's custom encoder, with a Dense layer as `self.transformer` and the
    `get_config` its "Serialization Errors" section asks for."""

    def __init__(self, vocab_size, hidden_size, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size  # REQUIRED attribute

        # Your architecture here
        self.embedding = keras.layers.Embedding(vocab_size, hidden_size)
        self.transformer = keras.layers.Dense(hidden_size, activation="gelu")

    def call(self, inputs, training=None):
        # inputs can be dict or tensor
        if isinstance(inputs, dict):  # noqa: SIM108 (verbatim)
            input_ids = inputs["input_ids"]
        else:
            input_ids = inputs

        # Process
        hidden_states = self.embedding(input_ids)
        hidden_states = self.transformer(hidden_states, training=training)

        # REQUIRED: Return dict with "last_hidden_state"
        return {"last_hidden_state": hidden_states, "attention_mask": inputs.get("attention_mask")}

    def get_config(self):
        config = super().get_config()
        config.update(vocab_size=self.vocab_size, hidden_size=self.hidden_size)
        return config


def test_custom_encoder_integration(tmp_path, monkeypatch, tokenizer, train_dataset):
    monkeypatch.chdir(tmp_path)
    # README: vocab_size=30522, hidden_size=768, mask_token_id=103.
    custom_encoder = CustomEncoder(vocab_size=tokenizer.vocab_size, hidden_size=32)
    mlm_model = MaskedLanguageModel(
        encoder=custom_encoder,
        vocab_size=tokenizer.vocab_size,
        mask_token_id=tokenizer.mask_token_id,
    )

    mlm_model.compile(optimizer=keras.optimizers.AdamW(learning_rate=1e-3))
    history = mlm_model.fit(train_dataset.take(2), epochs=1, verbose=0)
    assert math.isfinite(history.history["loss"][0])
    batch = next(iter(train_dataset))
    assert mlm_model(batch).shape == (BATCH, SEQ, tokenizer.vocab_size)
    mlm_model.save("custom_mlm.keras")
    loaded = keras.models.load_model("custom_mlm.keras")
    assert isinstance(loaded.encoder, CustomEncoder)
    np.testing.assert_allclose(loaded(batch), mlm_model(batch), atol=1e-5)


def test_continual_pretraining(workflow, train_dataset):
    mlm_model = keras.models.load_model("checkpoints/mlm_model_03.keras")
    mlm_model.compile(optimizer=keras.optimizers.AdamW(learning_rate=1e-5))  # Lower LR
    history = mlm_model.fit(train_dataset, epochs=5, initial_epoch=3)  # Start from epoch 4

    assert history.epoch == [3, 4]
    assert all(math.isfinite(v) for v in history.history["loss"])
    assert float(mlm_model.optimizer.learning_rate) == pytest.approx(1e-5)
    assert int(mlm_model.optimizer.iterations) == 2 * len(train_dataset)


def test_domain_adaptation(workflow, tokenizer, workdir):
    workflow.mlm_model.save("pretrained_general.keras")  # the general model being adapted
    medical = [
        "the patient has a warm forest of symptoms in the city",
        "computers help people understand patterns of human data",
        "a quick test predicts the missing word in large text",
        "the doctor learns from text and data every day",
    ]
    (workdir / "data" / "medical.txt").write_text("\n".join(medical * 4) + "\n")
    medical_text_dataset = create_mlm_dataset(
        "data/medical.txt", tokenizer, batch_size=BATCH, max_length=SEQ
    )

    mlm_model = keras.models.load_model("pretrained_general.keras")

    def selected_fraction(model):
        ids = np.random.default_rng(0).integers(10, tokenizer.vocab_size, (64, SEQ))
        _, _, mask = model.mask_inputs({"input_ids": ids.astype(np.int32)})
        return float(np.mean(np.asarray(mask)))

    assert selected_fraction(mlm_model) == pytest.approx(0.15, abs=0.03)
    mlm_model.mask_ratio = 0.10  # Gentler masking
    mlm_model.mlm_head_dropout = 0.05  # Less dropout
    assert selected_fraction(mlm_model) == pytest.approx(0.10, abs=0.03)
    assert mlm_model.mlm_dropout.rate == 0.05
    assert mlm_model.get_config()["mask_ratio"] == 0.10
    assert mlm_model.get_config()["mlm_head_dropout"] == 0.05

    mlm_model.compile(optimizer=keras.optimizers.AdamW(learning_rate=1e-5, weight_decay=0.001))
    history = mlm_model.fit(medical_text_dataset, epochs=2)
    assert len(history.epoch) == 2 and all(math.isfinite(v) for v in history.history["loss"])
    # The saved adapted model keeps the new settings.
    mlm_model.save("adapted.keras")
    adapted = keras.models.load_model("adapted.keras")
    assert adapted.mask_ratio == 0.10 and adapted.mlm_head_dropout == 0.05


# --- Troubleshooting ------------------------------------------------------------------------------


def test_loss_is_nan_fix(tokenizer):
    encoder = BERT.from_variant("tiny", vocab_size=tokenizer.vocab_size, **TINY)
    mlm_model = MaskedLanguageModel(
        encoder=encoder, vocab_size=tokenizer.vocab_size, mask_token_id=tokenizer.mask_token_id
    )
    # The README's fix passes `gradient_clipnorm`, which Keras 3 optimizers reject.
    with pytest.raises((TypeError, ValueError), match="gradient_clipnorm"):
        keras.optimizers.AdamW(learning_rate=1e-5, gradient_clipnorm=0.5)
    # Working forms: Keras' clipnorm / global_clipnorm, or mlm's gradient_clipping_by_norm key.
    clipped = keras.optimizers.AdamW(learning_rate=1e-5, clipnorm=0.5)
    assert clipped.clipnorm == 0.5
    built = optimizer_builder({"type": "adamw", "gradient_clipping_by_norm": 0.5}, 1e-5)
    assert built.global_clipnorm == 0.5
    mlm_model.compile(optimizer=keras.optimizers.AdamW(learning_rate=1e-5, global_clipnorm=0.5))
    assert mlm_model.optimizer.global_clipnorm == 0.5
    # Unclipped, such gradients overflow Adam's float32 second moment (NaN weights); clipped,
    # the step is finite and about the learning rate.
    var = keras.Variable(np.zeros(3, "float32"))
    clipped.build([var])
    clipped.apply_gradients([(np.array([1e30, -1e30, 1e30], "float32"), var)])
    assert np.all(np.isfinite(np.asarray(var))) and np.max(np.abs(np.asarray(var))) <= 2e-5


def test_verify_configuration_prints(tokenizer, capsys):
    print(f"Vocab size: {tokenizer.vocab_size}")
    print(f"Special tokens: {tokenizer.all_special_ids}")
    print(f"Mask token: {tokenizer.mask_token_id}")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"Vocab size: {tokenizer.vocab_size}" and tokenizer.vocab_size <= 120
    special = sorted(int(i) for i in re.findall(r"\d+", out[1]))
    assert special == sorted(
        tokenizer.convert_tokens_to_ids(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    )
    assert out[2] == f"Mask token: {tokenizer.convert_tokens_to_ids('[MASK]')}"


def test_memory_efficient_configuration(text_file, tokenizer):
    previous = keras.mixed_precision.global_policy()
    try:
        keras.mixed_precision.set_global_policy("mixed_float16")
        dataset = create_mlm_dataset(
            text_file,
            tokenizer,
            batch_size=16,  # Smaller batch
            max_length=64,  # Shorter sequences
        )
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
        batches = list(dataset)
        assert len(batches) == len(dataset) == len(SENTENCES) * 2 // 16
        assert all(tuple(b["input_ids"].shape) == (16, 64) for b in batches)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert keras.mixed_precision.global_policy().name == "float32"


def test_cache_and_prefetch(train_dataset):
    dataset = train_dataset
    dataset = dataset.cache()  # Cache in memory
    dataset = dataset.prefetch(tf.data.AUTOTUNE)  # Prefetch batches
    first = [b["input_ids"].numpy() for b in dataset]
    second = [b["input_ids"].numpy() for b in dataset]
    assert len(dataset) == len(train_dataset) == len(first)
    # The second pass replays the cache (the shuffle upstream does not run again).
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_serialization(workflow, train_dataset):
    mlm_model = workflow.mlm_model
    mlm_model.save("model.keras")  # Use .keras format
    loaded = keras.models.load_model("model.keras")
    batch = next(iter(train_dataset))
    np.testing.assert_allclose(loaded(batch), mlm_model(batch), atol=1e-4)
    assert loaded.encoder.get_config() == mlm_model.encoder.get_config()
    ours, theirs = loaded.get_config(), mlm_model.get_config()
    assert {k: v for k, v in ours.items() if k != "encoder"} == {
        k: v for k, v in theirs.items() if k != "encoder"
    }
