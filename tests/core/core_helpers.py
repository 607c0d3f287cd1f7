"""Shared pieces of the core tests: the seed README's custom encoder, toy text and batches."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "machine learning is a subset of artificial intelligence",
    "the capital of france is paris",
    "natural language processing helps computers understand language",
    "a lazy dog sleeps under the warm sun",
    "the brown fox runs quickly through the forest",
    "computers learn patterns from large amounts of text",
    "paris is a large city in france",
]


@keras.saving.register_keras_serializable(package="mlm_tests")
class CustomEncoder(keras.Model):
    """The seed README's custom-encoder example: embedding + one self-attention block.

    With the `get_config` that the README's "Serialization Errors" section asks for (Keras does
    not derive one for this subclass).
    """

    def __init__(self, vocab_size: int, hidden_size: int, num_heads: int = 2, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.token_embedding = keras.layers.Embedding(vocab_size, hidden_size)
        self.position_embedding = keras.layers.Embedding(64, hidden_size)
        self.attention = keras.layers.MultiHeadAttention(num_heads, hidden_size // num_heads)
        self.norm = keras.layers.LayerNormalization()
        self.ffn = keras.layers.Dense(hidden_size, activation="gelu")

    def call(self, inputs, training=None):
        input_ids = inputs["input_ids"] if isinstance(inputs, dict) else inputs
        attention_mask = inputs.get("attention_mask") if isinstance(inputs, dict) else None
        positions = keras.ops.arange(keras.ops.shape(input_ids)[1])
        x = self.token_embedding(input_ids) + self.position_embedding(positions)[None]
        mask = None
        if attention_mask is not None:
            mask = keras.ops.cast(attention_mask, "bool")[:, None, :]
        x = self.norm(x + self.attention(x, x, attention_mask=mask, training=training))
        x = x + self.ffn(x)
        return {"last_hidden_state": x, "attention_mask": attention_mask}

    def get_config(self):
        config = super().get_config()
        config.update(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size, num_heads=self.num_heads
        )
        return config


def encode(tokenizer, sentences, length: int = 16) -> dict:
    """Token ids of sentences, padded to `length`, as int32 numpy arrays."""
    enc = tokenizer(
        list(sentences),
        max_length=length,
        truncation=True,
        padding="max_length",
        return_tensors="np",
    )
    return {
        "input_ids": enc["input_ids"].astype(np.int32),
        "attention_mask": enc["attention_mask"].astype(np.int32),
    }


def text_dataset(tokenizer, batch_size: int = 8, length: int = 16, repeat: int = 1):
    """A tf.data.Dataset of dict batches built from SENTENCES."""
    features = encode(tokenizer, SENTENCES * repeat, length)
    return tf.data.Dataset.from_tensor_slices(features).batch(batch_size, drop_remainder=True)
