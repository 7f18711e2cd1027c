"""The stacks area against the simulator over real HTTP, and its parsers on hand-built data."""

from __future__ import annotations

import collections
import math
from collections.abc import Iterator
from typing import Any

import pytest

from exporter.areas.stacks import label_name, label_value, parse_page
from exporter.errors import MalformedResponseError
from exporter.simulator import SimClock, Simulator, World, WorldConfig
from tests._runs_support import lab, make_app, run_to_end, scrape

START = 1_780_000_000.0


@pytest.fixture
def sim() -> Iterator[Simulator]:
    world = World(WorldConfig(seed=11, stacks=120, activity=0.0), SimClock(start=START))
    with Simulator(world) as s:
        yield s


def truth(world: Any) -> dict[str, dict[frozenset[tuple[str, str]], float]]:
    out: dict[str, dict[frozenset[tuple[str, str]], float]] = collections.defaultdict(dict)
    by_state: collections.Counter[tuple[str, str]] = collections.Counter()
    flags = {sid: [0, 0, 0] for sid in world.spaces}
    for st in world.stacks.values():
        by_state[(st.space, st.state)] += 1
        f = flags.setdefault(st.space, [0, 0, 0])
        f[0] += st.lockedBy is not None
        f[1] += st.isDisabled
        f[2] += st.isDrifted
        vendor = st.vendorConfig["__typename"].removeprefix("StackConfigVendor")
        info = {
            "stack_id": st.id,
            "stack_name": st.name,
            "space": st.space,
            "vendor": vendor,
            "repository": st.repository,
            "branch": st.branch,
        }
        if st.worker_pool:
            info["worker_pool_id"] = st.worker_pool
        out["spacelift_stack_info"][lab(**info)] = 1
        out["spacelift_stack_state"][lab(stack_id=st.id, space=st.space, state=st.state)] = 1
        if st.stateSetAt is not None:
            out["spacelift_stack_state_since_timestamp_seconds"][lab(stack_id=st.id)] = (
                st.stateSetAt
            )
        out["spacelift_stack_locked"][lab(stack_id=st.id)] = int(st.lockedBy is not None)
        out["spacelift_stack_disabled"][lab(stack_id=st.id)] = int(st.isDisabled)
        out["spacelift_stack_drifted"][lab(stack_id=st.id)] = int(st.isDrifted)
    for (space, state), n in by_state.items():
        out["spacelift_stacks"][lab(space=space, state=state)] = n
    for space, (locked, disabled, drifted) in flags.items():
        out["spacelift_stacks_locked"][lab(space=space)] = locked
        out["spacelift_stacks_disabled"][lab(space=space)] = disabled
        out["spacelift_stacks_drifted"][lab(space=space)] = drifted
    out["spacelift_spaces"][lab()] = len(world.spaces)
    return out


def check(app: Any, world: Any) -> None:
    got = scrape(app)
    for name, want in truth(world).items():
        assert got.get(name, {}) == want, name


def test_every_stack_metric_equals_the_world(sim: Simulator) -> None:
    world = sim.world
    app = make_app(sim, areas=("stacks",))
    sim.reset_counts()
    assert app.poll_all()
    assert sim.requests["SpaceliftExporterStacks"] == math.ceil(len(world.stacks) / 50)
    check(app, world)


def test_changes_show_at_the_next_poll(sim: Simulator) -> None:
    world = sim.world
    app = make_app(sim, areas=("stacks",))
    assert app.poll_all()
    ids = sorted(world.stacks)
    world.lock_stack(ids[0], "alice")
    world.stacks[ids[1]].isDisabled = True
    world.stacks[ids[2]].isDrifted = True
    run = world.trigger_run(ids[3], "TRACKED")
    world.advance(40)
    assert app.poll_all()
    check(app, world)
    run_to_end(world, run)
    world.lock_stack(ids[0], None)
    assert app.poll_all()
    check(app, world)


def test_deleted_stack_series_disappear(sim: Simulator) -> None:
    world = sim.world
    app = make_app(sim, areas=("stacks",))
    assert app.poll_all()
    gone = sorted(world.stacks)[5]
    assert any(dict(k)["stack_id"] == gone for k in scrape(app)["spacelift_stack_info"])
    world.delete_stack(gone)
    assert app.poll_all()
    m = scrape(app)
    for name in ("spacelift_stack_info", "spacelift_stack_state", "spacelift_stack_locked"):
        assert not any(dict(k)["stack_id"] == gone for k in m[name]), name
    check(app, world)


def test_new_space_appears_with_zero_counts_then_its_stacks(sim: Simulator) -> None:
    world = sim.world
    app = make_app(sim, areas=("stacks",))
    assert app.poll_all()
    before = scrape(app)["spacelift_spaces"][lab()]
    space = world.add_space("newteam")
    assert app.poll_all()
    m = scrape(app)
    assert m["spacelift_spaces"][lab()] == before + 1
    assert m["spacelift_stacks_locked"][lab(space=space.id)] == 0
    world.add_stack("newteam-dns", space=space.id)
    assert app.poll_all()
    assert scrape(app)["spacelift_stacks"][lab(space=space.id, state="NONE")] == 1
    check(app, world)


def test_per_stack_series_can_be_switched_off(sim: Simulator) -> None:
    app = make_app(sim, areas=("stacks",), options={"stacks": {"per_stack": False}})
    assert app.poll_all()
    m = scrape(app)
    assert "spacelift_stack_info" not in m and "spacelift_stack_state" not in m
    assert sum(m["spacelift_stacks"].values()) == len(sim.world.stacks)


def test_stack_label_allow_list_adds_labels_to_info(sim: Simulator) -> None:
    world = sim.world
    app = make_app(
        sim, areas=("stacks",), options={"stacks": {"stack_labels": ["team", "critical"]}}
    )
    assert app.poll_all()
    info = {dict(k)["stack_id"]: dict(k) for k in scrape(app)["spacelift_stack_info"]}
    for sid, st in world.stacks.items():
        team = next(lb.split(":", 1)[1] for lb in st.labels if lb.startswith("team:"))
        assert info[sid]["label_team"] == team
        assert info[sid].get("label_critical", "") == ("true" if "critical" in st.labels else "")


def test_label_mapping() -> None:
    assert label_name("team") == "label_team"
    assert label_name("cost-center") == "label_cost_center"
    assert label_value(["team:pay", "prod"], "team") == "pay"
    assert label_value(["team:pay", "prod"], "prod") == "true"
    assert label_value(["team:pay"], "env") == ""


def test_parse_page_on_a_recorded_answer() -> None:
    data = {
        "spaces": [{"id": "root"}, {"id": "dev-01"}],
        "searchStacks": {
            "edges": [
                {
                    "node": {
                        "id": "net",
                        "name": "Network",
                        "space": "dev-01",
                        "state": "FAILED",
                        "stateSetAt": 1700000000,
                        "lockedBy": "alice",
                        "isDisabled": False,
                        "isDrifted": True,
                        "labels": ["team:net"],
                        "repository": "infra",
                        "branch": "main",
                        "vendorConfig": {"__typename": "StackConfigVendorOpenTofu"},
                        "workerPool": None,
                    }
                }
            ],
            "pageInfo": {"endCursor": "abc", "hasNextPage": True},
        },
    }
    spaces, stacks, after = parse_page(data)
    assert spaces == ["root", "dev-01"] and after == "abc"
    (st,) = stacks
    assert (st.vendor, st.worker_pool_id, st.locked, st.drifted) == ("OpenTofu", "", True, True)
    data["searchStacks"]["edges"][0]["node"]["state"] = None  # type: ignore[index]
    with pytest.raises(MalformedResponseError):
        parse_page(data)
