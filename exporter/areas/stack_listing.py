"""One ``searchStacks`` sweep per cycle, shared by the stacks and runs areas of an account.

Listing stacks is expensive for Spacelift to serve (its maintainers said so, official exporter
PR #19), and both areas need the list: the stacks area for its counts, the runs area to see
which stacks moved. One ``StackListing`` per account sweeps ``searchStacks`` (pages of 50, the
space list folded into the first page's request) and hands the result to whichever area asks
next while it is younger than the faster area's interval (a little less, for jitter): the
account is listed about once per cycle of the faster of the two, not once per area. An area
is given each sweep once: its next poll sweeps again (or takes a newer sweep).

``Stack.state`` may be refused to machine-user API keys (``not available for machine
sessions``); it is optional here, so the listing still serves everything else (the stacks
area's counts by space, locks, drift; the runs area sees moves through ``stateSetAt``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from exporter.areas import parse as p
from exporter.areas.fields import Document, FieldGate

if TYPE_CHECKING:
    from exporter.client import SpaceliftClient
    from exporter.families import MetricDef

PAGE = 50  # what Spacelift's own clients use
SHARED_KEY = "stack_listing"  # its key in AreaContext.shared

# Evidence: spacectl internal/cmd/stack/list.go and the Terraform provider's stack structs
# select these on searchStacks nodes; ``needsApproval`` and ``trackedCommit { hash }`` are read by
# flows-app-spacelift getStack.ts.
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
        needsApproval
        labels
        repository
        branch
        trackedCommit { hash }
        vendorConfig { __typename }
        workerPool { id }
      }
    }
    pageInfo { endCursor hasNextPage }
  }
}
"""


@dataclass(frozen=True)
class Stack:
    id: str
    name: str
    space: str
    state: str  # "" when the key may not read it (Stack.state refused)
    state_set_at: float | None
    locked: bool
    disabled: bool
    drifted: bool
    labels: tuple[str, ...]
    repository: str
    branch: str
    vendor: str
    worker_pool_id: str
    needs_approval: bool = False
    tracked_commit: str = ""


@dataclass(frozen=True)
class Listing:
    spaces: tuple[str, ...]
    stacks: tuple[Stack, ...]  # sorted by id
    at: float  # when the sweep finished
    requests: int  # requests the sweep made


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
    commit = o.get("trackedCommit")
    tracked = ""
    if commit is not None:
        cw = where + ".trackedCommit"
        tracked = p.string(p.obj(commit, cw), "hash", cw)
    return Stack(
        id=p.string(o, "id", where),
        name=p.string(o, "name", where),
        space=p.string(o, "space", where),
        state=p.string(o, "state", where) if "state" in o else "",
        state_set_at=p.opt_number(o, "stateSetAt", where),
        locked=p.opt_string(o, "lockedBy", where) is not None,
        disabled=p.boolean(o, "isDisabled", where),
        drifted=p.boolean(o, "isDrifted", where),
        labels=labels,
        repository=p.string(o, "repository", where),
        branch=p.string(o, "branch", where),
        vendor=vendor,
        worker_pool_id=pool_id,
        needs_approval=bool(o.get("needsApproval", False)),
        tracked_commit=tracked,
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


class StackListing:
    """The account's stack list, swept at most once per ``max_age`` whoever asks."""

    def __init__(self, account: str, clock: Callable[[], float]) -> None:
        self.gate = FieldGate(account, "stacks", clock)
        self._clock = clock
        # Stack.state is optional whoever uses the listing; areas add the families needing it.
        self.optional: dict[str, tuple[MetricDef, ...]] = {"Stack.state": ()}
        self._intervals: list[float] = []
        self._lock = threading.Lock()
        self._last: Listing | None = None
        self._used: set[str] = set()  # areas that were given the last sweep
        self.sweeps = 0

    @staticmethod
    def of(shared: dict[str, Any], account: str, clock: Callable[[], float]) -> StackListing:
        """The account's listing (made by the first area that asks for it)."""
        listing = shared.get(SHARED_KEY)
        if listing is None:
            listing = shared[SHARED_KEY] = StackListing(account, clock)
        assert isinstance(listing, StackListing)
        return listing

    def register(self, interval: float, optional: Mapping[str, tuple[MetricDef, ...]]) -> None:
        """An area using the listing: its poll interval and the families it has that need
        optional listing fields (for the log line and the docs)."""
        if interval > 0:
            self._intervals.append(interval)
        for field, families in optional.items():
            self.optional[field] = (*self.optional.get(field, ()), *families)

    @property
    def max_age(self) -> float:
        # A little under the faster area's interval: its polls (with up to 10 % jitter)
        # always sweep, and the slower area's polls reuse that sweep.
        return 0.85 * min(self._intervals) if self._intervals else 0.0

    def get(self, client: SpaceliftClient, area: str) -> tuple[Listing, bool]:
        """The listing, swept now unless another area swept it lately; (listing, swept now)."""
        with self._lock:  # the other area waits for a sweep in progress and reuses it
            last = self._last
            if (
                last is not None
                and area not in self._used
                and 0 <= self._clock() - last.at < self.max_age
            ):
                self._used.add(area)
                return last, False
            self._last = self._sweep(client)
            self._used = {area}
            self.sweeps += 1
            return self._last, True

    def _sweep(self, client: SpaceliftClient) -> Listing:
        doc = Document(DOCUMENT, self.optional)
        spaces: list[str] | None = None
        stacks: dict[str, Stack] = {}
        after: str | None = None
        requests = 0
        pages = p.Pages("searchStacks")
        while True:
            variables = {"input": {"first": PAGE, "after": after}, "withSpaces": spaces is None}
            result = self.gate.query(client, doc, variables)
            requests += 1
            assert result is not None  # searchStacks itself is never optional
            page_spaces, page, after = parse_page(result.require("searchStacks"))
            after = pages.next(after, len(page))
            if spaces is None:
                spaces = page_spaces or []
            for stack in page:
                stacks[stack.id] = stack
            if after is None:
                break
        return Listing(
            tuple(sorted(set(spaces or []))),
            tuple(sorted(stacks.values(), key=lambda s: s.id)),
            self._clock(),
            requests,
        )
