"""Mapping world objects to GraphQL fields.

One field resolver serves the whole schema: an explicit resolver from RESOLVERS when the field is
computed, otherwise the attribute (or dict key) of the same name, otherwise a neutral default
derived from the field's type (so the many unmodelled schema fields still answer).
"""

from __future__ import annotations

import base64
import fnmatch
import json
from typing import Any

from graphql import GraphQLError, GraphQLList, GraphQLNonNull, GraphQLResolveInfo

from .model import BLOCKING_TYPES, ON_WORKER, TERMINAL, Run, Stack

MISSING = object()
UNAUTHORIZED = "unauthorized"
GATED = "not available for machine sessions"
# Root fields an anonymous/expired session gets empty data for (not an error).
ANON_EMPTY = {"viewer": None, "stacks": [], "spaces": []}
ADMIN_ONLY = {
    "usage",
    "seats",
    "apiKeys",
    "apiKey",
    "apiKeyRoleBinding",
    "roles",
    "role",
    "userRoleBinding",
    "userGroupRoleBinding",
    "stackRoleBinding",
    "managedUsers",
    "managedUser",
    "managedUserGroups",
    "managedUserGroup",
}
EMPTY_CONN = {
    "edges": [],
    "pageInfo": {
        "endCursor": None,
        "startCursor": None,
        "hasNextPage": False,
        "hasPreviousPage": False,
    },
}


class Ctx:
    """Per-request context built by the server."""

    def __init__(self, sim: Any, authed: bool, subject: str | None) -> None:
        self.sim = sim
        self.world = sim.world
        self.authed = authed
        self.subject = subject


def _enc(s: str) -> str:
    return base64.urlsafe_b64encode(s.encode()).decode()


def _dec(s: str | None) -> str | None:
    if not s:
        return None
    try:
        return base64.urlsafe_b64decode(s.encode()).decode()
    except Exception as exc:
        raise GraphQLError("invalid cursor") from exc


def _conn(nodes: list[Any], cursors: list[str], has_next: bool, has_prev: bool) -> dict[str, Any]:
    return {
        "edges": [{"cursor": c, "node": n} for n, c in zip(nodes, cursors, strict=True)],
        "pageInfo": {
            "startCursor": cursors[0] if cursors else None,
            "endCursor": cursors[-1] if cursors else None,
            "hasNextPage": has_next,
            "hasPreviousPage": has_prev,
        },
    }


# ---------------------------------------------------------------------------------- root
def root_guard(info: GraphQLResolveInfo) -> Any:
    """Auth, admin, machine-session gates and injected field errors for root fields.

    Returns MISSING to go on resolving, or the value to answer instead; raises GraphQLError.
    """
    ctx: Ctx = info.context
    sim, name = ctx.sim, info.field_name
    err = sim.faults.take_field_error(
        name, info.operation.name.value if info.operation.name else None
    )
    if err is not None:
        raise GraphQLError(err)
    if info.parent_type.name == "Mutation":
        if name == "apiKeyUser":
            return MISSING
        raise GraphQLError(UNAUTHORIZED)  # the simulator never changes state through the API
    if not ctx.authed:
        if name in ANON_EMPTY:
            return ANON_EMPTY[name]
        if name == "searchStacks":
            return EMPTY_CONN
        raise GraphQLError(UNAUTHORIZED)
    if name in sim.gated:
        raise GraphQLError(GATED)
    if not sim.admin and name in ADMIN_ONLY:
        raise GraphQLError(UNAUTHORIZED)
    return MISSING


def q_viewer(_: Any, info: GraphQLResolveInfo) -> Any:
    return {"id": info.context.subject, "name": info.context.sim.key_name}


def q_account(_: Any, info: GraphQLResolveInfo) -> Any:
    return {
        "id": "acme",
        "name": "acme",
        "type": "ORGANIZATION",
        "tier": "ENTERPRISE",
        "spaceliftAwsAccountId": "324880187172",
        "auditTrailRetentionDays": 30,
        "runLogRetentionDays": 60,
    }[info.field_name]


def q_search_stacks(_: Any, info: GraphQLResolveInfo, input: dict[str, Any]) -> Any:
    w = info.context.world
    order = input.get("orderBy") or {}
    field, desc = order.get("field", "name"), order.get("direction", "ASC").upper() == "DESC"
    ids, index = sorted_stack_ids(w, field, desc)
    preds = input.get("predicates") or []
    fts = (input.get("fullTextSearch") or "").lower()
    first = max(1, min(int(input.get("first") or 50), 1000))
    after = _dec(input.get("after"))
    start = 0
    if after is not None:
        # cursor = JSON [sort key, id]; a deleted stack's cursor still finds its place
        try:
            key, sid = json.loads(after)
        except (ValueError, TypeError) as exc:
            raise GraphQLError("invalid cursor") from exc
        if sid in index:
            start = index[sid] + 1
        else:
            k = (key, sid)
            start = next(
                (
                    n
                    for n, x in enumerate(ids)
                    if (
                        (_sort_key(w.stacks[x], field), x) < k
                        if desc
                        else (_sort_key(w.stacks[x], field), x) > k
                    )
                ),
                len(ids),
            )
    out: list[Stack] = []
    has_next = False
    for i in range(start, len(ids)):
        st = w.stacks[ids[i]]
        if fts and fts not in st.name.lower() and fts not in st.id:
            continue
        if preds and not all(_pred(w, st, p) for p in preds):
            continue
        if len(out) == first:
            has_next = True
            break
        out.append(st)
    cursors = [_enc(json.dumps([_sort_key(st, field), st.id])) for st in out]
    return _conn(out, cursors, has_next, start > 0)


def _sort_key(st: Stack, field: str) -> Any:
    # name (and starred, which the simulator does not model) sort by name
    return st.createdAt if field == "createdAt" else st.name


def sorted_stack_ids(w: Any, field: str, desc: bool) -> tuple[list[str], dict[str, int]]:
    """Stable order (sort key, then id) for paging, cached until stacks are added or deleted."""
    key = (field, desc, w.stacks_version)
    cache = w.__dict__.setdefault("_search_cache", {})
    if key not in cache:
        if len(cache) > 8:
            cache.clear()
        ids = sorted(w.stacks, key=lambda s: (_sort_key(w.stacks[s], field), s), reverse=desc)
        cache[key] = (ids, {sid: i for i, sid in enumerate(ids)})
    return cache[key]


def _match(value: str | None, patterns: list[str]) -> bool:
    if value is None:
        return False
    v = value.lower()
    for p in patterns:
        p = p.lower()
        if ("*" in p and fnmatch.fnmatch(v, p)) or p in v:
            return True
    return False


def _pred(w: Any, st: Stack, pred: dict[str, Any]) -> bool:
    field, c = pred["field"], pred["constraint"]
    enum, boolean, strings = c.get("enumEquals"), c.get("booleanEquals"), c.get("stringMatches")
    if field == "state" and enum is not None:
        ok = st.state in enum
    elif field == "vendor" and enum is not None:
        ok = st.vendor in [e.upper() for e in enum]
    elif field == "locked" and boolean is not None:
        ok = (st.lockedBy is not None) in boolean
    elif field == "administrative" and boolean is not None:
        ok = st.administrative in boolean
    elif field == "label" and strings is not None:
        ok = any(_match(lab, strings) for lab in st.labels)
    elif field == "workerPool" and strings is not None:
        pool = w.pools.get(st.worker_pool) if st.worker_pool else None
        ok = pool is not None and (pool.id in strings or _match(pool.name, strings))
    elif strings is not None and field in ("name", "branch", "repository", "projectRoot"):
        ok = _match(getattr(st, field), strings)
    elif field == "commit" and strings is not None:
        ok = _match((st.trackedCommit or {}).get("hash"), strings)
    else:
        raise GraphQLError(f"unsupported predicate {field!r}")
    return ok != bool(pred.get("exclude"))


def q_run_stack(_: Any, info: GraphQLResolveInfo, runId: str) -> Any:
    run = info.context.world.runs.get(runId)
    if run is None or run.stack_id not in info.context.world.stacks:
        raise GraphQLError("not found")
    return info.context.world.stacks[run.stack_id]


def q_api_key(_: Any, info: GraphQLResolveInfo, id: str) -> Any:
    key = info.context.world.api_keys.get(id)
    if key is None:
        raise GraphQLError("could not find api key")
    return key


def q_role_binding(_: Any, info: GraphQLResolveInfo, id: str) -> Any:
    w = info.context.world
    for k in w.api_keys.values():
        for b in k.apiKeyRoleBindings:
            if b["id"] == id:
                return b
    return None


def q_role(_: Any, info: GraphQLResolveInfo, id: str) -> Any:
    w = info.context.world
    return w.roles.get(id) or next((r for r in w.roles.values() if r.slug == id), None)


# ---------------------------------------------------------------------------------- stack
def _page(runs: list[Run], before: str | None, size: int) -> list[Run]:
    if before is not None:
        idx = next((i for i, r in enumerate(runs) if r.id == before), None)
        if idx is None:
            return []
        runs = runs[idx + 1 :]
    return runs[:size]


def s_runs(st: Stack, info: GraphQLResolveInfo, before: str | None = None) -> list[Run]:
    """A stack's run list, newest first, one page of ``runs_page_size`` before ``before``.

    Tasks are in ``tasks`` only, where spacectl reads them (whether the real ``runs`` holds
    them too is unconfirmed)."""
    kinds = {"runs": ("TRACKED", "DESTROY"), "proposedRuns": ("PROPOSED",)}
    wanted = kinds.get(info.field_name, ("TASK",))
    runs = [r for r in st.runs if r.type in wanted]
    return _page(runs, before, info.context.world.config.runs_page_size)


def s_run(st: Stack, info: GraphQLResolveInfo, id: str) -> Any:
    return next((r for r in st.runs if r.id == id), None)


def s_blocker(st: Stack, info: GraphQLResolveInfo) -> Any:
    """The run holding the stack's run lock, while another blocking run queues behind it."""
    holder = info.context.world.runs.get(st.lock_holder) if st.lock_holder else None
    if holder is None:
        return None
    queued = any(
        r.state == "QUEUED" and r.type in BLOCKING_TYPES and r is not holder for r in st.runs
    )
    return holder if queued else None


def s_drift(st: Stack, info: GraphQLResolveInfo) -> Any:
    drift = None
    if st.drift_schedule:
        drift = {
            "reconcile": False,
            "ignoreState": False,
            "schedule": ["0 */6 * * *"],
            "timezone": "UTC",
            "nextSchedule": (info.context.world.now() // 21600 + 1) * 21600,
            "deleted": False,
        }
    return {"aws": None, "gcp": None, "driftDetection": drift, "webhooks": []}


RESOLVERS: dict[tuple[str, str], Any] = {
    ("Query", "viewer"): q_viewer,
    ("Query", "spaces"): lambda _, i: list(i.context.world.spaces.values()),
    ("Query", "space"): lambda _, i, id: i.context.world.spaces.get(id),
    ("Query", "stacks"): lambda _, i: list(i.context.world.stacks.values()),
    ("Query", "stack"): lambda _, i, id: i.context.world.stacks.get(id),
    ("Query", "searchStacks"): q_search_stacks,
    ("Query", "runStack"): q_run_stack,
    ("Query", "workerPools"): lambda _, i: list(i.context.world.pools.values()),
    ("Query", "workerPool"): lambda _, i, id: i.context.world.pools.get(id),
    ("Query", "publicWorkerPool"): lambda _, i: i.context.world.public_pool,
    ("Query", "apiKeys"): lambda _, i: list(i.context.world.api_keys.values()),
    ("Query", "apiKey"): q_api_key,
    ("Query", "apiKeyRoleBinding"): q_role_binding,
    ("Query", "roles"): lambda _, i: list(i.context.world.roles.values()),
    ("Query", "role"): q_role,
    ("Query", "managedUsers"): lambda _, i: list(i.context.world.users.values()),
    ("Query", "managedUser"): lambda _, i, id: i.context.world.users.get(id),
    ("Query", "managedUserGroups"): lambda _, i: list(i.context.world.user_groups.values()),
    ("Query", "managedUserGroup"): lambda _, i, id: i.context.world.user_groups.get(id),
    ("Query", "usage"): lambda _, i: i.context.world.usage,
    ("Query", "seats"): lambda _, i: i.context.world.seats,
    ("Query", "metrics"): lambda _, i: i.context.world.metrics,
    ("Query", "modules"): lambda _, i: [],
    ("Query", "searchModules"): lambda _, i, input: EMPTY_CONN,
    ("Query", "searchWorkerPools"): lambda _, i, input: _search_pools(i, input),
    ("Query", "searchAuditTrailEntries"): lambda _, i, input: EMPTY_CONN,
    **{("Query", f): q_account for f in ("id", "name", "type", "tier", "spaceliftAwsAccountId")},
    ("Query", "auditTrailRetentionDays"): q_account,
    ("Query", "runLogRetentionDays"): q_account,
    ("Stack", "spaceDetails"): lambda st, i: i.context.world.spaces.get(st.space),
    ("Stack", "workerPool"): lambda st, i: (
        i.context.world.pools.get(st.worker_pool) if st.worker_pool else None
    ),
    ("Stack", "runs"): s_runs,
    ("Stack", "proposedRuns"): s_runs,
    ("Stack", "tasks"): s_runs,
    ("Stack", "run"): s_run,
    ("Stack", "stateIsTerminal"): lambda st, i: (
        st.state in TERMINAL or st.state in ("NONE", "UNCONFIRMED")
    ),
    ("Stack", "blocker"): s_blocker,
    ("Stack", "blocked"): lambda st, i: s_blocker(st, i) is not None,
    ("Stack", "needsApproval"): lambda st, i: any(
        r.needsApproval and not r.terminal for r in st.runs
    ),
    ("Stack", "integrations"): s_drift,
    ("Stack", "trackedBranchHead"): lambda st, i: st.trackedCommit,
    ("Stack", "canWrite"): lambda st, i: True,
    ("Stack", "repositoryURL"): lambda st, i: f"https://github.com/acme/{st.repository}",
    ("Run", "isMostRecent"): lambda r, i: _most_recent(r, i),
    # Newest first, as the real API gives it (spacectl iterates it backwards).
    ("Run", "history"): lambda r, i: r.history[::-1],
    ("Run", "finished"): lambda r, i: r.state in TERMINAL,
    ("Run", "canRetry"): lambda r, i: r.state in TERMINAL,
    ("Run", "expired"): lambda r, i: False,
    ("Run", "logs"): lambda r, i, **_: None,
    ("WorkerPool", "spaceDetails"): lambda p, i: i.context.world.spaces.get(p.space),
    ("WorkerPool", "searchSchedulableRuns"): lambda p, i, input: _queue(i, p.id, input),
    ("PublicWorkerPool", "searchSchedulableRuns"): lambda p, i, input: _queue(i, None, input),
    ("ApiKey", "teamCount"): lambda k, i: len(k.teams),
    ("ApiKey", "spaceCount"): lambda k, i: len({b["spaceID"] for b in k.apiKeyRoleBindings}),
    ("ApiKey", "secret"): lambda k, i: None,
    ("Role", "roleBindingsCount"): lambda r, i: _binding_count(i.context.world, r),
    ("UserRoleBinding", "role"): lambda b, i: q_role(None, i, b["roleID"]),
    ("UserRoleBinding", "user"): lambda b, i: i.context.world.users.get(b["userID"]),
    ("UserGroupRoleBinding", "userGroup"): lambda b, i: i.context.world.user_groups.get(
        b["userGroupID"]
    ),
}


def _most_recent(run: Run, info: GraphQLResolveInfo) -> bool:
    st = info.context.world.stacks.get(run.stack_id)
    return bool(st and st.runs and st.runs[0] is run)


def _queue(info: GraphQLResolveInfo, pool_id: str | None, input: dict[str, Any]) -> Any:
    """Ordered by ``position`` when asked (spacectl always asks): in-progress runs first (by
    start time), then waiting runs by priority and FIFO. Without ``orderBy`` the order is
    unspecified (here: by run id), as the real default is unknown."""
    running, pending = info.context.world.pool_runs(pool_id)
    queue = running + pending
    positions = {r.id: n + 1 for n, r in enumerate(queue)}
    order = input.get("orderBy") or {}
    if order.get("field") == "position":
        if str(order.get("direction", "ASC")).upper() == "DESC":
            queue = queue[::-1]
    else:
        queue = sorted(queue, key=lambda r: r.id)
    first = max(1, min(int(input.get("first") or 50), 1000))
    after = _dec(input.get("after"))
    start = int(after.split(":")[1]) if after else 0
    page = queue[start : start + first]
    nodes = [{"stackId": r.stack_id, "position": positions[r.id], "run": r} for r in page]
    cursors = [_enc(f"pos:{start + n + 1}") for n in range(len(page))]
    return _conn(nodes, cursors, start + first < len(queue), start > 0)


def _search_pools(info: GraphQLResolveInfo, input: dict[str, Any]) -> Any:
    pools = sorted(info.context.world.pools.values(), key=lambda p: p.name)
    return _conn(pools, [_enc(p.id) for p in pools], False, False)


def _binding_count(w: Any, role: Any) -> int:
    n = sum(1 for k in w.api_keys.values() for b in k.apiKeyRoleBindings if b["roleID"] == role.id)
    for lst in (w.user_bindings, w.group_bindings, w.stack_bindings):
        n += sum(1 for b in lst if b["roleID"] in (role.id, role.slug))
    return n


# ------------------------------------------------------------------------ default resolution
_DEFAULTS: dict[tuple[str, str], Any] = {}


def _default_for(info: GraphQLResolveInfo) -> Any:
    key = (info.parent_type.name, info.field_name)
    if key not in _DEFAULTS:
        t = info.return_type
        value: Any = None
        if isinstance(t, GraphQLNonNull):
            inner = t.of_type
            if isinstance(inner, GraphQLList):
                value = []
            else:
                zero = {"Boolean": False, "Int": 0, "Float": 0.0, "String": "", "ID": ""}
                value = zero.get(getattr(inner, "name", ""))
        _DEFAULTS[key] = value
    v = _DEFAULTS[key]
    return [] if isinstance(v, list) else v


def field_resolver(source: Any, info: GraphQLResolveInfo, **args: Any) -> Any:
    ptype = info.parent_type.name
    if ptype in ("Query", "Mutation"):
        answer = root_guard(info)
        if answer is not MISSING:
            return answer
        if ptype == "Mutation":
            return info.context.sim._exchange(args.get("id"), args.get("secret"))
    elif info.context.authed and f"{ptype}.{info.field_name}" in info.context.sim.gated:
        raise GraphQLError(GATED)
    fn = RESOLVERS.get((ptype, info.field_name))
    if fn is not None:
        return fn(source, info, **args)
    name = info.field_name
    value = (
        source.get(name, MISSING) if isinstance(source, dict) else getattr(source, name, MISSING)
    )
    if value is MISSING:
        return _default_for(info)
    return value


__all__ = ["ON_WORKER", "Ctx", "field_resolver"]
