"""Clocks for the simulator: a manual clock for tests, a real one for the demo."""

from __future__ import annotations

import threading
import time


class SimClock:
    """Manual clock. `now()` returns seconds since the epoch as a float.

    A manual clock only moves when `advance()` is called, which keeps tests deterministic.
    `SimClock.real()` follows `time.time()` plus any offset added with `advance()`.
    """

    def __init__(self, start: float = 1_780_000_000.0, *, real: bool = False) -> None:
        self._lock = threading.Lock()
        self._real = real
        self._offset = 0.0
        self._t = float(start)

    @classmethod
    def real(cls) -> SimClock:
        return cls(0.0, real=True)

    def now(self) -> float:
        with self._lock:
            if self._real:
                return time.time() + self._offset
            return self._t

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            if self._real:
                self._offset += seconds
                return time.time() + self._offset
            self._t += seconds
            return self._t
