"""Schemas of the JSON files the steps hand each other (`manifest.json`, `mlm_tokenizer.json`):
types, ranges and required keys, checked field by field so an edited or damaged file is refused
with the field named, before any work starts.

A schema is a `Record` of named checks; a check is a function of a value that raises `Invalid`
(the problem, its path filled in on the way up).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from mlm.errors import UserInputError

Check = Callable[[Any], None]


class Invalid(Exception):
    """A value that does not fit its schema: what is wrong, and where (`splits.train.files`)."""

    def __init__(self, problem: str, path: tuple[str, ...] = ()) -> None:
        super().__init__(problem)
        self.problem = problem
        self.path = path


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}.get(
        type(value), f"a {type(value).__name__}"
    )


def integer(at_least: int = 0) -> Check:
    """An integer (not a boolean) of at least `at_least`."""

    def check(value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"is {_kind(value)}, not an integer")
        if value < at_least:
            raise Invalid(f"is {value}, below its minimum {at_least}")

    return check


def string(value: Any) -> None:
    """A non-empty string."""
    if not isinstance(value, str) or not value:
        raise Invalid(f"is {_kind(value)}, not a non-empty string")


def boolean(value: Any) -> None:
    if not isinstance(value, bool):
        raise Invalid(f"is {_kind(value)}, not true or false")


def one_of(*choices: Any) -> Check:
    def check(value: Any) -> None:
        if value not in choices:
            raise Invalid(f"is {value!r}, not one of {', '.join(map(repr, choices))}")

    return check


def list_of(item: Check) -> Check:
    def check(value: Any) -> None:
        if not isinstance(value, list):
            raise Invalid(f"is {_kind(value)}, not a list")
        for index, element in enumerate(value):
            _at(str(index), item, element)

    return check


def mapping_of(entry: Check) -> Check:
    """An object whose every value fits `entry` (keys are names, e.g. file names)."""

    def check(value: Any) -> None:
        if not isinstance(value, Mapping):
            raise Invalid(f"is {_kind(value)}, not an object")
        for key, element in value.items():
            _at(str(key), entry, element)

    return check


class Record:
    """An object with named fields: `required` must be present, `optional` may be."""

    def __init__(self, required: dict[str, Check], optional: dict[str, Check] | None = None):
        self.required = required
        self.optional = optional or {}

    def __call__(self, value: Any) -> None:
        if not isinstance(value, Mapping):
            raise Invalid(f"is {_kind(value)}, not an object")
        for name, check in self.required.items():
            if name not in value:
                raise Invalid("is missing", (name,))
            _at(name, check, value[name])
        for name, check in self.optional.items():
            if name in value:
                _at(name, check, value[name])


def _at(name: str, check: Check, value: Any) -> None:
    try:
        check(value)
    except Invalid as error:
        raise Invalid(error.problem, (name, *error.path)) from None


def validate(data: Any, schema: Check, uri: str, step: str) -> None:
    """Checks `data` read from `uri` (written by `mlm STEP`) against `schema`.

    Raises:
        UserInputError: naming the file, the field and what is wrong with it, and saying to run
            the step again.
    """
    try:
        schema(data)
    except Invalid as error:
        field = ".".join(error.path) or "the content"
        raise UserInputError(
            f"{uri}: field {field} {error.problem}, so the file is damaged or was edited; run "
            f"`mlm {step}` again to write it"
        ) from None
