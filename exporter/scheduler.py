"""One apscheduler job per (account, area): first poll at start, then every interval."""

from __future__ import annotations

import datetime as dt

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from exporter.app import App


def start(app: App) -> BackgroundScheduler:
    jobs = list(app.pollers)
    scheduler = BackgroundScheduler(
        executors={"default": ThreadPoolExecutor(max_workers=max(2, min(10, len(jobs))))},
        # One poll of an area at a time; polls missed while one overran collapse into one.
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        timezone=dt.UTC,
    )
    now = dt.datetime.now(dt.UTC)
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
