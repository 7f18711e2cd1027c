"""Stacks: how many stacks per space and state, and (switchable) one set of series per stack.

Read through ``searchStacks`` pages of 50 (the root ``stacks`` list is closed to API keys and
expensive for Spacelift), with the space list folded into the first page's request: a sweep
of S stacks costs ``ceil(S/50)`` requests (at least one), and is shared with the runs area
(``stack_listing``), so the account is listed once per cycle of the faster of the two.

Where ``Stack.state`` is refused to the key (a machine user), everything else is still
served: ``spacelift_stacks`` loses its ``state`` label (counts by space), the per-stack state
series goes, and per-state counts come from the aggregates area.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from exporter.areas.base import AreaContext, AreaSpec, FamilyBuilder, MetricDef, OptionSpec, gauge
from exporter.areas.stack_listing import (
    DOCUMENT,
    Stack,
    StackListing,
    parse_page,
    parse_stack,
)

__all__ = ["DOCUMENT", "Snapshot", "Stack", "parse_page", "parse_stack"]

if TYPE_CHECKING:
    from exporter.client import SpaceliftClient

STACKS = gauge(
    "spacelift_stacks",
    "Stacks in each space and state, at the last poll (state empty where the API key may not "
    "read stack states).",
    "space",
    "state",
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
# Refused to machine-user keys: spacelift_stacks then has no state label, per-state counts
# come from the aggregates area.
OPTIONAL = {"Stack.state": (STACK_STATE,)}


@dataclass(frozen=True)
class Snapshot:
    spaces: tuple[str, ...]
    stacks: tuple[Stack, ...]


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
        self.area = ctx.area or "stacks"
        self.listing = StackListing.of(ctx.shared, ctx.account, ctx.clock)
        self.listing.register(ctx.interval, OPTIONAL)
        self.gates = (self.listing.gate,)
        self.info = STACK_INFO
        if keys:
            self.info = MetricDef(
                STACK_INFO.name,
                "gauge",
                STACK_INFO.help,
                (*STACK_INFO.labels, *(label_name(k) for k in keys)),
            )

    def poll(self, client: SpaceliftClient) -> Snapshot:
        listing, _ = self.listing.get(client, self.area)
        return Snapshot(listing.spaces, listing.stacks)

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
            if st.state:
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
    optional=OPTIONAL,
    permission="Read on the spaces of the stacks (`searchStacks`, `spaces`); stacks in spaces "
    "the key cannot read are not counted.",
    options=_options(),
)
