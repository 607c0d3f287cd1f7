"""The fault cases, generated: every step x every input it reads x every corruption of it.

A case is a step's known-good command line (tiny real inputs made by the real steps) with one
input replaced by a corrupted copy: a path that is missing, empty or of the wrong type; a file
inside a directory input deleted, emptied, replaced by random bytes, cut in half, made non-UTF-8,
or (JSON) edited field by field; an output location that is a file, under a file, read-only or
full; a `--config` file that is broken; a flag out of its range. The corruptions are functions of
the input's kind, so a new input or file is covered by adding it to `INPUTS` or `FILES`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mlm import config as settings
from mlm.cli import STEPS

# A corruption: (the case's work dir, the good input's path) -> flag overrides of the command
# line (the corrupted input's flag, and any flag the fault needs).
Corrupt = Callable[[Path, str], dict[str, str]]

RANDOM_BYTES = random.Random(0).randbytes(4096)
NOT_UTF8 = b"\xff\xfe\xfa caf\xe9 \x80\x81\n"


@dataclasses.dataclass(frozen=True)
class Case:
    """One fault: the step, the input it hits, what was done to it, and what the line names."""

    step: str
    flag: str  # the input's flag ("--shards"), or "--FLAG" for a setting out of range
    fault: str  # what was done ("manifest.json:empty")
    corrupt: Corrupt
    # What the error line must contain besides "mlm STEP: error: " ("" : the corrupted path).
    names: str = ""
    # The fault may be harmless (an optional field removed): exit 0 with a complete output is
    # then an answer too; every other case must be refused.
    may_pass: bool = False
    # Needs a small filesystem mounted for the case ("ro" or "full").
    mount: str = ""

    @property
    def id(self) -> str:
        return f"{self.step}{self.flag}:{self.fault}"


# The tiny model every pretrain case builds (the fault is in the input, not in its size).
TINY_MODEL = json.dumps(
    {
        "hidden_size": 32,
        "num_layers": 2,
        "num_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 32,
    }
)


def good_argv(step: str, inputs: Any, work: Path) -> dict[str, str]:
    """The step's command line on good inputs, as flag -> value ("" : a switch)."""
    output = str(work / "out")
    return {
        "tokenize": {"--corpus": inputs.corpus, "--output": output, "--vocab-size": "300"},
        "shard": {
            "--corpus": inputs.corpus,
            "--tokenizer": inputs.tokenizer,
            "--output": output,
            "--max-seq-length": "32",
            "--num-shards": "2",
        },
        "pretrain": {
            "--shards": inputs.shards,
            "--tokenizer": inputs.tokenizer,
            "--output": output,
            "--steps": "2",
            "--batch-size": "8",
            "--validation-batches": "1",
            "--model-overrides": TINY_MODEL,
            "--quiet": "",
        },
        "evaluate": {
            "--model": inputs.model,
            "--shards": inputs.shards,
            "--tokenizer": inputs.tokenizer,
            "--output": output,
            "--batch-size": "8",
            "--eval-batches": "1",
        },
        "merge-shards": {"--parts": inputs.parts, "--output": output},
        "export": {"--model": inputs.model, "--tokenizer": inputs.tokenizer, "--output": output},
        "finetune": {
            "--encoder": inputs.encoder,
            "--data": inputs.labels,
            "--output": output,
            "--max-seq-length": "32",
            "--batch-size": "8",
            "--epochs": "1",
            "--no-baseline": "",
        },
    }[step]


def as_argv(step: str, flags: dict[str, str]) -> list[str]:
    argv = [step]
    for flag, value in flags.items():
        argv += [flag] if value == "" else [flag, value]
    return argv


# Each step's inputs: flag -> kind (the kind decides the corruptions).
INPUTS: dict[str, dict[str, str]] = {
    "tokenize": {"--corpus": "corpus", "--tokenizer": "tokenizer", "--output": "output"},
    "shard": {"--corpus": "corpus", "--tokenizer": "tokenizer", "--output": "output"},
    "merge-shards": {"--parts": "parts", "--output": "output"},
    "pretrain": {
        "--shards": "shards",
        "--tokenizer": "tokenizer",
        "--init-from": "model",
        "--output": "output",
    },
    "evaluate": {
        "--model": "model",
        "--shards": "shards",
        "--tokenizer": "tokenizer",
        "--previous-model": "model",
        "--output": "output",
    },
    "export": {"--model": "model", "--tokenizer": "tokenizer", "--output": "output"},
    "finetune": {
        "--encoder": "encoder",
        "--data": "labels",
        "--validation-data": "labels",
        "--output": "output",
    },
}
# The good input of each kind (an attribute of the inputs fixture), and whether it is a directory.
SOURCES = {
    "corpus": ("corpus", True),
    "tokenizer": ("tokenizer", True),
    "shards": ("shards", True),
    "parts": ("parts", True),  # one partition (1 of 1) of the shards' corpus
    "model": ("model", True),
    "encoder": ("encoder", True),
    "labels": ("labels", False),
}
# The files inside a directory input that a step reads, and how they can be edited.
FILES = {
    "corpus": ["train.txt"],
    "tokenizer": ["tokenizer.json", "tokenizer_config.json", "mlm_tokenizer.json"],
    "shards": [
        "manifest.json",
        "train-00000-of-00002.tfrecord",
        "validation-00000-of-00002.tfrecord",
    ],
    "parts": [
        "manifest.json",
        "train-00000-of-00002.tfrecord",
        "validation-00000-of-00002.tfrecord",
    ],
    "model": ["mlm_model.keras", "encoder.keras", "metrics.json"],
    "encoder": ["encoder.keras", "export.json", "tokenizer/tokenizer.json"],
}
# Fields of the JSON files that a reader may do without (older files lack them): removing one is
# allowed to pass.
OPTIONAL_FIELDS = {
    "manifest.json": {"compression", "line_by_line", "file_info", "tokens"},
}


# --- corruptions of a path ----------------------------------------------------------------------


def _copy(work: Path, source: str) -> Path:
    target = work / "input" / Path(source).name
    target.parent.mkdir(parents=True, exist_ok=True)
    if os.path.isdir(source):
        shutil.copytree(source, target)
    else:
        shutil.copy(source, target)
    return target


def _path_faults(kind: str, is_dir: bool) -> Iterator[tuple[str, Callable[[Path, str], str]]]:
    yield "missing", lambda work, source: str(work / "no-such-input")
    if is_dir:
        yield "empty-directory", lambda work, source: _mkdir(work / "empty")
        yield "a-file", lambda work, source: _write(work / "a-file", b"not a directory\n")
    else:
        yield "empty-file", lambda work, source: _write(work / "empty.csv", b"")
        yield "a-directory", lambda work, source: _mkdir(work / "a-directory")
        yield from _file_faults(kind, "")
    if kind == "labels":
        for fault, content in LABELS_FAULTS.items():
            yield fault, lambda work, source, c=content: _write(work / "labels.csv", c)
    if kind == "shards":
        yield "old-manifest-with-a-truncated-shard", _old_manifest_truncated_shard


# Labelled files that are well-formed CSV but not a labelled set.
LABELS_FAULTS = {
    "header-only": b"text,label\n",
    "no-label-column": b"text,topic\nsome words,a\nmore words,b\n",
    "one-label": b"text,label\n" + b"".join(b"text number %d,same\n" % i for i in range(40)),
}


def _old_manifest_truncated_shard(work: Path, source: str) -> str:
    """A manifest of an older version (no sizes or checksums) over a truncated shard."""
    copy = _copy(work, source)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["file_info"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    _truncate(copy / "validation-00000-of-00002.tfrecord")  # every step reads it
    return str(copy)


def _file_faults(kind: str, name: str) -> Iterator[tuple[str, Callable[[Path, str], str]]]:
    """Faults of the file `name` inside the input (`""`: the input is the file)."""

    def edit(change: Callable[[Path], None]) -> Callable[[Path, str], str]:
        def corrupt(work: Path, source: str) -> str:
            copy = _copy(work, source)
            change(copy / name if name else copy)
            return str(copy)

        return corrupt

    prefix = f"{name}:" if name else ""
    if name:
        yield f"{prefix}deleted", edit(lambda path: path.unlink())
    yield f"{prefix}empty", edit(lambda path: path.write_bytes(b""))
    yield f"{prefix}random-bytes", edit(lambda path: path.write_bytes(RANDOM_BYTES))
    yield f"{prefix}truncated", edit(lambda path: _truncate(path))
    if name.endswith((".json", ".txt")) or kind == "labels":
        yield f"{prefix}not-utf8", edit(lambda path: path.write_bytes(NOT_UTF8 + path.read_bytes()))
    if name.endswith(".json"):
        yield f"{prefix}not-an-object", edit(lambda path: path.write_text("[1, 2, 3]\n"))


def _json_field_faults(
    kind: str, name: str, document: dict[str, Any]
) -> Iterator[tuple[str, Callable[[Path, str], str], bool]]:
    """Edits of each field of a JSON file (the first entry of each nested mapping): removed, of
    the wrong type, a number made negative. Yields (fault, corrupt, may_pass)."""

    def edit(path: tuple[str, ...], change: Callable[[dict, str], None]):
        def corrupt(work: Path, source: str) -> str:
            copy = _copy(work, source)
            file = copy / name
            data = json.loads(file.read_text())
            node = data
            for key in path[:-1]:
                node = node[key]
            change(node, path[-1])
            file.write_text(json.dumps(data))
            return str(copy)

        return corrupt

    optional = OPTIONAL_FIELDS.get(name, set())
    for path, value in _leaves(document):
        label = f"{name}:{'.'.join(path)}"
        removable = path[-1] in optional or any(p in optional for p in path[:-1])
        yield f"{label}:removed", edit(path, lambda node, key: node.pop(key)), removable
        wrong = "twelve" if not isinstance(value, str) else 12
        yield (
            f"{label}:wrong-type",
            edit(path, lambda node, key, w=wrong: node.__setitem__(key, w)),
            False,
        )
        if isinstance(value, int) and not isinstance(value, bool):
            yield (
                f"{label}:negative",
                edit(path, lambda node, key: node.__setitem__(key, -5)),
                False,
            )


def _leaves(document: dict[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[tuple, Any]]:
    """(path, value) of the fields worth editing: top-level keys and, in nested mappings, the
    fields of their first entry (shard lists are not walked)."""
    for index, (key, value) in enumerate(document.items()):
        if path and index > 0 and all(isinstance(v, dict) for v in document.values()):
            break  # one file's entry of a per-file mapping stands for all
        if isinstance(value, dict) and value:
            yield from _leaves(value, (*path, key))
        elif not isinstance(value, list):
            yield (*path, key), value


# The JSON files whose fields are edited one by one (their good content comes from the inputs).
EDITED_JSON = {
    "shards": "manifest.json",
    "parts": "manifest.json",
    "tokenizer": "mlm_tokenizer.json",
}


def input_faults(step: str, flag: str, kind: str, inputs: Any) -> Iterator[Case]:
    attribute, is_dir = SOURCES[kind]
    for fault, corrupt in _path_faults(kind, is_dir):
        # A corpus may be one file as well as a directory.
        may_pass = kind == "corpus" and fault == "a-file"
        names = "corpus" if may_pass else ""
        yield Case(step, flag, fault, _setting(flag, corrupt), names, may_pass=may_pass)
    for name in FILES.get(kind, []):
        for fault, corrupt in _file_faults(kind, name):
            may_pass = kind == "corpus" or _unread(step, flag, name, fault)
            names = "corpus" if kind == "corpus" else ""
            yield Case(step, flag, fault, _setting(flag, corrupt), names, may_pass=may_pass)
    if kind in EDITED_JSON:
        name = EDITED_JSON[kind]
        document = json.loads((Path(getattr(inputs, attribute)) / name).read_text())
        for fault, corrupt, may_pass in _json_field_faults(kind, name, document):
            may_pass = may_pass or _unread(step, flag, name)
            yield Case(step, flag, fault, _setting(flag, corrupt), may_pass=may_pass)


# Files of an input that a step does not read (corrupting them is allowed to change nothing).
UNREAD = {
    ("export", "--model"): {"mlm_model.keras"},
    ("pretrain", "--init-from"): {"encoder.keras"},
    # Adopting a tokenizer reads the transformers files only.
    ("tokenize", "--tokenizer"): {"mlm_tokenizer.json"},
    # evaluate scores the validation split with the model alone.
    ("evaluate", "--model"): {"encoder.keras", "metrics.json"},
    ("evaluate", "--previous-model"): {"encoder.keras", "metrics.json"},
    ("evaluate", "--shards"): {"train-00000-of-00002.tfrecord"},
    ("finetune", "--encoder"): {"export.json"},
}
# Files a step does without when they are absent (but refuses damaged).
OPTIONAL_FILES = {
    ("export", "--model"): {"metrics.json"},  # the model card then has no pre-training figures
    # transformers rebuilds a fast tokenizer from either file.
    ("tokenize", "--tokenizer"): {"tokenizer.json", "tokenizer_config.json"},
}


def _unread(step: str, flag: str, name: str, fault: str = "") -> bool:
    if fault.endswith(":deleted") and name in OPTIONAL_FILES.get((step, flag), set()):
        return True
    return name in UNREAD.get((step, flag), set())


def _setting(flag: str, corrupt: Callable[[Path, str], str]) -> Corrupt:
    def overrides(work: Path, source: str) -> dict[str, str]:
        return {flag: corrupt(work, source)}

    return overrides


# --- the output location -------------------------------------------------------------------------


def output_faults(step: str) -> Iterator[Case]:
    def existing_file(work: Path, source: str) -> dict[str, str]:
        return {"--output": _write(work / "out", b"someone's file\n")}

    def under_a_file(work: Path, source: str) -> dict[str, str]:
        return {"--output": str(Path(_write(work / "a-file", b"x\n")) / "out")}

    yield Case(step, "--output", "an-existing-file", existing_file)
    yield Case(step, "--output", "under-a-file", under_a_file)
    for fault, mount in (("read-only", "ro"), ("disk-full", "full")):
        on_mount = lambda work, s, m=mount: {"--output": str(work / m / "out")}  # noqa: E731
        yield Case(step, "--output", fault, on_mount, mount=mount)


# --- the --config file ---------------------------------------------------------------------------


def config_faults(step: str) -> Iterator[Case]:
    def config_file(content: bytes | None) -> Corrupt:
        def overrides(work: Path, source: str) -> dict[str, str]:
            path = work / "settings.yaml"
            if content is not None:
                path.write_bytes(content)
            return {"--config": str(path)}

        return overrides

    # An empty file sets nothing: the flags alone make a good command line.
    yield Case(step, "--config", "empty", config_file(b""), may_pass=True)
    for fault, content in {
        "missing": None,
        "random-bytes": RANDOM_BYTES,
        "not-utf8": NOT_UTF8,
        "not-a-mapping": b"- a\n- list\n",
        "truncated-yaml": b"batch_size: [1, 2\n",
        "unknown-setting": b"no_such_setting: 3\n",
        "wrong-type": b"seed: {a: 1}\n",
    }.items():
        yield Case(step, "--config", fault, config_file(content))


# --- settings out of range ------------------------------------------------------------------------


def setting_faults(step: str) -> Iterator[Case]:
    """For each number and choice setting of the step: values its checks refuse."""
    config_class = STEPS[step][0]
    for field in config_class.fields():
        for fault, value in _bad_values(field):
            yield Case(
                step,
                field.flag,
                fault,
                lambda work, source, f=field.flag, v=value: {f: v},
                names=field.flag if fault in ("not-a-number", "not-an-integer") else field.name,
            )


def _bad_values(field: settings.Field) -> Iterator[tuple[str, str]]:
    meta = field.metadata
    if meta.get("choices"):
        yield "not-a-choice", "no-such-choice"
    if field.kind not in (int, float) or meta.get("choices"):
        return
    if field.kind is int:
        yield "not-an-integer", "1e20"
        yield "huge", str(10**20)
    else:
        yield "not-a-number", "twelve"
        yield "nan", "nan"
        yield "infinite", "inf"
    if meta.get("at_least") is not None and not (field.optional and meta["at_least"] == 0):
        yield "below-minimum", str(_below(field.kind, meta["at_least"]))
    if meta.get("above") is not None:
        if not (field.optional and meta["above"] == 0):  # 0 stands for "not set" there
            yield "at-exclusive-minimum", str(field.kind(meta["above"]))
        yield "negative", "-5"
    if meta.get("below") is not None:
        yield "at-exclusive-maximum", str(field.kind(meta["below"]))


def _below(kind: type, bound: float) -> float:
    return kind(bound) - 1 if kind is int else bound - 0.5


# What a group of cases corrupts, besides the inputs of `INPUTS`.
GROUPS = ("--output", "--config", "settings")


def groups() -> list[tuple[str, str]]:
    """(step, input flag or group): the unit the suite reports on, one test each."""
    return [
        (step, flag)
        for step, step_inputs in INPUTS.items()
        for flag in [*(f for f, kind in step_inputs.items() if kind != "output"), *GROUPS]
    ]


def cases_for(step: str, group: str, inputs: Any) -> list[Case]:
    """The cases of one input of a step (or of its output, --config file or settings)."""
    if group == "--output":
        return list(output_faults(step))
    if group == "--config":
        return list(config_faults(step))
    if group == "settings":
        return list(setting_faults(step))
    return list(input_faults(step, group, INPUTS[step][group], inputs))


# --- helpers ------------------------------------------------------------------------------------


def _mkdir(path: Path) -> str:
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def _write(path: Path, content: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return str(path)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
