"""Shared helpers of the stacks/runs tests: an App on a simulator, scraping, the world's truth."""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from exporter.app import App
from exporter.areas import AREAS
from exporter.config import Overrides, load

TERMINAL = frozenset({"FINISHED", "FAILED", "STOPPED", "CANCELED", "DISCARDED", "SKIPPED"})
Labels = frozenset[tuple[str, str]]


def make_app(
    sim: Any,
    *,
    areas: Iterable[str] = ("runs",),
    options: Mapping[str, Mapping[str, Any]] | None = None,
    state_file: Path | None = None,
) -> App:
    wanted = set(areas)
    table: dict[str, Any] = {}
    for name in AREAS:
        table[name] = {"enabled": name in wanted, **dict((options or {}).get(name, {}))}
    raw: dict[str, Any] = {"areas": table, "http": {"retries": 0}}
    if state_file is not None:
        raw["state_file"] = str(state_file)
    env = {"SPACELIFT_API_KEY_ID": sim.key_id, "SPACELIFT_API_KEY_SECRET": sim.key_secret}
    config = load(Overrides(endpoint=sim.url), env=env, raw=raw)
    return App(config, clock=sim.world.clock.now)


def scrape(app: App) -> dict[str, dict[Labels, float]]:
    """Sample name -> {labels without account (empty values dropped): value}."""
    body, _ = app.exposition.render(None)
    out: dict[str, dict[Labels, float]] = collections.defaultdict(dict)
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            labels = frozenset((k, v) for k, v in s.labels.items() if k != "account" and v != "")
            out[s.name][labels] = s.value
    return out


def lab(**kw: str) -> Labels:
    return frozenset(kw.items())


def ended_at(run: Any) -> int:
    return int(run.history[-1]["timestamp"])


def truth_finished(world: Any, since: float, *, by_stack: bool = True) -> dict[Labels, float]:
    """Runs of existing stacks that reached a terminal state at or after ``since``."""
    c: collections.Counter[Labels] = collections.Counter()
    for st in world.stacks.values():
        for r in st.runs:
            if r.state in TERMINAL and ended_at(r) >= since:
                kw = {"space": st.space, "run_type": r.type, "state": r.state}
                if by_stack:
                    kw["stack_id"] = st.id
                c[lab(**kw)] += 1
    return {k: float(v) for k, v in c.items()}


def truth_active(world: Any, *, skip_queued: bool = False) -> dict[Labels, float]:
    c: collections.Counter[Labels] = collections.Counter()
    for r in world.active.values():
        if skip_queued and r.state == "QUEUED":
            continue
        st = world.stacks[r.stack_id]
        c[lab(space=st.space, run_type=r.type, state=r.state)] += 1
    return {k: float(v) for k, v in c.items()}


def truth_oldest_age(world: Any) -> dict[Labels, float]:
    now = world.clock.now()
    out: dict[Labels, float] = {}
    for r in world.active.values():
        st = world.stacks[r.stack_id]
        entered = next(h["timestamp"] for h in reversed(r.history) if h["state"] == r.state)
        key = lab(space=st.space, run_type=r.type, state=r.state)
        out[key] = max(out.get(key, 0.0), now - entered)
    return out


def without(samples: Mapping[Labels, float], state: str) -> dict[Labels, float]:
    return {k: v for k, v in samples.items() if ("state", state) not in k}


def run_to_end(world: Any, run: Any, *, step: float = 5, limit: float = 7200) -> None:
    """Advance the world until ``run`` is terminal, confirming it if it waits for a human."""
    spent = 0.0
    while run.state not in TERMINAL:
        if run.state == "UNCONFIRMED":
            world.confirm(run.id)
            continue
        world.advance(step)
        spent += step
        if spent > limit:
            raise AssertionError(f"run {run.id} stuck in {run.state}")


def op_requests(sim: Any, prefix: str) -> int:
    return sum(n for op, n in sim.requests.items() if op and op.startswith(prefix))
