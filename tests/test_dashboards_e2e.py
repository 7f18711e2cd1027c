"""Every dashboard query, run against a real Prometheus that scraped the real exporter.

simulator (in-process, its clock running 60x so runs start, wait, fail and finish while the
test watches) -> ``python -m exporter`` (every area polled every 5 s) -> Prometheus from the
Debian package (1 s scrape). Then, with the dashboard variables substituted the way Grafana
does: every variable query returns the job and account, every panel target evaluates
without error (for one job/account and for All), and every panel whose data the simulated
account produces returns some (see NO_DATA_EXPECTED and PENDING_PANELS for the exceptions).
"""

from __future__ import annotations

import contextlib
import math
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from exporter.areas import AREAS
from exporter.simulator import SimClock, Simulator, World, WorldConfig
from exporter.simulator.webhooks import WebhookSender
from tests.support import dashboard_lint as dl
from tests.support.processes import ExporterProcess, PrometheusProcess
from tests.support.s3server import MotoS3
from tests.support.wait import until
from tests.test_dashboards import PENDING_METRICS, UIDS, load
from tests.test_ec2_ownership import RUN_NET, as_array, record, run_session

pytestmark = pytest.mark.e2e

JOB = "spacelift"  # PrometheusProcess's job name
ACCOUNT = "sim"  # ExporterProcess's account name
ALL = ".+"  # the variables' allValue
# Grafana's built-in variables, as Grafana would fill them for a 1 h dashboard at 1 s scrape.
BUILTINS = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "${__range}": "1h",
}

# Panels whose queries must run but whose data the simulated account does not produce, and
# why. The world below is set up so that every other panel has something to show.
NO_DATA_EXPECTED: dict[tuple[str, str], str] = {
    ("spacelift-overview", "Spacelift fields left out"): "the simulated account has every "
    "field and gives them all to the key (fields left out: tests/test_fields.py)",
}

# Panels on metrics listed in PENDING_METRICS (tests/test_dashboards.py), mapped to the branch
# they wait for. Their queries must still run without error; data is not required, and a
# panel listed here that returns data fails the test so the list cannot go stale. Empty now:
# the stacks, runs and access areas are merged.
PENDING_PANELS: dict[tuple[str, str], str] = {}

WEBHOOK_SECRET = "dashboards-webhook-secret"
SPEEDUP = 60.0  # simulated seconds per real second
DAY = 86400


# --- the world --------------------------------------------------------------------------


def build_world() -> World:
    """A lively account with one of everything a panel shows.

    The clock starts two hours in the past and runs 60x, so simulated timestamps stay behind
    Prometheus' time() (ages are positive) while runs move through every state in seconds.
    """
    clock = SimClock(start=time.time() - 7200)
    world = World(
        WorldConfig(seed=6, stacks=40, spaces=4, pools=3, workers_per_pool=2, activity=10.0),
        clock,
    )
    now = world.now()
    stacks = sorted(world.stacks.values(), key=lambda s: s.id)
    private = [s for s in stacks if s.worker_pool]
    # a starved pool: one worker and several runs waiting for it
    starved = private[0].worker_pool
    world.set_workers(starved, 1)
    for s in [s for s in private if s.worker_pool == starved][:4]:
        world.trigger_run(s.id, "PROPOSED")
    # a failed, a locked, a drifted and a disabled stack; a run blocked on approval
    world.finish_run(world.trigger_run(stacks[1].id).id, "FAILED")
    world.lock_stack(stacks[2].id, "alice", note="maintenance window")
    private[-1].isDrifted = True
    stacks[3].isDisabled = True
    world.trigger_run(stacks[4].id, needs_approval=True)
    # API keys: a legacy admin unused for 100 days, one holding space-admin on root and
    # expiring in 3 days, one never used and bound to nothing
    world.add_api_key("legacy-admin", admin=True, lastUsedAt=now - 100 * DAY)
    ci = world.add_api_key("ci-root", lastUsedAt=now - 3600, expiresAt=now + 3 * DAY)
    world.add_api_key_binding(ci.id, "space-admin", "root")
    world.add_api_key("never-used")
    return world


class Clockwork:
    """Moves the world's clock SPEEDUP times faster than real time until stopped."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sim-clock", daemon=True)

    def _run(self) -> None:
        last = time.monotonic()
        while not self.stopped.wait(0.1):
            now = time.monotonic()
            self.world.advance((now - last) * SPEEDUP)
            last = now

    def __enter__(self) -> Clockwork:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)


@dataclass
class Stack:
    world: World
    prometheus: PrometheusProcess
    http: httpx.Client  # one keep-alive connection for the few hundred queries


def ec2_exports(s3: MotoS3, world: World) -> tuple[dict[str, Any], dict[str, str]]:
    """A CloudTrail export in S3 in which two of the world's stacks launch instances: the
    ec2_ownership area's options and the AWS environment of the exporter reading it."""
    s3.client().create_bucket(Bucket="cloudtrail-exports")
    first, second = sorted(world.stacks)[:2]
    body = as_array(
        [
            record(
                "RunInstances", run_session(RUN_NET, first), ["i-0a1b2c3d"], "2026-12-01T10:00Z"
            ),
            record(
                "RunInstances", run_session(RUN_NET, second), ["i-0a1b2c3e"], "2026-12-01T11:00Z"
            ),
        ]
    )
    s3.client().put_object(Bucket="cloudtrail-exports", Key="ct/export.json", Body=body)
    options = {"s3_bucket": "cloudtrail-exports", "s3_prefix": "ct/", "endpoint_url": s3.url}
    env = {
        **s3.admin.env(),
        "AWS_EC2_METADATA_DISABLED": "true",  # never the metadata service: not on loopback
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }
    return options, env


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    world = build_world()
    with MotoS3() as s3:
        ec2_options, aws_env = ec2_exports(s3, world)
        areas = {name: {"enabled": True, "interval": "5s"} for name in AREAS}
        areas["ec2_ownership"].update(ec2_options)
        with (
            Simulator(world, token_ttl=7 * DAY) as sim,
            Clockwork(world),
            # tokens outlive the test in real time too (the simulated clock is behind real
            # time); with a state file, as a production exporter has one (its write counters
            # show)
            ExporterProcess(
                sim.url,
                {"areas": areas, "state_file": "state.json"},
                env={**aws_env, "SPACELIFT_WEBHOOK_SECRET": WEBHOOK_SECRET},
            ) as exporter,
            # the simulator's named webhook posts every run state change to the exporter
            WebhookSender(
                world, exporter.url + "/webhooks/spacelift", WEBHOOK_SECRET, account=ACCOUNT
            ),
            PrometheusProcess([exporter.url.removeprefix("http://")], job=JOB) as prom,
        ):
            prom.wait_for(f'spacelift_up{{job="{JOB}", account="{ACCOUNT}"}} == 1')
            with httpx.Client(base_url=prom.url + "/api/v1/", timeout=10) as http:
                yield Stack(world, prom, http)


# --- Grafana's side: variables and targets ----------------------------------------------


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    ref_id: str
    expr: str
    instant: bool
    table: bool  # a table panel: each row is data, even with an unknown (NaN) value


def all_queries() -> list[Query]:
    out = []
    for uid in UIDS:
        for p in dl.panels(load(uid)):
            for t in p["targets"]:
                instant = bool(t.get("instant"))
                table = p["type"] == "table"
                out.append(Query(uid, p["title"], t["refId"], t["expr"], instant, table))
    return out


def substitute(expr: str, job: str = JOB, account: str = ACCOUNT) -> str:
    for name, value in BUILTINS.items():
        expr = expr.replace(name, value)
    expr = expr.replace("$job", job).replace("$account", account)
    assert "$" not in expr, f"unknown variable left in {expr!r}"
    return expr


def without_fallback(expr: str) -> str:
    """The query without its display-only ``or vector(0)``: the data must come from a metric."""
    return re.sub(r"\s+or\s+vector\(0\)\s*$", "", expr)


def api(stack: Stack, path: str, params: dict[str, Any]) -> Any:
    body = stack.http.get(path, params=params).json()
    if body.get("status") != "success":
        raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
    return body["data"]


def has_data(stack: Stack, q: Query) -> bool:
    """True when the query (without its fallback) returns a row for a table, or at least
    one sample that is a number (not NaN) for a graph or a stat."""
    expr = without_fallback(substitute(q.expr))
    result = api(stack, "query", {"query": expr})["result"]
    values = [float(r["value"][1]) for r in result]
    return bool(values) if q.table else any(not math.isnan(v) for v in values)


def label_values(stack: Stack, query: str) -> set[str]:
    """Grafana's ``label_values(selector, label)`` through the series API, as Grafana does."""
    m = re.fullmatch(r"label_values\((.+),\s*([A-Za-z_]\w*)\)", query)
    assert m, f"not a label_values() query: {query}"
    series = api(stack, "series", {"match[]": m.group(1), "start": time.time() - 3600})
    return {s[m.group(2)] for s in series if m.group(2) in s}


# --- the tests --------------------------------------------------------------------------


def test_pending_panels_are_the_panels_on_pending_metrics() -> None:
    pending = set(dl.series_from(PENDING_METRICS))
    on_pending = {
        (q.dashboard, q.panel)
        for q in all_queries()
        if {name for name, *_ in dl.selectors(q.expr)} & pending
    }
    assert on_pending == set(PENDING_PANELS)


def test_variable_queries_return_the_job_and_account(stack: Stack) -> None:
    for uid in UIDS:
        variables = dl.variables(load(uid))
        job_query = variables["job"]["query"]
        assert JOB in label_values(stack, job_query)
        account_query = variables["account"]["query"]
        for job in (JOB, ALL):
            assert label_values(stack, account_query.replace("$job", job)) == {ACCOUNT}


def test_every_target_evaluates_without_error(stack: Stack) -> None:
    now = time.time()
    errors = []
    for q in all_queries():
        for job, account in ((JOB, ACCOUNT), (ALL, ALL)):
            expr = substitute(q.expr, job, account)
            try:
                api(stack, "query", {"query": expr})
                if not q.instant:
                    api(
                        stack,
                        "query_range",
                        {"query": expr, "start": now - 60, "end": now, "step": "5s"},
                    )
            except AssertionError as exc:
                errors.append(f"{q.dashboard} / {q.panel} / {q.ref_id}: {exc}")
    assert errors == []


def test_panels_show_the_simulated_account(stack: Stack) -> None:
    listed = set(NO_DATA_EXPECTED) | set(PENDING_PANELS)
    expected = [q for q in all_queries() if (q.dashboard, q.panel) not in listed]

    def missing() -> list[Query]:
        return [q for q in expected if not has_data(stack, q)]

    # rate() needs two scrapes and the histograms a run finishing between two polls: wait
    # for the last of them, then report every panel still empty.
    with contextlib.suppress(TimeoutError):
        until(lambda: not missing(), timeout=40, every=1, what="every expected panel has data")
    empty = [f"{q.dashboard} / {q.panel} / {q.ref_id}: {substitute(q.expr)}" for q in missing()]
    assert not empty, "panels without data:\n" + "\n".join(empty)


def test_listed_panels_still_have_no_data(stack: Stack) -> None:
    """NO_DATA_EXPECTED and PENDING_PANELS stay honest: a listed panel with data must go."""
    listed = set(NO_DATA_EXPECTED) | set(PENDING_PANELS)
    with_data = sorted(
        f"{q.dashboard} / {q.panel}"
        for q in all_queries()
        if (q.dashboard, q.panel) in listed and has_data(stack, q)
    )
    assert with_data == [], "these panels now show data: remove them from the lists"
