"""Plain data objects of the simulated account.

Attribute names follow the GraphQL field names (camelCase) wherever the value can be served
as-is, so the resolvers can fall back to attribute lookup. Computed fields live in resolvers.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

TERMINAL = frozenset({"CANCELED", "FAILED", "FINISHED", "DISCARDED", "STOPPED", "SKIPPED"})
# States in which a run waits for a worker (private-pool worker or public-pool slot).
WAITING_FOR_WORKER = frozenset({"READY", "CONFIRMED", "REPLAN_REQUESTED"})
# States in which a run occupies a worker.
ON_WORKER = frozenset(
    {
        "PREPARING",
        "INITIALIZING",
        "PLANNING",
        "PREPARING_REPLAN",
        "PREPARING_APPLY",
        "APPLYING",
        "PERFORMING",
        "DESTROYING",
    }
)
# Run types that take the stack's run lock (blocking runs).
BLOCKING_TYPES = frozenset({"TRACKED", "DESTROY", "TASK"})
# Run types whose state becomes the stack state.
STATE_TYPES = frozenset({"TRACKED", "DESTROY"})

# RunState values missing from the StackState enum, mapped to the nearest StackState value.
STACK_STATE_MAP = {
    "QUEUED": "READY",  # accepted, waiting to start
    "PENDING": "READY",  # deprecated alias of a waiting run
    "PERFORMING": "APPLYING",  # a task doing work (tasks never set stack state; defensive)
    "PENDING_REVIEW": "UNCONFIRMED",  # waiting for a human decision
    "CANCELED": "DISCARDED",  # ended without applying anything
    "SKIPPED": "DISCARDED",
}


def stack_state_for(run_state: str) -> str:
    return STACK_STATE_MAP.get(run_state, run_state)


def ulid(ts: float, rng: Any) -> str:
    """26-char ULID: 48-bit milliseconds + 80 random bits from the given (seeded) RNG."""
    ms = int(ts * 1000)
    t = "".join(CROCKFORD[(ms >> (5 * i)) & 31] for i in range(9, -1, -1))
    r = rng.getrandbits(80)
    return t + "".join(CROCKFORD[(r >> (5 * i)) & 31] for i in range(15, -1, -1))


@dataclass
class Space:
    id: str
    name: str
    description: str = ""
    parentSpace: str | None = None
    inheritEntities: bool = True
    labels: list[str] = field(default_factory=list)
    accessLevel: str = "ADMIN"


@dataclass
class Worker:
    id: str
    pool_id: str
    createdAt: int
    metadata: str = "{}"
    busy: bool = False
    drained: bool = False
    availableAt: int | None = None
    run_id: str | None = None  # the run this worker is busy with
    busy_since: float = 0.0

    @property
    def status(self) -> str:
        if self.drained:
            return "DRAINED"
        return "BUSY" if self.busy else "IDLE"


@dataclass
class WorkerPool:
    id: str
    name: str
    space: str
    createdAt: int
    updatedAt: int
    description: str = ""
    labels: list[str] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    driftDetectionRunLimit: int | None = None
    managedByK8sController: bool = False
    deleted: bool = False
    world: Any = field(default=None, repr=False, compare=False)  # for the derived counters

    # Derived counters, identical to what the GraphQL fields answer (see World.pool_runs).
    @property
    def busyWorkers(self) -> int:
        return sum(1 for w in self.workers if w.busy)

    @property
    def workersCount(self) -> int:
        return len(self.workers)

    @property
    def pendingRuns(self) -> int:
        return len(self.world.pool_runs(self.id)[1])

    @property
    def schedulableRunsCount(self) -> int:
        running, pending = self.world.pool_runs(self.id)
        return len(running) + len(pending)

    @property
    def usersCount(self) -> int:
        return sum(1 for s in self.world.stacks.values() if s.worker_pool == self.id)


@dataclass
class PublicPool:
    parallelism: int = 10
    busy: int = 0  # slots in use
    intentProjectsCount: int = 0
    world: Any = field(default=None, repr=False, compare=False)

    @property
    def busyWorkers(self) -> int:
        return self.busy

    @property
    def pendingRuns(self) -> int:
        return len(self.world.pool_runs(None)[1])

    @property
    def schedulableRunsCount(self) -> int:
        running, pending = self.world.pool_runs(None)
        return len(running) + len(pending)

    @property
    def usersCount(self) -> int:
        return sum(1 for s in self.world.stacks.values() if s.worker_pool is None)


@dataclass
class Run:
    id: str
    stack_id: str
    type: str
    createdAt: int
    title: str
    branch: str
    commit: dict[str, Any]
    triggeredBy: str | None = None
    driftDetection: bool = False
    needsApproval: bool = False
    state: str = "QUEUED"
    updatedAt: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    delta: dict[str, int] | None = None
    seq: int = 0  # global creation order (FIFO tie-break)
    not_before: float = 0.0  # earliest time QUEUED -> READY
    worker: Any = None  # Worker, "public" or None
    token: int = 0  # invalidates stale scheduled events
    started_at: float = 0.0  # when it last got a worker (queue ordering)
    pool_key: str | None = None  # the stack's private pool id at trigger time; None = public

    @property
    def stackId(self) -> str:
        return self.stack_id

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def priority(self) -> int:
        """Lower runs first: blocking runs, then proposed, then drift detection."""
        if self.driftDetection:
            return 2
        return 1 if self.type == "PROPOSED" else 0


@dataclass
class Stack:
    id: str
    name: str
    space: str
    createdAt: int
    repository: str
    branch: str
    vendorConfig: dict[str, Any]
    provider: str = "GITHUB"
    labels: list[str] = field(default_factory=list)
    description: str | None = None
    worker_pool: str | None = None  # private pool id; None = the public pool
    autodeploy: bool = False
    isDisabled: bool = False
    isDrifted: bool = False
    administrative: bool = False
    lockedBy: str | None = None
    lockedAt: int | None = None
    lockNote: str | None = None
    state: str = "NONE"
    stateSetAt: int | None = None
    trackedCommit: dict[str, Any] | None = None
    projectRoot: str | None = None
    namespace: str = "acme"
    entityCount: int = 0
    runs: list[Run] = field(default_factory=list)  # newest first, bounded (retention)
    lock_holder: str | None = None  # id of the blocking run holding the stack's run lock
    drift_schedule: bool = False
    starred: bool = False
    lastApplyAt: int | None = None

    @property
    def vendor(self) -> str:
        return self.vendorConfig["__typename"].removeprefix("StackConfigVendor").upper()


@dataclass
class Role:
    id: str
    slug: str
    name: str
    description: str
    isSystem: bool
    actions: list[str]


@dataclass
class ApiKey:
    id: str
    name: str
    createdAt: int
    description: str = ""
    type: str = "SECRET"
    admin: bool = False
    isMachineUser: bool = True
    creator: str = "admin@example.com"
    lastUsedAt: int | None = None
    expiresAt: int | None = None
    deleted: bool = False
    teams: list[str] = field(default_factory=list)
    accessRules: list[dict[str, str]] = field(default_factory=list)
    apiKeyRoleBindings: list[dict[str, Any]] = field(default_factory=list)
    oidcSettings: dict[str, Any] | None = None
    secret: None = None  # never readable outside apiKeyCreate

    @property
    def bindings(self) -> list[dict[str, Any]]:
        return self.apiKeyRoleBindings


@dataclass
class ManagedUser:
    id: str
    username: str
    status: str
    invitationEmail: str | None = None
    loginMethod: str | None = "SSO"
    lastLoginTime: int | None = None
    groupCount: int = 0
    accessRules: list[dict[str, str]] = field(default_factory=list)

    @property
    def spaceCount(self) -> int:
        return len({r["space"] for r in self.accessRules})


@dataclass
class ManagedUserGroup:
    id: str
    groupName: str
    description: str = ""
    accessRules: list[dict[str, str]] = field(default_factory=list)
    memberCount: int = 0
    status: str | None = "ACTIVE"
    lastLoginTime: int | None = None
    identityProvider: str | None = "SAML"

    @property
    def spaceCount(self) -> int:
        return len({r["space"] for r in self.accessRules})


def metadata_json(pairs: dict[str, str]) -> str:
    return json.dumps(pairs, sort_keys=True)
