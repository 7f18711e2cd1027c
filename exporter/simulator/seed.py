"""Initial population of a World: spaces, pools, stacks with past runs, RBAC, users.

Uses its own RNG seeded from the config, so building never touches the event RNG.
"""

from __future__ import annotations

import random
from typing import Any

from .model import (
    ApiKey,
    ManagedUser,
    ManagedUserGroup,
    Role,
    Run,
    Space,
    Stack,
    Worker,
    WorkerPool,
    metadata_json,
    stack_state_for,
    ulid,
)

ENVS = ["prod", "staging", "dev", "sandbox", "shared"]
COMPONENTS = ["network", "dns", "eks", "rds", "iam", "vpc", "s3", "monitoring", "cdn", "queue"]
SPACE_NAMES = ["platform", "payments", "data", "security", "frontend", "ml", "ops", "edge"]
VENDORS: list[dict[str, Any]] = [
    {
        "__typename": "StackConfigVendorTerraform",
        "version": "1.5.7",
        "workspace": None,
        "useSmartSanitization": True,
        "externalStateAccessEnabled": False,
        "workflowTool": "TERRAFORM_FOSS",
    },
    {
        "__typename": "StackConfigVendorOpenTofu",
        "version": "1.8.0",
        "workspace": None,
        "useSmartSanitization": True,
        "externalStateAccessEnabled": False,
        "concise": False,
        "workflowTool": "OPEN_TOFU",
    },
    {"__typename": "StackConfigVendorPulumi", "loginURL": "s3://pulumi-state", "stackName": "main"},
    {"__typename": "StackConfigVendorKubernetes", "namespace": "default", "kubectlVersion": "1.30"},
    {"__typename": "StackConfigVendorAnsible", "playbook": "site.yml"},
    {
        "__typename": "StackConfigVendorCloudFormation",
        "entryTemplateFile": "main.yaml",
        "templateBucket": "cfn-templates",
        "stackName": "main",
        "region": "eu-west-1",
    },
    {
        "__typename": "StackConfigVendorTerragrunt",
        "terraformVersion": "1.5.7",
        "terragruntVersion": "0.67.0",
        "useRunAll": False,
        "useSmartSanitization": True,
        "useStateManagement": True,
        "tool": "TERRAFORM_FOSS",
        "skipReplan": False,
        "skipReplanWhenRunAll": False,
        "prefixResourceNamesWithModuleName": False,
    },
]
VENDOR_WEIGHTS = [50, 20, 8, 8, 5, 4, 5]
SYSTEM_ROLES = [
    ("space-reader", "Space reader", ["SPACE_READ"]),
    ("space-writer", "Space writer", ["SPACE_READ", "SPACE_WRITE", "RUN_TRIGGER"]),
    ("space-admin", "Space admin", ["SPACE_READ", "SPACE_WRITE", "SPACE_ADMIN"]),
    ("worker-pool-controller", "Worker pool controller", ["WORKER_DRAIN_SET"]),
]
CUSTOM_ROLES = [
    ("deployer", "Deployer", ["RUN_TRIGGER", "RUN_CONFIRM", "RUN_DISCARD"]),
    ("auditor", "Auditor", ["SPACE_READ", "STACK_STATE_READ"]),
    ("platform-ops", "Platform ops", ["STACK_MANAGE", "STACK_LOCK", "STACK_UNLOCK"]),
]
# State paths of the seeded past runs.
_START = ["QUEUED", "READY", "PREPARING", "INITIALIZING", "PLANNING"]
PAST_PATHS = {
    "FINISHED": [*_START, "UNCONFIRMED", "CONFIRMED", "PREPARING_APPLY", "APPLYING", "FINISHED"],
    "FAILED": [*_START, "FAILED"],
    "DISCARDED": [*_START, "UNCONFIRMED", "DISCARDED"],
    "PROPOSED": [*_START, "FINISHED"],
}


def _ri(rng: random.Random, lo: int, hi: int) -> int:
    """Fast randint for the bulk build (random.randint is the build's hot spot)."""
    return lo + int(rng.random() * (hi - lo + 1))


def populate(world: Any) -> None:
    cfg = world.config
    rng = random.Random(cfg.seed)
    now = world._now
    t0 = int(now) - 400 * 86400  # account creation

    # spaces: root, legacy and a tree of named spaces
    world.spaces["root"] = Space("root", "root", "The root space")
    world.spaces["legacy"] = Space("legacy", "legacy", "Legacy space", parentSpace="root")
    space_ids = ["root", "legacy"]
    for i in range(cfg.spaces):
        name = SPACE_NAMES[i % len(SPACE_NAMES)] + ("" if i < len(SPACE_NAMES) else str(i))
        parent = "root" if i < 3 else rng.choice(space_ids[2:])
        sid = f"{name}-{ulid(t0 + i * 3600, rng)}"
        world.spaces[sid] = Space(sid, name, f"{name} team", parentSpace=parent)
        space_ids.append(sid)

    # private worker pools
    for i in range(cfg.pools):
        pid = ulid(t0 + 86400 + i, rng)
        pool = WorkerPool(
            id=pid,
            name=f"pool-{['aws', 'gcp', 'onprem', 'k8s'][i % 4]}-{i + 1}",
            space=rng.choice(space_ids),
            createdAt=t0 + 86400,
            updatedAt=int(now) - 3600,
            labels=["autoscaling"] if i % 2 == 0 else [],
            driftDetectionRunLimit=None if i % 2 else -1,
            world=world,
        )
        for j in range(cfg.workers_per_pool):
            created = int(now) - rng.randint(600, 86400)
            meta = {"asg_id": f"{pool.name}-asg", "instance_id": f"i-{rng.getrandbits(48):012x}"}
            pool.workers.append(
                Worker(
                    id=ulid(created, rng),
                    pool_id=pid,
                    createdAt=created,
                    availableAt=created + j,
                    metadata=metadata_json(meta),
                )
            )
        world.pools[pid] = pool

    pool_ids = list(world.pools)
    for i in range(cfg.stacks):
        stack = make_stack(world, rng, None, _index=i, _space_ids=space_ids, _pool_ids=pool_ids)
        world.stacks[stack.id] = stack
        if cfg.history:
            _seed_past_runs(world, rng, stack)

    _seed_rbac(world, rng, space_ids, t0)


def make_stack(world: Any, rng: random.Random, stack_id: str | None = None, **fields: Any) -> Stack:
    i = fields.pop("_index", len(world.stacks))
    space_ids = fields.pop("_space_ids", None) or list(world.spaces)
    pool_ids = fields.pop("_pool_ids", None)
    if pool_ids is None:
        pool_ids = list(world.pools)
    env, comp = ENVS[i % len(ENVS)], COMPONENTS[(i // len(ENVS)) % len(COMPONENTS)]
    sid = stack_id or f"{env}-{comp}-{i}"
    while sid in world.stacks:
        sid += "-x"
    pool = rng.choice(pool_ids) if pool_ids and rng.random() < 0.6 else None
    created = int(world._now) - _ri(rng, 86400, 300 * 86400)
    vendor = rng.choices(VENDORS, VENDOR_WEIGHTS)[0]
    stack = Stack(
        id=sid,
        name=fields.pop("name", sid),
        space=rng.choice(space_ids),
        createdAt=created,
        repository=f"infra-{comp}",
        branch="main",
        vendorConfig=dict(vendor),
        labels=[f"env:{env}", f"team:{comp}"] + (["critical"] if rng.random() < 0.1 else []),
        worker_pool=pool,
        autodeploy=rng.random() < 0.3,
        administrative=rng.random() < 0.05,
        entityCount=_ri(rng, 0, 400),
        drift_schedule=pool is not None and rng.random() < 0.5,
    )
    if "workerPool" in fields:
        fields["worker_pool"] = fields.pop("workerPool")
    for k, v in fields.items():
        if not hasattr(stack, k):
            raise TypeError(f"unknown stack field {k!r}")
        setattr(stack, k, v)
    return stack


def _seed_past_runs(world: Any, rng: random.Random, stack: Stack) -> None:
    """0-3 terminal runs in the past, so stacks start with a realistic state."""
    n = rng.choice((0, 1, 1, 2, 2, 3))
    now = world._now
    t = now - _ri(rng, 3600, 30 * 86400)
    runs = []
    for _ in range(n):
        roll = rng.random()
        kind = "PROPOSED" if roll < 0.25 else "TRACKED"
        if kind == "PROPOSED":
            outcome = "PROPOSED"
        else:
            outcome = "FAILED" if roll < 0.33 else "DISCARDED" if roll < 0.37 else "FINISHED"
        created = int(t)
        commit = {
            "hash": f"{rng.getrandbits(160):040x}",
            "timestamp": created - _ri(rng, 30, 3600),
            "authorName": rng.choice(["Alice Doe", "Bob Roe", "Carol Poe"]),
            "message": "update infrastructure",
        }
        world._run_seq += 1
        run = Run(
            id=ulid(created, rng),
            stack_id=stack.id,
            type=kind,
            createdAt=created,
            title=commit["message"],
            branch=stack.branch,
            commit=commit,
            seq=world._run_seq,
        )
        ts = created
        for k, state in enumerate(PAST_PATHS[outcome]):
            ts += 0 if k == 0 else _ri(rng, 3, 60)
            run.history.append(
                {
                    "state": state,
                    "stateVersion": 1,
                    "timestamp": ts,
                    "terminal": k == len(PAST_PATHS[outcome]) - 1,
                    "hasLogs": k > 1,
                    "note": None,
                    "username": "alice" if state in ("CONFIRMED", "DISCARDED") else None,
                }
            )
        run.state = run.history[-1]["state"]
        run.updatedAt = ts
        runs.append(run)
        world.runs[run.id] = run
        if kind == "TRACKED":
            stack.trackedCommit = commit
            stack.state = stack_state_for(run.state)
            stack.stateSetAt = ts
            if run.state == "FINISHED":
                stack.lastApplyAt = ts
        t = ts + _ri(rng, 600, 5 * 86400)
        if t > now - 60:
            break
    stack.runs = runs[::-1]
    stack.isDrifted = stack.worker_pool is not None and rng.random() < 0.05


def _seed_rbac(world: Any, rng: random.Random, space_ids: list[str], t0: int) -> None:
    now = int(world._now)
    for slug, name, actions in SYSTEM_ROLES:
        world.roles[slug] = Role(slug, slug, name, f"{name} (system role)", True, actions)
    for slug, name, actions in CUSTOM_ROLES:
        rid = ulid(t0 + 7200, rng)
        world.roles[rid] = Role(rid, slug, name, f"Custom role {name}", False, actions)
    roles_by_slug = {r.slug: r for r in world.roles.values()}

    def bind(key: ApiKey, slug: str, space: str) -> None:
        r = roles_by_slug[slug]
        key.apiKeyRoleBindings.append(
            {"id": ulid(now, rng), "apiKeyID": key.id, "roleID": r.id, "spaceID": space, "role": r}
        )

    # users and IdP groups
    statuses = ["ACTIVE"] * 6 + ["INACTIVE", "PENDING", "QUEUED", "EXPIRED"]
    for i in range(world.config.users):
        uid = ulid(t0 + 100 + i, rng)
        status = statuses[i % len(statuses)]
        world.users[uid] = ManagedUser(
            id=uid,
            username=f"user{i}@example.com",
            status=status,
            invitationEmail=f"user{i}@example.com",
            lastLoginTime=now - rng.randint(60, 40 * 86400) if status == "ACTIVE" else None,
            groupCount=rng.randint(0, 3),
            accessRules=[{"space": rng.choice(space_ids), "spaceAccessLevel": "READ"}],
        )
        if i % 3 == 0:
            world.user_bindings.append(
                {"id": ulid(now, rng), "roleID": "space-writer", "spaceID": "root", "userID": uid}
            )
    for gname, level in (("platform-admins", "ADMIN"), ("developers", "WRITE"), ("viewers", None)):
        gid = ulid(t0 + 200, rng)
        rules = [{"space": "root", "spaceAccessLevel": level}] if level else []
        world.user_groups[gid] = ManagedUserGroup(
            id=gid, groupName=gname, accessRules=rules, memberCount=rng.randint(1, 20)
        )
        if level:
            world.group_bindings.append(
                {
                    "id": ulid(now, rng),
                    "roleID": "space-admin",
                    "spaceID": "root",
                    "userGroupID": gid,
                }
            )
    for sid in list(world.stacks)[:3]:
        world.stack_bindings.append(
            {"id": ulid(now, rng), "roleID": "space-admin", "spaceID": "root", "stackID": sid}
        )

    # API keys, covering the scenarios the exporter must report on
    def key(name: str, **kw: Any) -> ApiKey:
        kid = kw.pop("id", None) or ulid(t0 + 300 + len(world.api_keys), rng)
        k = ApiKey(id=kid, name=name, createdAt=now - rng.randint(86400, 200 * 86400), **kw)
        world.api_keys[kid] = k
        return k

    used = lambda: now - rng.randint(60, 7 * 86400)  # noqa: E731
    bind(
        key("root-admin", description="Space admin on root", lastUsedAt=used()),
        "space-admin",
        "root",
    )
    key("legacy-admin", admin=True, lastUsedAt=used(), description="legacy admin key")
    bind(key("never-used", lastUsedAt=None), "space-reader", space_ids[-1])
    bind(key("expiring-soon", lastUsedAt=used(), expiresAt=now + 3 * 86400), "space-writer", "root")
    oidc = key(
        "ci-oidc",
        id=f"oidc::https://token.actions.githubusercontent.com::{ulid(now, rng)}",
        type="OIDC",
        lastUsedAt=used(),
        oidcSettings={
            "issuer": "https://token.actions.githubusercontent.com",
            "clientId": "spacelift",
            "subjectExpression": "repo:acme/.*",
            "claimMapping": {"entries": []},
        },
    )
    bind(oidc, "deployer", space_ids[-1])
    key("no-bindings", lastUsedAt=used())
    key("team-key", teams=["platform-admins"], lastUsedAt=used(), isMachineUser=False)
    bind(key("pool-controller", lastUsedAt=used()), "worker-pool-controller", "root")
    for i in range(max(0, world.config.api_keys - len(world.api_keys))):
        k = key(f"key-{i}", lastUsedAt=used() if rng.random() < 0.8 else None)
        bind(k, rng.choice(["space-reader", "space-writer", "auditor"]), rng.choice(space_ids))
