"""A model registry on plain storage: the newest model of a name, for continual pre-training.

A registry is a directory (local, ``gs://``, ``s3://`` or ``minio://``). Publishing a model under
a name writes two small JSON files:

- ``<registry>/<name>/runs/<run_id>.json``: the entry of that run, written create-only, so a run
  publishes once and two runs can never claim the same id;
- ``<registry>/<name>/latest.json``: the pointer a later run reads, a copy of the newest entry,
  replaced atomically.

An entry records `model_uri` (a pretrain output directory), its `step` count, the `perplexity`
its evaluation measured, the `run_id`, the `time` it was published and the tokenizer it needs.

A pretrain run starts from a registered model with ``init_from="registry:<name>"`` and
``model_registry_uri``; `resolve_init_from` turns that into the model's URI (or into "start
from random weights" when nothing has been published yet, so the first run of a schedule needs
no other settings than the later ones).
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any

from mlm import storage
from mlm.artifacts import METRICS_FILE, read_step_json
from mlm.errors import UserInputError

REGISTRY_PREFIX = "registry:"
LATEST_FILE = "latest.json"
RUNS_DIR = "runs"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One published model.

    Attributes:
        model_uri: the pretrain output directory (with `mlm_model.keras` and `metrics.json`).
        step: the training steps the model has seen, earlier runs included.
        perplexity: its masked-LM perplexity on the run's validation shards (None: not measured).
        run_id: the run that produced it.
        time: when it was published, UTC, ISO 8601.
        tokenizer_uri: the tokenizer directory it was trained with ("" if not known).
        tokenizer_hash: that tokenizer's content hash ("" if not known).
    """

    model_uri: str
    step: int
    perplexity: float | None
    run_id: str
    time: str
    tokenizer_uri: str = ""
    tokenizer_hash: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str) -> ModelEntry:
        names = {field.name for field in dataclasses.fields(cls)}
        try:
            return cls(**{key: value for key, value in values.items() if key in names})
        except TypeError as error:
            raise UserInputError(
                f"{source} is not a registry entry ({error}); publish the model again"
            ) from None


def check_name(name: str) -> str:
    """`name` if it can name a registered model, else a one-line `UserInputError`."""
    if not _NAME_RE.match(name or ""):
        raise UserInputError(
            f"model name {name!r}: use letters, digits, '.', '_' and '-' (at most 128, starting "
            "with a letter or digit), e.g. weekly-wiki"
        )
    return name


def _model_dir(registry_uri: str, name: str) -> str:
    return storage.join(registry_uri, check_name(name))


def publish(
    registry_uri: str,
    name: str,
    *,
    model_uri: str,
    run_id: str,
    perplexity: float | None = None,
    tokenizer_uri: str = "",
) -> ModelEntry:
    """Registers a finished pretrain output directory as the newest model of `name`.

    The step count and tokenizer hash are read from the model's `metrics.json`. Publishing the
    same run again (a retried task) with the same model is allowed and rewrites the pointer;
    another model under a run id already published is an error.

    Returns:
        The entry written.

    Raises:
        UserInputError: a bad name, a model directory without `metrics.json`, or a run id
            already published with another model.
    """
    metrics = model_metrics(model_uri, "model_uri")
    entry = ModelEntry(
        model_uri=model_uri,
        step=int(metrics.get("steps", 0)),
        perplexity=None if perplexity is None else float(perplexity),
        run_id=run_id,
        time=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        tokenizer_uri=tokenizer_uri,
        tokenizer_hash=str(metrics.get("tokenizer_hash", "")),
    )
    directory = _model_dir(registry_uri, name)
    if not run_id or "/" in run_id:
        raise UserInputError(f"run_id {run_id!r}: a non-empty name without '/' is needed")
    run_file = storage.join(directory, RUNS_DIR, f"{run_id}.json")
    try:
        storage.write_json(run_file, entry.to_dict(), overwrite=False)
    except FileExistsError:
        earlier = ModelEntry.from_dict(storage.read_json(run_file), run_file)
        if earlier.model_uri != model_uri:
            raise UserInputError(
                f"run {run_id} already published {earlier.model_uri} as {name!r} in "
                f"{registry_uri}; a run publishes one model — use another run id"
            ) from None
        entry = earlier
    storage.write_json(storage.join(directory, LATEST_FILE), entry.to_dict())
    return entry


def latest(registry_uri: str, name: str) -> ModelEntry | None:
    """The newest model published as `name`; None when there is none yet."""
    pointer = storage.join(_model_dir(registry_uri, name), LATEST_FILE)
    if not storage.exists(pointer):
        return None
    return ModelEntry.from_dict(storage.read_json(pointer), pointer)


def resolve_init_from(init_from: str | None, registry_uri: str | None) -> str | None:
    """The model directory a run starts from: None (random weights) or a URI.

    Args:
        init_from: None/"" (random weights), a pretrain output directory, or
            "registry:<name>" (the newest model of that name; None while none is published).
        registry_uri: the registry that "registry:<name>" refers to.
    """
    if not init_from:
        return None
    if not init_from.startswith(REGISTRY_PREFIX):
        return init_from
    name = init_from[len(REGISTRY_PREFIX) :]
    if not registry_uri:
        raise UserInputError(
            f"init_from={init_from!r} needs model_registry_uri (the registry directory, e.g. "
            "gs://bucket/models)"
        )
    entry = latest(registry_uri, name)
    return None if entry is None else entry.model_uri


def initial_model(model_uri: str) -> str | None:
    """The model a pretrain output directory was initialised from (its `init_from`), or None."""
    return model_metrics(model_uri, "model").get("init_from") or None


def model_metrics(model_uri: str, what: str) -> dict[str, Any]:
    """The `metrics.json` of a finished pretrain output directory; `what` names the setting in
    the one-line error raised when there is none."""
    path = storage.join(model_uri, METRICS_FILE)
    if not storage.exists(path):
        raise UserInputError(
            f"{what}: {model_uri} has no {METRICS_FILE}, so it is not a finished pretrain output "
            "directory; pass the output directory of a completed `mlm pretrain`"
        )
    return read_step_json(path, "pretrain")
