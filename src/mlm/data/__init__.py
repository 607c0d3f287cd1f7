"""Data: corpus -> tokenizer -> packed TFRecord shards -> `tf.data` input.

Names are re-exported lazily so that importing `mlm.data` (e.g. by the `mlm` command) does not
import TensorFlow or transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "pretraining_dataset": "mlm.data.dataset",
    "create_mlm_dataset": "mlm.data.dataset",
    "read_units": "mlm.data.corpus",
    "resolve_corpus": "mlm.data.corpus",
    "CorpusStats": "mlm.data.corpus",
    "preprocess_wiki_dump": "mlm.data.corpus",
    "augment_text_dataset": "mlm.data.cleaning",
    "clean_text": "mlm.data.cleaning",
    "write_default_corpus": "mlm.data.default_corpus",
    "write_default_labels": "mlm.data.default_corpus",
    "default_corpus_dir": "mlm.data.default_corpus",
    "TokenizerInfo": "mlm.data.tokenizer",
    "train_wordpiece": "mlm.data.tokenizer",
    "load_tokenizer": "mlm.data.tokenizer",
    "load_backend_tokenizer": "mlm.data.tokenizer",
    "read_tokenizer_info": "mlm.data.tokenizer",
    "check_tokenizer_matches": "mlm.data.tokenizer",
    "ShardManifest": "mlm.data.shards",
    "read_manifest": "mlm.data.shards",
    "write_shards": "mlm.data.shards",
    "read_labelled_texts": "mlm.data.labelled",
    "read_conll": "mlm.data.labelled",
    "stratified_split": "mlm.data.labelled",
    "random_split": "mlm.data.labelled",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'mlm.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
