"""One apscheduler job per (account, area): first poll at start, then every interval.

apscheduler 3 plans on the wall clock: when the clock steps back (NTP correcting a VM resumed
from suspend, a manual fix), every next run moves that far into the future and polling stops
for as long. A watchdog on the monotonic clock notices a job planned further ahead than its
interval can explain and brings it back to now.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from exporter.app import App

log = logging.getLogger(__name__)

WATCH_EVERY = 1.0  # seconds (monotonic) between two looks at the plan
SLACK = timedelta(seconds=1)  # beyond interval + jitter before a plan counts as stepped


class PollScheduler(BackgroundScheduler):  # type: ignore[misc]  # apscheduler is untyped
    """BackgroundScheduler plus the clock-step watchdog, stopped with it."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._watching = threading.Event()
        self._offset = time.time() - time.monotonic()

    def start(self, *args: Any, **kwargs: Any) -> None:
        super().start(*args, **kwargs)
        self._watching.clear()
        threading.Thread(target=self._watch, name="clock-step-watchdog", daemon=True).start()

    def shutdown(self, wait: bool = True) -> None:
        self._watching.set()
        super().shutdown(wait)

    def _watch(self) -> None:
        while not self._watching.wait(WATCH_EVERY):  # Event.wait runs on the monotonic clock
            self.reschedule_after_step()

    def reschedule_after_step(self) -> list[str]:
        """Jobs planned further ahead than their interval allows are moved to now."""
        now = datetime.now(UTC)
        moved = []
        for job in self.get_jobs():
            trigger = job.trigger
            if job.next_run_time is None or not isinstance(trigger, IntervalTrigger):
                continue
            horizon = trigger.interval + timedelta(seconds=trigger.jitter or 0) + SLACK
            if job.next_run_time - now > horizon:
                job.modify(next_run_time=now)
                moved.append(job.id)
        offset = time.time() - time.monotonic()
        if moved:
            log.warning(
                "the wall clock stepped back: polling again now",
                extra={"step_seconds": round(self._offset - offset, 1), "jobs": len(moved)},
            )
        self._offset = offset
        return moved


def start(app: App) -> BackgroundScheduler:
    jobs = list(app.pollers)
    scheduler = PollScheduler(
        executors={"default": ThreadPoolExecutor(max_workers=max(2, min(10, len(jobs))))},
        # One poll of an area at a time; polls missed while one overran collapse into one.
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        timezone=UTC,
    )
    now = datetime.now(UTC)
    for key in jobs:
        interval = app.interval(key)
        scheduler.add_job(
            app.poll,
            # Jitter spreads accounts' polls apart so they do not hit Spacelift in lockstep.
            IntervalTrigger(seconds=interval, jitter=min(5.0, interval / 10)),
            args=(key,),
            id="/".join(key),
            name=f"poll {key[1]} of {key[0]}",
            next_run_time=now,  # first poll right away
        )
    scheduler.start()
    return scheduler
