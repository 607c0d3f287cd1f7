"""The model of a pre-training run: the earlier model it starts from (`init_from`), the encoder
and masked-LM head it builds (with their checks against the tokenizer and the shards), count-based
token embeddings, and the optimizer. Used by `mlm.steps.pretrain`."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from mlm import storage
from mlm.config import PretrainConfig
from mlm.errors import UserInputError


@dataclasses.dataclass(frozen=True)
class InitialModel:
    """What training starts from: `uri` None is random weights at step 0; `hugging_face` marks a
    `transformers` BERT checkpoint directory (its own architecture, step 0)."""

    uri: str | None = None
    step: int = 0
    hugging_face: bool = False


def initial_model(config: PretrainConfig, info: Any) -> InitialModel:
    """The earlier model `config.init_from` names (already resolved from the registry by
    `mlm.run_identity.with_run_identity`), checked against this run's tokenizer."""
    from mlm.encoders.hf_checkpoint import is_hf_checkpoint
    from mlm.registry import model_metrics

    if not config.init_from:
        return InitialModel()
    uri = config.init_from
    if is_hf_checkpoint(uri):
        return InitialModel(uri, 0, hugging_face=True)
    metrics = model_metrics(uri, "init_from")
    tokenizer_hash = metrics.get("tokenizer_hash")
    if tokenizer_hash and tokenizer_hash != info.content_hash:
        raise UserInputError(
            f"init_from: {uri} was trained with another tokenizer (content hash "
            f"{tokenizer_hash[:12]}, this run's is {info.content_hash[:12]}); continue with the "
            "tokenizer it was trained with (pipeline: pretrained_tokenizer_uri)"
        )
    return InitialModel(uri, int(metrics.get("steps", 0)))


def build_model(
    config: PretrainConfig, info: Any, seq_length: int, initial: InitialModel | None = None
) -> Any:
    from mlm.encoders.bert import BERT
    from mlm.model import MaskedLanguageModel

    if initial is not None and initial.hugging_face:
        return hugging_face_model(config, info, seq_length, initial.uri)
    overrides = {
        "max_position_embeddings": max(512, seq_length),
        **(config.model.model_overrides or {}),
    }
    try:
        encoder = BERT.from_variant(config.model.variant, vocab_size=info.vocab_size, **overrides)
    except (TypeError, ValueError) as error:
        detail = " ".join(str(error).split())
        raise UserInputError(f"model_overrides: {detail}; see BERT's arguments") from None
    if encoder.max_position_embeddings < seq_length:
        raise UserInputError(
            f"model_overrides: max_position_embeddings={encoder.max_position_embeddings} is "
            f"below the shards' sequence length {seq_length}; raise it to at least {seq_length} "
            f"or shard with --max-seq-length {encoder.max_position_embeddings}"
        )
    model = MaskedLanguageModel(
        encoder=encoder,
        vocab_size=info.vocab_size,
        tie_word_embeddings=config.model.tie_word_embeddings,
        **masking_arguments(config, info),
    )
    model.build(None)
    if initial is not None and initial.uri:
        load_initial_weights(model, initial.uri, info)
    return model


def init_token_embeddings(
    config: PretrainConfig, model: Any, initial: InitialModel
) -> tuple[str, float]:
    """Replaces a new model's random token embeddings with count-based ones when
    `token_embedding_init` is "cooccurrence" (PPMI-SVD vectors of the training shards, at the
    encoder's initializer range); returns what it did ("" when nothing) and the seconds it took.
    A model from `init_from` keeps its own embeddings; a resumed run's checkpoint replaces
    these."""
    import numpy as np

    from mlm.data import pretraining_dataset
    from mlm.training.embedding_init import COUNTED_TOKENS, initial_token_embeddings

    if initial.uri or config.model.token_embedding_init != "cooccurrence":
        return "", 0.0
    start = time.perf_counter()
    # Every worker counts the same files in the same order, so all start from the same table.
    batches = pretraining_dataset(
        config.shard_dir, 256, split="train", shuffle=False, repeat=False, drop_remainder=False,
        window_files=config.input_window_files, private_window=True,
    )  # fmt: skip
    embeddings = model.encoder.token_embedding.embeddings
    table, covered = initial_token_embeddings(
        (batch["input_ids"] for batch in batches.as_numpy_iterator()),
        np.asarray(embeddings),
        model.encoder.initializer_range,
    )
    embeddings.assign(table)
    seconds = time.perf_counter() - start
    return (
        f"token embeddings of {covered:,} of {len(table):,} tokens from the training shards' "
        f"co-occurrence counts (PPMI-SVD, at most {COUNTED_TOKENS:,} tokens counted) in "
        f"{seconds:.1f} s",
        seconds,
    )


def masking_arguments(config: PretrainConfig, info: Any) -> dict[str, Any]:
    """The `MaskedLanguageModel` masking arguments of a run: its settings, the tokenizer's ids."""
    masking = config.masking
    return {
        "mask_ratio": masking.mask_ratio,
        "random_token_ratio": masking.random_token_ratio,
        "unchanged_ratio": masking.unchanged_ratio,
        "mask_token_id": info.mask_token_id,
        "special_token_ids": tuple(info.special_token_ids),
        "max_predictions_per_seq": masking.max_predictions_per_seq,
        "continuation_token_ids": (
            tuple(info.continuation_token_ids) if masking.whole_word_masking else None
        ),
    }


def hugging_face_model(config: PretrainConfig, info: Any, seq_length: int, uri: str) -> Any:
    """The MaskedLanguageModel of a Hugging Face BERT checkpoint, masking as `config` says
    (domain adaptation: continue pre-training an imported encoder on new text)."""
    from mlm.encoders.hf_checkpoint import load_hf_bert_checkpoint

    model = load_hf_bert_checkpoint(uri, **masking_arguments(config, info))
    if model.vocab_size != info.vocab_size:
        raise UserInputError(
            f"init_from: {uri} has a vocabulary of {model.vocab_size} tokens but the tokenizer "
            f"has {info.vocab_size}; make the tokenizer from its vocab.txt (mlm tokenize "
            f"--tokenizer {storage.join(uri, 'vocab.txt')}) and shard with it"
        )
    if model.encoder.max_position_embeddings < seq_length:
        raise UserInputError(
            f"init_from: {uri} takes at most {model.encoder.max_position_embeddings} positions "
            f"but the shards hold {seq_length}; shard with --max-seq-length "
            f"{model.encoder.max_position_embeddings}"
        )
    return model


def load_initial_weights(model: Any, uri: str, info: Any) -> None:
    """Copies the weights of the model saved in `uri` into `model` (same architecture)."""
    from mlm.data.tokenizer import check_tokenizer_matches
    from mlm.steps.evaluate import load_pretrained_model

    earlier = load_pretrained_model(uri)
    check_tokenizer_matches(info, earlier.vocab_size, earlier.mask_token_id)
    try:
        model.set_weights(earlier.get_weights())
    except ValueError as error:
        raise UserInputError(
            f"init_from: {uri} has another architecture than this run's model ({error}); use "
            "the variant and model_overrides it was trained with"
        ) from None


def build_optimizer(config: PretrainConfig, model: Any) -> Any:
    import keras

    from mlm.optimization import learning_rate_schedule_builder, optimizer_builder

    # The schedule runs on the optimizer's iterations, which count batches (also when
    # accumulating gradients), so it spans `steps`.
    schedule_config: dict[str, Any] = {
        "type": config.schedule,
        "learning_rate": config.learning_rate,
        "warmup_steps": config.warmup_steps(),
    }
    if config.schedule != "constant":  # the one schedule with nothing to decay
        schedule_config["decay_steps"] = config.steps
    schedule = learning_rate_schedule_builder(schedule_config)
    optimizer_config: dict[str, Any] = {
        "type": config.optimizer,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
    }
    if config.optimizer in ("adamw", "lamb"):
        optimizer_config["weight_decay"] = config.weight_decay
    if config.gradient_clipping:
        optimizer_config["gradient_clipping_by_norm"] = config.gradient_clipping
    optimizer = optimizer_builder(optimizer_config, schedule)
    if config.precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    return optimizer
