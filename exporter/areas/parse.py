"""Small checked accessors for GraphQL answers.

Parsers turn JSON into typed snapshots and must reject an answer of the wrong shape with a
``MalformedResponseError`` (so the area keeps its last good snapshot) rather than a TypeError.
Values that would become samples or labels are bounded here, once for every area: a NaN, a
negative count, a 5,000-digit number, a million-item list or a megabyte name is a malformed
answer, never exported as it is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from exporter.errors import MalformedResponseError

# Counts, minutes and Unix timestamps all fit well below 2**53 (exact in a float).
MAX_NUMBER = 1e15
# Far above any one answer of a real account (pages hold 50 stacks; pools, keys, spaces
# number in the hundreds), far below what would exhaust memory in labels and series.
MAX_ITEMS = 100_000
# Ids, names, spaces, states and labels: Spacelift's are short; a longer one is not exported.
MAX_STRING = 1024


def obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MalformedResponseError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def lst(value: Any, where: str) -> Sequence[Any]:
    if not isinstance(value, list):
        raise MalformedResponseError(f"{where}: expected a list, got {type(value).__name__}")
    if len(value) > MAX_ITEMS:
        raise MalformedResponseError(f"{where}: {len(value)} items, more than {MAX_ITEMS}")
    return value


def string(o: Mapping[str, Any], key: str, where: str) -> str:
    value = o.get(key)
    if not isinstance(value, str):
        raise MalformedResponseError(f"{where}.{key}: expected a string")
    return _bounded_string(value, f"{where}.{key}")


def opt_string(o: Mapping[str, Any], key: str, where: str) -> str | None:
    value = o.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise MalformedResponseError(f"{where}.{key}: expected a string or null")
    return _bounded_string(value, f"{where}.{key}")


def strings(value: Any, where: str) -> tuple[str, ...]:
    """The strings of a list (labels, tags), other items skipped, each bounded."""
    return tuple(
        _bounded_string(item, f"{where}[{i}]")
        for i, item in enumerate(lst(value, where))
        if isinstance(item, str)
    )


def _bounded_string(value: str, where: str) -> str:
    if len(value) > MAX_STRING:
        raise MalformedResponseError(f"{where}: {len(value)} characters, more than {MAX_STRING}")
    return value


def number(o: Mapping[str, Any], key: str, where: str, *, allow_negative: bool = False) -> float:
    """A finite number from 0 (or -MAX_NUMBER) to MAX_NUMBER."""
    value = o.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedResponseError(f"{where}.{key}: expected a number")
    low = -MAX_NUMBER if allow_negative else 0.0
    # Compare before float(): float() of a huge int raises OverflowError.
    if not low <= value <= MAX_NUMBER or (isinstance(value, float) and math.isnan(value)):
        raise MalformedResponseError(f"{where}.{key}: {_short(value)} is out of range")
    return float(value)


def opt_number(
    o: Mapping[str, Any], key: str, where: str, *, allow_negative: bool = False
) -> float | None:
    if o.get(key) is None:
        return None
    return number(o, key, where, allow_negative=allow_negative)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


def boolean(o: Mapping[str, Any], key: str, where: str) -> bool:
    value = o.get(key)
    if not isinstance(value, bool):
        raise MalformedResponseError(f"{where}.{key}: expected a boolean")
    return value


class Pages:
    """Guard of a paginated read: a cursor that comes back (an endless loop) or more than
    MAX_ITEMS items over all pages is a malformed answer, not a poll that runs until its
    time budget while memory grows."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.items = 0
        self._cursors: set[str] = set()

    def next(self, cursor: str | None, items: int) -> str | None:
        self.items += items
        if self.items > MAX_ITEMS:
            raise MalformedResponseError(f"{self.where}: more than {MAX_ITEMS} items over pages")
        if cursor is not None:
            if cursor in self._cursors:
                raise MalformedResponseError(f"{self.where}: page cursor {_short(cursor)} again")
            self._cursors.add(cursor)
        return cursor
