"""Stacks: how many stacks per space and state, and (switchable) one set of series per stack.

Read through ``searchStacks`` pages of 50 (the root ``stacks`` list is closed to API keys and
expensive for Spacelift), with the space list folded into the first page's request: a poll of
S stacks costs ``ceil(S/50)`` requests (at least one).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from exporter.areas import parse as p
from exporter.areas.base import AreaContext, AreaSpec, FamilyBuilder, MetricDef, OptionSpec, gauge

if TYPE_CHECKING:
    from exporter.client import SpaceliftClient

PAGE = 50

DOCUMENT = """
query SpaceliftExporterStacks($input: SearchInput!, $withSpaces: Boolean!) {
  spaces @include(if: $withSpaces) { id }
  searchStacks(input: $input) {
    edges {
      node {
        id
        name
        space
        state
        stateSetAt
        lockedBy
        isDisabled
        isDrifted
        labels
        repository
        branch
        vendorConfig { __typename }
        workerPool { id }
      }
    }
    pageInfo { endCursor hasNextPage }
  }
}
"""

STACKS = gauge(
    "spacelift_stacks", "Stacks in each space and state, at the last poll.", "space", "state"
)
LOCKED = gauge(
    "spacelift_stacks_locked", "Stacks locked for exclusive use, at the last poll.", "space"
)
DISABLED = gauge("spacelift_stacks_disabled", "Disabled stacks, at the last poll.", "space")
DRIFTED = gauge(
    "spacelift_stacks_drifted",
    "Stacks whose last drift detection found drift, at the last poll.",
    "space",
)
SPACES = gauge("spacelift_spaces", "Spaces the API key can read, at the last poll.")
INFO_LABELS = (
    "stack_id",
    "stack_name",
    "space",
    "vendor",
    "worker_pool_id",
    "repository",
    "branch",
)
STACK_INFO = gauge(
    "spacelift_stack_info",
    "A stack's descriptive labels (value 1; worker_pool_id is empty for the public pool), "
    "at the last poll.",
    *INFO_LABELS,
)
STACK_STATE = gauge(
    "spacelift_stack_state",
    "A stack's current state (value 1, one series per stack), at the last poll.",
    "stack_id",
    "space",
    "state",
)
STATE_SINCE = gauge(
    "spacelift_stack_state_since_timestamp_seconds",
    "When the stack entered its current state (Unix time), at the last poll.",
    "stack_id",
)
STACK_LOCKED = gauge(
    "spacelift_stack_locked", "1 if the stack is locked, at the last poll.", "stack_id"
)
STACK_DISABLED = gauge(
    "spacelift_stack_disabled", "1 if the stack is disabled, at the last poll.", "stack_id"
)
STACK_DRIFTED = gauge(
    "spacelift_stack_drifted",
    "1 if the stack's last drift detection found drift, at the last poll.",
    "stack_id",
)
PER_STACK = (STACK_INFO, STACK_STATE, STATE_SINCE, STACK_LOCKED, STACK_DISABLED, STACK_DRIFTED)


@dataclass(frozen=True)
class Stack:
    id: str
    name: str
    space: str
    state: str
    state_set_at: float | None
    locked: bool
    disabled: bool
    drifted: bool
    labels: tuple[str, ...]
    repository: str
    branch: str
    vendor: str
    worker_pool_id: str


@dataclass(frozen=True)
class Snapshot:
    spaces: tuple[str, ...]
    stacks: tuple[Stack, ...]


def parse_stack(raw: Any, where: str) -> Stack:
    o = p.obj(raw, where)
    vendor_cfg = o.get("vendorConfig")
    vendor = ""
    if vendor_cfg is not None:
        typename = p.string(p.obj(vendor_cfg, where + ".vendorConfig"), "__typename", where)
        vendor = typename.removeprefix("StackConfigVendor")
    pool = o.get("workerPool")
    pool_id = "" if pool is None else p.string(p.obj(pool, where + ".workerPool"), "id", where)
    labels = p.strings(o.get("labels"), where + ".labels")
    return Stack(
        id=p.string(o, "id", where),
        name=p.string(o, "name", where),
        space=p.string(o, "space", where),
        state=p.string(o, "state", where),
        state_set_at=p.opt_number(o, "stateSetAt", where),
        locked=p.opt_string(o, "lockedBy", where) is not None,
        disabled=p.boolean(o, "isDisabled", where),
        drifted=p.boolean(o, "isDrifted", where),
        labels=labels,
        repository=p.string(o, "repository", where),
        branch=p.string(o, "branch", where),
        vendor=vendor,
        worker_pool_id=pool_id,
    )


def parse_page(data: Any) -> tuple[list[str] | None, list[Stack], str | None]:
    """One answer -> (space ids if asked, stacks, cursor of the next page or None)."""
    d = p.obj(data, "data")
    spaces = None
    if "spaces" in d:
        spaces = [
            p.string(p.obj(s, "spaces[]"), "id", "spaces[]")
            for s in p.lst(d.get("spaces"), "spaces")
        ]
    conn = p.obj(d.get("searchStacks"), "searchStacks")
    stacks = [
        parse_stack(p.obj(edge, "edge").get("node"), f"searchStacks.edges[{i}].node")
        for i, edge in enumerate(p.lst(conn.get("edges"), "searchStacks.edges"))
    ]
    info = p.obj(conn.get("pageInfo"), "searchStacks.pageInfo")
    after = None
    if p.boolean(info, "hasNextPage", "searchStacks.pageInfo"):
        after = p.opt_string(info, "endCursor", "searchStacks.pageInfo") or None
    return spaces, stacks, after


def label_name(spacelift_label: str) -> str:
    """The Prometheus label for an allow-listed Spacelift label key: ``team`` -> ``label_team``."""
    return "label_" + re.sub(r"[^a-zA-Z0-9_]", "_", spacelift_label)


def label_value(labels: Sequence[str], key: str) -> str:
    """``key:value`` labels give ``value``; a bare ``key`` label gives ``true``; else empty."""
    for label in labels:
        if label.startswith(key + ":"):
            return label[len(key) + 1 :]
    return "true" if key in labels else ""


class Poller:
    def __init__(self, ctx: AreaContext) -> None:
        self.account = ctx.account
        self.per_stack = bool(ctx.options.get("per_stack", True))
        raw = ctx.options.get("stack_labels") or []
        keys: list[str] = []
        for key in raw if isinstance(raw, list | tuple) else [raw]:
            key = str(key)
            if key and key not in keys and label_name(key) not in INFO_LABELS:
                keys.append(key)
        self.label_keys = tuple(keys)
        self.info = STACK_INFO
        if keys:
            self.info = MetricDef(
                STACK_INFO.name,
                "gauge",
                STACK_INFO.help,
                (*STACK_INFO.labels, *(label_name(k) for k in keys)),
            )

    def poll(self, client: SpaceliftClient) -> Snapshot:
        spaces: list[str] | None = None
        stacks: dict[str, Stack] = {}
        after: str | None = None
        while True:
            variables = {
                "input": {"first": PAGE, "after": after},
                "withSpaces": spaces is None,
            }
            data = client.query(DOCUMENT, variables).require("searchStacks")
            page_spaces, page, after = parse_page(data)
            if spaces is None:
                spaces = page_spaces or []
            for stack in page:
                stacks[stack.id] = stack
            if after is None:
                break
        return Snapshot(
            tuple(sorted(set(spaces or []))), tuple(sorted(stacks.values(), key=lambda s: s.id))
        )

    def collect(self, snapshot: Snapshot, out: FamilyBuilder) -> None:
        a = self.account
        for m in (STACKS, LOCKED, DISABLED, DRIFTED, SPACES):
            out.declare(m)
        out.add(SPACES, (a,), len(snapshot.spaces))
        by_state: dict[tuple[str, str], int] = {}
        flags: dict[str, list[int]] = {space: [0, 0, 0] for space in snapshot.spaces}
        for st in snapshot.stacks:
            by_state[(st.space, st.state)] = by_state.get((st.space, st.state), 0) + 1
            f = flags.setdefault(st.space, [0, 0, 0])
            f[0] += st.locked
            f[1] += st.disabled
            f[2] += st.drifted
        for (space, state), n in sorted(by_state.items()):
            out.add(STACKS, (a, space, state), n)
        for space, (locked, disabled, drifted) in sorted(flags.items()):
            out.add(LOCKED, (a, space), locked)
            out.add(DISABLED, (a, space), disabled)
            out.add(DRIFTED, (a, space), drifted)
        if not self.per_stack:
            return
        out.declare(self.info)
        for m in PER_STACK[1:]:
            out.declare(m)
        for st in snapshot.stacks:
            extra = tuple(label_value(st.labels, k) for k in self.label_keys)
            out.add(
                self.info,
                (
                    a,
                    st.id,
                    st.name,
                    st.space,
                    st.vendor,
                    st.worker_pool_id,
                    st.repository,
                    st.branch,
                    *extra,
                ),
                1,
            )
            out.add(STACK_STATE, (a, st.id, st.space, st.state), 1)
            if st.state_set_at is not None:
                out.add(STATE_SINCE, (a, st.id), st.state_set_at)
            out.add(STACK_LOCKED, (a, st.id), int(st.locked))
            out.add(STACK_DISABLED, (a, st.id), int(st.disabled))
            out.add(STACK_DRIFTED, (a, st.id), int(st.drifted))


def _options() -> Mapping[str, OptionSpec]:
    return {
        "per_stack": OptionSpec(
            bool,
            True,
            "true or false: export the per-stack series (spacelift_stack_info, _state, "
            "_state_since_timestamp_seconds, _locked, _disabled, _drifted); turn off for very "
            "large accounts",
        ),
        "stack_labels": OptionSpec(
            list,
            [],
            "a list of Spacelift stack label keys (e.g. [team, env]) to add to "
            "spacelift_stack_info as label_<key> (`team:x` gives x, a bare `team` gives true); "
            "use the same list for every account",
        ),
    }


SPEC = AreaSpec(
    name="stacks",
    title="Stacks",
    default_interval=60.0,
    create=Poller,
    documents={"SpaceliftExporterStacks": DOCUMENT},
    metrics=(STACKS, LOCKED, DISABLED, DRIFTED, SPACES, *PER_STACK),
    permission="Read on the spaces of the stacks (`searchStacks`, `spaces`); stacks in spaces "
    "the key cannot read are not counted.",
    options=_options(),
)
