"""The access area over real HTTP against the simulator: /metrics equals the simulator's truth."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import pytest

from exporter.app import App
from exporter.areas import access
from exporter.simulator import SimClock, Simulator, World
from exporter.web import landing_page
from tests.conftest import make_app, samples, value

KEY = ("sim", "access")
ACCESS_NAMES = {m.name for m in access.METRICS}
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
SECRET = "sk-live-DO-NOT-LEAK-4f1c9a7e"
LEVEL_ROLE = {"READ": "space-reader", "WRITE": "space-writer", "ADMIN": "space-admin"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _s(name: str, value: float, **labels: str) -> tuple[tuple[str, frozenset[Any]], float]:
    return (name, frozenset({"account": "sim", **labels}.items())), float(value)


def truth(world: World, per_key: bool = True) -> Samples:
    """Every access sample /metrics should hold, computed from the simulator's world."""
    out: Samples = {}

    def add(name: str, v: float, **labels: str) -> None:
        k, v = _s(name, v, **labels)
        out[k] = v

    flag = {True: "true", False: "false"}
    keys = [k for k in world.api_keys.values() if not k.deleted]
    group_access = {
        g.groupName: {
            (LEVEL_ROLE[r["spaceAccessLevel"]], r["space"])
            for r in g.accessRules
            if r["spaceAccessLevel"] in LEVEL_ROLE
        }
        for g in world.user_groups.values()
    }
    kinds = Counter((k.type, k.admin) for k in keys)
    for key_type in ("SECRET", "OIDC"):
        for admin in (False, True):
            add(
                "spacelift_api_keys", kinds[(key_type, admin)], key_type=key_type, admin=flag[admin]
            )
    bindings: Counter[tuple[str, str, str]] = Counter(
        {("space-admin", "root", "direct"): 0, ("space-admin", "root", "idp_group"): 0}
    )
    for k in keys:
        direct = [(b["role"].slug, b["spaceID"], "direct") for b in k.apiKeyRoleBindings]
        inherited = {(r, s, "idp_group") for t in k.teams for r, s in group_access.get(t, ())}
        bindings.update(direct)
        bindings.update(inherited)
        if per_key:
            add(
                "spacelift_api_key_info",
                1,
                api_key_id=k.id,
                api_key_name=k.name,
                key_type=k.type,
                admin=flag[k.admin],
                machine_user=flag[k.isMachineUser],
            )
            roles = {(r, sp) for r, sp, _ in direct} | {(r, sp) for r, sp, _ in inherited}
            add("spacelift_api_key_roles", len(roles), api_key_id=k.id)
            root_admin = ("space-admin", "root") in roles
            add("spacelift_api_key_root_admin", int(root_admin), api_key_id=k.id)
            add("spacelift_api_key_created_timestamp_seconds", k.createdAt, api_key_id=k.id)
            if k.lastUsedAt is not None:
                add("spacelift_api_key_last_used_timestamp_seconds", k.lastUsedAt, api_key_id=k.id)
            if k.expiresAt is not None:
                add("spacelift_api_key_expiry_timestamp_seconds", k.expiresAt, api_key_id=k.id)
    for (role, space, via), n in bindings.items():
        add("spacelift_api_key_role_bindings", n, role=role, space=space, via=via)

    systems = Counter(r.isSystem for r in world.roles.values())
    add("spacelift_roles", systems[True], system="true")
    add("spacelift_roles", systems[False], system="false")
    for r in world.roles.values():
        n = sum(b["roleID"] == r.id for k in world.api_keys.values() for b in k.apiKeyRoleBindings)
        for lst in (world.user_bindings, world.group_bindings, world.stack_bindings):
            n += sum(b["roleID"] in (r.id, r.slug) for b in lst)
        add("spacelift_role_bindings", n, role=r.slug)

    statuses = Counter(u.status for u in world.users.values())
    for status in ("QUEUED", "PENDING", "EXPIRED", "ACTIVE", "INACTIVE"):
        add("spacelift_users", statuses[status], status=status)
    add("spacelift_user_groups", len(world.user_groups))
    for kind, seat in (("user", world.seats.user), ("api_key", world.seats.apiKey)):
        add("spacelift_seats_in_use", seat["inUse"], seat_kind=kind)
        if seat["limit"] >= 0:
            add("spacelift_seats_limit", seat["limit"], seat_kind=kind)
    return out


def v(s: Samples, name: str, **labels: str) -> float | None:
    return s.get(_s(name, 0, **labels)[0])


def served(app: App, accept: str | None = None) -> Samples:
    return {k: v for k, v in samples(app, accept).items() if k[0] in ACCESS_NAMES}


def access_app(sim: Simulator, clock: SimClock, **access_options: Any) -> App:
    areas: dict[str, Any] = {"access": access_options} if access_options else {}
    return make_app(sim, clock, areas=areas)


def health(app: App, name: str, area: str = "access") -> float | None:
    return value(app, name, account="sim", area=area)


def test_values_equal_the_simulator_truth(sim: Simulator, world: World, clock: SimClock) -> None:
    app = access_app(sim, clock)
    sim.reset_counts()
    assert app.poll(KEY)
    assert served(app) == truth(world)
    # The seeded world covers what matters: a root space admin, a key holding space-admin on
    # root only through its IdP group, an OIDC key, a legacy admin key, unused and expiring keys.
    s = served(app)
    idp_admin = {"role": "space-admin", "space": "root", "via": "idp_group"}
    assert v(s, "spacelift_api_key_role_bindings", **idp_admin)
    assert v(s, "spacelift_api_keys", key_type="OIDC", admin="false")
    assert v(s, "spacelift_api_keys", key_type="SECRET", admin="true")
    assert any(k[0] == "spacelift_api_key_expiry_timestamp_seconds" for k in s)
    # one request per document, nothing else (the token exchange aside)
    assert {op: n for op, n in sim.requests.items() if op in access.SPEC.documents} == {
        op: 1 for op in access.SPEC.documents
    }
    assert health(app, "spacelift_poll_success") == 1
    assert health(app, "spacelift_poll_permission_denied") == 0


def test_changes_between_polls_show_after_the_next_poll(
    sim: Simulator, world: World, clock: SimClock
) -> None:
    app = access_app(sim, clock)
    assert app.poll(KEY)
    by_name = {k.name: k for k in world.api_keys.values()}
    unbound, doomed, unused = (
        by_name["no-bindings"],
        by_name["expiring-soon"],
        by_name["never-used"],
    )
    assert value(app, "spacelift_api_key_roles", account="sim", api_key_id=unbound.id) == 0

    clock.advance(3600)
    world.add_api_key_binding(unbound.id, "space-admin", "root")
    world.delete_api_key(doomed.id)
    world.use_api_key(unused.id)
    assert served(app) != truth(world)  # nothing moves before the next poll

    assert app.poll(KEY)
    assert served(app) == truth(world)
    assert value(app, "spacelift_api_key_roles", account="sim", api_key_id=unbound.id) == 1
    assert value(app, "spacelift_api_key_root_admin", account="sim", api_key_id=unbound.id) == 1
    assert not any(dict(k[1]).get("api_key_id") == doomed.id for k in served(app))
    assert value(
        app, "spacelift_api_key_last_used_timestamp_seconds", account="sim", api_key_id=unused.id
    ) == int(clock.now())


def test_per_key_switch_off(sim: Simulator, world: World, clock: SimClock) -> None:
    app = access_app(sim, clock, per_key=False)
    assert app.poll(KEY)
    assert served(app) == truth(world, per_key=False)
    assert not {k[0] for k in served(app)} & {m.name for m in access.PER_KEY_METRICS}


def test_non_admin_key_is_a_permission_gap_and_other_areas_serve(
    sim: Simulator, world: World, clock: SimClock
) -> None:
    sim.admin = False
    app = access_app(sim, clock)
    app.poll_all()
    assert health(app, "spacelift_poll_success", "worker_pools") == 1
    pool = next(iter(world.pools.values()))
    assert value(
        app,
        "spacelift_worker_pool_workers",
        account="sim",
        worker_pool_id=pool.id,
        worker_pool_name=pool.name,
        space=pool.space,
    ) == len(pool.workers)
    assert health(app, "spacelift_poll_success") == 0
    assert health(app, "spacelift_poll_permission_denied") == 1
    assert value(app, "spacelift_up", account="sim") == 1  # not an outage
    assert served(app) == {}
    assert app.store.get(KEY).error_kind == "permission"
    assert app.ready()  # a refusal is an answer that stands


def unavailable(app: App) -> dict[tuple[str, str], float]:
    return {
        (dict(ls)["field"], dict(ls)["reason"]): v
        for (name, ls), v in samples(app).items()
        if name == "spacelift_api_field_unavailable" and dict(ls)["area"] == "access"
    }


def test_refused_seats_cost_only_the_seat_series_and_heal_at_the_reprobe(
    sim: Simulator, world: World, clock: SimClock
) -> None:
    sim.gate_fields({"seats"})  # "not available for machine sessions"
    app = access_app(sim, clock)
    assert app.poll(KEY)  # a field left out is not a failed poll
    want = {k: v for k, v in truth(world).items() if not k[0].startswith("spacelift_seats_")}
    assert served(app) == want
    assert unavailable(app) == {("Query.seats", "refused"): 1}
    assert "Query.seats" in landing_page(app)
    sim.reset_counts()
    assert app.poll(KEY)
    assert sim.requests["SpaceliftExporterAccessSeats"] == 0  # not asked again before the hour

    sim.gate_fields(set())  # a new key, or the gate lifted
    clock.advance(3601)
    assert app.poll(KEY)
    assert served(app) == truth(world)
    assert unavailable(app) == {}
    assert "Query.seats" not in landing_page(app)


def test_a_failing_document_keeps_the_last_good_snapshot(
    sim: Simulator, world: World, clock: SimClock
) -> None:
    app = access_app(sim, clock)
    assert app.poll(KEY)
    before = served(app)
    world.add_api_key("new-key")
    sim.faults.field_error("roles", "internal server error")
    assert not app.poll(KEY)
    # The other documents' fresh data is served; the failed one keeps its last good data.
    now = truth(world)
    want = {k: v for k, v in now.items() if not k[0].startswith("spacelift_role")}
    want |= {k: v for k, v in before.items() if k[0].startswith("spacelift_role")}
    assert served(app) == want
    assert served(app) != before
    assert health(app, "spacelift_poll_permission_denied") == 0
    assert health(app, "spacelift_last_successful_poll_timestamp_seconds") == clock.now()
    assert app.store.get(KEY).error_kind == "graphql_error"
    sim.faults.clear()
    assert app.poll(KEY)
    assert served(app) == truth(world)


def _add_secret(answer: dict[str, Any]) -> dict[str, Any]:
    for key in (answer.get("data") or {}).get("apiKeys") or []:
        key["secret"] = SECRET
    return answer


def _break_with_secret(answer: dict[str, Any]) -> dict[str, Any]:
    keys = answer["data"]["apiKeys"]
    keys[0]["secret"] = SECRET
    keys[0]["name"] = {"secret": SECRET}  # wrong shape: the parser must say where, not what
    keys[1]["createdAt"] = SECRET
    return answer


def _exposed(app: App, caplog: pytest.LogCaptureFixture) -> list[str]:
    texts = [
        app.exposition.render(None)[0].decode(),
        app.exposition.render(OPENMETRICS)[0].decode(),
        landing_page(app),
        str(app.store.get(KEY).error),
        *(r.getMessage() for r in caplog.records),
        *(str(vars(r)) for r in caplog.records),  # structured fields (extra=) included
    ]
    return [t for t in texts if SECRET in t]


def test_a_secret_in_an_answer_never_reaches_metrics_logs_or_errors(
    sim: Simulator, world: World, clock: SimClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = access_app(sim, clock)
    op = "SpaceliftExporterAccessIdentities"

    sim.faults.rewrite(_add_secret, operation=op, times=1)
    assert app.poll(KEY)
    assert sim.requests[op] == 1 and not sim.faults._items  # the rewrite was applied
    assert served(app) == truth(world)
    assert _exposed(app, caplog) == []

    sim.faults.rewrite(_break_with_secret, operation=op, times=1)
    assert not app.poll(KEY)
    assert app.store.get(KEY).error_kind == "malformed"
    assert "apiKeys[0].name" in str(app.store.get(KEY).error)
    assert _exposed(app, caplog) == []


def test_a_role_held_directly_and_through_a_group_counts_once(
    sim: Simulator, world: World, clock: SimClock
) -> None:
    # team-key inherits space-admin on root from the platform-admins group
    key = next(k for k in world.api_keys.values() if k.name == "team-key")
    app = access_app(sim, clock)
    assert app.poll(KEY)
    before = value(app, "spacelift_api_key_roles", account="sim", api_key_id=key.id)
    assert value(app, "spacelift_api_key_root_admin", account="sim", api_key_id=key.id) == 1
    world.add_api_key_binding(key.id, "space-admin", "root")  # now also held directly
    assert app.poll(KEY)
    assert value(app, "spacelift_api_key_roles", account="sim", api_key_id=key.id) == before
    # the binding counts do show both ways it is held
    direct = value(
        app, "spacelift_api_key_role_bindings", account="sim", role="space-admin", space="root",
        via="direct",
    )  # fmt: skip
    assert direct is not None and direct >= 1
