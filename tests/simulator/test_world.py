"""The account model and run state machine, read directly and through the API."""

from __future__ import annotations

from exporter.simulator import SimClock, World, WorldConfig
from exporter.simulator.model import TERMINAL, stack_state_for

from .conftest import Client, make_world

SEARCH = """query PageStacks($input: SearchInput!) {
  searchStacks(input: $input) {
    edges { cursor node { id name state vendorConfig { __typename } } }
    pageInfo { endCursor hasNextPage }
  }
}"""
RUNS = """query Runs($id: ID!, $before: ID) {
  stack(id: $id) { runs(before: $before) { id state type } }
}"""
POOL = """query Pool($id: ID!) {
  workerPool(id: $id) {
    pendingRuns busyWorkers workersCount schedulableRunsCount
    workers { id busy status }
    searchSchedulableRuns(input: {first: 100}) {
      edges { node { stackId position run { id state } } }
      pageInfo { hasNextPage }
    }
  }
}"""


def _stack_on_pool(world: World, autodeploy: bool = False) -> str:
    return next(
        s.id
        for s in world.stacks.values()
        if s.worker_pool and s.autodeploy == autodeploy and not s.isDisabled
    )


def _fingerprint(world: World) -> list:
    return [
        (s.id, s.state, s.stateSetAt, s.worker_pool, [(r.id, r.state, r.updatedAt) for r in s.runs])
        for s in world.stacks.values()
    ] + [(k.id, k.name, k.lastUsedAt) for k in world.api_keys.values()]


def test_seeded_contents(world: World) -> None:
    assert {"root", "legacy"} <= set(world.spaces)
    other = [s for s in world.spaces.values() if s.id not in ("root", "legacy")]
    assert other and all(len(s.id.rsplit("-", 1)[1]) == 26 for s in other)
    assert all(s.parentSpace in world.spaces for s in other)
    assert len(world.stacks) == 50 and len(world.pools) == 3
    assert any(s.worker_pool is None for s in world.stacks.values())
    assert len({s.vendorConfig["__typename"] for s in world.stacks.values()}) >= 3
    keys = list(world.api_keys.values())
    assert any(
        b["role"].slug == "space-admin" and b["spaceID"] == "root"
        for k in keys
        for b in k.apiKeyRoleBindings
    )
    assert any(k.admin for k in keys)
    assert any(k.lastUsedAt is None for k in keys)
    now = world.now()
    assert any(k.expiresAt and now < k.expiresAt <= now + 7 * 86400 for k in keys)
    assert any(k.type == "OIDC" and k.id.startswith("oidc::") for k in keys)
    assert any(not k.apiKeyRoleBindings for k in keys)
    groups = {g.groupName for g in world.user_groups.values() if g.accessRules}
    assert any(set(k.teams) & groups for k in keys)
    assert {"space-reader", "space-writer", "space-admin", "worker-pool-controller"} <= {
        r.slug for r in world.roles.values() if r.isSystem
    }


def test_same_seed_same_world() -> None:
    def build() -> World:
        w = World(WorldConfig(seed=7, stacks=80, activity=20.0), SimClock(start=1_780_000_000.0))
        for _ in range(10):
            w.advance(60)
        return w

    a, b = build(), build()
    assert _fingerprint(a) == _fingerprint(b)
    assert any(r.state not in TERMINAL for r in a.runs.values()) or len(a.runs) > 100
    c = World(WorldConfig(seed=8, stacks=80, activity=20.0), SimClock(start=1_780_000_000.0))
    assert _fingerprint(c) != _fingerprint(a)


def test_activity_creates_runs_and_usage_grows() -> None:
    w = World(WorldConfig(seed=3, stacks=100, activity=10.0), SimClock(start=1_780_000_000.0))
    before = len(w.runs)
    minutes = w.usage.usedPrivateMinutes + w.usage.usedPublicMinutes
    w.advance(3600)
    assert len(w.runs) > before + 100
    assert w.usage.usedPrivateMinutes + w.usage.usedPublicMinutes > minutes
    assert any(r.driftDetection for r in w.runs.values())


def test_ten_thousand_stacks_build() -> None:
    # How fast it builds is measured by bench/, not asserted here (machines are noisy).
    w = World(WorldConfig(seed=1, stacks=10_000, activity=1.0), SimClock())
    assert len(w.stacks) == 10_000
    assert len({s.id for s in w.stacks.values()}) == 10_000
    assert all(len(s.runs) <= 60 for s in w.stacks.values())


def test_search_stacks_pages_all_stacks(client: Client, world: World) -> None:
    seen: list[str] = []
    after = None
    while True:
        data = client.q(SEARCH, {"input": {"first": 7, "after": after}})["data"]["searchStacks"]
        seen += [e["node"]["id"] for e in data["edges"]]
        if not data["pageInfo"]["hasNextPage"]:
            break
        after = data["pageInfo"]["endCursor"]
    assert len(seen) == len(set(seen)) == len(world.stacks)
    assert set(seen) == set(world.stacks)


def test_search_stacks_predicates(client: Client, world: World) -> None:
    world.lock_stack(next(iter(world.stacks)), "alice")
    pred = {"field": "locked", "constraint": {"booleanEquals": [True]}}
    data = client.q(SEARCH, {"input": {"first": 50, "predicates": [pred]}})["data"]
    assert [e["node"]["id"] for e in data["searchStacks"]["edges"]] == [next(iter(world.stacks))]
    pred = {"field": "state", "constraint": {"enumEquals": ["FAILED"]}}
    data = client.q(SEARCH, {"input": {"first": 50, "predicates": [pred]}})["data"]
    failed = {s.id for s in world.stacks.values() if s.state == "FAILED"}
    assert {e["node"]["state"] for e in data["searchStacks"]["edges"]} <= {"FAILED"}
    assert {e["node"]["id"] for e in data["searchStacks"]["edges"]} == failed
    pred["exclude"] = True
    data = client.q(SEARCH, {"input": {"first": 50, "predicates": [pred]}})["data"]
    assert len(data["searchStacks"]["edges"]) == len(world.stacks) - len(failed)


def test_stack_runs_paging_with_before(client: Client, world: World, sim) -> None:
    world.config.runs_page_size = 4
    sid = _stack_on_pool(world, autodeploy=True)
    for _ in range(9):
        run = world.trigger_run(sid, "TASK")
        world.finish_run(run.id)
    expected = [r.id for r in world.stacks[sid].runs if r.type == "TASK"]
    tasks = RUNS.replace("runs(before", "tasks(before")
    got, before = [], None
    while True:
        page = client.q(tasks, {"id": sid, "before": before})["data"]["stack"]["tasks"]
        if not page:
            break
        assert len(page) <= 4
        got += [r["id"] for r in page]
        before = page[-1]["id"]
    assert got == expected and len(got) >= 9


def test_tracked_run_moves_to_finished(client: Client, world: World) -> None:
    sid = _stack_on_pool(world, autodeploy=False)
    run = world.trigger_run(sid)
    assert run.state == "QUEUED" and world.stacks[sid].state == "READY"
    assert run.commit["timestamp"] < run.createdAt
    for _ in range(60):
        world.advance(10)
        if run.state == "UNCONFIRMED" or run.terminal:
            break
    if run.state == "UNCONFIRMED":  # planned with changes; a human confirms
        assert world.stacks[sid].state == "UNCONFIRMED"
        world.confirm(run.id)
        for _ in range(100):
            world.advance(10)
            if run.terminal:
                break
    assert run.state == "FINISHED"
    assert world.stacks[sid].state == "FINISHED"
    states = [h["state"] for h in run.history]
    assert states[:5] == ["QUEUED", "READY", "PREPARING", "INITIALIZING", "PLANNING"]
    assert run.history[-1]["terminal"] and not any(h["terminal"] for h in run.history[:-1])
    assert all(w.busy is False for w in world.pools[world.stacks[sid].worker_pool].workers)
    body = client.q(
        "query R($id: ID!) { stack(id: $id) { state stateSetAt runs { id state } } }", {"id": sid}
    )
    assert body["data"]["stack"]["state"] == "FINISHED"
    assert body["data"]["stack"]["runs"][0]["id"] == run.id


def test_second_tracked_run_waits_for_the_stack_lock(client: Client, world: World) -> None:
    sid = _stack_on_pool(world)
    first = world.trigger_run(sid)
    second = world.trigger_run(sid)
    world.advance(30)
    assert first.state not in ("QUEUED", "READY")  # a worker is free: it runs
    assert second.state == "QUEUED"  # held back by the stack's run lock
    q = "query B($id: ID!) { stack(id: $id) { blocked blocker { id } state } }"
    stack = client.q(q, {"id": sid})["data"]["stack"]
    assert stack["blocked"] is True and stack["blocker"] == {"id": first.id}
    world.advance(600)
    assert second.state == "QUEUED" or first.terminal
    world.finish_run(first.id)
    world.advance(15)
    assert second.state not in ("QUEUED", "READY")
    assert world.stacks[sid].state == stack_state_for(second.state)
    # proposed runs do not take the lock
    third = world.trigger_run(sid, "PROPOSED")
    world.advance(15)
    assert third.state != "QUEUED"


def test_needs_approval_waits_in_queued(world: World) -> None:
    sid = _stack_on_pool(world)
    run = world.trigger_run(sid, "PROPOSED", needs_approval=True)
    world.advance(120)
    assert run.state == "QUEUED"
    world.approve(run.id)
    world.advance(15)
    assert run.state != "QUEUED"


def test_run_waits_for_workers_of_an_empty_pool(client: Client, world: World) -> None:
    sid = _stack_on_pool(world)
    pool_id = world.stacks[sid].worker_pool
    world.set_workers(pool_id, 0)
    run = world.trigger_run(sid, "PROPOSED")
    world.advance(60)
    assert run.state == "READY"
    pool = client.q(POOL, {"id": pool_id})["data"]["workerPool"]
    assert pool["pendingRuns"] == 1 and pool["workersCount"] == 0
    assert pool["schedulableRunsCount"] == 1
    assert world.pools[pool_id].pendingRuns == 1  # the same counters, read directly
    nodes = [e["node"] for e in pool["searchSchedulableRuns"]["edges"]]
    assert nodes == [{"stackId": sid, "position": 1, "run": {"id": run.id, "state": "READY"}}]

    world.set_workers(pool_id, 2)
    assert run.state == "PREPARING"
    pool = client.q(POOL, {"id": pool_id})["data"]["workerPool"]
    assert pool["pendingRuns"] == 0 and pool["busyWorkers"] == 1 and pool["workersCount"] == 2
    assert pool["schedulableRunsCount"] == 1
    assert sorted(w["status"] for w in pool["workers"]) == ["BUSY", "IDLE"]
    assert pool["searchSchedulableRuns"]["edges"][0]["node"]["run"]["state"] == "PREPARING"
    world.finish_run(run.id)
    pool = client.q(POOL, {"id": pool_id})["data"]["workerPool"]
    assert pool["busyWorkers"] == 0 and pool["schedulableRunsCount"] == 0


def test_drained_pool_keeps_runs_pending(world: World) -> None:
    sid = _stack_on_pool(world)
    pool_id = world.stacks[sid].worker_pool
    world.set_drained(pool_id, True)
    run = world.trigger_run(sid, "PROPOSED")
    world.advance(60)
    assert run.state == "READY"
    assert all(w.status == "DRAINED" for w in world.pools[pool_id].workers)
    world.set_drained(pool_id, False)
    assert run.state == "PREPARING"


def test_priority_tracked_before_proposed_before_drift(world: World) -> None:
    sid = _stack_on_pool(world)
    pool_id = world.stacks[sid].worker_pool
    others = [s.id for s in world.stacks.values() if s.worker_pool == pool_id and s.id != sid]
    world.set_workers(pool_id, 0)
    drift = world.trigger_run(sid, "PROPOSED", drift_detection=True)
    proposed = world.trigger_run(others[0], "PROPOSED")
    tracked = world.trigger_run(others[1], "TRACKED")
    world.advance(30)
    _, pending = world.pool_runs(pool_id)
    assert [r.id for r in pending] == [tracked.id, proposed.id, drift.id]
    world.set_workers(pool_id, 1)
    assert tracked.state == "PREPARING" and proposed.state == "READY"


def test_public_pool_and_account_fields(client: Client, world: World) -> None:
    sid = next(s.id for s in world.stacks.values() if s.worker_pool is None)
    world.public_pool.parallelism = 0
    run = world.trigger_run(sid, "PROPOSED")
    world.advance(30)
    q = """query A { publicWorkerPool { parallelism busyWorkers pendingRuns schedulableRunsCount
      usersCount searchSchedulableRuns(input: {first: 10}) { edges { node { run { id } } } } }
      usage { billingPeriodStart billingPeriodEnd usedPrivateMinutes usedPublicMinutes usedSeats }
      seats { user { limit inUse } apiKey { limit inUse } }
      metrics { stacksCountByState { value labels } }
      roles { slug isSystem roleBindingsCount }
      apiKeys { id type admin lastUsedAt expiresAt secret
        apiKeyRoleBindings { spaceID role { slug } } }
      managedUsers { id status } managedUserGroups { groupName memberCount }
      id name tier }"""
    data = client.q(q, op="A")["data"]
    pp = data["publicWorkerPool"]
    assert pp["pendingRuns"] == 1 and pp["schedulableRunsCount"] == 1
    assert world.public_pool.pendingRuns == 1 and world.public_pool.busyWorkers == 0
    assert pp["searchSchedulableRuns"]["edges"][0]["node"]["run"]["id"] == run.id
    assert data["usage"]["billingPeriodStart"] < world.now() < data["usage"]["billingPeriodEnd"]
    counts = {d["labels"][0]: d["value"] for d in data["metrics"]["stacksCountByState"]}
    assert sum(counts.values()) == len(world.stacks)
    assert all(k["secret"] is None for k in data["apiKeys"])
    admin = next(r for r in data["roles"] if r["slug"] == "space-admin")
    assert admin["roleBindingsCount"] >= 3  # keys, groups and stacks all count
    assert client.q('query K { apiKey(id: "nope") { id } }')["errors"][0]["message"] == (
        "could not find api key"
    )
    assert client.q('query R { runStack(runId: "nope") { id } }')["errors"][0]["message"] == (
        "not found"
    )


def test_mutation_helpers_keep_views_consistent(world: World) -> None:
    key = world.add_api_key("new-key", description="x")
    assert key.lastUsedAt is None
    world.advance(5)
    world.use_api_key(key.id)
    assert key.lastUsedAt == world.now()
    b = world.add_api_key_binding(key.id, "space-reader", "root")
    assert b["apiKeyID"] == key.id and b["role"].slug == "space-reader"
    world.delete_api_key(key.id)
    assert key.id not in world.api_keys
    space = world.add_space("Team X")
    assert space.parentSpace == "root" and space.id.startswith("team-x-")
    st = world.add_stack("my-new-stack", labels=["new"], worker_pool=None)
    assert st.state == "NONE" and world.stacks["my-new-stack"] is st
    run = world.trigger_run(st.id)
    world.delete_stack(st.id)
    assert st.id not in world.stacks and run.id not in world.runs


def test_vendor_union_resolves(client: Client) -> None:
    q = """query V { stacks { id vendorConfig { __typename
      ... on StackConfigVendorTerraform { version useSmartSanitization } } workerPool { id } } }"""
    stacks = client.q(q)["data"]["stacks"]
    assert len(stacks) == 50
    assert any(s["vendorConfig"]["__typename"] == "StackConfigVendorTerraform" for s in stacks)


def test_same_seed_same_world_via_api(clock: SimClock) -> None:
    a = make_world(clock, seed=5)
    b = make_world(SimClock(start=clock.now()), seed=5)
    assert _fingerprint(a) == _fingerprint(b)


def test_stack_state_mapping() -> None:
    assert stack_state_for("QUEUED") == "READY"
    assert stack_state_for("CANCELED") == "DISCARDED"
    assert stack_state_for("PENDING_REVIEW") == "UNCONFIRMED"
    assert stack_state_for("APPLYING") == "APPLYING"


def test_failures_and_discard(clock: SimClock) -> None:
    w = make_world(clock, failure_rate=1.0)
    sid = _stack_on_pool(w)
    run = w.trigger_run(sid)
    w.advance(600)
    assert run.state == "FAILED" and w.stacks[sid].state == "FAILED"
    assert w.stacks[sid].stateSetAt == run.updatedAt
    w2 = make_world(SimClock(start=clock.now()), failure_rate=0.0)
    run = w2.trigger_run(sid, "PROPOSED")
    w2.discard(run.id)
    assert run.state == "DISCARDED" and run.history[-1]["terminal"]


def test_dead_pool_keeps_demand_visible(world: World) -> None:
    pool_id = next(iter(world.pools))
    stacks = [s.id for s in world.stacks.values() if s.worker_pool == pool_id][:3]
    world.set_workers(pool_id, 0)
    runs = [world.trigger_run(sid, "PROPOSED") for sid in stacks]
    world.advance(3600)
    assert all(r.state == "READY" for r in runs)
    assert world.pools[pool_id].pendingRuns == len(stacks)
    assert world.pools[pool_id].busyWorkers == 0 == world.pools[pool_id].workersCount


def test_demo_simulator_serves_scenarios() -> None:
    from exporter.simulator.demo import start_demo_simulator

    sim = start_demo_simulator(stacks=40, seed=2)
    try:
        w = sim.world
        states = {s.state for s in w.stacks.values()}
        assert {"FAILED", "UNCONFIRMED"} <= states
        assert any(s.lockedBy for s in w.stacks.values())
        assert any(s.isDisabled for s in w.stacks.values())
        assert any(s.isDrifted for s in w.stacks.values())
        assert any(p.pendingRuns > 0 and len(p.workers) == 1 for p in w.pools.values())
        c = Client(sim)
        c.login()
        assert c.q("query V { viewer { id } }")["data"]["viewer"]
    finally:
        sim.stop()


def test_search_stacks_paging_survives_deletes_and_orders(client: Client, world: World) -> None:
    def page(after, order):
        inp = {"first": 10, "after": after, "orderBy": order}
        return client.q(SEARCH, {"input": inp})["data"]["searchStacks"]

    order = {"field": "createdAt", "direction": "DESC"}
    first = page(None, order)
    ids = [e["node"]["id"] for e in first["edges"]]
    created = [world.stacks[i].createdAt for i in ids]
    assert created == sorted(created, reverse=True)
    world.delete_stack(ids[-1])  # the cursor's own stack disappears
    rest, after = [], first["pageInfo"]["endCursor"]
    while after:
        data = page(after, order)
        rest += [e["node"]["id"] for e in data["edges"]]
        after = data["pageInfo"]["endCursor"] if data["pageInfo"]["hasNextPage"] else None
    assert len(ids) - 1 + len(rest) == len(world.stacks)
    assert not set(ids) & set(rest)


def test_proposed_runs_tasks_and_single_run_lookups(client: Client, world: World) -> None:
    sid = _stack_on_pool(world)
    proposed = world.trigger_run(sid, "PROPOSED")
    world.finish_run(proposed.id)
    task = world.trigger_run(sid, "TASK")
    q = """query L($id: ID!, $run: ID!) { stack(id: $id) {
      proposedRuns { id type } tasks { id type } runs { id type } run(id: $run) { id stackId }
    } runStack(runId: $run) { id } }"""
    data = client.q(q, {"id": sid, "run": task.id})["data"]
    st = data["stack"]
    assert st["proposedRuns"][0] == {"id": proposed.id, "type": "PROPOSED"}
    assert st["tasks"][0] == {"id": task.id, "type": "TASK"}
    assert task.id not in [r["id"] for r in st["runs"]]  # tasks are in tasks() only
    assert all(r["type"] != "PROPOSED" for r in st["runs"])
    assert st["run"] == {"id": task.id, "stackId": sid}
    assert data["runStack"] == {"id": sid}
    assert client.q(RUNS, {"id": sid, "before": "01NOTARUNID0000000000000000"})["data"][
        "stack"
    ] == {"runs": []}


def test_newer_push_stops_pending_proposed_run(world: World) -> None:
    sid = _stack_on_pool(world)
    world.set_workers(world.stacks[sid].worker_pool, 0)
    old = world.trigger_run(sid, "PROPOSED")
    new = world.trigger_run(sid, "PROPOSED")
    assert old.state == "STOPPED" and new.state == "QUEUED"
    assert old.history[-1]["note"] == "superseded by a newer push"
