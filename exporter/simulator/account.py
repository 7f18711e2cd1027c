"""Account-level views computed from the world: usage, seats, dashboard metrics."""

from __future__ import annotations

import calendar
import statistics
import time
from collections import Counter
from typing import Any


class Usage:
    """Billing usage; worker minutes grow with simulated worker time."""

    def __init__(self, world: Any) -> None:
        self._w = world
        self.allowedMinutes = 100_000
        self.allowedSeats = 50
        self.pricePerSeat = 2500
        self.pricePerWorker = 25000
        self.pricePerRunMinute = None
        self.subscriptionPrice = None
        self.upcomingInvoiceTotalAmount = None

    # The billing period is the calendar month (UTC) of the simulated now.
    @property
    def billingPeriodStart(self) -> int:
        t = time.gmtime(self._w.now())
        return calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0))

    @property
    def billingPeriodEnd(self) -> int:
        t = time.gmtime(self._w.now())
        y, m = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
        return calendar.timegm((y, m, 1, 0, 0, 0))

    @property
    def usedPrivateMinutes(self) -> int:
        return 1200 + self._w.used_minutes()[0]

    @property
    def usedPublicMinutes(self) -> int:
        return 300 + self._w.used_minutes()[1]

    @property
    def usedMinutes(self) -> int:
        priv, pub = self._w.used_minutes()
        return 1500 + priv + pub

    @property
    def usedSeats(self) -> int:
        return self._w.seats.user["inUse"] + self._w.seats.apiKey["inUse"]

    @property
    def usedWorkers(self) -> int:
        return sum(len(p.workers) for p in self._w.pools.values())


class Seats:
    def __init__(self, world: Any) -> None:
        self._w = world

    @property
    def user(self) -> dict[str, int]:
        active = sum(1 for u in self._w.users.values() if u.status == "ACTIVE")
        return {"limit": 50, "inUse": active}

    @property
    def apiKey(self) -> dict[str, int]:
        # keys used (exchanged) during the billing period are billed like users
        start = self._w.usage.billingPeriodStart
        used = sum(1 for k in self._w.api_keys.values() if (k.lastUsedAt or 0) >= start)
        return {"limit": -1, "inUse": used}


class Metrics:
    def __init__(self, world: Any) -> None:
        self._w = world

    @property
    def stacksCountByState(self) -> list[dict[str, Any]]:
        counts = Counter(s.state for s in self._w.stacks.values())
        return [{"value": float(n), "labels": [st]} for st, n in sorted(counts.items())]

    # Run durations in nanoseconds, as the real API gives them (the official exporter's
    # fixtures: 187000000000); an empty list while no run has finished.
    @property
    def averageRunDuration(self) -> list[dict[str, Any]]:
        d = self._w.recent_durations
        return [{"value": float(statistics.fmean(d)) * 1e9, "labels": []}] if d else []

    @property
    def medianRunDuration(self) -> list[dict[str, Any]]:
        d = self._w.recent_durations
        return [{"value": float(statistics.median(d)) * 1e9, "labels": []}] if d else []

    @property
    def avgStackSizeByResourceCount(self) -> list[dict[str, Any]]:
        sizes = [s.entityCount for s in self._w.stacks.values()]
        return [{"value": float(statistics.fmean(sizes)), "labels": []}] if sizes else []

    @property
    def resourcesCountByDrift(self) -> list[dict[str, Any]]:
        drifted = sum(s.entityCount for s in self._w.stacks.values() if s.isDrifted)
        total = sum(s.entityCount for s in self._w.stacks.values())
        return [
            {"value": float(drifted), "labels": ["DRIFTED"]},
            {"value": float(total - drifted), "labels": ["IN_SYNC"]},
        ]

    @property
    def needsApprovalRuns(self) -> list[Any]:
        return [r for r in self._w.active.values() if r.needsApproval]

    @property
    def runsRequiringAttention(self) -> list[Any]:
        # GUESS at Spacelift's rule: runs waiting for a human (approval or confirmation)
        return [r for r in self._w.active.values() if r.needsApproval or r.state == "UNCONFIRMED"]

    @property
    def hasStacks(self) -> bool:
        return bool(self._w.stacks)

    @property
    def hasRuns(self) -> bool:
        return bool(self._w.runs)
