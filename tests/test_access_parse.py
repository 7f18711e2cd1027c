"""Access area without a server: parsers on hand-built answers, collector, poll orchestration."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from graphql import build_schema, parse, validate
from graphql.language import FieldNode, OperationDefinitionNode

from exporter.areas import AREAS, access
from exporter.areas.base import AreaContext, FamilyBuilder
from exporter.client import FieldError, Result
from exporter.errors import (
    MalformedResponseError,
    PartialFailure,
    PartialPermissionDenied,
    PermissionDeniedError,
    ServerError,
)

SCHEMA = build_schema(
    (Path(__file__).parent.parent / "exporter/simulator/schema.graphql").read_text()
)


def _key(**over: Any) -> dict[str, Any]:
    k: dict[str, Any] = {
        "id": "01KEY",
        "name": "ci",
        "type": "SECRET",
        "admin": False,
        "isMachineUser": True,
        "createdAt": 1_700_000_000,
        "lastUsedAt": 1_700_100_000,
        "expiresAt": None,
        "deleted": False,
        "teams": [],
        "apiKeyRoleBindings": [],
    }
    k.update(over)
    return k


def _binding(slug: str, space: str, n: int = 0) -> dict[str, Any]:
    return {"id": f"B{slug}{space}{n}", "spaceID": space, "role": {"slug": slug}}


def _identities(**over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "apiKeys": [
            _key(
                id="01A",
                name="root-admin",
                apiKeyRoleBindings=[_binding("space-admin", "root")],
            ),
            _key(
                id="01B",
                name="team-key",
                isMachineUser=False,
                lastUsedAt=None,
                expiresAt=1_800_000_000,
                teams=["platform-admins", "ops", "not-a-group"],
                apiKeyRoleBindings=[_binding("space-reader", "dev")],
            ),
            _key(id="01C", name="oidc", type="OIDC", admin=True),
        ],
        "managedUsers": [
            {"id": "u1", "status": "ACTIVE"},
            {"id": "u2", "status": "ACTIVE"},
            {"id": "u3", "status": "PENDING"},
        ],
        "managedUserGroups": [
            {
                "id": "g1",
                "groupName": "platform-admins",
                "accessRules": [
                    {"space": "root", "spaceAccessLevel": "ADMIN"},
                    {"space": "dev", "spaceAccessLevel": "WRITE"},
                ],
            },
            {
                # gives space-admin on root again: inherited once per key, not once per group
                "id": "g2",
                "groupName": "ops",
                "accessRules": [
                    {"space": "root", "spaceAccessLevel": "ADMIN"},
                    {"space": "prod", "spaceAccessLevel": "NONE"},
                ],
            },
            {"id": "g3", "groupName": "viewers", "accessRules": []},
        ],
    }
    d.update(over)
    return d


ROLES = {
    "roles": [
        {"id": "space-admin", "slug": "space-admin", "isSystem": True, "roleBindingsCount": 7},
        {"id": "space-reader", "slug": "space-reader", "isSystem": True, "roleBindingsCount": 2},
        {"id": "01R", "slug": "deployer", "isSystem": False, "roleBindingsCount": 0},
    ]
}
SEATS = {"seats": {"user": {"inUse": 6, "limit": 50}, "apiKey": {"inUse": 4, "limit": -1}}}


def _samples(snapshot: access.Snapshot, per_key: bool = True) -> dict[tuple[Any, ...], float]:
    poller = access.Poller(AreaContext("acme", {"per_key": per_key}))
    out = FamilyBuilder()
    poller.collect(snapshot, out)
    return {
        (s.name, *sorted(s.labels.items())): s.value for fam in out.families() for s in fam.samples
    }


def _get(samples: dict[tuple[Any, ...], float], name: str, **labels: str) -> float | None:
    key = (name, *sorted({"account": "acme", **labels}.items()))
    return samples.get(key)


# -- documents -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(access.SPEC.documents))
def test_every_document_validates_against_the_schema(name: str) -> None:
    document = parse(access.SPEC.documents[name])
    assert validate(SCHEMA, document) == []
    (op,) = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    assert op.name is not None and op.name.value == name


def test_no_document_selects_a_secret() -> None:
    def fields(selection_set: Any) -> list[str]:
        out = []
        for sel in selection_set.selections if selection_set else []:
            if isinstance(sel, FieldNode):
                out.append(sel.name.value)
                out.extend(fields(sel.selection_set))
        return out

    for doc in access.SPEC.documents.values():
        for op in parse(doc).definitions:
            assert isinstance(op, OperationDefinitionNode)
            assert "secret" not in fields(op.selection_set)


def test_area_is_registered_with_a_slow_default_interval() -> None:
    assert AREAS["access"] is access.SPEC
    assert access.SPEC.default_interval == 600
    assert access.SPEC.options["per_key"].default is True
    assert {p.document.text for p in access.PARTS} == set(access.SPEC.documents.values())


# -- parsers ---------------------------------------------------------------------------------


def test_identities_direct_and_inherited_bindings() -> None:
    ids = access.parse_identities(_identities())
    by_id = {k.id: k for k in ids.keys}
    assert [k.id for k in ids.keys] == ["01A", "01B", "01C"]
    assert by_id["01A"].bindings == (access.Binding("space-admin", "root", "direct"),)
    # teams -> groups: ADMIN on root (from two groups, counted once), WRITE on dev; NONE and
    # an unknown team give nothing
    assert by_id["01B"].bindings == (
        access.Binding("space-reader", "dev", "direct"),
        access.Binding("space-admin", "root", "idp_group"),
        access.Binding("space-writer", "dev", "idp_group"),
    )
    assert by_id["01C"].bindings == ()
    assert by_id["01B"].last_used is None and by_id["01B"].expires == 1_800_000_000
    assert by_id["01B"].machine_user is False
    assert ids.user_groups == 3
    assert dict(ids.users_by_status) == {
        "ACTIVE": 2,
        "PENDING": 1,
        "QUEUED": 0,
        "EXPIRED": 0,
        "INACTIVE": 0,
    }


def test_deleted_keys_are_left_out() -> None:
    data = _identities(apiKeys=[_key(id="01A"), _key(id="01D", deleted=True)])
    assert [k.id for k in access.parse_identities(data).keys] == ["01A"]


def test_roles_and_seats() -> None:
    roles = access.parse_roles(ROLES)
    assert [(r.slug, r.system, r.bindings) for r in roles] == [
        ("deployer", False, 0),
        ("space-admin", True, 7),
        ("space-reader", True, 2),
    ]
    assert access.parse_seats(SEATS) == (
        access.Seat("user", 6, 50),
        access.Seat("api_key", 4, None),  # -1 = unlimited
    )


MALFORMED: list[tuple[str, Any, str]] = [
    ("identities", _identities(apiKeys=None), "apiKeys"),
    ("identities", _identities(apiKeys=[_key(id=None)]), "apiKeys[0].id"),
    ("identities", _identities(apiKeys=[_key(createdAt="yesterday")]), "apiKeys[0].createdAt"),
    ("identities", _identities(apiKeys=[_key(lastUsedAt="never")]), "apiKeys[0].lastUsedAt"),
    ("identities", _identities(apiKeys=[_key(admin="yes")]), "apiKeys[0].admin"),
    ("identities", _identities(apiKeys=[_key(deleted=None)]), "apiKeys[0].deleted"),
    ("identities", _identities(apiKeys=[_key(teams=[3])]), "apiKeys[0].teams[0]"),
    ("identities", _identities(apiKeys=[_key(teams=None)]), "apiKeys[0].teams"),
    (
        "identities",
        _identities(apiKeys=[_key(apiKeyRoleBindings=[{"spaceID": "root", "role": None}])]),
        "apiKeys[0].apiKeyRoleBindings[0].role",
    ),
    ("identities", _identities(apiKeys=["01A"]), "apiKeys[0]"),
    ("identities", _identities(managedUsers=[{"id": "u"}]), "managedUsers[0].status"),
    (
        "identities",
        _identities(managedUserGroups=[{"groupName": "g", "accessRules": [{"space": "root"}]}]),
        "managedUserGroups[0].accessRules[0].spaceAccessLevel",
    ),
    ("identities", _identities(managedUserGroups={}), "managedUserGroups"),
    ("roles", {"roles": [{"slug": "x", "isSystem": True}]}, "roles[0].roleBindingsCount"),
    ("roles", {"roles": "all"}, "roles"),
    ("seats", {"seats": {"user": {"inUse": 1, "limit": 2}}}, "seats.apiKey"),
    ("seats", {"seats": {"user": {"inUse": "1", "limit": 2}, "apiKey": {}}}, "seats.user.inUse"),
    ("seats", None, "data"),
]


@pytest.mark.parametrize(("part", "data", "where"), MALFORMED)
def test_malformed_answers_are_rejected_naming_the_path(part: str, data: Any, where: str) -> None:
    parser = {p.name: p.parse for p in access.PARTS}[part]
    with pytest.raises(MalformedResponseError) as err:
        parser(data)
    assert where in str(err.value)


def test_a_secret_in_the_answer_is_not_kept_nor_echoed() -> None:
    secret = "sk-LEAK-0123456789abcdef"
    data = _identities()
    for k in data["apiKeys"]:
        k["secret"] = secret
    snapshot = access.Snapshot(identities=access.parse_identities(data))
    assert secret not in repr(snapshot)
    assert not any(secret in str(v) for key in _samples(snapshot) for v in key)
    # a malformed key carrying a secret: the error names the path, never the values
    bad = copy.deepcopy(data)
    bad["apiKeys"][0]["name"] = {"secret": secret}
    bad["apiKeys"][1]["createdAt"] = secret
    with pytest.raises(MalformedResponseError) as err:
        access.parse_identities(bad)
    assert secret not in str(err.value)


# -- collector -------------------------------------------------------------------------------


def _full_snapshot() -> access.Snapshot:
    return access.Snapshot(
        identities=access.parse_identities(_identities()),
        roles=access.parse_roles(ROLES),
        seats=access.parse_seats(SEATS),
    )


def test_collect_counts() -> None:
    s = _samples(_full_snapshot())
    assert _get(s, "spacelift_api_keys", key_type="SECRET", admin="false") == 2
    assert _get(s, "spacelift_api_keys", key_type="OIDC", admin="true") == 1
    assert _get(s, "spacelift_api_keys", key_type="OIDC", admin="false") == 0
    assert _get(s, "spacelift_api_keys", key_type="SECRET", admin="true") == 0
    b = "spacelift_api_key_role_bindings"
    assert _get(s, b, role="space-admin", space="root", via="direct") == 1
    assert _get(s, b, role="space-admin", space="root", via="idp_group") == 1
    assert _get(s, b, role="space-writer", space="dev", via="idp_group") == 1
    assert _get(s, b, role="space-reader", space="dev", via="direct") == 1
    assert len([k for k in s if k[0] == b]) == 4
    assert _get(s, "spacelift_roles", system="true") == 2
    assert _get(s, "spacelift_roles", system="false") == 1
    assert _get(s, "spacelift_role_bindings", role="space-admin") == 7
    assert _get(s, "spacelift_role_bindings", role="deployer") == 0
    assert _get(s, "spacelift_users", status="ACTIVE") == 2
    assert _get(s, "spacelift_users", status="EXPIRED") == 0
    assert _get(s, "spacelift_user_groups") == 3
    assert _get(s, "spacelift_seats_in_use", seat_kind="user") == 6
    assert _get(s, "spacelift_seats_limit", seat_kind="user") == 50
    assert _get(s, "spacelift_seats_in_use", seat_kind="api_key") == 4
    assert _get(s, "spacelift_seats_limit", seat_kind="api_key") is None  # unlimited


def test_collect_per_key_series() -> None:
    s = _samples(_full_snapshot())
    info = {
        "api_key_id": "01B",
        "api_key_name": "team-key",
        "key_type": "SECRET",
        "admin": "false",
        "machine_user": "false",
    }
    assert _get(s, "spacelift_api_key_info", **info) == 1
    assert _get(s, "spacelift_api_key_roles", api_key_id="01B") == 3
    assert _get(s, "spacelift_api_key_roles", api_key_id="01C") == 0  # worth seeing
    assert _get(s, "spacelift_api_key_created_timestamp_seconds", api_key_id="01A") == 1.7e9
    assert (
        _get(s, "spacelift_api_key_last_used_timestamp_seconds", api_key_id="01A") == 1_700_100_000
    )
    assert _get(s, "spacelift_api_key_last_used_timestamp_seconds", api_key_id="01B") is None
    assert _get(s, "spacelift_api_key_expiry_timestamp_seconds", api_key_id="01B") == 1.8e9
    assert _get(s, "spacelift_api_key_expiry_timestamp_seconds", api_key_id="01A") is None


def test_per_key_switch_off_drops_only_per_key_series() -> None:
    s = _samples(_full_snapshot(), per_key=False)
    names = {k[0] for k in s}
    assert not names & {m.name for m in access.PER_KEY_METRICS}
    assert "spacelift_api_keys" in names and "spacelift_api_key_role_bindings" in names
    out = FamilyBuilder()
    access.Poller(AreaContext("acme", {"per_key": False})).collect(_full_snapshot(), out)
    assert not {f.name for f in out.families()} & {m.name for m in access.PER_KEY_METRICS}


def test_collect_of_a_partial_snapshot_emits_only_what_was_read() -> None:
    s = _samples(access.Snapshot(roles=access.parse_roles(ROLES)))
    assert {k[0] for k in s} == {"spacelift_roles", "spacelift_role_bindings"}


# -- poll orchestration (fake client: which documents are refused) -----------------------------


class FakeClient:
    def __init__(self, answers: dict[str, Result | Exception]) -> None:
        self.answers = answers
        self.sent: list[str] = []

    def query(self, document: str, variables: Any = None) -> Result:
        name = next(n for n, d in access.SPEC.documents.items() if d == document)
        self.sent.append(name)
        answer = self.answers[name]
        if isinstance(answer, Exception):
            raise answer
        return answer


def _ok(name: str, data: dict[str, Any]) -> Result:
    return Result(name, data, ())


def _refused(name: str, root: str, message: str = "unauthorized") -> Result:
    # one refused non-null root field nulls the whole answer (GraphQL null-propagation)
    return Result(name, None, (FieldError(message, (root,)),))


def _poll(answers: dict[str, Result | Exception]) -> access.Snapshot:
    return access.Poller(AreaContext("acme", {"per_key": True})).poll(FakeClient(answers))  # type: ignore[arg-type]


IDS, RLS, STS = (
    "SpaceliftExporterAccessIdentities",
    "SpaceliftExporterAccessRoles",
    "SpaceliftExporterAccessSeats",
)


def test_poll_all_readable() -> None:
    snap = _poll({IDS: _ok(IDS, _identities()), RLS: _ok(RLS, ROLES), STS: _ok(STS, SEATS)})
    assert snap == _full_snapshot()


def test_poll_seats_refused_keeps_the_rest() -> None:
    answers: dict[str, Result | Exception] = {
        IDS: _ok(IDS, _identities()),
        RLS: _ok(RLS, ROLES),
        STS: _refused(STS, "seats", "not available for machine sessions"),
    }
    snap = _poll(answers)  # an optional field refused: left out, not a failed poll
    assert snap.seats is None and snap.identities is not None and snap.roles is not None


def test_poll_roles_refused_keeps_the_rest() -> None:
    answers: dict[str, Result | Exception] = {
        IDS: _ok(IDS, _identities()),
        RLS: _refused(RLS, "roles"),
        STS: _ok(STS, SEATS),
    }
    with pytest.raises(PartialPermissionDenied) as err:
        _poll(answers)
    assert err.value.kind == "permission"
    assert "roles" in str(err.value)
    snap = err.value.snapshot
    assert isinstance(snap, access.Snapshot)
    assert snap.roles is None and snap.identities is not None and snap.seats is not None


def test_empty_roles_is_a_permission_gap_not_zero_roles() -> None:
    answers: dict[str, Result | Exception] = {
        IDS: _ok(IDS, _identities()),
        RLS: _ok(RLS, {"roles": []}),
        STS: _ok(STS, SEATS),
    }
    with pytest.raises(PartialPermissionDenied) as err:
        _poll(answers)
    assert "root space admin" in str(err.value)
    assert isinstance(err.value.snapshot, access.Snapshot) and err.value.snapshot.roles is None


def test_poll_everything_refused_is_a_permission_error() -> None:
    answers: dict[str, Result | Exception] = {
        IDS: _refused(IDS, "apiKeys"),
        RLS: _refused(RLS, "roles"),
        STS: _refused(STS, "seats"),
    }
    with pytest.raises(PermissionDeniedError) as err:
        _poll(answers)
    assert not isinstance(err.value, PartialPermissionDenied)


def test_poll_other_failures_keep_the_other_documents() -> None:
    answers: dict[str, Result | Exception] = {
        IDS: _ok(IDS, _identities()),
        RLS: ServerError("HTTP 502"),
        STS: _ok(STS, SEATS),
    }
    with pytest.raises(PartialFailure) as err:
        _poll(answers)
    assert err.value.kind == "server_error"
    snap = err.value.snapshot
    assert isinstance(snap, access.Snapshot) and snap.identities is not None
    answers[RLS] = _ok(RLS, {"roles": [{"slug": 1}]})
    with pytest.raises(PartialFailure) as err:
        _poll(answers)
    assert err.value.kind == "malformed"
    answers = {name: ServerError("HTTP 502") for name in (IDS, RLS, STS)}
    with pytest.raises(ServerError):  # nothing read: the area failed
        _poll(answers)


def test_space_admin_on_root_is_always_present() -> None:
    ids = access.parse_identities(_identities(apiKeys=[_key()], managedUserGroups=[]))
    s = _samples(access.Snapshot(identities=ids))
    b = "spacelift_api_key_role_bindings"
    assert _get(s, b, role="space-admin", space="root", via="direct") == 0
    assert _get(s, b, role="space-admin", space="root", via="idp_group") == 0
    assert len([k for k in s if k[0] == b]) == 2
