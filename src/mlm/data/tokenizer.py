"""WordPiece tokenizers: train one on a corpus, load an existing one, describe it for the model.

A *tokenizer directory* is what `transformers.AutoTokenizer.from_pretrained(dir)` loads
(`tokenizer.json`, `tokenizer_config.json`) plus `mlm_tokenizer.json`, the facts the rest of the
pipeline needs without loading the tokenizer (`TokenizerInfo`: vocabulary size, special ids, the
ids of `##` continuation pieces for whole-word masking, and a content hash that shards record).
`mlm_tokenizer.json` is written last: a directory without it is not a finished tokenizer.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable
from typing import Any

from mlm import schema, storage
from mlm.artifacts import (
    HF_TOKENIZER_CONFIG_FILE,
    HF_TOKENIZER_FILE,
    TOKENIZER_INFO_FILE,
    cached_local_copy,
    check_replaceable,
    read_step_json,
)
from mlm.errors import UserInputError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
CONTINUATION_PREFIX = "##"
# Below this the vocabulary cannot hold the special tokens plus a usable alphabet.
MIN_VOCAB_SIZE = len(SPECIAL_TOKENS) + 26


@dataclasses.dataclass(frozen=True)
class TokenizerInfo:
    """What the model and the shards need to know about a tokenizer (`mlm_tokenizer.json`)."""

    vocab_size: int
    pad_token_id: int
    unk_token_id: int
    cls_token_id: int
    sep_token_id: int
    mask_token_id: int
    special_token_ids: list[int]
    continuation_token_ids: list[int]
    lowercase: bool
    content_hash: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], uri: str = TOKENIZER_INFO_FILE) -> TokenizerInfo:
        """The facts in `data` (read from `uri`), checked against `TOKENIZER_INFO_SCHEMA`."""
        schema.validate(data, TOKENIZER_INFO_SCHEMA, uri, "tokenize")
        info = cls(**{field.name: data[field.name] for field in dataclasses.fields(cls)})
        ids = [
            info.pad_token_id,
            info.unk_token_id,
            info.cls_token_id,
            info.sep_token_id,
            info.mask_token_id,
            *info.special_token_ids,
            *info.continuation_token_ids,
        ]
        beyond = [i for i in ids if i >= info.vocab_size]
        if beyond:
            raise UserInputError(
                f"{uri}: token id {beyond[0]} is beyond vocab_size {info.vocab_size}, so the file "
                "is damaged or was edited; run `mlm tokenize` again to write it"
            )
        return info


_TOKEN_ID = schema.integer(at_least=0)
TOKENIZER_INFO_SCHEMA = schema.Record(
    {
        "vocab_size": schema.integer(at_least=len(SPECIAL_TOKENS)),
        "pad_token_id": _TOKEN_ID,
        "unk_token_id": _TOKEN_ID,
        "cls_token_id": _TOKEN_ID,
        "sep_token_id": _TOKEN_ID,
        "mask_token_id": _TOKEN_ID,
        "special_token_ids": schema.list_of(_TOKEN_ID),
        "continuation_token_ids": schema.list_of(_TOKEN_ID),
        "lowercase": schema.boolean,
        "content_hash": schema.string,
    }
)


def train_wordpiece(
    texts: Iterable[str],
    *,
    vocab_size: int = 8000,
    lowercase: bool = True,
    min_frequency: int = 2,
    limit_alphabet: int = 1000,
) -> Any:
    """Train a BERT WordPiece tokenizer on a stream of texts.

    Args:
        texts: the training texts (streamed; read once).
        vocab_size: target vocabulary size including the special tokens (the result can be larger
            when the corpus's alphabet alone exceeds it).
        lowercase: lowercase and strip accents, as uncased BERT does.
        min_frequency: minimum count of a merged piece.
        limit_alphabet: maximum number of distinct characters kept.

    Returns:
        A `transformers` fast BERT tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer
    from transformers import BertTokenizer

    if vocab_size < MIN_VOCAB_SIZE:
        raise UserInputError(
            f"vocab_size={vocab_size} is too small for the {len(SPECIAL_TOKENS)} special tokens "
            f"{', '.join(SPECIAL_TOKENS)} and an alphabet; use at least {MIN_VOCAB_SIZE}"
        )
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
    )
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece(prefix=CONTINUATION_PREFIX)
    trainer = WordPieceTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        limit_alphabet=limit_alphabet,
        special_tokens=list(SPECIAL_TOKENS),
        continuing_subword_prefix=CONTINUATION_PREFIX,
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return BertTokenizer(tokenizer_object=backend, do_lower_case=lowercase)


def load_existing_tokenizer(path: str, *, lowercase: bool = True) -> Any:
    """Load a tokenizer a user brings: a directory saved by `transformers`, or a `vocab.txt`.

    Args:
        path: local path or `gs://` URI of the directory or of the vocabulary file.
        lowercase: for a `vocab.txt`, whether it is an uncased vocabulary.

    Returns:
        A `transformers` fast tokenizer.
    """
    from transformers import AutoTokenizer, BertTokenizer

    if path.endswith(".txt"):
        if not storage.exists(path):
            raise UserInputError(f"tokenizer: vocabulary file {path} does not exist")
        tokens = [line.rstrip("\r\n") for line in storage.read_text(path).splitlines()]
        if len(tokens) != len(set(tokens)) or not all(tokens):
            raise UserInputError(
                f"tokenizer: {path} has empty or duplicate lines; a vocab.txt holds one distinct "
                "token per line"
            )
        return BertTokenizer(vocab={t: i for i, t in enumerate(tokens)}, do_lower_case=lowercase)
    if not storage.is_remote(path) and not os.path.isdir(path):
        raise UserInputError(f"tokenizer: directory {path} does not exist")
    local = cached_local_copy(path, "tokenizer")
    try:
        tokenizer = AutoTokenizer.from_pretrained(local)
    except Exception as error:  # transformers' errors for damaged files vary by file and type
        detail = " ".join(str(error).split())[:300]
        raise UserInputError(
            f"tokenizer: cannot load {path} as a transformers tokenizer directory "
            f"({type(error).__name__}: {detail}); pass a directory written by save_pretrained "
            "or a vocab.txt"
        ) from error
    if not tokenizer.is_fast:
        raise UserInputError(
            f"tokenizer: {path} is not a fast tokenizer; save it with tokenizer.json"
        )
    return tokenizer


def tokenizer_info(tokenizer: Any) -> TokenizerInfo:
    """Describe a loaded tokenizer; fails when it lacks a BERT special token."""
    vocab = tokenizer.get_vocab()
    ids = {}
    for token in SPECIAL_TOKENS:
        if token not in vocab:
            raise UserInputError(
                f"tokenizer: the vocabulary has no {token} token; a BERT tokenizer needs "
                f"{', '.join(SPECIAL_TOKENS)}"
            )
        ids[token] = vocab[token]
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    settings = {key: backend.get(key) for key in ("normalizer", "pre_tokenizer")}
    ordered = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    digest = hashlib.sha256(json.dumps([ordered, settings], sort_keys=True).encode("utf-8"))
    normalizer = tokenizer.backend_tokenizer.normalizer
    return TokenizerInfo(
        vocab_size=len(tokenizer),
        pad_token_id=ids["[PAD]"],
        unk_token_id=ids["[UNK]"],
        cls_token_id=ids["[CLS]"],
        sep_token_id=ids["[SEP]"],
        mask_token_id=ids["[MASK]"],
        special_token_ids=sorted(set(ids.values()) | set(tokenizer.all_special_ids)),
        continuation_token_ids=sorted(
            i for token, i in vocab.items() if token.startswith(CONTINUATION_PREFIX)
        ),
        lowercase=normalizer is not None and normalizer.normalize_str("A") == "a",
        content_hash=digest.hexdigest(),
    )


def save_tokenizer(tokenizer: Any, output_dir: str) -> TokenizerInfo:
    """Write a tokenizer directory (transformers files, then `mlm_tokenizer.json`) atomically.

    The directory is assembled aside and renamed into place (local) or uploaded with
    `mlm_tokenizer.json` last (`gs://`). An existing `output_dir` is replaced only when it is
    empty or an earlier tokenizer directory.

    Returns:
        The `TokenizerInfo` written to `mlm_tokenizer.json`.
    """
    info = tokenizer_info(tokenizer)
    check_replaceable(output_dir, TOKENIZER_INFO_FILE, "tokenizer")
    with storage.atomic_directory(output_dir, last=[TOKENIZER_INFO_FILE]) as staging:
        _write_local(tokenizer, info, staging)
    return info


def _write_local(tokenizer: Any, info: TokenizerInfo, directory: str) -> None:
    tokenizer.save_pretrained(directory)
    with open(os.path.join(directory, TOKENIZER_INFO_FILE), "w", encoding="utf-8") as file:
        json.dump(info.to_dict(), file, indent=2)
        file.write("\n")


def read_tokenizer_info(tokenizer_dir: str) -> TokenizerInfo:
    """Read `mlm_tokenizer.json` of a tokenizer directory (local or `gs://`)."""
    uri = storage.join(tokenizer_dir, TOKENIZER_INFO_FILE)
    if not storage.exists(uri):
        raise UserInputError(
            f"tokenizer directory {tokenizer_dir} has no {TOKENIZER_INFO_FILE} (missing or "
            f"unfinished); create it with `mlm tokenize --output {tokenizer_dir}`"
        )
    return TokenizerInfo.from_dict(read_step_json(uri, "tokenize"), uri)


def load_tokenizer(tokenizer_dir: str) -> Any:
    """Load the `transformers` fast tokenizer of a tokenizer directory (local or `gs://`)."""
    read_tokenizer_info(tokenizer_dir)  # refuse unfinished directories
    return load_existing_tokenizer(tokenizer_dir)


def load_backend_tokenizer(tokenizer_dir: str) -> Any:
    """The `tokenizers.Tokenizer` (Rust) of a tokenizer directory, without importing transformers.

    This is what bulk tokenization uses (`encode_batch`); truncation and padding are off.
    """
    from tokenizers import Tokenizer

    read_tokenizer_info(tokenizer_dir)  # refuse unfinished directories
    path = storage.join(tokenizer_dir, HF_TOKENIZER_FILE)
    if not storage.exists(path):
        raise UserInputError(
            f"tokenizer directory {tokenizer_dir} has no tokenizer.json; re-create it with "
            "`mlm tokenize`"
        )
    try:
        backend = Tokenizer.from_str(storage.read_text(path))
    except Exception as error:  # the Rust parser's error: a bare Exception naming the position
        detail = " ".join(str(error).split())[:200]
        raise UserInputError(
            f"{path} is not a tokenizers file ({detail}); re-create the tokenizer directory with "
            "`mlm tokenize`"
        ) from error
    backend.no_truncation()
    backend.no_padding()
    return backend


def check_tokenizer_dir(tokenizer_dir: str) -> TokenizerInfo:
    """The facts of a complete tokenizer directory, checked before a step works with it.

    `mlm_tokenizer.json` must fit its schema, `tokenizer.json` must load and hold the same
    number of tokens, and `tokenizer_config.json` must be a JSON object: a directory damaged
    after `mlm tokenize` wrote it is refused here, in one line naming the file.
    """
    info = read_tokenizer_info(tokenizer_dir)
    backend = load_backend_tokenizer(tokenizer_dir)
    if backend.get_vocab_size() != info.vocab_size:
        raise UserInputError(
            f"{storage.join(tokenizer_dir, HF_TOKENIZER_FILE)} holds {backend.get_vocab_size()} "
            f"tokens but {TOKENIZER_INFO_FILE} says {info.vocab_size}; re-create the tokenizer "
            "directory with `mlm tokenize`"
        )
    read_step_json(storage.join(tokenizer_dir, HF_TOKENIZER_CONFIG_FILE), "tokenize")
    return info


def check_tokenizer_matches(info: TokenizerInfo, vocab_size: int, mask_token_id: int) -> None:
    """Fail when a model's vocabulary size or mask id disagrees with the tokenizer's.

    Raises:
        UserInputError: naming both values and how to make them agree.
    """
    if info.vocab_size != vocab_size:
        raise UserInputError(
            f"vocab_size={vocab_size} does not match the tokenizer's {info.vocab_size} tokens "
            f"(content hash {info.content_hash[:12]}); build the model with "
            f"vocab_size={info.vocab_size} or use the tokenizer it was trained with"
        )
    if info.mask_token_id != mask_token_id:
        raise UserInputError(
            f"mask_token_id={mask_token_id} does not match the tokenizer's [MASK] id "
            f"{info.mask_token_id}; pass mask_token_id={info.mask_token_id}"
        )
