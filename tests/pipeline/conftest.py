"""Shared fixtures of the pipeline tests: one tiny real pre-training run (tokenize, shard,
pretrain through their step functions) on a slice of the built-in corpus, and a small labelled
set drawn from the built-in one."""

import csv
import os
import types
from collections import Counter

import pytest

# Tiny everything: the run exists to exercise the steps, not to learn much.
TINY_MODEL = {
    "hidden_size": 32,
    "num_layers": 2,
    "num_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 32,
}
SEQ_LENGTH = 32
CORPUS_LINES = 400


def write_labels(path, rows_per_label: int) -> str:
    """A CSV (text,label) with `rows_per_label` rows of each class of the built-in labelled set."""
    from mlm.data.default_corpus import default_labels

    taken = Counter()
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["text", "label"])
        for text, label in default_labels():
            if taken[label] < rows_per_label:
                writer.writerow([text, label])
                taken[label] += 1
    return str(path)


def finetune_labels(encoder_dir: str, tmp_path, rows_per_label: int = 6, **settings):
    """`finetune` the export in `encoder_dir` on `rows_per_label` built-in labelled rows per
    class, into `tmp_path / "ft"`: batches of 8, one epoch, no head-only epochs, no baseline
    unless `settings` say otherwise."""
    from mlm.steps.finetune import finetune

    data = write_labels(tmp_path / "labels.csv", rows_per_label)
    defaults = {
        "max_seq_length": SEQ_LENGTH, "batch_size": 8, "epochs": 1, "head_only_epochs": 0,
        "baseline": False,
    }  # fmt: skip
    return finetune(encoder_dir, data, str(tmp_path / "ft"), **{**defaults, **settings})


def write_corpus_slice(directory, lines: int = CORPUS_LINES) -> str:
    """The first `lines` paragraphs of the built-in corpus's train and validation files."""
    from mlm.data.default_corpus import default_corpus_dir

    source = default_corpus_dir()
    os.makedirs(directory, exist_ok=True)
    for name in ("train.txt", "validation.txt"):
        with open(os.path.join(source, name), encoding="utf-8") as file:
            head = [next(file) for _ in range(lines)] if name == "train.txt" else file.readlines()
        with open(os.path.join(directory, name), "w", encoding="utf-8") as file:
            file.writelines(head[:lines])
    return str(directory)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """Tokenizer, shards and a 4-step pre-trained model (real steps, tiny sizes)."""
    from mlm.steps.pretrain import pretrain
    from mlm.steps.shard import shard
    from mlm.steps.tokenize import tokenize

    root = tmp_path_factory.mktemp("tiny_run")
    corpus = write_corpus_slice(root / "corpus")
    tokenizer = str(root / "tokenizer")
    shards = str(root / "shards")
    model = str(root / "model")
    tokenize(corpus, tokenizer, vocab_size=300)
    shard(corpus, tokenizer, shards, max_seq_length=SEQ_LENGTH, num_shards=2)
    pretrain(
        shards,
        tokenizer,
        model,
        model_overrides=TINY_MODEL,
        batch_size=8,
        steps=4,
        learning_rate=1e-3,
        validation_batches=1,
        quiet=True,
    )
    return types.SimpleNamespace(
        root=root, corpus=corpus, tokenizer=tokenizer, shards=shards, model=model
    )


@pytest.fixture(scope="session")
def exported(tiny_run):
    """The tiny run's encoder exported by the export step."""
    from mlm.steps.export import export

    return export(tiny_run.model, tiny_run.tokenizer, str(tiny_run.root / "export"))
