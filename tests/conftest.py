"""Shared fixtures: a deterministic simulated Spacelift account served over real HTTP."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter.app import App
from exporter.config import Config, Overrides, load
from exporter.simulator import SimClock, Simulator, World, WorldConfig

KEY_ID = "01HXSIMKEY0000000000000000"
KEY_SECRET = "sim-secret"
CREDENTIALS = {"SPACELIFT_API_KEY_ID": KEY_ID, "SPACELIFT_API_KEY_SECRET": KEY_SECRET}


@pytest.fixture
def clock() -> SimClock:
    # A manual clock starting now: the simulator's tokens and the exporter's refresh logic
    # share it, so a test moves time instead of waiting for it.
    return SimClock(start=float(int(time.time())))


@pytest.fixture
def world(clock: SimClock) -> World:
    cfg = WorldConfig(
        seed=7, stacks=30, spaces=4, pools=2, workers_per_pool=2, api_keys=6, users=8, activity=0
    )
    return World(cfg, clock)


@pytest.fixture
def sim(world: World) -> Iterator[Simulator]:
    with Simulator(world, key_id=KEY_ID, key_secret=KEY_SECRET, token_ttl=3600) as s:
        yield s


def make_config(sim: Simulator, env: dict[str, str] | None = None, **raw: Any) -> Config:
    """A config for one account ("sim") at the simulator; ``raw`` as in the YAML file."""
    data: dict[str, Any] = {"accounts": [{"name": "sim", "endpoint": sim.url}]}
    data["http"] = {"timeout": "2s", "retries": 1, "backoff_base": 0.01, "backoff_max": 0.05}
    data.update(raw)
    return load(Overrides(), env=CREDENTIALS if env is None else env, raw=data)


def make_app(sim: Simulator, clock: SimClock, **raw: Any) -> App:
    return App(make_config(sim, **raw), clock=clock.now)


def samples(
    app: App, accept: str | None = None
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The served exposition as {(sample name, labels): value}."""
    body, _ = app.exposition.render(accept)
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(app: App, name: str, **labels: str) -> float | None:
    """One sample's value (labels given must match exactly), or None when absent."""
    want = frozenset(labels.items())
    for (n, ls), v in samples(app).items():
        if n == name and ls == want:
            return v
    return None
