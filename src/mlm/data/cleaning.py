"""Optional text cleaning and augmentation (the seed README's recipes, made reusable).

`clean_text` strips HTML tags and the common MediaWiki markup (`mlm.data.corpus` applies it when
reading with `clean=True`, and `corpus.preprocess_wiki_dump` to a whole corpus);
`augment_text_dataset` applies random word dropout to a `tf.data` dataset of strings with
TensorFlow ops only. This module imports nothing else of the package's data modules.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import tensorflow as tf

_MARKUP = [
    (re.compile(r"<!--.*?-->", re.S), " "),  # HTML comments
    (re.compile(r"<ref[^>]*/>|<ref[^>]*>.*?</ref>", re.S | re.I), " "),  # wiki footnotes
    (re.compile(r"<[^>]+>"), " "),  # any other tag
    (re.compile(r"\{\{[^{}]*\}\}"), " "),  # templates {{...}} (innermost)
    (re.compile(r"\[\[(?:[^\[\]|]*\|)?([^\[\]]*)\]\]"), r"\1"),  # [[target|label]] -> label
    (re.compile(r"\[https?://\S+\s+([^\]]*)\]"), r"\1"),  # [url label] -> label
    (re.compile(r"'{2,}"), ""),  # ''italic'', '''bold'''
    (re.compile(r"^=+\s*(.*?)\s*=+$"), r"\1"),  # == heading ==
    (re.compile(r"&(nbsp|amp|lt|gt|quot);"), " "),
    (re.compile(r"\s+"), " "),
]


def clean_text(text: str) -> str:
    """Remove HTML tags and MediaWiki markup from one line or document; collapse whitespace."""
    for pattern, replacement in _MARKUP:
        text = pattern.sub(replacement, text)
    return text.strip()


def augment_text_dataset(
    dataset: tf.data.Dataset,
    augmentation_prob: float = 0.3,
    word_dropout: float = 0.1,
    seed: int | None = None,
) -> tf.data.Dataset:
    """Randomly drop words from some texts of a dataset of scalar strings (TensorFlow ops only).

    Args:
        dataset: elements are scalar `tf.string` texts.
        augmentation_prob: probability that a text is augmented.
        word_dropout: probability that each word of an augmented text is dropped (a text that
            would lose every word is kept unchanged).
        seed: makes the augmentation deterministic (stateless RNG keyed by element index).

    Returns:
        A dataset of scalar strings.
    """
    import tensorflow as tf

    from mlm.errors import UserInputError

    for name, value in (("augmentation_prob", augmentation_prob), ("word_dropout", word_dropout)):
        if not 0.0 <= value <= 1.0:
            raise UserInputError(f"{name} must be in [0, 1], got {value}")

    def uniform(shape: tf.Tensor, stream: int, index: tf.Tensor) -> tf.Tensor:
        if seed is None:
            return tf.random.uniform(shape)
        # Stateless: the same seed gives the same augmentation, element by element.
        return tf.random.stateless_uniform(shape, seed=tf.stack([seed * 2 + stream, index]))

    def maybe_augment(index: tf.Tensor, text: tf.Tensor) -> tf.Tensor:
        words = tf.strings.split(text)
        keep = uniform(tf.shape(words), 1, index) >= word_dropout
        dropped = tf.strings.reduce_join(tf.boolean_mask(words, keep), separator=" ")
        augmented = tf.where(tf.reduce_any(keep), dropped, text)
        return tf.where(uniform([], 0, index) < augmentation_prob, augmented, text)

    return dataset.enumerate().map(maybe_augment, num_parallel_calls=tf.data.AUTOTUNE)
