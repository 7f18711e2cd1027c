"""The pipeline against the simulator: what /metrics shows as Spacelift changes and fails."""

from __future__ import annotations

import pytest

from exporter.app import App
from exporter.simulator import SimClock, Simulator, World
from tests.conftest import make_app, make_config, value

WP = "worker_pools"


def pool_truth(world: World) -> dict[str, dict[str, float]]:
    truth = {}
    for pool in world.pools.values():
        truth[pool.id] = {
            "spacelift_worker_pool_workers": len(pool.workers),
            "spacelift_worker_pool_workers_busy": pool.busyWorkers,
            "spacelift_worker_pool_workers_drained": sum(w.drained for w in pool.workers),
            "spacelift_worker_pool_workers_idle": sum(
                not w.busy and not w.drained for w in pool.workers
            ),
            "spacelift_worker_pool_runs_pending": pool.pendingRuns,
            "spacelift_worker_pool_runs_schedulable": pool.schedulableRunsCount,
        }
    return truth


def assert_pools_match(app: object, world: World) -> None:
    for pool_id, metrics in pool_truth(world).items():
        pool = world.pools[pool_id]
        labels = {
            "account": "sim",
            "worker_pool_id": pool.id,
            "worker_pool_name": pool.name,
            "space": pool.space,
        }
        for name, want in metrics.items():
            assert value(app, name, **labels) == want, (name, pool_id)  # type: ignore[arg-type]


def stacks_of_pool(world: World, pool_id: str) -> list[str]:
    return [s.id for s in world.stacks.values() if s.worker_pool == pool_id]


def test_worker_pools_and_usage_follow_the_simulator(
    sim: Simulator, world: World, clock: SimClock
) -> None:
    app = make_app(sim, clock)
    assert app.poll_all()
    assert_pools_match(app, world)

    # Change the world: runs queue on a pool whose workers are drained, another pool grows.
    first, second = sorted(world.pools)
    world.set_drained(first, True)
    for stack_id in stacks_of_pool(world, first)[:3]:
        world.trigger_run(stack_id)
    world.set_workers(second, 5)
    clock.advance(30)
    world.sync()
    assert world.pools[first].pendingRuns > 0
    before = value(
        app,
        "spacelift_worker_pool_runs_pending",
        account="sim",
        worker_pool_id=first,
        worker_pool_name=world.pools[first].name,
        space=world.pools[first].space,
    )
    assert before == 0
    assert app.poll(("sim", WP))
    assert_pools_match(app, world)

    usage = world.usage
    assert app.poll(("sim", "usage"))
    assert value(app, "spacelift_current_billing_period_used_private_seconds", account="sim") == (
        usage.usedPrivateMinutes * 60
    )
    assert value(app, "spacelift_current_billing_period_used_seats", account="sim") == (
        usage.usedSeats
    )
    assert value(
        app, "spacelift_current_billing_period_start_timestamp_seconds", account="sim"
    ) == (usage.billingPeriodStart)
    public = world.public_pool
    assert value(app, "spacelift_public_worker_pool_parallelism", account="sim") == (
        public.parallelism
    )


def test_a_deleted_pool_disappears_from_metrics(
    sim: Simulator, world: World, clock: SimClock
) -> None:
    app = make_app(sim, clock)
    app.poll(("sim", WP))
    gone = sorted(world.pools)[0]
    name = world.pools[gone].name
    with world.lock:
        del world.pools[gone]
    app.poll(("sim", WP))
    body, _ = app.exposition.render(None)
    assert f'worker_pool_id="{gone}"'.encode() not in body
    assert name.encode() not in body


def test_field_error_fails_one_area_and_the_others_keep_serving(
    sim: Simulator, world: World, clock: SimClock
) -> None:
    app = make_app(sim, clock)
    assert app.poll_all()
    seats_before = value(app, "spacelift_current_billing_period_used_seats", account="sim")
    sim.faults.field_error("usage", message="internal server error")
    world.set_workers(sorted(world.pools)[0], 4)
    assert not app.poll(("sim", "usage"))
    assert app.poll(("sim", WP))
    assert value(app, "spacelift_poll_success", account="sim", area="usage") == 0
    assert value(app, "spacelift_poll_permission_denied", account="sim", area="usage") == 0
    assert value(app, "spacelift_poll_success", account="sim", area=WP) == 1
    # usage keeps its last good values; pools show the new state
    assert value(app, "spacelift_current_billing_period_used_seats", account="sim") == seats_before
    assert_pools_match(app, world)


def test_outage_keeps_last_good_data_then_recovers(
    sim: Simulator, world: World, clock: SimClock
) -> None:
    app = make_app(sim, clock)
    assert app.poll_all()
    last_success = value(
        app, "spacelift_last_successful_poll_timestamp_seconds", account="sim", area=WP
    )
    assert last_success == clock.now()
    pool = sorted(world.pools)[0]
    labels = {
        "account": "sim",
        "worker_pool_id": pool,
        "worker_pool_name": world.pools[pool].name,
        "space": world.pools[pool].space,
    }
    workers_before = value(app, "spacelift_worker_pool_workers", **labels)

    sim.faults.http_status(503, times=None)  # Spacelift is down
    world.set_workers(pool, 7)
    clock.advance(60)
    assert not app.poll_all()
    assert value(app, "spacelift_up", account="sim") == 0
    assert value(app, "spacelift_poll_success", account="sim", area=WP) == 0
    assert value(app, "spacelift_poll_failures_total", account="sim", area=WP) == 1
    assert value(app, "spacelift_worker_pool_workers", **labels) == workers_before
    assert (
        value(app, "spacelift_last_successful_poll_timestamp_seconds", account="sim", area=WP)
        == last_success
    )

    sim.faults.clear()
    clock.advance(60)
    assert app.poll_all()
    assert value(app, "spacelift_up", account="sim") == 1
    assert value(app, "spacelift_worker_pool_workers", **labels) == 7
    assert (
        value(app, "spacelift_last_successful_poll_timestamp_seconds", account="sim", area=WP)
        == clock.now()
    )


def test_malformed_answer_keeps_last_good_snapshot(
    sim: Simulator, world: World, clock: SimClock
) -> None:
    app = make_app(sim, clock)
    assert app.poll(("sim", WP))
    before = app.exposition.render(None)[0]
    sim.faults.malformed(operation="SpaceliftExporterWorkerPools", kind="shape", times=1)
    assert not app.poll(("sim", WP))
    assert app.store.get(("sim", WP)).error_kind == "malformed"
    after = app.exposition.render(None)[0]
    pick = [line for line in before.splitlines() if line.startswith(b"spacelift_worker_pool_")]
    assert pick and all(line in after.splitlines() for line in pick)


def test_non_admin_key_is_a_permission_gap_not_an_outage(
    sim: Simulator, world: World, clock: SimClock
) -> None:
    sim.admin = False
    app = make_app(sim, clock)
    assert not app.poll_all()
    assert value(app, "spacelift_poll_permission_denied", account="sim", area="usage") == 1
    assert value(app, "spacelift_poll_success", account="sim", area=WP) == 1
    assert value(app, "spacelift_up", account="sim") == 1
    assert app.ready()  # a refusal is an answer: readiness does not wait for it forever


def test_machine_session_gate_on_public_pool_leaves_private_pools(
    sim: Simulator, world: World, clock: SimClock
) -> None:
    sim.gate_fields({"publicWorkerPool"})
    app = make_app(sim, clock)
    app.poll_all()
    assert (
        value(app, "spacelift_poll_permission_denied", account="sim", area="public_worker_pool")
        == 1
    )
    assert value(app, "spacelift_poll_success", account="sim", area=WP) == 1
    assert_pools_match(app, world)


def test_start_up_with_refused_credentials_keeps_serving(
    sim: Simulator, world: World, clock: SimClock
) -> None:
    env = {"SPACELIFT_API_KEY_ID": "01HXSIMKEY0000000000000000", "SPACELIFT_API_KEY_SECRET": "no"}
    app = App(make_config(sim, env=env), clock=clock.now)
    assert not app.poll_all()
    assert value(app, "spacelift_up", account="sim") == 0
    assert value(app, "spacelift_api_token_exchanges_total", account="sim", outcome="failure") == 1
    assert not app.ready()


def test_only_queries_and_the_token_exchange_are_ever_sent(
    sim: Simulator, world: World, clock: SimClock
) -> None:
    app = make_app(sim, clock)
    app.poll_all()
    sim.expire_tokens()
    app.poll_all()
    assert sim.request_log
    for request in sim.request_log:
        if request["operation_type"] == "mutation":
            assert request["root_fields"] == ["apiKeyUser"], request
        else:
            assert request["operation_type"] == "query", request


def test_poll_all_polls_every_area_even_after_a_fast_failure(
    sim: Simulator, world: World, clock: SimClock
) -> None:
    app = make_app(sim, clock)
    sim.faults.http_status(400, operation="SpaceliftExporterUsage", times=None)
    assert not app.poll_all()
    assert all(st.polls == 1 for _, st in app.store.items()), app.store.items()


def test_a_collector_bug_drops_one_area_not_the_exposition(
    sim: Simulator, world: World, clock: SimClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(sim, clock)
    app.poll_all()

    def broken(snapshot: object, out: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(app.pollers[("sim", "usage")], "collect", broken)
    assert app.poll(("sim", "usage"))  # polled fine; rendering it fails
    pool = sorted(world.pools)[0]
    world.set_workers(pool, 6)
    assert app.poll(("sim", WP))
    assert_pools_match(app, world)  # fresh values despite the broken area
    assert value(app, "spacelift_current_billing_period_used_seats", account="sim") is None


def test_revoked_token_is_down_not_a_permission_gap(
    sim: Simulator, world: World, clock: SimClock
) -> None:
    env = {"SPACELIFT_API_TOKEN": sim.issue_token(3600)}
    app = App(make_config(sim, env=env), clock=clock.now)
    assert app.poll_all()
    sim.expire_tokens()
    assert not app.poll_all()
    assert value(app, "spacelift_up", account="sim") == 0
    assert value(app, "spacelift_poll_permission_denied", account="sim", area=WP) == 0
    assert app.store.get(("sim", WP)).error_kind == "auth"


def test_up_is_steady_when_one_area_has_a_field_error(
    sim: Simulator, world: World, clock: SimClock
) -> None:
    app = make_app(sim, clock)
    sim.faults.http_status(400, operation="SpaceliftExporterUsage", times=None)
    for _ in range(2):
        app.poll(("sim", "usage"))
        assert value(app, "spacelift_up", account="sim") == 1
        app.poll(("sim", WP))
        assert value(app, "spacelift_up", account="sim") == 1
    assert "HTTP 400" in (app.store.get(("sim", "usage")).error or "")


def test_accounts_with_different_stack_labels_share_one_family(
    sim: Simulator, world: World, clock: SimClock
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    accounts = [
        {"name": "one", "endpoint": sim.url, "areas": {"stacks": {"stack_labels": ["team"]}}},
        {"name": "two", "endpoint": sim.url, "areas": {"stacks": {"stack_labels": ["env"]}}},
    ]
    app = make_app(sim, clock, accounts=accounts)
    assert app.poll(("one", "stacks")) and app.poll(("two", "stacks"))
    body, _ = app.exposition.render(None)
    families = list(text_string_to_metric_families(body.decode()))
    info = [f for f in families if f.name == "spacelift_stack_info"]
    assert len(info) == 1  # one HELP/TYPE, not two clashing families
    accounts_seen = {s.labels["account"] for s in info[0].samples}
    assert accounts_seen == {"one", "two"}
    for sample in info[0].samples:
        own, other = ("label_team", "label_env")[:: 1 if sample.labels["account"] == "one" else -1]
        assert own in sample.labels  # each account's own label is there
        assert sample.labels.get(other, "") == ""  # the other account's is empty (absent)


def test_a_poll_re_renders_only_its_own_area(
    sim: Simulator, world: World, clock: SimClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(sim, clock)
    app.poll_all()
    calls: list[str] = []
    stacks = app.pollers[("sim", "stacks")]
    original = stacks.collect

    def counting(snapshot: object, out: object) -> None:
        calls.append("stacks")
        original(snapshot, out)  # type: ignore[arg-type]

    monkeypatch.setattr(stacks, "collect", counting)
    app.poll(("sim", WP))  # at 10,000 stacks, re-rendering them would cost seconds
    sim.faults.http_status(503, times=None)
    app.poll(("sim", "stacks"))  # failed: its snapshot, hence its rendering, is unchanged
    assert calls == []
    sim.faults.clear()
    app.poll(("sim", "stacks"))
    assert calls == ["stacks"]


def test_exchange_outage_counts_as_error_not_as_a_refused_key(
    sim: Simulator, world: World, clock: SimClock
) -> None:
    app = make_app(sim, clock)
    sim.faults.http_status(503, operation="SpaceliftExporterGetToken", times=None)
    assert not app.poll(("sim", WP))
    exchanges = "spacelift_api_token_exchanges_total"
    assert value(app, exchanges, account="sim", outcome="error") == 1
    assert value(app, exchanges, account="sim", outcome="failure") == 0
    assert app.store.get(("sim", WP)).error_kind == "server_error"
    sim.faults.clear()
    assert app.poll(("sim", WP))  # recovers at the next poll: no refused-key backoff
    assert value(app, exchanges, account="sim", outcome="success") == 1
