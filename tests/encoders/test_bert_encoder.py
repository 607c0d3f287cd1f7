"""Tests of the BERT encoder: outputs, masking, variants, parameter counts, serialization."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras.src.backend.common import global_state

from mlm.encoders.bert import (
    ACTIVATIONS,
    BERT,
    BERT_VARIANTS,
    StochasticDepth,
    TransformerEncoderBlock,
    alibi_slopes,
)
from mlm.errors import UserInputError
from tests.precision import rounding_tolerance

TINY = {
    "vocab_size": 120,
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 32,
}


def _batch(batch: int = 2, length: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, length), "int32")
    mask[1, length // 2 :] = 0
    token_types = np.zeros((batch, length), "int32")
    token_types[:, length // 4 :] = 1
    return {
        "input_ids": rng.integers(0, TINY["vocab_size"], (batch, length)).astype("int32"),
        "attention_mask": mask,
        "token_type_ids": token_types,
    }


@pytest.fixture(scope="module")
def encoder() -> BERT:
    keras.utils.set_random_seed(0)
    return BERT(**TINY)


def test_outputs_shapes_and_types(encoder):
    outputs = encoder(_batch())
    assert set(outputs) == {"last_hidden_state", "attention_mask", "pooler_output"}
    assert outputs["last_hidden_state"].shape == (2, 16, 32)
    assert outputs["pooler_output"].shape == (2, 32)
    assert outputs["attention_mask"].dtype == tf.int32
    np.testing.assert_array_equal(outputs["attention_mask"], _batch()["attention_mask"])
    # The pooler is tanh(dense(hidden state of the first position)).
    pooler = encoder.pooler
    expected = np.tanh(
        outputs["last_hidden_state"][:, 0].numpy() @ pooler.kernel.numpy() + pooler.bias.numpy()
    )
    np.testing.assert_allclose(outputs["pooler_output"], expected, atol=1e-5)


def test_defaults_for_missing_inputs(encoder):
    batch = _batch()
    ids = batch["input_ids"]
    from_tensor = encoder(ids)["last_hidden_state"]
    explicit = encoder(
        {
            "input_ids": ids,
            "attention_mask": np.ones_like(ids),
            "token_type_ids": np.zeros_like(ids),
        }
    )["last_hidden_state"]
    np.testing.assert_allclose(from_tensor, explicit, atol=1e-6)
    only_ids = encoder({"input_ids": ids})
    np.testing.assert_allclose(only_ids["last_hidden_state"], explicit, atol=1e-6)
    np.testing.assert_array_equal(only_ids["attention_mask"], np.ones_like(ids))
    # Segment ids matter when given.
    with_segments = encoder({"input_ids": ids, "token_type_ids": batch["token_type_ids"]})
    assert not np.allclose(with_segments["last_hidden_state"], explicit, atol=1e-4)


def test_padding_is_not_attended(encoder):
    batch = _batch()
    changed = {key: value.copy() for key, value in batch.items()}
    # Sample 1 is padding from position 8 on: new ids there must not change positions 0..7.
    changed["input_ids"][1, 8:] = (changed["input_ids"][1, 8:] + 7) % TINY["vocab_size"]
    before = encoder(batch)["last_hidden_state"].numpy()
    after = encoder(changed)["last_hidden_state"].numpy()
    np.testing.assert_allclose(after[1, :8], before[1, :8], atol=1e-5)
    np.testing.assert_allclose(after[0], before[0], atol=1e-6)
    assert not np.allclose(after[1, 8:], before[1, 8:], atol=1e-4)


def test_training_mode_applies_dropout_and_inference_is_deterministic(encoder):
    batch = _batch()
    first = encoder(batch, training=False)["last_hidden_state"]
    np.testing.assert_array_equal(first, encoder(batch, training=False)["last_hidden_state"])
    trained = encoder(batch, training=True)["last_hidden_state"]
    assert not np.allclose(first, trained, atol=1e-4)


def test_every_weight_gets_a_gradient(encoder):
    batch = _batch()
    with tf.GradientTape() as tape:
        outputs = encoder(batch, training=True)
        loss = tf.reduce_sum(outputs["last_hidden_state"] ** 2) + tf.reduce_sum(
            outputs["pooler_output"]
        )
    gradients = tape.gradient(loss, encoder.trainable_variables)
    missing = [v.path for v, g in zip(encoder.trainable_variables, gradients) if g is None]
    assert not missing
    assert len(encoder.trainable_variables) == 3 + 2 + TINY["num_layers"] * 16 + 2


def test_sequence_longer_than_positions_is_rejected(encoder):
    too_long = np.ones((1, TINY["max_position_embeddings"] + 1), "int32")
    with pytest.raises(UserInputError, match="exceeds max_position_embeddings=32"):
        encoder(too_long)

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)])
    def encode(ids):
        return encoder(ids)["last_hidden_state"]

    assert encode(np.ones((1, 32), "int32")).shape == (1, 32, 32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_position_embeddings=32"):
        encode(too_long)


def test_bad_inputs_are_rejected(encoder):
    with pytest.raises(UserInputError, match="must contain 'input_ids'"):
        encoder({"ids": np.ones((1, 4), "int32")})
    with pytest.raises(UserInputError, match=r"shape \[batch, length\]"):
        encoder(np.ones((1, 4, 2), "int32"))


def test_variants_have_the_published_sizes():
    expected = {
        "tiny": (4, 256, 4, 1024),
        "small": (6, 512, 8, 2048),
        "base": (12, 768, 12, 3072),
        "large": (24, 1024, 16, 4096),
    }
    assert set(BERT_VARIANTS) == set(expected)
    for name, (layers, hidden, heads, ff) in expected.items():
        encoder = BERT.from_variant(name, vocab_size=50)
        assert (
            encoder.num_layers,
            encoder.hidden_size,
            encoder.num_heads,
            encoder.intermediate_size,
        ) == (layers, hidden, heads, ff)
        assert len(encoder.transformer_layers) == layers
    custom = BERT.from_variant("tiny", vocab_size=50, num_layers=1, hidden_act="relu")
    assert (custom.num_layers, custom.hidden_act, custom.vocab_size) == (1, "relu", 50)


def _lazy_parameter_count(**config) -> int:
    """Builds an encoder whose variables have shapes but no values (nothing is allocated)."""
    pending = list(global_state.get_global_attribute("uninitialized_variables", []))
    try:
        with keras.StatelessScope(initialize_variables=False):
            encoder = BERT(**config)
            encoder.build()
        return encoder.count_params()
    finally:
        # Drop the lazy variables so no later scope initializes (allocates) them.
        global_state.set_global_attribute("uninitialized_variables", pending)


def test_base_and_large_parameter_counts_match_bert():
    # Hugging Face BertModel with pooler, vocabulary 30522, 512 positions.
    assert _lazy_parameter_count(**BERT_VARIANTS["base"]) == 109_482_240
    assert _lazy_parameter_count(**BERT_VARIANTS["large"]) == 335_141_888
    pooler = 768 * 768 + 768
    assert _lazy_parameter_count(**BERT_VARIANTS["base"], add_pooler=False) == (
        109_482_240 - pooler
    )
    # RMSNorm has a scale but no bias: 2 norms per block plus the embedding norm.
    assert _lazy_parameter_count(**BERT_VARIANTS["base"], normalization_type="rms_norm") == (
        109_482_240 - 768 * (2 * 12 + 1)
    )


def test_invalid_configuration_lists_valid_names():
    with pytest.raises(UserInputError, match=r"'tiny', 'small', 'base', 'large'"):
        BERT.from_variant("huge")
    with pytest.raises(UserInputError, match=r"Unknown BERT argument\(s\) \['num_hidden_layers'\]"):
        BERT.from_variant("tiny", num_hidden_layers=2)
    with pytest.raises(UserInputError, match=r"\['layer_norm', 'rms_norm'\]"):
        BERT(**TINY, normalization_type="batch_norm")
    with pytest.raises(UserInputError, match="'gelu'") as error:
        BERT(**TINY, hidden_act="mish")
    assert all(name in str(error.value) for name in ACTIVATIONS)
    with pytest.raises(UserInputError, match="divisible by num_heads=3"):
        BERT(**{**TINY, "num_heads": 3})
    with pytest.raises(UserInputError, match="num_layers must be a positive integer"):
        BERT(**{**TINY, "num_layers": 0})
    with pytest.raises(UserInputError, match=r"hidden_dropout_prob must be a number in \[0, 1\)"):
        BERT(**TINY, hidden_dropout_prob=1.5)
    # UserInputError is a ValueError, so callers catching ValueError still work.
    with pytest.raises(ValueError):
        BERT.from_variant("huge")


def test_rms_norm_and_stochastic_depth_configuration():
    encoder = BERT(
        **{**TINY, "num_layers": 3},
        normalization_type="rms_norm",
        use_stochastic_depth=True,
        stochastic_depth_rate=0.2,
    )
    assert encoder.drop_path_rates() == pytest.approx([0.0, 0.1, 0.2])
    assert [layer.drop_path.rate for layer in encoder.transformer_layers] == pytest.approx(
        [0.0, 0.1, 0.2]
    )
    assert isinstance(encoder.embeddings_norm, keras.layers.RMSNormalization)
    assert isinstance(encoder.transformer_layers[0].output_norm, keras.layers.RMSNormalization)
    no_depth = BERT(**TINY, stochastic_depth_rate=0.5)
    assert no_depth.drop_path_rates() == [0.0, 0.0]


def test_pre_norm_blocks_follow_their_equations_and_save(tmp_path):
    keras.utils.set_random_seed(4)
    block = TransformerEncoderBlock(
        hidden_size=32, num_heads=2, intermediate_size=64, norm_first=True, name="block"
    )
    x = np.random.default_rng(0).normal(size=(2, 8, 32)).astype("float32")
    mask = np.ones((2, 1, 8), bool)
    got = block(x, attention_mask=mask, training=False).numpy()
    # x + attention(norm(x)), then + ffn(norm(.)): the residual stream itself is not normalized.
    attended = (
        x
        + block.attention(
            block.attention_norm(x), block.attention_norm(x), attention_mask=mask
        ).numpy()
    )
    hidden = block.activation(block.intermediate_dense(block.output_norm(attended)))
    expected = attended + block.output_dense(hidden).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    post = TransformerEncoderBlock.from_config({**block.get_config(), "norm_first": False})
    post.build(x.shape)
    post.set_weights(block.get_weights())
    assert not np.allclose(post(x, attention_mask=mask).numpy(), got, atol=1e-3)

    encoder = BERT(**TINY, norm_first=True)
    assert encoder.final_norm is not None and BERT(**TINY).final_norm is None
    batch = _batch()
    outputs = encoder(batch)["last_hidden_state"].numpy()
    # The final normalization leaves every position at zero mean and unit variance.
    np.testing.assert_allclose(outputs.mean(-1), 0.0, atol=1e-4)
    np.testing.assert_allclose(outputs.std(-1), 1.0, atol=1e-2)
    encoder.save(tmp_path / "encoder.keras")
    loaded = keras.models.load_model(tmp_path / "encoder.keras")
    assert loaded.get_config()["norm_first"] is True
    np.testing.assert_array_equal(loaded(batch)["last_hidden_state"], outputs)


def test_stochastic_depth_drops_whole_samples_and_keeps_the_mean():
    layer = StochasticDepth(0.25, seed=3)
    inputs = np.ones((4000, 3, 2), "float32")
    np.testing.assert_array_equal(layer(inputs, training=False), inputs)
    outputs = layer(inputs, training=True).numpy()
    per_sample = outputs.reshape(4000, -1)
    # Each sample is dropped or kept as a whole; kept ones are scaled by 1 / (1 - rate).
    assert np.all((per_sample == per_sample[:, :1]).all(axis=1))
    assert set(np.unique(per_sample)) == {0.0, np.float32(1 / 0.75)}
    dropped = np.mean(per_sample[:, 0] == 0.0)
    assert 0.22 < dropped < 0.28
    assert abs(outputs.mean() - 1.0) < 0.05


def test_layer_configs_round_trip():
    block = TransformerEncoderBlock(
        hidden_size=32,
        num_heads=4,
        intermediate_size=48,
        hidden_act="gelu_new",
        normalization_type="rms_norm",
        drop_path_rate=0.1,
        name="block",
    )
    clone = TransformerEncoderBlock.from_config(block.get_config())
    assert clone.get_config() == block.get_config()
    depth = StochasticDepth(0.3, seed=1)
    assert StochasticDepth.from_config(depth.get_config()).get_config() == depth.get_config()
    encoder = BERT(**TINY, add_pooler=False, normalization_type="rms_norm")
    config = encoder.get_config()
    assert BERT.from_config(config).get_config() == config
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(encoder))
    assert isinstance(restored, BERT) and restored.get_config() == config


def test_save_and_load_give_identical_outputs(tmp_path):
    keras.utils.set_random_seed(1)
    encoder = BERT(
        **TINY,
        normalization_type="rms_norm",
        use_stochastic_depth=True,
        hidden_act="gelu_approximate",
    )
    batch = _batch()
    expected = encoder(batch)
    path = tmp_path / "encoder.keras"
    encoder.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, BERT)
    assert loaded.get_config() == encoder.get_config()
    outputs = loaded(batch)
    for key in expected:
        np.testing.assert_array_equal(outputs[key], expected[key])


def test_alibi_slopes_follow_press_et_al():
    # 8 or more heads: the paper's 2^(-8(h+1)/n); fewer: the first n of the 8-head sequence.
    assert alibi_slopes(2) == [0.5, 0.25]
    assert alibi_slopes(8) == [2.0**-k for k in range(1, 9)]
    assert alibi_slopes(16)[:3] == pytest.approx([2**-0.5, 2**-1.0, 2**-1.5])
    assert alibi_slopes(16)[-1] == 2.0**-8


def test_alibi_encoder_has_no_position_weights_and_sees_only_relative_positions(tmp_path):
    keras.utils.set_random_seed(2)
    alibi = BERT(**TINY, position_embedding_type="alibi")
    absolute = BERT(**TINY)
    alibi(_batch())
    absolute(_batch())
    assert alibi.position_embedding is None
    assert absolute.count_params() - alibi.count_params() == 32 * 32  # positions x hidden
    # A masked-out token in front shifts every real token one position to the right: with ALiBi
    # (relative distances only) their outputs stay the same, with learned positions they change.
    ids = np.random.default_rng(3).integers(5, 120, (1, 12)).astype("int32")
    plain = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    shifted = {
        "input_ids": np.concatenate([np.full((1, 1), 7, "int32"), ids], axis=1),
        "attention_mask": np.concatenate([np.zeros((1, 1), "int32"), np.ones_like(ids)], axis=1),
    }
    for encoder, same in ((alibi, True), (absolute, False)):
        before = encoder(plain)["last_hidden_state"].numpy()
        after = encoder(shifted)["last_hidden_state"].numpy()[:, 1:]
        assert np.allclose(after, before, atol=1e-5) is same
    # The bias is -slope * distance, per head.
    bias = alibi._alibi_bias(4).numpy()
    assert bias.shape == (1, 2, 4, 4)
    np.testing.assert_allclose(bias[0, 1, 0], [0.0, -0.25, -0.5, -0.75])
    np.testing.assert_allclose(bias[0, 0, 3], [-1.5, -1.0, -0.5, 0.0])
    # It round-trips through saving, and the option is validated.
    alibi.save(tmp_path / "alibi.keras")
    loaded = keras.models.load_model(tmp_path / "alibi.keras")
    assert loaded.get_config()["position_embedding_type"] == "alibi"
    np.testing.assert_array_equal(
        loaded(plain)["last_hidden_state"], alibi(plain)["last_hidden_state"]
    )
    with pytest.raises(UserInputError, match=r"\['absolute', 'alibi'\]"):
        BERT(**TINY, position_embedding_type="rotary")


def test_attention_bias_is_added_to_the_scores():
    # A bias that forbids every key but the query's own: each position attends only to itself,
    # so the output is the value and output projections of that position alone.
    block = TransformerEncoderBlock(32, 4, 64, hidden_dropout_prob=0.0)
    block.build((2, 6, 32))
    inputs = tf.constant(np.random.default_rng(4).normal(size=(2, 6, 32)).astype("float32"))
    only_self = tf.constant((np.eye(6) - 1.0)[None, None] * 1e9, tf.float32)
    got = block._self_attention(inputs, None, training=False, attention_bias=only_self)
    value = block.attention.value_dense(inputs)  # [batch, length, heads, head_dim]
    want = block.attention.output_dense(value)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-4)
    assert not np.allclose(block._self_attention(inputs, None, training=False), want, atol=1e-3)


def test_mixed_precision_policy():
    encoder = BERT(**TINY, dtype="mixed_bfloat16")
    outputs = encoder(_batch())
    assert outputs["last_hidden_state"].dtype == tf.bfloat16
    assert encoder.token_embedding.embeddings.dtype == "float32"


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_block_attention_equals_keras_multi_head_attention(policy):
    # The block computes attention itself (fused projection, batched matmuls) with the weights of
    # its Keras MultiHeadAttention; both must give the same result, padding mask included.
    block = TransformerEncoderBlock(32, 4, 64, dtype=policy)
    block.build((3, 10, 32))
    rng = np.random.default_rng(0)
    for weight in block.attention.weights:  # large random weights: differences would show
        weight.assign(rng.normal(size=weight.shape).astype("float32"))
    inputs = tf.cast(rng.normal(size=(3, 10, 32)).astype("float32"), block.compute_dtype)
    keep = rng.random((3, 1, 10)) > 0.3
    keep[2] = False  # a sequence with every key masked: no context, only the output bias
    if policy == "float32":
        rtol, atol_share = 1e-2, 1e-5
    else:
        # Each path rounds to bfloat16 after the Q/K/V projection, the scores, the softmax, the
        # context and the output projection with its bias: 6 times, wherever the CPU rounds.
        rtol = atol_share = rounding_tolerance(block.compute_dtype, 6)
    for mask in (tf.constant(keep), None):
        want = block.attention(query=inputs, value=inputs, attention_mask=mask)
        got = block._self_attention(inputs, mask, training=False)
        assert got.dtype == want.dtype == block.compute_dtype
        scale = float(tf.reduce_max(tf.abs(tf.cast(want, tf.float32))))
        np.testing.assert_allclose(
            tf.cast(got, tf.float32),
            tf.cast(want, tf.float32),
            atol=atol_share * scale,
            rtol=rtol,
        )


def test_bfloat16_gelu_is_the_exact_gelu_rounded_twice():
    # Under mixed precision Φ(x) is computed in float32 from the bfloat16 input and rounded
    # once, then x·Φ(x) once more: within 2 roundings of the exact GELU of the same inputs.
    # Computed in bfloat16, erfc's argument is rounded first, an error that erfc's steepness
    # multiplies for negative x (at x = -4 about 32 units of roundoff).
    from mlm.encoders.bert import get_activation

    inputs = tf.cast(tf.linspace(-6.0, 6.0, 2001), tf.bfloat16)
    ours = tf.cast(get_activation("gelu")(inputs), tf.float64)
    exact = tf.nn.gelu(tf.cast(inputs, tf.float64), approximate=False)  # 0.5·x·erfc(-x/√2)
    np.testing.assert_allclose(ours, exact, rtol=rounding_tolerance(tf.bfloat16, 2), atol=1e-30)


def test_attention_probabilities_dropout_is_used_in_training():
    block = TransformerEncoderBlock(32, 4, 64, hidden_dropout_prob=0.0)
    block.build((2, 10, 32))
    inputs = tf.random.stateless_normal((2, 10, 32), seed=(0, 1))
    inference = block._self_attention(inputs, None, training=False)
    np.testing.assert_array_equal(inference, block._self_attention(inputs, None, training=False))
    assert not np.allclose(inference, block._self_attention(inputs, None, training=True))
    no_dropout = TransformerEncoderBlock(32, 4, 64, attention_probs_dropout_prob=0.0)
    no_dropout.build((2, 10, 32))
    no_dropout.set_weights(block.get_weights())
    np.testing.assert_allclose(
        no_dropout._self_attention(inputs, None, training=True), inference, atol=1e-6
    )


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_exact_gelu_values_and_gradient_equal_keras(dtype):
    # The encoder's exact GELU has a hand-written gradient; both must equal Keras' gelu.
    from mlm.encoders.bert import get_activation

    inputs = tf.cast(tf.linspace(-8.0, 8.0, 1001), dtype)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(inputs)
        ours = get_activation("gelu")(inputs)
        reference = keras.activations.gelu(inputs, approximate=False)
    # bfloat16: Keras' GELU x·Φ(x) rounds after erf, the sum and the product (3; ours after Φ,
    # computed in float32, and the product), the gradient Φ(x) + x·φ(x) after Φ, φ, the
    # products and the sum (5); relative to the values' magnitude (up to 8).
    if dtype == "float32":
        forward = backward = dict(atol=1e-6, rtol=1e-7)
    else:
        forward = dict(atol=rounding_tolerance(dtype, 3), rtol=rounding_tolerance(dtype, 3))
        backward = dict(atol=rounding_tolerance(dtype, 5), rtol=rounding_tolerance(dtype, 5))
    np.testing.assert_allclose(tf.cast(ours, tf.float32), tf.cast(reference, tf.float32), **forward)
    np.testing.assert_allclose(
        tf.cast(tape.gradient(ours, inputs), tf.float32),
        tf.cast(tape.gradient(reference, inputs), tf.float32),
        **backward,
    )
