"""Import of Hugging Face BERT checkpoints (config.json + model.safetensors) into `BERT`.

A checkpoint directory as written by `transformers` (`BertModel`, `BertForMaskedLM` or
`BertForPreTraining`, with or without the `bert.` prefix on the encoder's tensor names) becomes a
`mlm.encoders.bert.BERT` with every weight assigned, and optionally a
`mlm.model.MaskedLanguageModel` whose head carries the checkpoint's `cls.predictions` weights, so
pre-training can continue from a published model on new text. Tensors are read with
`safetensors.numpy`; PyTorch is not needed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlm.errors import UserInputError

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"

# `BertConfig` argument -> (`BERT` argument, BertConfig's default).
_CONFIG_FIELDS: dict[str, tuple[str, Any]] = {
    "vocab_size": ("vocab_size", 30522),
    "hidden_size": ("hidden_size", 768),
    "num_hidden_layers": ("num_layers", 12),
    "num_attention_heads": ("num_heads", 12),
    "intermediate_size": ("intermediate_size", 3072),
    "hidden_act": ("hidden_act", "gelu"),
    "hidden_dropout_prob": ("hidden_dropout_prob", 0.1),
    "attention_probs_dropout_prob": ("attention_probs_dropout_prob", 0.1),
    "max_position_embeddings": ("max_position_embeddings", 512),
    "type_vocab_size": ("type_vocab_size", 2),
    "initializer_range": ("initializer_range", 0.02),
    "layer_norm_eps": ("layer_norm_eps", 1e-12),
}

# Tensors a checkpoint may hold that have no counterpart here: buffers and the next-sentence head.
_IGNORED_PREFIXES = ("embeddings.position_ids", "cls.seq_relationship.")

# Special tokens of BERT's WordPiece vocabularies, read from vocab.txt when the checkpoint has one.
_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def encoder_config_from_hf(config: dict[str, Any], source: str = CONFIG_FILE) -> dict[str, Any]:
    """Translates a Hugging Face `BertConfig` dict into `BERT` constructor arguments.

    Args:
        config: the parsed config.json.
        source: where the config came from, for error messages.

    Returns:
        Keyword arguments for `BERT` (missing fields take `BertConfig`'s defaults).

    Raises:
        UserInputError: the config is not a BERT config this encoder can represent.
    """
    model_type = config.get("model_type", "bert")
    if model_type != "bert":
        raise UserInputError(
            f"{source} has model_type={model_type!r}; only BERT checkpoints "
            "(model_type 'bert') can be imported."
        )
    position_type = config.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise UserInputError(
            f"{source} has position_embedding_type={position_type!r}; only 'absolute' "
            "position embeddings are supported."
        )
    from mlm.encoders.bert import ACTIVATIONS

    hidden_act = config.get("hidden_act", "gelu")
    if hidden_act not in ACTIVATIONS:
        raise UserInputError(
            f"{source} has hidden_act={hidden_act!r}; supported: {sorted(ACTIVATIONS)}."
        )
    return {ours: config.get(theirs, default) for theirs, (ours, default) in _CONFIG_FIELDS.items()}


@dataclass
class _Checkpoint:
    """The tensors of a checkpoint, looked up by BertModel name whatever the stored prefix."""

    tensors: dict[str, np.ndarray]
    source: str

    def __post_init__(self) -> None:
        self.prefix = "bert." if any(k.startswith("bert.") for k in self.tensors) else ""
        self.used: set[str] = set()

    def _candidates(self, name: str, prefixed: bool) -> list[str]:
        base = [self.prefix + name] if prefixed else [name]
        # Checkpoints converted from the original TensorFlow code name LayerNorm's
        # parameters gamma/beta.
        if name.endswith("LayerNorm.weight"):
            base += [k[: -len("weight")] + "gamma" for k in base]
        elif name.endswith("LayerNorm.bias"):
            base += [k[: -len("bias")] + "beta" for k in base]
        return base

    def find(self, name: str, prefixed: bool = True) -> str | None:
        """Returns the stored key of tensor `name`, or None when absent."""
        for key in self._candidates(name, prefixed):
            if key in self.tensors:
                return key
        return None

    def has(self, name: str, prefixed: bool = True) -> bool:
        return self.find(name, prefixed) is not None

    def get(self, name: str, prefixed: bool = True) -> tuple[str, np.ndarray]:
        key = self.find(name, prefixed)
        if key is None:
            tried = ", ".join(repr(k) for k in self._candidates(name, prefixed))
            raise UserInputError(
                f"{self.source} has no tensor {tried}; it is not a complete BERT checkpoint "
                "(expected BertModel / BertForMaskedLM tensor names)."
            )
        self.used.add(key)
        return key, self.tensors[key]

    def unused(self) -> list[str]:
        return sorted(
            k
            for k in self.tensors
            if k not in self.used
            and not any(k.removeprefix(self.prefix).startswith(p) for p in _IGNORED_PREFIXES)
        )


@dataclass(frozen=True)
class _Layout:
    """How a stored (PyTorch-layout) tensor maps onto a Keras variable.

    Attributes:
        transpose: a torch.nn.Linear weight, stored [out, in]; Keras kernels are [in, out].
        input_axes: leading kernel axes that are inputs. EinsumDense splits the heads: the
            query/key/value kernels are [hidden, heads, head_dim] (1 input axis), the attention
            output kernel [heads, head_dim, hidden] (2).
        flat: stored flattened (attention biases [heads, head_dim] are stored [hidden]).
    """

    transpose: bool = False
    input_axes: int = 1
    flat: bool = False

    def stored_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.transpose:
            return (math.prod(shape[self.input_axes :]), math.prod(shape[: self.input_axes]))
        return (math.prod(shape),) if self.flat else shape


_SAME = _Layout()
_FLAT = _Layout(flat=True)
_LINEAR = _Layout(transpose=True)
_ATTENTION_OUTPUT = _Layout(transpose=True, input_axes=2)


def _assign(
    checkpoint: _Checkpoint, name: str, variable: Any, layout: _Layout, prefixed: bool = True
) -> None:
    key, array = checkpoint.get(name, prefixed)
    shape = tuple(variable.shape)
    expected = layout.stored_shape(shape)
    if tuple(array.shape) != expected:
        raise UserInputError(
            f"{checkpoint.source}: tensor {key!r} has shape {tuple(array.shape)}, but the model "
            f"built from {CONFIG_FILE} expects {expected} (for {variable.path}); the config "
            "and the weights do not belong together."
        )
    if layout.transpose:
        array = array.T
    variable.assign(np.asarray(array, dtype=variable.dtype).reshape(shape))


def _dense(
    checkpoint: _Checkpoint, name: str, layer: Any, kernel: _Layout = _LINEAR, **kw: Any
) -> None:
    _assign(checkpoint, f"{name}.weight", layer.kernel, kernel, **kw)
    _assign(checkpoint, f"{name}.bias", layer.bias, _FLAT, **kw)


def _layer_norm(checkpoint: _Checkpoint, name: str, layer: Any, **kw: Any) -> None:
    _assign(checkpoint, f"{name}.weight", layer.gamma, _SAME, **kw)
    _assign(checkpoint, f"{name}.bias", layer.beta, _SAME, **kw)


def _load_encoder_weights(checkpoint: _Checkpoint, encoder: Any) -> None:
    _assign(
        checkpoint, "embeddings.word_embeddings.weight", encoder.token_embedding.embeddings, _SAME
    )
    _assign(
        checkpoint,
        "embeddings.position_embeddings.weight",
        encoder.position_embedding.embeddings,
        _SAME,
    )
    _assign(
        checkpoint,
        "embeddings.token_type_embeddings.weight",
        encoder.segment_embedding.embeddings,
        _SAME,
    )
    _layer_norm(checkpoint, "embeddings.LayerNorm", encoder.embeddings_norm)
    for index, block in enumerate(encoder.transformer_layers):
        prefix = f"encoder.layer.{index}"
        attention = block.attention
        _dense(checkpoint, f"{prefix}.attention.self.query", attention.query_dense)
        _dense(checkpoint, f"{prefix}.attention.self.key", attention.key_dense)
        _dense(checkpoint, f"{prefix}.attention.self.value", attention.value_dense)
        _dense(
            checkpoint,
            f"{prefix}.attention.output.dense",
            attention.output_dense,
            _ATTENTION_OUTPUT,
        )
        _layer_norm(checkpoint, f"{prefix}.attention.output.LayerNorm", block.attention_norm)
        _dense(checkpoint, f"{prefix}.intermediate.dense", block.intermediate_dense)
        _dense(checkpoint, f"{prefix}.output.dense", block.output_dense)
        _layer_norm(checkpoint, f"{prefix}.output.LayerNorm", block.output_norm)
    if encoder.pooler is not None:
        _dense(checkpoint, "pooler.dense", encoder.pooler)


def _keras_activation(hidden_act: str) -> str:
    """The Keras activation name closest to a Hugging Face `hidden_act`, for the MLM head."""
    if hidden_act in ("gelu", "relu", "silu", "swish", "tanh"):
        return hidden_act
    # gelu_new / gelu_pytorch_tanh: Keras names only the exact GELU; the two differ below 1e-3.
    logger.warning("MLM head activation %r approximated by Keras 'gelu'.", hidden_act)
    return "gelu"


def _special_ids_from_vocab(directory: str) -> dict[str, Any]:
    """`mask_token_id` and `special_token_ids` from the checkpoint's vocab.txt, when it has one."""
    path = os.path.join(directory, "vocab.txt")
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        ids = {line.rstrip("\n"): i for i, line in enumerate(handle)}
    found = {token: ids[token] for token in _SPECIAL_TOKENS if token in ids}
    if "[MASK]" not in found:
        return {}
    return {"mask_token_id": found["[MASK]"], "special_token_ids": sorted(found.values())}


def _build_mlm_model(
    checkpoint: _Checkpoint,
    encoder: Any,
    hf_config: dict[str, Any],
    directory: str,
    mlm_kwargs: dict[str, Any],
) -> Any:
    from mlm.model import MaskedLanguageModel

    settings: dict[str, Any] = {
        "mlm_head_activation": _keras_activation(hf_config.get("hidden_act", "gelu")),
        "initializer_range": encoder.initializer_range,
        "layer_norm_eps": encoder.layer_norm_eps,
        "tie_word_embeddings": bool(hf_config.get("tie_word_embeddings", True)),
        **_special_ids_from_vocab(directory),
        **mlm_kwargs,
    }
    model = MaskedLanguageModel(encoder=encoder, vocab_size=encoder.vocab_size, **settings)
    model.build(None)
    _dense(checkpoint, "cls.predictions.transform.dense", model.mlm_dense, prefixed=False)
    _layer_norm(checkpoint, "cls.predictions.transform.LayerNorm", model.mlm_norm, prefixed=False)
    bias_name = "cls.predictions.bias"
    if not checkpoint.has(bias_name, prefixed=False):
        bias_name = "cls.predictions.decoder.bias"
    _assign(checkpoint, bias_name, model.mlm_output.bias, _SAME, prefixed=False)
    # The decoder bias is the same parameter as cls.predictions.bias when both are stored.
    if checkpoint.has("cls.predictions.decoder.bias", prefixed=False):
        checkpoint.used.add("cls.predictions.decoder.bias")

    decoder = "cls.predictions.decoder.weight"
    if model.mlm_output.kernel is not None:
        if not checkpoint.has(decoder, prefixed=False):
            decoder = "embeddings.word_embeddings.weight"  # stored once because it was tied
        _assign(
            checkpoint,
            decoder,
            model.mlm_output.kernel,
            _LINEAR,
            prefixed=decoder.startswith("embeddings."),
        )
    elif checkpoint.has(decoder, prefixed=False):
        key, stored = checkpoint.get(decoder, prefixed=False)
        embeddings = np.asarray(encoder.token_embedding.embeddings)
        if stored.shape != embeddings.shape or not np.allclose(stored, embeddings):
            raise UserInputError(
                f"{checkpoint.source}: {key!r} differs from the word embeddings, so the "
                "checkpoint's output layer is not tied; pass tie_word_embeddings=False."
            )
    return model


def _read_config(directory: str) -> dict[str, Any]:
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isfile(path):
        raise UserInputError(
            f"{path} does not exist; a Hugging Face checkpoint directory holds {CONFIG_FILE} "
            f"and {WEIGHTS_FILE} (as written by save_pretrained)."
        )
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except (OSError, ValueError) as error:
        raise UserInputError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(config, dict):
        raise UserInputError(f"{path} must hold a JSON object, got {type(config).__name__}.")
    return config


def _weight_files(directory: str) -> list[str]:
    single = os.path.join(directory, WEIGHTS_FILE)
    if os.path.isfile(single):
        return [single]
    index = os.path.join(directory, WEIGHTS_INDEX_FILE)
    if os.path.isfile(index):
        try:
            with open(index, encoding="utf-8") as handle:
                weight_map = json.load(handle)["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise UserInputError(f"{index} is not a safetensors index: {error}") from error
        return [os.path.join(directory, name) for name in sorted(set(weight_map.values()))]
    hint = ""
    if os.path.isfile(os.path.join(directory, "pytorch_model.bin")):
        hint = (
            " It has pytorch_model.bin: convert it with transformers, "
            "model.save_pretrained(directory, safe_serialization=True)."
        )
    raise UserInputError(f"{single} does not exist.{hint}")


def _read_tensors(files: list[str]) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    tensors: dict[str, np.ndarray] = {}
    for path in files:
        if not os.path.isfile(path):
            raise UserInputError(f"{path} does not exist (listed in {WEIGHTS_INDEX_FILE}).")
        try:
            tensors.update(load_file(path))
        except Exception as error:  # safetensors raises its own error types
            raise UserInputError(
                f"{path} could not be read as float safetensors: {error}"
            ) from error
    return tensors


@contextlib.contextmanager
def _local_directory(path: str | os.PathLike[str]) -> Iterator[str]:
    """Yields a local directory with the checkpoint; a gs:// prefix is downloaded for the block."""
    from mlm import storage

    path = os.fspath(path)
    if storage.is_remote(path):
        with tempfile.TemporaryDirectory(prefix="hf-checkpoint-") as staging:
            local = storage.stage_to_local(path, staging)
            try:
                yield local
            except UserInputError as error:
                # Name the user's URI, not the temporary copy, in the message.
                raise UserInputError(str(error).replace(local, path.rstrip("/"))) from error
        return
    if not os.path.isdir(path):
        raise UserInputError(
            f"Hugging Face checkpoint directory {path} does not exist (or is not a directory); "
            f"pass the directory that holds {CONFIG_FILE} and {WEIGHTS_FILE}."
        )
    yield path


def is_hf_checkpoint(path: str) -> bool:
    """Whether `path` (local or object store) is a Hugging Face checkpoint directory rather than
    an `mlm pretrain` output: it has `config.json` and no `metrics.json`."""
    from mlm import storage
    from mlm.artifacts import METRICS_FILE

    return storage.exists(storage.join(path, CONFIG_FILE)) and not storage.exists(
        storage.join(path, METRICS_FILE)
    )


def load_hf_bert_checkpoint(path: str, *, with_mlm_head: bool = True, **mlm_kwargs: Any) -> Any:
    """Loads a Hugging Face BERT checkpoint directory into a `BERT` (and its MLM head).

    Args:
        path: a directory (local, or a `gs://` prefix) with `config.json` and
            `model.safetensors` (or a sharded `model.safetensors.index.json`), as written by
            `transformers`' `save_pretrained`.
        with_mlm_head: also build a `MaskedLanguageModel` and load the checkpoint's
            `cls.predictions` head (BertForMaskedLM / BertForPreTraining checkpoints).
        **mlm_kwargs: `MaskedLanguageModel` arguments (`mask_ratio`, `mask_token_id`, ...).
            When the directory has a `vocab.txt`, `mask_token_id` and `special_token_ids`
            default to its `[MASK]` and special tokens; `tie_word_embeddings` defaults to the
            config's.

    Returns:
        The `MaskedLanguageModel` (its `encoder` is the `BERT`) when `with_mlm_head`, else the
        `BERT`. The encoder has a pooler exactly when the checkpoint has one.

    Raises:
        UserInputError: a file or tensor is missing, or a tensor's shape does not fit the
            config (the message names the tensor, the expected and the found shape).
    """
    with _local_directory(path) as directory:
        hf_config = _read_config(directory)
        source = os.path.join(directory, WEIGHTS_FILE)
        kwargs = encoder_config_from_hf(hf_config, os.path.join(directory, CONFIG_FILE))
        checkpoint = _Checkpoint(_read_tensors(_weight_files(directory)), source)

        from mlm.encoders.bert import BERT

        encoder = BERT(**kwargs, add_pooler=checkpoint.has("pooler.dense.weight"))
        encoder.build()
        _load_encoder_weights(checkpoint, encoder)
        model = (
            _build_mlm_model(checkpoint, encoder, hf_config, directory, mlm_kwargs)
            if with_mlm_head
            else encoder
        )
    unused = checkpoint.unused()
    if unused:
        logger.warning("%s: %d tensors not used: %s", source, len(unused), ", ".join(unused))
    return model
