"""Checks of what `mlm pipeline` is given before any server is contacted: KFP cron expressions,
schedule windows, `--param KEY=VALUE` pairs and the compiled package's path.

Each raises `UserInputError` naming the flag at fault, so a typo fails here in one line rather
than as a server error after an upload.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlm.errors import UserInputError

# robfig/cron (what the KFP scheduler uses) with seconds: name, lowest, highest, names allowed.
_CRON_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("second", 0, 59, ()),
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    (
        "month",
        1,
        12,
        tuple(["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]),
    ),
    ("day of week", 0, 6, tuple(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])),
)
_CRON_DESCRIPTORS = (
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
)
_GO_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")


def validate_cron(expression: str) -> str:
    """Checks a KFP cron expression and returns it stripped.

    KFP schedules with robfig/cron and 6 fields: second, minute, hour, day of month, month, day of
    week (e.g. "0 0 3 * * 0" is every Sunday at 03:00:00). Descriptors such as "@daily" and
    "@every 6h" are accepted too.

    Raises:
        UserInputError: The expression is not valid, with the field at fault.
    """
    text = " ".join(str(expression).split())
    if text.startswith("@"):
        if text in _CRON_DESCRIPTORS:
            return text
        every, _, duration = text.partition(" ")
        if every == "@every" and _GO_DURATION.match(duration):
            return text
        raise UserInputError(
            f"--cron {expression!r}: unknown descriptor; use one of "
            f"{', '.join(_CRON_DESCRIPTORS)} or '@every <duration>' (e.g. '@every 6h')"
        )
    fields = text.split(" ") if text else []
    if len(fields) == 5:
        raise UserInputError(
            f"--cron {expression!r}: KFP cron has 6 fields with seconds first "
            f"(second minute hour day-of-month month day-of-week); try '0 {text}'"
        )
    if len(fields) != 6:
        raise UserInputError(
            f"--cron {expression!r}: expected 6 fields (second minute hour day-of-month month "
            f"day-of-week), got {len(fields)}"
        )
    for value, (name, low, high, names) in zip(fields, _CRON_FIELDS):
        _validate_cron_field(expression, value, name, low, high, names)
    return text


def _validate_cron_field(
    expression: str, value: str, name: str, low: int, high: int, names: tuple[str, ...]
) -> None:
    def bad(reason: str) -> UserInputError:
        return UserInputError(f"--cron {expression!r}: {name} field {value!r} {reason}")

    def number(token: str) -> int:
        upper = token.upper()
        if upper in names:
            return names.index(upper) + low
        if not token.isdigit():
            raise bad(f"has {token!r}, which is not a number in {low}-{high}")
        result = int(token)
        if not low <= result <= high:
            raise bad(f"has {result}, outside {low}-{high}")
        return result

    if value == "?" and name in ("day of month", "day of week"):
        return
    for part in value.split(","):
        base, slash, step = part.partition("/")
        if slash and (not step.isdigit() or int(step) < 1):
            raise bad(f"has step {step!r}; a step must be a positive number")
        if base == "*":
            continue
        start, dash, end = base.partition("-")
        first = number(start)
        if dash and number(end) < first:
            raise bad(f"has the range {base!r}, which runs backwards")


def parse_params(pairs: Sequence[str] | None) -> dict[str, Any]:
    """Turns `KEY=VALUE` strings into pipeline arguments; a VALUE that parses as JSON is decoded
    (numbers, booleans), anything else stays a string."""
    params: dict[str, Any] = {}
    for pair in pairs or ():
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise UserInputError(f"--param {pair!r}: write it as KEY=VALUE (e.g. steps=2000)")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        params[key.strip()] = value
    return params


def check_package(package: str) -> str:
    """The package path, checked to be a file (a missing one names `make compile`)."""
    path = Path(package)
    if not path.is_file():
        raise UserInputError(
            f"--package {package}: no such file; run `make compile` (or `mlm pipeline compile`) "
            "to write the compiled pipeline first"
        )
    return str(path)


def validate_time(value: str | None, flag: str) -> str | None:
    """Checks an RFC 3339 time (e.g. 2026-12-01T03:00:00Z) and returns it in UTC with a "Z"."""
    if not value:
        return None
    try:
        moment = datetime.datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise UserInputError(
            f"{flag} {value!r}: write an RFC 3339 time such as 2026-12-01T03:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise UserInputError(f"{flag} {value!r}: add a time zone, e.g. {value}Z for UTC")
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def validate_window(start_time: str | None, end_time: str | None) -> tuple[str | None, ...]:
    """Checks a schedule's optional start and end times; returns them normalized to UTC."""
    start_time = validate_time(start_time, "--start-time")
    end_time = validate_time(end_time, "--end-time")
    if start_time and end_time and end_time <= start_time:
        raise UserInputError(f"--end-time {end_time} must be after --start-time {start_time}")
    return start_time, end_time
