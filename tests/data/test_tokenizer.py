"""Training, saving, loading and checking WordPiece tokenizers (real `tokenizers` training)."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from mlm.artifacts import TOKENIZER_INFO_FILE
from mlm.data.tokenizer import (
    SPECIAL_TOKENS,
    TokenizerInfo,
    check_tokenizer_matches,
    load_existing_tokenizer,
    load_tokenizer,
    read_tokenizer_info,
    save_tokenizer,
    tokenizer_info,
    train_wordpiece,
)
from mlm.errors import UserInputError
from mlm.steps.tokenize import tokenize


def test_trained_directory_loads_with_auto_tokenizer(tokenizer_dir):
    info = read_tokenizer_info(str(tokenizer_dir))
    hf = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    assert hf.is_fast and len(hf) == info.vocab_size
    ids = {token: hf.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    assert (info.pad_token_id, info.unk_token_id, info.cls_token_id) == (
        ids["[PAD]"],
        ids["[UNK]"],
        ids["[CLS]"],
    )
    assert (info.sep_token_id, info.mask_token_id) == (ids["[SEP]"], ids["[MASK]"])
    assert set(ids.values()) <= set(info.special_token_ids)
    encoded = hf("Unbelievable tokenization.")["input_ids"]
    assert encoded[0] == info.cls_token_id and encoded[-1] == info.sep_token_id
    assert hf.decode(encoded, skip_special_tokens=True) == "unbelievable tokenization."
    pieces = hf.convert_ids_to_tokens(info.continuation_token_ids)
    assert pieces and all(p.startswith("##") for p in pieces)
    vocab = hf.get_vocab()
    assert {i for t, i in vocab.items() if t.startswith("##")} == set(info.continuation_token_ids)
    assert info.lowercase is True


def test_content_hash_is_stable_and_tracks_settings(corpus_dir, tokenizer_dir):
    # Training itself is not reproducible bit for bit (tokenizers' WordPiece trainer breaks count
    # ties in hash-map order, huggingface/tokenizers#1794), so stability is checked on one
    # trained tokenizer across save/load, and sensitivity on a setting change.
    reloaded = tokenizer_info(load_tokenizer(str(tokenizer_dir)))
    assert reloaded == read_tokenizer_info(str(tokenizer_dir))
    texts = (corpus_dir / "a.txt").read_text().splitlines()
    uncased = train_wordpiece(texts, vocab_size=120, min_frequency=1)
    cased = tokenizer_info(train_wordpiece(texts, vocab_size=120, min_frequency=1, lowercase=False))
    assert cased.content_hash != tokenizer_info(uncased).content_hash
    assert cased.lowercase is False
    backend = uncased.backend_tokenizer
    backend.normalizer = type(backend.normalizer)(lowercase=False)
    assert (
        tokenizer_info(uncased).content_hash
        != tokenizer_info(load_existing_tokenizer(str(tokenizer_dir))).content_hash
    )


def test_vocab_size_too_small_for_special_tokens():
    with pytest.raises(UserInputError, match=r"vocab_size=5 is too small.*\[MASK\]"):
        train_wordpiece(["some text"], vocab_size=5)


def test_adopt_vocab_txt_and_transformers_directory(tmp_path, tokenizer_dir):
    hf = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    tokens = [t for t, _ in sorted(hf.get_vocab().items(), key=lambda item: item[1])]
    vocab_file = tmp_path / "vocab.txt"
    vocab_file.write_text("\n".join(tokens) + "\n")
    from_vocab = tokenize(None, str(tmp_path / "from_vocab"), tokenizer=str(vocab_file))
    from_dir = tokenize(None, str(tmp_path / "from_dir"), tokenizer=str(tokenizer_dir))
    assert not from_vocab.trained and from_vocab.corpus["files"] == 0
    original = read_tokenizer_info(str(tokenizer_dir))
    assert from_dir.info["content_hash"] == original.content_hash
    adopted = load_tokenizer(str(tmp_path / "from_vocab"))
    text = "the model reads international notes"
    assert adopted(text)["input_ids"] == hf(text)["input_ids"]
    assert from_vocab.info["mask_token_id"] == original.mask_token_id


def test_bad_tokenizer_sources(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        load_existing_tokenizer(str(tmp_path / "missing.txt"))
    (tmp_path / "dup.txt").write_text("[PAD]\na\na\n")
    with pytest.raises(UserInputError, match="duplicate"):
        load_existing_tokenizer(str(tmp_path / "dup.txt"))
    (tmp_path / "nomask.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nhello\n")
    adopted = tokenizer_info(load_existing_tokenizer(str(tmp_path / "nomask.txt")))
    assert (adopted.mask_token_id, adopted.vocab_size) == (5, 6)  # [MASK] is appended
    (tmp_path / "not_a_tokenizer").mkdir()
    (tmp_path / "not_a_tokenizer" / "weights.bin").write_bytes(b"\x00")
    with pytest.raises(UserInputError, match=r"cannot load .*not_a_tokenizer"):
        load_existing_tokenizer(str(tmp_path / "not_a_tokenizer"))
    with pytest.raises(UserInputError, match=r"has no mlm_tokenizer.json"):
        read_tokenizer_info(str(tmp_path))


def test_save_replaces_tokenizer_but_not_foreign_directories(tmp_path, tokenizer_dir):
    hf = load_tokenizer(str(tokenizer_dir))
    target = tmp_path / "tok"
    save_tokenizer(hf, str(target))
    (target / "stale.txt").write_text("old")
    save_tokenizer(hf, str(target))
    assert sorted(p.name for p in target.iterdir()) == sorted(
        p.name for p in tokenizer_dir.iterdir()
    )
    assert not [p for p in tmp_path.iterdir() if p.name != "tok"]  # no temporary leftovers
    foreign = tmp_path / "home"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(UserInputError, match="not an earlier tokenizer directory"):
        save_tokenizer(hf, str(foreign))
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_check_tokenizer_matches(tokenizer_dir):
    info = read_tokenizer_info(str(tokenizer_dir))
    check_tokenizer_matches(info, info.vocab_size, info.mask_token_id)
    with pytest.raises(UserInputError, match=rf"vocab_size=30522 .* {info.vocab_size} tokens"):
        check_tokenizer_matches(info, 30522, info.mask_token_id)
    with pytest.raises(UserInputError, match=r"mask_token_id=103 .* pass mask_token_id="):
        check_tokenizer_matches(info, info.vocab_size, 103)
    data = json.loads((tokenizer_dir / TOKENIZER_INFO_FILE).read_text())
    assert TokenizerInfo.from_dict(data) == info
    del data["mask_token_id"]
    with pytest.raises(UserInputError, match="field mask_token_id is missing"):
        TokenizerInfo.from_dict(data)
    data["mask_token_id"] = "4"
    with pytest.raises(UserInputError, match="field mask_token_id is a string, not an integer"):
        TokenizerInfo.from_dict(data)
    data["mask_token_id"] = info.vocab_size
    with pytest.raises(UserInputError, match=f"token id {info.vocab_size} is beyond vocab_size"):
        TokenizerInfo.from_dict(data)
