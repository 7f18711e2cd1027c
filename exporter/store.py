"""The last good snapshot of every (account, area), and how its polls went.

Each record replaces the area's ``AreaState`` whole (atomic swap under a lock); readers get
immutable objects, so a render never sees half an update.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any

Key = tuple[str, str]  # (account, area)


@dataclass(frozen=True)
class AreaState:
    snapshot: Any = None  # last good snapshot; kept when a poll fails
    polled: bool = False  # at least one poll finished
    ok: bool = False  # the last poll succeeded
    error: str | None = None  # the last poll's failure, None after a success
    error_kind: str | None = None  # SpaceliftError.kind: "permission" is not an outage
    last_success: float | None = None  # unix time
    last_duration: float = 0.0
    polls: int = 0
    failures: int = 0
    partial: bool = False  # the snapshot holds only what the key was allowed to read

    @property
    def permission_denied(self) -> bool:
        return not self.ok and self.error_kind == "permission"

    @property
    def settled(self) -> bool:
        """Succeeded once, or was refused for lack of permission (an answer that stands)."""
        return self.last_success is not None or self.permission_denied


class Store:
    def __init__(self, keys: list[Key]) -> None:
        self._lock = threading.Lock()
        self._areas: dict[Key, AreaState] = {k: AreaState() for k in keys}

    def success(self, key: Key, snapshot: Any, at: float, duration: float) -> None:
        self._record(
            key, True, duration, snapshot=snapshot, error=None, error_kind=None,
            last_success=at, partial=False,
        )  # fmt: skip

    def partial(
        self,
        key: Key,
        snapshot: Any,
        error: str,
        at: float,
        duration: float,
        kind: str = "permission",
    ) -> None:
        """Part of the area was refused (or failed, ``kind``): serve what was read.

        The served data is fresh, so ``last_success`` moves (nothing goes stale); the poll
        still counts as failed and, for a refusal, ``permission_denied`` is true.
        """
        self._record(
            key, False, duration, snapshot=snapshot, error=error, error_kind=kind,
            last_success=at, partial=True,
        )  # fmt: skip

    def failure(self, key: Key, error: str, kind: str, duration: float) -> None:
        """The last good snapshot and ``last_success`` stay as they were."""
        self._record(key, False, duration, error=error, error_kind=kind)

    def replace_snapshot(self, key: Key, snapshot: Any) -> None:
        """A newer snapshot between polls (webhook deliveries); the poll record stays."""
        with self._lock:
            self._areas[key] = replace(self._areas[key], snapshot=snapshot)

    def _record(self, key: Key, ok: bool, duration: float, **changes: Any) -> None:
        with self._lock:  # one swap of the whole state: readers never see half of it
            old = self._areas[key]
            self._areas[key] = replace(
                old,
                polled=True,
                ok=ok,
                last_duration=duration,
                polls=old.polls + 1,
                failures=old.failures + (0 if ok else 1),
                **changes,
            )

    def get(self, key: Key) -> AreaState:
        with self._lock:
            return self._areas[key]

    def items(self) -> list[tuple[Key, AreaState]]:
        with self._lock:
            return list(self._areas.items())
