"""Small checked accessors for GraphQL answers.

Parsers turn JSON into typed snapshots and must reject an answer of the wrong shape with a
``MalformedResponseError`` (so the area keeps its last good snapshot) rather than a TypeError.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from exporter.errors import MalformedResponseError


def obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MalformedResponseError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def lst(value: Any, where: str) -> Sequence[Any]:
    if not isinstance(value, list):
        raise MalformedResponseError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def string(o: Mapping[str, Any], key: str, where: str) -> str:
    value = o.get(key)
    if not isinstance(value, str):
        raise MalformedResponseError(f"{where}.{key}: expected a string")
    return value


def opt_string(o: Mapping[str, Any], key: str, where: str) -> str | None:
    value = o.get(key)
    if value is not None and not isinstance(value, str):
        raise MalformedResponseError(f"{where}.{key}: expected a string or null")
    return value


def number(o: Mapping[str, Any], key: str, where: str) -> float:
    value = o.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MalformedResponseError(f"{where}.{key}: expected a number")
    return float(value)


def opt_number(o: Mapping[str, Any], key: str, where: str) -> float | None:
    if o.get(key) is None:
        return None
    return number(o, key, where)


def boolean(o: Mapping[str, Any], key: str, where: str) -> bool:
    value = o.get(key)
    if not isinstance(value, bool):
        raise MalformedResponseError(f"{where}.{key}: expected a boolean")
    return value
