"""The paging path end to end, with every part real.

simulator (in process, real HTTP) -> exporter (its own process) -> Prometheus (1 s scrape and
evaluation, the shipped rules with every ``for:`` shortened to 1 s) -> Alertmanager ->
a webhook receiver in this test.

Scenario: a private worker pool loses all its workers while runs are waiting for it. The
critical alert reaches the receiver with the labels and annotations the rules promise; the
workers come back, the runs drain, and the receiver gets the "resolved" notification.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import pytest

from exporter.simulator import SimClock, Simulator, World, WorldConfig
from tests.support.alert_receiver import Alert, AlertReceiver
from tests.support.processes import (
    ROOT,
    AlertmanagerProcess,
    ExporterProcess,
    PrometheusProcess,
)

KEY_ID = "01HXSIMKEY0000000000000000"
KEY_SECRET = "e2e-alerting-secret"
ALERT = "SpaceliftWorkerPoolNoUsableWorkers"
RUNBOOKS = "https://github.com/spacelift-exporter/spacelift-exporter/blob/main/docs/runbooks.md"


def shortened_rules(tmp_path: Path) -> Path:
    """The shipped rule file with every ``for:`` cut to 1 s (the rules are otherwise as is)."""
    text = (ROOT / "alerts" / "spacelift.rules.yml").read_text()
    short, n = re.subn(r"(?m)^(\s+)for: \S+$", r"\1for: 1s", text)
    assert n > 0
    path = tmp_path / "spacelift.rules.yml"
    path.write_text(short)
    return path


def port_is_free(port: int) -> bool:
    """Nothing listens on ``port`` any more: a server could bind it again (as servers do, with
    SO_REUSEADDR, since the connections just closed linger in TIME_WAIT)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.mark.e2e
def test_a_pool_losing_its_workers_pages_and_then_resolves(tmp_path: Path) -> None:
    # A manual clock: the world moves only when the test says so, so the number of runs
    # waiting (and thus the alert's description) is exact.
    clock = SimClock(start=float(int(time.time())))
    world = World(
        WorldConfig(
            seed=5,
            stacks=20,
            spaces=2,
            pools=2,
            workers_per_pool=2,
            api_keys=3,
            users=3,
            activity=0,
        ),
        clock,
    )
    pool = min(world.pools.values(), key=lambda p: p.id)
    stacks = sorted(
        s.id for s in world.stacks.values() if s.worker_pool == pool.id and not s.isDisabled
    )[:3]
    assert len(stacks) == 3 and len(pool.workers) == 2 and pool.pendingRuns == 0

    ports: list[int] = []
    with ExitStack() as running:
        receiver = running.enter_context(AlertReceiver())
        sim = running.enter_context(
            Simulator(world, key_id=KEY_ID, key_secret=KEY_SECRET, token_ttl=86400)
        )
        exporter = running.enter_context(
            ExporterProcess(
                sim.url,
                config={"areas": {"worker_pools": {"interval": "5s"}}},
                key_secret=KEY_SECRET,
            )
        )
        am = running.enter_context(AlertmanagerProcess(receiver.url))
        prom = running.enter_context(
            PrometheusProcess(
                [f"127.0.0.1:{exporter.port}"],
                rule_files=[shortened_rules(tmp_path)],
                alertmanager=am.url,
            )
        )
        ports = [receiver.port, sim.port, exporter.port, am.port, prom.port]
        pool_sel = f'job="spacelift", worker_pool_id="{pool.id}"'
        prom.wait_for(f"spacelift_worker_pool_workers{{{pool_sel}}} == 2", timeout=30)

        # The incident: runs arrive for three stacks of the pool, and the pool loses its
        # workers before any of them is picked up (they are QUEUED for 2-10 s first).
        for stack_id in stacks:
            world.trigger_run(stack_id)
        world.set_workers(pool.id, 0)
        world.advance(15)  # QUEUED -> READY; nobody takes them
        assert pool.pendingRuns == 3 and not pool.workers

        def ours(status: str) -> Callable[[Alert], bool]:
            return lambda a: (
                a["status"] == status
                and a["labels"].get("alertname") == ALERT
                and a["labels"].get("worker_pool_id") == pool.id
            )

        firing = receiver.wait_for(ours("firing"), timeout=45, what=f"{ALERT} firing")
        assert firing["labels"] == {
            "alertname": ALERT,
            "severity": "critical",
            "job": "spacelift",
            "instance": f"127.0.0.1:{exporter.port}",
            "account": "sim",
            "worker_pool_id": pool.id,
            "worker_pool_name": pool.name,
            "space": pool.space,
        }
        assert firing["annotations"] == {
            "summary": "Runs are waiting on a private worker pool that has no usable worker.",
            "description": (
                f"Worker pool {pool.name} ({pool.id}, space {pool.space}) of account sim has 3 "
                "runs waiting and no worker that can take them (none registered, or all "
                "drained) for 10 minutes. Runs on its stacks are blocked."
            ),
            "runbook_url": f"{RUNBOOKS}#spaceliftworkerpoolnousableworkers",
            "dashboard_url": "/d/spacelift-worker-pools?var-job=spacelift&var-account=sim",
        }
        # only that pool: the other one still has its workers
        assert all(
            a["labels"].get("worker_pool_id") == pool.id
            for a in receiver.alerts()
            if a["labels"].get("alertname") == ALERT
        )

        # Every shipped rule evaluates cleanly against the real exporter's series (no
        # many-to-many matches, no duplicate series in a join).
        rules = prom.rules()
        shipped = (ROOT / "alerts" / "spacelift.rules.yml").read_text().count("- alert: ")
        assert len(rules) == shipped
        assert [(r["name"], r["lastError"]) for r in rules if r["health"] != "ok"] == []

        # Recovery: the workers come back and the queue drains.
        world.set_workers(pool.id, 2)
        world.advance(900)  # every run planned (at most ~220 s each, two workers)
        assert pool.pendingRuns == 0
        resolved = receiver.wait_for(ours("resolved"), timeout=45, what=f"{ALERT} resolved")
        assert resolved["labels"] == firing["labels"]
        assert resolved["startsAt"] == firing["startsAt"]

    assert ports and [p for p in ports if not port_is_free(p)] == [], "ports still taken"
