"""Command lines from `Config` classes: argparse flags, `--config FILE.yaml`, and config ↔ argv.

Every leaf setting becomes one flag (`--batch-size`; switches get a `--no-` twin), with its help
text and default; nested groups become argument groups but keep flat flags (`--mask-ratio`).
Flags default to "not given", so a `--config` file's values apply unless a flag overrides them.
`to_argv` writes the flags that reproduce a config and `from_argv` reads them back: that is how a
launcher hands a pretrain config to its workers.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from mlm.config.base import RECIPE_SETTING, Config, Field, check_values, merge, nest
from mlm.errors import UserInputError

CONFIG_FLAG = "--config"


def _json_object(text: str) -> Any:
    """argparse type: JSON text such as '{"num_layers": 2}' (the config checks its type)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not valid JSON ({error}): {text!r}") from None


def _help(field: Field) -> str:
    text = field.help
    choices = field.metadata.get("choices")
    if choices is not None:
        text += f"; one of {', '.join(str(c) for c in choices if c is not None)}"
    if field.required:
        text += f" (required, here or as {field.name}: in the {CONFIG_FLAG} file)"
    elif field.kind is not bool and field.default is not None:
        shown = json.dumps(field.default) if field.kind in (dict, list) else field.default
        text += f" (default: {shown})"
    return text.replace("%", "%%")


def _metavar(field: Field) -> str:
    return field.flag[2:].replace("-", "_").upper()


def add_arguments(parser: argparse.ArgumentParser, config_class: type[Config]) -> None:
    """Adds a flag per setting of `config_class`, and `--config FILE`, to `parser`."""
    parser.add_argument(
        CONFIG_FLAG,
        dest="_config_file",
        metavar="FILE",
        default=None,
        help="YAML (or JSON) file of settings, with sections for groups (e.g. `masking:`); "
        "flags override it",
    )
    groups: dict[tuple[str, ...], Any] = {(): parser}
    for field in config_class.fields():
        if field.path not in groups:
            groups[field.path] = parser.add_argument_group(".".join(field.path) + " settings")
        target = groups[field.path]
        flags = [field.flag, *field.metadata.get("aliases", ())]
        common = {"dest": field.name, "default": argparse.SUPPRESS, "help": _help(field)}
        if field.kind is bool:
            target.add_argument(*flags, action=argparse.BooleanOptionalAction, **common)
        elif field.kind is list and field.item is str:
            target.add_argument(*flags, nargs="+", metavar=_metavar(field), **common)
        else:
            # Values are checked by the config (one-line errors naming the setting).
            kind = {int: int, float: float, str: str, dict: _json_object, list: _json_object}
            kind = kind[field.kind]
            target.add_argument(*flags, type=kind, metavar=_metavar(field), **common)


def from_args(config_class: type[Config], args: argparse.Namespace) -> Any:
    """The config from parsed arguments: defaults, then the `--config` file, then the flags."""
    values: dict[str, Any] = {}
    config_file = getattr(args, "_config_file", None)
    if config_file:
        values = nest(config_class, load_file(config_file), config_file)
        check_values(config_class, values, f"{CONFIG_FLAG} {config_file}")
    flags = {f.name: getattr(args, f.name) for f in config_class.fields() if f.name in args}
    return config_class.from_dict(merge(config_class, values, nest(config_class, flags, "")))


def load_file(path: str) -> dict[str, Any]:
    """The mapping in a YAML/JSON settings file (local or object store)."""
    import yaml

    from mlm import storage

    try:
        data = yaml.safe_load(storage.read_text(path))
    except UnicodeDecodeError as error:
        raise UserInputError(
            f"{CONFIG_FLAG} {path}: not UTF-8 text ({error.reason} at byte {error.start}); give "
            "a YAML or JSON file of settings"
        ) from None
    except yaml.YAMLError as error:
        detail = " ".join(str(error).split())
        raise UserInputError(f"{CONFIG_FLAG} {path}: not valid YAML ({detail})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserInputError(
            f"{CONFIG_FLAG} {path}: expected a mapping of settings (name: value), "
            f"got {type(data).__name__}"
        )
    return data


def to_argv(config: Config) -> list[str]:
    """The flags that reproduce `config`: required settings, and the others where they differ
    from the defaults of its recipe (a None where the default is not None is written as the empty
    value)."""
    argv: list[str] = []
    defaults = config.defaults()
    for field in config.fields():
        value = field.value_in(config)
        default = field.default if field.name == RECIPE_SETTING else field.value_in(defaults)
        if not field.required and value == default:
            continue
        if field.kind is bool:
            argv.append(field.flag if value else "--no-" + field.flag[2:])
        elif field.kind is list and field.item is str:
            argv += [field.flag, *(value or [])]
        elif field.kind in (dict, list):
            argv += [field.flag, json.dumps(value if value is not None else field.empty)]
        elif value is None:
            argv += [field.flag, "0" if field.kind in (int, float) else ""]
        else:
            argv += [field.flag, repr(value) if isinstance(value, float) else str(value)]
    return argv


class _RaisingParser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UserInputError(message)


def from_argv(config_class: type[Config], argv: Sequence[str]) -> Any:
    """The config that `argv` (flags as `to_argv` writes them) describes."""
    parser = _RaisingParser(add_help=False)
    add_arguments(parser, config_class)
    return from_args(config_class, parser.parse_args(list(argv)))
