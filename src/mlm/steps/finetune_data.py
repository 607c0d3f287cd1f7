"""The labelled data of `mlm finetune`: read (CSV/TSV/JSONL or CoNLL), split into training and
held-out rows, and tokenized for the classifier. Used by `mlm.steps.finetune`."""

from __future__ import annotations

from typing import Any

import numpy as np

from mlm.config import FinetuneConfig
from mlm.data.labelled import (
    random_split,
    read_conll,
    read_labelled_texts,
    stratified_split,
)
from mlm.errors import UserInputError

IGNORE_INDEX = -100  # label of word pieces after the first one of a word (not scored)


def encoded_data(config: FinetuneConfig, task_type: Any, tokenizer: Any) -> dict[str, Any]:
    """The labelled rows read and tokenized: train, validation, and test when given, with the
    label names and the tags the scores are computed against."""
    if task_type.is_token_level:
        dataset = _token_dataset(
            config.data, config.validation_data, config.validation_fraction, config.seed
        )
    else:
        dataset = _sequence_dataset(
            config.data,
            config.validation_data,
            config.validation_fraction,
            config.seed,
            config.text_column,
            config.label_column,
        )
    encode = _encode_words if task_type.is_token_level else _encode_texts
    data = {
        "dataset": dataset,
        "label_names": dataset["label_names"],
        "train": encode(tokenizer, dataset["train"], config.max_seq_length),
        "validation": encode(tokenizer, dataset["validation"], config.max_seq_length),
        "test": None,
        "scored_tags": dataset.get("validation_tags"),
    }
    if config.test_data:
        test_set = _read_test(config, task_type.is_token_level, data["label_names"])
        data["test"] = encode(tokenizer, test_set["test"], config.max_seq_length)
        data["scored_tags"] = test_set.get("test_tags")
    return data


def _sequence_dataset(data, validation_data, fraction, seed, text_column, label_column) -> dict:
    texts, labels = read_labelled_texts(data, text_column=text_column, label_column=label_column)
    if validation_data:
        val_texts, val_labels = read_labelled_texts(
            validation_data, text_column=text_column, label_column=label_column
        )
    else:
        train_rows, val_rows = stratified_split(labels, fraction, seed)
        val_texts = [texts[i] for i in val_rows]
        val_labels = [labels[i] for i in val_rows]
        texts = [texts[i] for i in train_rows]
        labels = [labels[i] for i in train_rows]
    label_names = sorted(set(labels))
    if len(label_names) < 2:
        raise UserInputError(
            f"labelled data {data}: found only the label {label_names}; a classifier needs at "
            "least 2 distinct labels"
        )
    unseen = sorted(set(val_labels) - set(label_names))
    if unseen:
        where = validation_data or f"the part of {data} held out"
        raise UserInputError(
            f"validation data {where} has labels {unseen} that the training data {data} lacks; "
            "every validation label needs training examples"
        )
    index = {name: i for i, name in enumerate(label_names)}
    return {
        "label_names": label_names,
        "train": (texts, np.array([index[x] for x in labels], dtype=np.int32)),
        "validation": (val_texts, np.array([index[x] for x in val_labels], dtype=np.int32)),
    }


def _token_dataset(data, validation_data, fraction, seed) -> dict:
    sentences, tags = read_conll(data)
    if validation_data:
        val_sentences, val_tags = read_conll(validation_data)
    else:
        train_rows, val_rows = random_split(len(sentences), fraction, seed)
        val_sentences = [sentences[i] for i in val_rows]
        val_tags = [tags[i] for i in val_rows]
        sentences = [sentences[i] for i in train_rows]
        tags = [tags[i] for i in train_rows]
    label_names = sorted({tag for sequence in tags for tag in sequence})
    if len(label_names) < 2:
        raise UserInputError(f"CoNLL file {data}: needs at least 2 distinct tags")
    unseen = sorted({t for sequence in val_tags for t in sequence} - set(label_names))
    if unseen:
        where = validation_data or f"the part of {data} held out"
        raise UserInputError(
            f"validation data {where} has tags {unseen} that the training data {data} lacks"
        )
    index = {name: i for i, name in enumerate(label_names)}
    return {
        "label_names": label_names,
        "train": (sentences, [[index[t] for t in seq] for seq in tags]),
        "validation": (val_sentences, [[index[t] for t in seq] for seq in val_tags]),
        "validation_tags": val_tags,
    }


def _encode_texts(tokenizer, split, max_seq_length):
    texts, labels = split
    encoded = tokenizer(
        list(texts),
        max_length=max_seq_length,
        truncation=True,
        padding="max_length",
        return_tensors="np",
    )
    x = {key: encoded[key].astype(np.int32) for key in ("input_ids", "attention_mask")}
    return x, labels, None


def _encode_words(tokenizer, split, max_seq_length):
    """Word-level tags onto word pieces: the first piece of a word carries its tag, the other
    pieces and the special tokens weigh 0 in the loss and are not scored."""
    sentences, tags = split
    encoded = tokenizer(
        list(sentences),
        is_split_into_words=True,
        max_length=max_seq_length,
        truncation=True,
        padding="max_length",
        return_tensors="np",
    )
    labels = np.full(encoded["input_ids"].shape, IGNORE_INDEX, dtype=np.int32)
    for row, sentence_tags in enumerate(tags):
        previous = None
        for position, word in enumerate(encoded.word_ids(row)):
            if word is not None and word != previous:
                labels[row, position] = sentence_tags[word]
            previous = word
    weights = (labels != IGNORE_INDEX).astype(np.float32)
    x = {key: encoded[key].astype(np.int32) for key in ("input_ids", "attention_mask")}
    return x, np.maximum(labels, 0), weights


def _read_test(config: FinetuneConfig, token_level: bool, label_names: list[str]) -> dict:
    """`test_data` as labels indexed like the training data's (tags too for token tasks)."""
    index = {name: i for i, name in enumerate(label_names)}
    if token_level:
        sentences, tags = read_conll(config.test_data)
        unseen = sorted({t for sequence in tags for t in sequence} - set(label_names))
        rows = [[index.get(t, 0) for t in sequence] for sequence in tags]
        test = {"test": (sentences, rows), "test_tags": tags}
    else:
        texts, labels = read_labelled_texts(
            config.test_data, text_column=config.text_column, label_column=config.label_column
        )
        unseen = sorted(set(labels) - set(label_names))
        test = {"test": (texts, np.array([index.get(x, 0) for x in labels], dtype=np.int32))}
    if unseen:
        raise UserInputError(
            f"test_data {config.test_data} has labels {unseen} that the training data lacks"
        )
    return test
