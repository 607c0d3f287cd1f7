"""Typed settings: `setting()` fields on `Config` dataclasses, their checks and dict/YAML forms.

A setting is a dataclass field whose metadata carries its help text and its constraints
(`choices`, `at_least`, `above`, `below`); `Config.__post_init__` converts values to the field's
type and checks them, raising a one-line `UserInputError` that names the setting. A field whose
type is another `Config` is a nested group (e.g. `masking`); setting names are unique across a
config and its groups, so flat keyword arguments and flat flags reach the right group.

One convention for "not set": an optional setting (`int | None`, `str | None`, ...) given its
type's empty value (0, "", {}, []) is None. That is how the command line turns an option off
(`--gradient-clipping 0`) and how KFP, whose parameters cannot be None, passes "not set".

This module is imported by `mlm --help`: it imports nothing heavy.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any

from mlm.errors import UserInputError

MISSING = dataclasses.MISSING
# How every settings class is declared: immutable, keyword-only.
dataclass = dataclasses.dataclass(frozen=True, kw_only=True)


def setting(
    default: Any = MISSING,
    help: str = "",
    *,
    flag: str | None = None,
    aliases: tuple[str, ...] = (),
    choices: tuple[Any, ...] | None = None,
    at_least: float | None = None,
    above: float | None = None,
    below: float | None = None,
) -> Any:
    """A `Config` field: default (none: required), help text and checks.

    Args:
        default: the default value; leave it out for a required setting (inputs and outputs).
        help: what the setting is, one line; the command line and docs show it.
        flag: the command-line flag, when it is not `--` + the name in kebab case.
        aliases: further flags accepted for the setting (older spellings).
        choices: the allowed values.
        at_least, above, below: bounds of a number (inclusive, exclusive, exclusive).
    """
    metadata = {
        "help": help,
        "flag": flag,
        "aliases": aliases,
        "choices": choices,
        "at_least": at_least,
        "above": above,
        "below": below,
    }
    return dataclasses.field(default=default, metadata=metadata)


def group(config_class: type[Config], help: str) -> Any:
    """A nested group of settings (a `Config` with its defaults)."""
    return dataclasses.field(default_factory=config_class, metadata={"help": help, "group": True})


@dataclasses.dataclass(frozen=True)
class Field:
    """One leaf setting of a config class: where it lives and what it accepts."""

    name: str
    path: tuple[str, ...]  # group names leading to it ("masking",); () at the top
    kind: Any  # the type without `| None`: int, float, str, bool, dict, list
    optional: bool  # `| None`
    default: Any  # MISSING when required
    metadata: Mapping[str, Any]
    item: Any = str  # a list's items: str (e.g. paths) or dict (JSON objects)

    @property
    def required(self) -> bool:
        return self.default is MISSING

    @property
    def flag(self) -> str:
        return self.metadata.get("flag") or "--" + self.name.replace("_", "-")

    @property
    def help(self) -> str:
        return self.metadata.get("help", "")

    @property
    def empty(self) -> Any:
        """The value that stands for None where None cannot be written (0, "", {}, [])."""
        return _EMPTY[self.kind]

    @property
    def kfp_default(self) -> Any:
        """The default as a KFP parameter default: None is written as the empty value."""
        return self.empty if self.default is None else self.default

    def value_in(self, config: Config) -> Any:
        """This setting's value in `config`."""
        for part in self.path:
            config = getattr(config, part)
        return getattr(config, self.name)


# The setting that names a recipe (see `Config.with_recipe`), where a config class has one.
RECIPE_SETTING = "recipe"
_EMPTY: dict[Any, Any] = {int: 0, float: 0.0, str: "", dict: {}, list: []}
# The largest integer setting: sizes, counts and seeds all fit TensorFlow's int32 (a larger one
# would overflow deep inside the tokenizer or the graph instead of being refused here).
INT_LIMIT = 2**31 - 1


def _split_optional(annotation: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [arg for arg in args if arg is not type(None)]
        return rest[0], True
    return annotation, False


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config:
    """Base of the settings classes: typed, checked, frozen (use `replace` for variants)."""

    def check(self) -> str | None:
        """Checks that involve several settings: the problem, or None (subclasses add them)."""
        return None

    def __post_init__(self) -> None:
        for field in _fields(type(self), recurse=False):
            value = _coerce(field, getattr(self, field.name))
            object.__setattr__(self, field.name, value)
        problem = self.check()
        if problem:
            raise UserInputError(problem)

    # --- building --------------------------------------------------------------------------

    @classmethod
    def fields(cls) -> list[Field]:
        """Every leaf setting of this class, groups flattened, in declaration order, each with
        the default a config built without it gets (its default recipe's value, if any)."""
        defaults = cls.default_recipe_settings()
        return [
            dataclasses.replace(field, default=defaults[field.name])
            if field.name in defaults
            else field
            for field in _fields(cls)
        ]

    @classmethod
    def default_recipe_settings(cls) -> dict[str, Any]:
        """The flat settings that `with_recipe` puts on top of the class defaults when no
        recipe is named. Here: none."""
        return {}

    @classmethod
    def with_recipe(cls, nested: Mapping[str, Any]) -> dict[str, Any]:
        """The nested settings on top of the defaults they select (e.g. a named recipe); a
        setting given explicitly always wins. Here: the settings as given."""
        return dict(nested)

    @classmethod
    def create(cls, **settings: Any) -> Any:
        """A config from flat keyword arguments (settings of groups included), e.g.
        `PretrainConfig.create(shard_dir=..., steps=10, mask_ratio=0.2)`."""
        return cls.from_dict(settings)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "") -> Any:
        """A config from a mapping: group sections (`masking: {...}`) or flat setting names.

        Unknown names (named with `source`) and missing required settings are
        `UserInputError`s.
        """
        return cls._from_nested(cls.with_recipe(nest(cls, values, source)))

    @classmethod
    def _from_nested(cls, nested: Mapping[str, Any]) -> Any:
        missing = [f for f in cls.fields() if f.required and not _given(nested, f)]
        if missing:
            names = ", ".join(f"{f.name} ({f.flag})" for f in missing)
            raise UserInputError(f"missing required setting(s): {names}")
        return _build(cls, nested)

    def defaults(self) -> Any:
        """The config that this one's required settings and recipe give with nothing else set:
        what `to_argv` leaves out."""
        cls = type(self)
        given = {
            f.name: f.value_in(self) for f in cls.fields() if f.required or f.name == RECIPE_SETTING
        }
        return cls.from_dict(given)

    def replace(self, **settings: Any) -> Any:
        """A copy with some settings changed (flat names, groups included). Every setting is
        given, so a recipe adds nothing (a new `model_overrides` replaces the old one)."""
        cls = type(self)
        return cls._from_nested(merge(cls, self.to_dict(), nest(cls, settings, "")))

    def to_dict(self) -> dict[str, Any]:
        """The settings as a nested dict (groups as sections): what a `--config` file holds."""
        return dataclasses.asdict(self)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _fields(
    cls: type[Config], path: tuple[str, ...] = (), *, recurse: bool = True
) -> Iterator[Field]:
    """The leaf settings of `cls` (those of its groups too, when `recurse`)."""
    hints = _hints(cls)
    for spec in dataclasses.fields(cls):
        if spec.metadata.get("group"):
            if recurse:
                yield from _fields(hints[spec.name], (*path, spec.name))
            continue
        kind, optional = _split_optional(hints[spec.name])
        origin = typing.get_origin(kind) or kind
        item = (typing.get_args(kind) or (str,))[0] if origin is list else str
        yield Field(spec.name, path, origin, optional, spec.default, spec.metadata, item)


def _groups(cls: type[Config]) -> dict[str, type[Config]]:
    hints = _hints(cls)
    return {s.name: hints[s.name] for s in dataclasses.fields(cls) if s.metadata.get("group")}


def nest(cls: type[Config], values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """`values` (group sections or flat names) as the nested dict of `cls`'s layout."""
    paths = {f.name: f.path for f in cls.fields()}
    groups = _groups(cls)
    nested: dict[str, Any] = {}
    for key, value in values.items():
        if key in groups and isinstance(value, Mapping):
            section = nest(groups[key], value, f"{source} [{key}]".strip())
            nested[key] = merge(groups[key], nested.get(key, {}), section)
        elif key in paths:
            node = nested
            for part in paths[key]:
                node = node.setdefault(part, {})
            node[key] = value
        else:
            where = f" in {source}" if source else ""
            known = ", ".join(sorted([*paths, *groups]))
            raise UserInputError(f"unknown setting {key!r}{where}; known settings: {known}")
    return nested


def merge(cls: type[Config], base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Nested settings `base` updated by `update`, group section by group section."""
    groups = _groups(cls)
    merged = dict(base)
    for key, value in update.items():
        if key in groups and key in merged:
            merged[key] = merge(groups[key], merged[key], value)
        else:
            merged[key] = value
    return merged


def from_kfp(value: Any) -> Any:
    """A dict or list parameter as KFP hands it to a component, with its numbers as written:
    KFP passes them as protobuf Structs, whose numbers are all floats (2 arrives as 2.0)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {key: from_kfp(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [from_kfp(item) for item in value]
    return value


def check_values(cls: type[Config], nested: Mapping[str, Any], source: str) -> None:
    """Checks each value of `nested` (settings from one source, e.g. a `--config` file) on its
    own, so that a bad value is reported with the source it came from."""
    for field in cls.fields():
        node: Any = nested
        for part in field.path:
            node = node.get(part, {})
        if field.name in node:
            try:
                _coerce(field, node[field.name])
            except UserInputError as error:
                raise UserInputError(f"{source}: {error}") from None


def _given(nested: Mapping[str, Any], field: Field) -> bool:
    for part in field.path:
        nested = nested.get(part, {})
    return field.name in nested


def _build(cls: type[Config], nested: Mapping[str, Any]) -> Config:
    groups = _groups(cls)
    kwargs = {
        key: _build(groups[key], value) if key in groups else value for key, value in nested.items()
    }
    return cls(**kwargs)


# --- conversion and checks ------------------------------------------------------------------


def _coerce(field: Field, value: Any) -> Any:
    """`value` as the setting's type, checked against its metadata."""
    if field.optional and _is_empty(value, field.kind):
        return None
    if value is None:
        raise UserInputError(f"{field.name}: a value is required (it cannot be None)")
    value = _as_type(field.name, field.kind, value, field.item)
    _check_value(field.name, value, field.metadata)
    return value


def _is_empty(value: Any, kind: Any) -> bool:
    """None, "" or the type's empty value (False is a value, not "empty")."""
    if isinstance(value, bool):
        return False
    return value is None or value == "" or value == _EMPTY[kind]


def _as_type(name: str, kind: Any, value: Any, item: Any = str) -> Any:
    def fail(expected: str) -> UserInputError:
        return UserInputError(f"{name}={value!r}: expected {expected}")

    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise fail("true or false")
    if kind is int:
        if isinstance(value, bool):
            raise fail("an integer")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            if isinstance(value, (int, str)):
                return int(value)
        except ValueError:
            pass
        raise fail("an integer")
    if kind is float:
        if isinstance(value, bool):
            raise fail("a number")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise fail("a number") from None
    if kind is str:
        if isinstance(value, (str, os.PathLike)):
            return os.fspath(value)
        raise fail("a string")
    if kind is dict:
        if isinstance(value, Mapping):
            return dict(value)
        raise fail('a mapping (JSON object), e.g. {"num_layers": 2}')
    if kind is list and item is dict:
        if isinstance(value, (list, tuple)) and all(isinstance(v, Mapping) for v in value):
            return [dict(v) for v in value]
        raise fail('a list of JSON objects, e.g. [{"key": "dedicated", "operator": "Exists"}]')
    if kind is list:
        if isinstance(value, (str, os.PathLike)):
            return [os.fspath(value)]
        if isinstance(value, (list, tuple)) and all(
            isinstance(v, (str, os.PathLike)) for v in value
        ):
            return [os.fspath(v) for v in value]
        raise fail("a list of strings")
    return value


def _check_value(name: str, value: Any, metadata: Mapping[str, Any]) -> None:
    choices = metadata.get("choices")
    if choices is not None and value not in choices:
        raise UserInputError(f"{name}={value!r}: use one of {', '.join(map(str, choices))}")
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise UserInputError(f"{name}={value}: must be a finite number")
    if isinstance(value, int) and abs(value) > INT_LIMIT:
        raise UserInputError(f"{name}={value}: must be at most {INT_LIMIT:,} in size")
    at_least, above, below = (metadata.get(k) for k in ("at_least", "above", "below"))
    if at_least is not None and value < at_least:
        raise UserInputError(f"{name}={value}: must be at least {at_least}")
    if above is not None and value <= above:
        raise UserInputError(f"{name}={value}: must be greater than {above}")
    if below is not None and value >= below:
        raise UserInputError(f"{name}={value}: must be less than {below}")
