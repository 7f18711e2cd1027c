from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from exporter.simulator import SimClock, Simulator, World, WorldConfig

KEY_ID = "01HXSIMKEY0000000000000000"
SECRET = "sim-secret"
EXCHANGE = """mutation GetSpaceliftToken($id: ID!, $secret: String!) {
  apiKeyUser(id: $id, secret: $secret) { id jwt validUntil }
}"""


class Client:
    """Tiny GraphQL client for the tests."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.http = httpx.Client(timeout=5)
        self.token: str | None = None

    def login(self) -> dict[str, Any]:
        r = self.post(
            EXCHANGE, {"id": KEY_ID, "secret": SECRET}, op="GetSpaceliftToken", auth=False
        )
        user = r.json()["data"]["apiKeyUser"]
        self.token = user["jwt"]
        return user

    def post(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        op: str | None = None,
        auth: bool = True,
        **kw: Any,
    ) -> httpx.Response:
        headers = {"Spacelift-Client-Type": "test"}
        if auth and self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        body = {"query": query, "variables": variables or {}, "operationName": op}
        return self.http.post(self.sim.url, json=body, headers=headers, **kw)

    def q(self, query: str, variables: dict[str, Any] | None = None, op: str | None = None) -> Any:
        r = self.post(query, variables, op)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture
def clock() -> SimClock:
    return SimClock(start=1_780_000_000.0)


def make_world(clock: SimClock, **kw: Any) -> World:
    cfg = dict(seed=1, stacks=50, spaces=6, pools=3, workers_per_pool=3, activity=0.0)
    cfg.update(kw)
    return World(WorldConfig(**cfg), clock)


@pytest.fixture
def world(clock: SimClock) -> World:
    return make_world(clock, failure_rate=0.0)


@pytest.fixture
def sim(world: World) -> Iterator[Simulator]:
    with Simulator(world, key_id=KEY_ID, key_secret=SECRET, token_ttl=3600) as s:
        yield s


@pytest.fixture
def client(sim: Simulator) -> Iterator[Client]:
    c = Client(sim)
    c.login()
    yield c
    c.http.close()
