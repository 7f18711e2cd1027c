"""The poll schedule survives the wall clock stepping back (apscheduler plans on it)."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any, ClassVar

import pytest

from exporter import scheduler
from tests.support.wait import until


class SteppedClock(dt.datetime):
    """``datetime`` whose ``now()`` is the real time minus ``back`` seconds."""

    back: ClassVar[float] = 0.0

    @classmethod
    def now(cls, tz: Any = None) -> SteppedClock:  # type: ignore[override]
        real = dt.datetime.now(tz) - dt.timedelta(seconds=cls.back)
        return cls.fromtimestamp(real.timestamp(), tz)


class Polls:
    """What the scheduler drives: two areas polled every 0.3 s, each poll recorded."""

    pollers: ClassVar[dict[tuple[str, str], None]] = {
        ("acme", "runs"): None,
        ("acme", "stacks"): None,
    }

    def __init__(self) -> None:
        self.count = 0
        self._lock = threading.Lock()

    def interval(self, key: tuple[str, str]) -> float:
        return 0.3

    def poll(self, key: tuple[str, str]) -> bool:
        with self._lock:
            self.count += 1
        return True


def test_polling_goes_on_when_the_wall_clock_steps_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SteppedClock, "back", 0.0)
    import apscheduler.schedulers.base as aps_base

    monkeypatch.setattr(aps_base, "datetime", SteppedClock)
    monkeypatch.setattr(scheduler, "datetime", SteppedClock)
    polls = Polls()
    sched = scheduler.start(polls)  # type: ignore[arg-type]
    try:
        until(lambda: polls.count >= 4, timeout=10, what="polls before the step")
        monkeypatch.setattr(SteppedClock, "back", 3600.0)  # NTP pulls the clock an hour back
        seen = polls.count
        until(lambda: polls.count >= seen + 4, timeout=10, what="polls after the step")
    finally:
        sched.shutdown(wait=True)
