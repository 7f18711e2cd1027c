"""Access: API keys and the roles they hold, roles, users, IdP groups and seats.

API keys are machine identities with standing access to infrastructure; this area shows who
holds which role where. Spacelift gives an API key roles in spaces three ways (API notes, 8):

- ``direct``: role bindings on the key itself (``ApiKey.apiKeyRoleBindings``);
- ``idp_group``: the key's ``teams`` matched by name to IdP group mappings
  (``managedUserGroups.groupName``), whose access the API shows only as legacy ``accessRules``
  (READ/WRITE/ADMIN on a space = ``space-reader``/``space-writer``/``space-admin``);
- login policies, which assign roles at login and leave no object the API can show.

Documents. Every root field here is non-null, so GraphQL null-propagation turns one refused
field into ``data: null`` for its whole document. The fields are therefore sent in three
documents grouped by the permission they need:

- ``SpaceliftExporterAccessIdentities``: ``apiKeys``, ``managedUsers``, ``managedUserGroups``,
  which any space admin may view (Spacelift RBAC docs), and which belong together (a key's IdP
  group access needs both keys and groups);
- ``SpaceliftExporterAccessRoles``: ``roles``, which returns the roles "accessible by the
  requester", so it may answer keys that the identities document refuses;
- ``SpaceliftExporterAccessSeats``: ``seats``, billing data that needs an admin key.

A refused document is a permission gap, not an outage: the poll keeps what the key could read
(``PartialPermissionDenied``) or, when everything was refused, fails as ``PermissionDeniedError``.

Secrets. No document selects ``ApiKey.secret``, and the parser copies only the fields it knows
into the snapshot, so a ``secret`` in an answer cannot reach a metric; error messages name
paths, never values from the answer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from exporter.areas import parse as p
from exporter.areas.base import AreaContext, AreaSpec, FamilyBuilder, OptionSpec, gauge
from exporter.areas.fields import Document, FieldGate
from exporter.errors import (
    MalformedResponseError,
    PartialFailure,
    PartialPermissionDenied,
    PermissionDeniedError,
    SpaceliftError,
)

if TYPE_CHECKING:
    from exporter.client import SpaceliftClient

IDENTITIES_DOCUMENT = """
query SpaceliftExporterAccessIdentities {
  apiKeys {
    id
    name
    type
    admin
    isMachineUser
    createdAt
    lastUsedAt
    expiresAt
    deleted
    teams
    apiKeyRoleBindings { id spaceID role { slug } }
  }
  managedUsers { id status }
  managedUserGroups { id groupName accessRules { space spaceAccessLevel } }
}
"""

ROLES_DOCUMENT = """
query SpaceliftExporterAccessRoles {
  roles { id slug isSystem roleBindingsCount }
}
"""

# ``seats`` is optional: only an unmerged official-exporter PR reads it, and older
# self-hosted releases lack it.
SEATS_DOCUMENT = """
query SpaceliftExporterAccessSeats {
  seats {
    user { inUse limit }
    apiKey { inUse limit }
  }
}
"""

# Legacy access levels of an IdP group mapping, as the system roles they were migrated to.
GROUP_LEVEL_ROLES = {"READ": "space-reader", "WRITE": "space-writer", "ADMIN": "space-admin"}
KEY_TYPES = ("SECRET", "OIDC")
USER_STATUSES = ("QUEUED", "PENDING", "EXPIRED", "ACTIVE", "INACTIVE")
SEAT_KINDS = (("user", "user"), ("apiKey", "api_key"))  # (API field, seat_kind label)

# -- metrics ---------------------------------------------------------------------------------

API_KEYS = gauge(
    "spacelift_api_keys",
    "API keys of the account by type (SECRET or OIDC) and legacy admin flag, at the last poll.",
    "key_type",
    "admin",
)
KEY_BINDINGS = gauge(
    "spacelift_api_key_role_bindings",
    "API key role bindings per role slug and space, at the last poll; via=direct for bindings "
    "on the key, via=idp_group for access inherited from the IdP groups named in its teams.",
    "role",
    "space",
    "via",
)
KEY_INFO = gauge(
    "spacelift_api_key_info",
    "One series per API key (value 1) with its name, type, legacy admin flag and machine-user "
    "flag, at the last poll.",
    "api_key_id",
    "api_key_name",
    "key_type",
    "admin",
    "machine_user",
)
KEY_ROLES = gauge(
    "spacelift_api_key_roles",
    "Roles (distinct role and space pairs) the API key holds, directly or inherited from IdP "
    "groups, at the last poll.",
    "api_key_id",
)
KEY_ROOT_ADMIN = gauge(
    "spacelift_api_key_root_admin",
    "1 if the API key holds space-admin on the root space (directly or through an IdP group): "
    "it can do anything in the account. At the last poll.",
    "api_key_id",
)
KEY_CREATED = gauge(
    "spacelift_api_key_created_timestamp_seconds",
    "When the API key was created, at the last poll.",
    "api_key_id",
)
KEY_LAST_USED = gauge(
    "spacelift_api_key_last_used_timestamp_seconds",
    "When the API key was last used, at the last poll; absent for a key never used.",
    "api_key_id",
)
KEY_EXPIRY = gauge(
    "spacelift_api_key_expiry_timestamp_seconds",
    "When the API key expires, at the last poll; absent for a key that never expires.",
    "api_key_id",
)
ROLES = gauge(
    "spacelift_roles",
    "Roles of the account, system (true) or custom (false), at the last poll.",
    "system",
)
ROLE_BINDINGS = gauge(
    "spacelift_role_bindings",
    "Bindings of the role to any actor (users, IdP groups, API keys, stacks), at the last poll.",
    "role",
)
USERS = gauge(
    "spacelift_users",
    "Users invited to or logged into the account, per status, at the last poll.",
    "status",
)
USER_GROUPS = gauge(
    "spacelift_user_groups",
    "IdP group mappings of the account, at the last poll.",
)
SEATS_IN_USE = gauge(
    "spacelift_seats_in_use",
    "Seats in use per seat kind (user, api_key), at the last poll.",
    "seat_kind",
)
SEATS_LIMIT = gauge(
    "spacelift_seats_limit",
    "Seats allowed per seat kind, at the last poll; absent when the kind is unlimited.",
    "seat_kind",
)

PER_KEY_METRICS = (KEY_INFO, KEY_ROLES, KEY_ROOT_ADMIN, KEY_CREATED, KEY_LAST_USED, KEY_EXPIRY)
METRICS = (
    API_KEYS,
    KEY_BINDINGS,
    *PER_KEY_METRICS,
    ROLES,
    ROLE_BINDINGS,
    USERS,
    USER_GROUPS,
    SEATS_IN_USE,
    SEATS_LIMIT,
)

# -- snapshot --------------------------------------------------------------------------------


ROOT_ADMIN = ("space-admin", "root")  # (role slug, space): can do anything in the account


@dataclass(frozen=True)
class Binding:
    role: str  # role slug
    space: str  # space id
    via: str  # "direct" or "idp_group"


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    type: str
    admin: bool
    machine_user: bool
    created: float
    last_used: float | None
    expires: float | None
    bindings: tuple[Binding, ...]


@dataclass(frozen=True)
class Identities:
    keys: tuple[ApiKey, ...]
    users_by_status: tuple[tuple[str, int], ...]
    user_groups: int


@dataclass(frozen=True)
class Role:
    slug: str
    system: bool
    bindings: int


@dataclass(frozen=True)
class Seat:
    kind: str
    in_use: float
    limit: float | None  # None: unlimited


@dataclass(frozen=True)
class Snapshot:
    """What the key could read; a part is None when its document was refused."""

    identities: Identities | None = None
    roles: tuple[Role, ...] | None = None
    seats: tuple[Seat, ...] | None = None


ALWAYS_SHOWN = (
    Binding("space-admin", "root", "direct"),
    Binding("space-admin", "root", "idp_group"),
)

# -- parsers (pure) --------------------------------------------------------------------------


def _group_access(data: Mapping[str, Any]) -> dict[str, tuple[tuple[str, str], ...]]:
    """Group name -> (role slug, space) pairs its legacy access rules grant."""
    out: dict[str, set[tuple[str, str]]] = {}
    for i, raw in enumerate(p.lst(data.get("managedUserGroups"), "managedUserGroups")):
        where = f"managedUserGroups[{i}]"
        g = p.obj(raw, where)
        access = out.setdefault(p.string(g, "groupName", where), set())
        for j, rule_raw in enumerate(p.lst(g.get("accessRules"), where + ".accessRules")):
            rwhere = f"{where}.accessRules[{j}]"
            rule = p.obj(rule_raw, rwhere)
            space = p.string(rule, "space", rwhere)
            role = GROUP_LEVEL_ROLES.get(p.string(rule, "spaceAccessLevel", rwhere))
            if role is not None:  # NONE (or a level unknown to us) grants nothing
                access.add((role, space))
    return {name: tuple(sorted(pairs)) for name, pairs in out.items()}


def _key(raw: Any, where: str, groups: Mapping[str, tuple[tuple[str, str], ...]]) -> ApiKey:
    k = p.obj(raw, where)
    direct = []
    for j, b_raw in enumerate(p.lst(k.get("apiKeyRoleBindings"), where + ".apiKeyRoleBindings")):
        bwhere = f"{where}.apiKeyRoleBindings[{j}]"
        b = p.obj(b_raw, bwhere)
        role = p.obj(b.get("role"), bwhere + ".role")
        direct.append(
            Binding(
                p.string(role, "slug", bwhere + ".role"), p.string(b, "spaceID", bwhere), "direct"
            )
        )
    inherited: set[tuple[str, str]] = set()  # one per (role, space), however many groups give it
    for t, team in enumerate(p.lst(k.get("teams"), where + ".teams")):
        if not isinstance(team, str):
            raise MalformedResponseError(f"{where}.teams[{t}]: expected a string")
        inherited.update(groups.get(team, ()))
    bindings = sorted(direct, key=lambda b: (b.role, b.space)) + [
        Binding(role, space, "idp_group") for role, space in sorted(inherited)
    ]
    return ApiKey(
        id=p.string(k, "id", where),
        name=p.string(k, "name", where),
        type=p.string(k, "type", where),
        admin=p.boolean(k, "admin", where),
        machine_user=p.boolean(k, "isMachineUser", where),
        created=p.number(k, "createdAt", where),
        last_used=p.opt_number(k, "lastUsedAt", where),
        expires=p.opt_number(k, "expiresAt", where),
        bindings=tuple(bindings),
    )


def parse_identities(data: object) -> Identities:
    d = p.obj(data, "data")
    groups = _group_access(d)
    keys = []
    for i, raw in enumerate(p.lst(d.get("apiKeys"), "apiKeys")):
        where = f"apiKeys[{i}]"
        if p.boolean(p.obj(raw, where), "deleted", where):
            continue  # a deleted key can no longer be used
        keys.append(_key(raw, where, groups))
    statuses: Counter[str] = Counter({s: 0 for s in USER_STATUSES})
    for i, raw in enumerate(p.lst(d.get("managedUsers"), "managedUsers")):
        where = f"managedUsers[{i}]"
        statuses[p.string(p.obj(raw, where), "status", where)] += 1
    return Identities(
        keys=tuple(sorted(keys, key=lambda k: k.id)),
        users_by_status=tuple(sorted(statuses.items())),
        user_groups=len(p.lst(d.get("managedUserGroups"), "managedUserGroups")),
    )


def parse_roles(data: object) -> tuple[Role, ...]:
    """Every account has system roles, so an empty list is what a key that is not root admin
    is shown (the Terraform provider: "no roles found. Ensure you have root admin access"):
    a permission gap, not zero roles."""
    roles = []
    for i, raw in enumerate(p.lst(p.obj(data, "data").get("roles"), "roles")):
        where = f"roles[{i}]"
        r = p.obj(raw, where)
        roles.append(
            Role(
                slug=p.string(r, "slug", where),
                system=p.boolean(r, "isSystem", where),
                bindings=int(p.number(r, "roleBindingsCount", where)),
            )
        )
    if not roles:
        raise PermissionDeniedError("roles: empty list (the API key is not a root space admin)")
    return tuple(sorted(roles, key=lambda r: r.slug))


def parse_seats(data: object) -> tuple[Seat, ...] | None:
    if "seats" not in p.obj(data, "data"):  # left out: the server lacks or refuses it
        return None
    seats = p.obj(p.obj(data, "data").get("seats"), "seats")
    out = []
    for field, kind in SEAT_KINDS:
        s = p.obj(seats.get(field), f"seats.{field}")
        limit = p.number(s, "limit", f"seats.{field}", allow_negative=True)  # -1: no limit
        out.append(Seat(kind, p.number(s, "inUse", f"seats.{field}"), None if limit < 0 else limit))
    return tuple(out)


@dataclass(frozen=True)
class Part:
    """One document of the area: the root fields it needs and the parser of its answer."""

    name: str
    document: Document
    roots: tuple[str, ...]
    parse: Callable[[object], Any]


PARTS = (
    Part(
        "identities",
        Document(IDENTITIES_DOCUMENT),
        ("apiKeys", "managedUsers", "managedUserGroups"),
        parse_identities,
    ),
    Part("roles", Document(ROLES_DOCUMENT), ("roles",), parse_roles),
    Part(
        "seats",
        Document(SEATS_DOCUMENT, {"Query.seats": (SEATS_IN_USE, SEATS_LIMIT)}),
        ("seats",),
        parse_seats,
    ),
)

# -- poller ----------------------------------------------------------------------------------


def _flag(value: bool) -> str:
    return "true" if value else "false"


class Poller:
    def __init__(self, ctx: AreaContext) -> None:
        self.account = ctx.account
        self.per_key = bool(ctx.options.get("per_key", True))
        self.fields = FieldGate(ctx.account, ctx.area or "access", ctx.clock)
        self._last = Snapshot()

    def poll(self, client: SpaceliftClient) -> Snapshot:
        """One document per part; a part refused is left out, a part that fails otherwise
        keeps its last good data, and either way the other parts' fresh data is served."""
        parts: dict[str, Any] = {}
        refused: list[str] = []
        failed: list[SpaceliftError] = []
        for part in PARTS:
            try:
                result = self.fields.query(client, part.document)
                if result is not None:  # None: its only field is unavailable (reported)
                    parts[part.name] = part.parse(result.require(*part.roots))
            except PermissionDeniedError as exc:
                refused.append(f"{part.name} ({exc})")
            except SpaceliftError as exc:
                failed.append(exc)
                parts[part.name] = getattr(self._last, part.name)
        read = len(parts) > len(failed)  # some document answered with fresh data
        snapshot = Snapshot(**parts)
        if failed:
            if not read:
                raise failed[0]  # nothing read: the area failed, its last snapshot stays
            self._last = snapshot
            raise PartialFailure("; ".join(str(e) for e in failed), snapshot, failed[0].kind)
        self._last = snapshot
        if not refused:
            return snapshot
        message = "the API key may not read " + "; ".join(refused)
        if not read:
            raise PermissionDeniedError(message)
        raise PartialPermissionDenied(message, snapshot)

    def collect(self, snapshot: Snapshot, out: FamilyBuilder) -> None:
        a = self.account
        for m in METRICS:
            if self.per_key or m not in PER_KEY_METRICS:
                out.declare(m)
        ids = snapshot.identities
        if ids is not None:
            kinds: Counter[tuple[str, bool]] = Counter(
                {(t, adm): 0 for t in KEY_TYPES for adm in (False, True)}
            )
            # The headline pair is always present, 0 included, so "the first key to get
            # space-admin on root" is a change of value an alert can see, not a new series.
            bindings: Counter[Binding] = Counter({b: 0 for b in ALWAYS_SHOWN})
            for key in ids.keys:
                kinds[(key.type, key.admin)] += 1
                bindings.update(key.bindings)
            for (key_type, admin), n in sorted(kinds.items()):
                out.add(API_KEYS, (a, key_type, _flag(admin)), n)
            for b, n in sorted(
                bindings.items(), key=lambda kv: (kv[0].role, kv[0].space, kv[0].via)
            ):
                out.add(KEY_BINDINGS, (a, b.role, b.space, b.via), n)
            if self.per_key:
                for key in ids.keys:
                    info = (key.name, key.type, _flag(key.admin), _flag(key.machine_user))
                    out.add(KEY_INFO, (a, key.id, *info), 1)
                    # A role held both directly and through a group is one role.
                    roles = {(b.role, b.space) for b in key.bindings}
                    out.add(KEY_ROLES, (a, key.id), len(roles))
                    out.add(KEY_ROOT_ADMIN, (a, key.id), int(ROOT_ADMIN in roles))
                    out.add(KEY_CREATED, (a, key.id), key.created)
                    if key.last_used is not None:
                        out.add(KEY_LAST_USED, (a, key.id), key.last_used)
                    if key.expires is not None:
                        out.add(KEY_EXPIRY, (a, key.id), key.expires)
            for status, n in ids.users_by_status:
                out.add(USERS, (a, status), n)
            out.add(USER_GROUPS, (a,), ids.user_groups)
        if snapshot.roles is not None:
            systems: Counter[bool] = Counter({False: 0, True: 0})
            systems.update(r.system for r in snapshot.roles)
            for system, n in sorted(systems.items()):
                out.add(ROLES, (a, _flag(system)), n)
            per_slug: Counter[str] = Counter()
            for role in snapshot.roles:
                per_slug[role.slug] += role.bindings
            for slug, n in sorted(per_slug.items()):
                out.add(ROLE_BINDINGS, (a, slug), n)
        if snapshot.seats is not None:
            for seat in snapshot.seats:
                out.add(SEATS_IN_USE, (a, seat.kind), seat.in_use)
                if seat.limit is not None:
                    out.add(SEATS_LIMIT, (a, seat.kind), seat.limit)


SPEC = AreaSpec(
    name="access",
    title="Access: API keys, roles, users and seats",
    default_interval=600.0,  # RBAC changes slowly; the API notes suggest 5-15 min
    create=Poller,
    documents={
        "SpaceliftExporterAccessIdentities": IDENTITIES_DOCUMENT,
        "SpaceliftExporterAccessRoles": ROLES_DOCUMENT,
        "SpaceliftExporterAccessSeats": SEATS_DOCUMENT,
    },
    metrics=METRICS,
    optional={c: tuple(m) for part in PARTS for c, m in part.document.optional.items()},
    permission=(
        "Admin: `space-admin` on `root` (or a legacy admin key) for everything; a space admin "
        "of any other space can read keys, roles, users and groups but not seats (reported "
        "as a permission gap)."
    ),
    options={
        "per_key": OptionSpec(
            bool,
            True,
            "true or false: export the per-key series (spacelift_api_key_info, _roles, "
            "_created/_last_used/_expiry_timestamp_seconds), one set per API key",
        ),
    },
)
