"""Spacelift / Access: API keys, who holds which role where, keys unused or about to expire."""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import table
from grafana_foundation_sdk.models import dashboard as dm

from grafana.dashboards_src.common import (
    BAD_IF_ANY,
    ON_KEY,
    WARN_IF_ANY,
    Board,
    bar_gauge,
    graph,
    grid,
    is_,
    query,
    sel,
    single,
    steps,
)

UID = "spacelift-access"

ROOT_ADMIN = sel(
    "spacelift_api_key_role_bindings", is_("role", "space-admin"), is_("space", "root")
)
KEY_LABELS = f"{ON_KEY} group_left (api_key_name, key_type, admin) {sel('spacelift_api_key_info')}"
KEY_COLUMNS = {
    "account": "Account",
    "api_key_name": "API key",
    "api_key_id": "Key id",
    "key_type": "Kind",
    "admin": "Legacy admin",
}
DAY = 86400


def _key_table(
    title: str, description: str, unit: str, expr: str, value_header: str, **kw: Any
) -> table.Panel:
    """One row per API key (name, type, admin flag from ``KEY_LABELS``) and one value."""
    return grid(
        title,
        description,
        unit,
        query(expr, instant=True, table_format=True),
        columns={**KEY_COLUMNS, "Value": value_header},
        sort_by=value_header,
        **kw,
    )


def build() -> dm.Dashboard:
    b = Board(
        UID,
        "Spacelift / Access",
        "API keys by kind, API key role bindings by role and space (space-admin on root "
        "stands out), keys unused for long or expiring soon, roles, users and seats.",
    )
    b.row(
        "API keys",
        [
            single(
                "API keys",
                "All API keys.",
                "short",
                query(f"sum({sel('spacelift_api_keys')})"),
                w=4,
            ),
            single(
                "space-admin on root",
                "API key role bindings granting space-admin on the root space: these keys can "
                "do anything in the account. Every one should be known and justified.",
                "short",
                query(f"sum({ROOT_ADMIN}) or vector(0)"),
                w=5,
                thresholds=BAD_IF_ANY,
            ),
            single(
                "Legacy admin keys",
                "API keys with the legacy admin flag (full access outside RBAC).",
                "short",
                query(f"sum({sel('spacelift_api_keys', is_('admin', 'true'))}) or vector(0)"),
                w=5,
                thresholds=BAD_IF_ANY,
            ),
            single(
                "Keys without role bindings",
                "API keys with no role binding at all (0 roles): unused identities, or keys "
                "that get their roles from a login policy, which the API does not show.",
                "short",
                query(f"count({sel('spacelift_api_key_roles')} == 0) or vector(0)"),
                w=5,
                thresholds=WARN_IF_ANY,
            ),
            single(
                "Keys expiring within 7 days",
                "API keys whose expiry is less than 7 days away.",
                "short",
                query(
                    f"count(({sel('spacelift_api_key_expiry_timestamp_seconds')} - time())"
                    f" < 7 * {DAY}) or vector(0)"
                ),
                w=5,
                thresholds=WARN_IF_ANY,
            ),
            bar_gauge(
                "API keys by kind",
                "API keys by kind (SECRET or OIDC) and legacy admin flag.",
                "short",
                query(
                    f"sum by (key_type, admin) ({sel('spacelift_api_keys')})",
                    "{{key_type}} admin={{admin}}",
                    instant=True,
                ),
            ),
            grid(
                "API key role bindings by role and space",
                "API key role bindings per role (rows) and space (columns), direct and through "
                "IdP groups. The space-admin / root cell is the set of keys that can do "
                "anything.",
                "short",
                query(
                    f"sum by (role, space) ({sel('spacelift_api_key_role_bindings')})",
                    instant=True,
                    table_format=True,
                ),
                columns={},
                pivot=("role", "space"),
                w=16,
            ),
            graph(
                "API key role bindings over time",
                "API key role bindings per role and how they are held (direct on the key, or "
                "through an IdP group). A step up in space-admin deserves a look.",
                "short",
                query(
                    f"sum by (role, via) ({sel('spacelift_api_key_role_bindings')})",
                    "{{role}} ({{via}})",
                ),
                w=24,
            ),
        ],
    )
    b.row(
        "Keys to review",
        [
            _key_table(
                "Time since last use",
                "How long ago each API key was last used, longest first. Keys unused for 90 "
                "days are candidates for deletion.",
                "s",
                f"(time() - {sel('spacelift_api_key_last_used_timestamp_seconds')}) * {KEY_LABELS}",
                "Unused for",
                thresholds=steps((None, "green"), (30 * DAY, "orange"), (90 * DAY, "red")),
                w=8,
            ),
            _key_table(
                "Never used",
                "API keys that have never been used, with how long ago they were created.",
                "s",
                f"((time() - {sel('spacelift_api_key_created_timestamp_seconds')})"
                f" * {KEY_LABELS})"
                f" unless {ON_KEY} {sel('spacelift_api_key_last_used_timestamp_seconds')}",
                "Created",
                w=8,
            ),
            _key_table(
                "Time until expiry",
                "API keys that expire, with the time left, soonest first. Keys that never "
                "expire are not listed.",
                "s",
                f"({sel('spacelift_api_key_expiry_timestamp_seconds')} - time()) * {KEY_LABELS}",
                "Expires in",
                descending=False,
                thresholds=steps((None, "red"), (7 * DAY, "orange"), (30 * DAY, "green")),
                w=8,
            ),
            _key_table(
                "Role bindings per key",
                "Number of role bindings each API key holds; 0 is worth seeing.",
                "short",
                f"{sel('spacelift_api_key_roles')} * {KEY_LABELS}",
                "Role bindings",
                w=16,
            ),
            _key_table(
                "Keys that can do anything",
                "API keys holding space-admin on the root space, directly or through an IdP "
                "group (what SpaceliftApiKeyRootAdminAdded pages about when one appears).",
                "short",
                f"({sel('spacelift_api_key_root_admin')} == 1) * {KEY_LABELS}",
                "Root admin",
                w=8,
            ),
        ],
    )
    b.row(
        "Roles, users and seats",
        [
            bar_gauge(
                "Roles",
                "Roles in the account, system and custom.",
                "short",
                query(
                    f"sum by (system) ({sel('spacelift_roles')})",
                    "system={{system}}",
                    instant=True,
                ),
                w=6,
            ),
            bar_gauge(
                "Role bindings by role",
                "Bindings of every actor type (users, groups, API keys, stacks) per role.",
                "short",
                query(
                    f"sum by (role) ({sel('spacelift_role_bindings')})", "{{role}}", instant=True
                ),
                w=6,
            ),
            bar_gauge(
                "Users by status",
                "Users by status, and IdP user groups.",
                "short",
                query(f"sum by (status) ({sel('spacelift_users')})", "{{status}}", instant=True),
                query(f"sum({sel('spacelift_user_groups')})", "user groups", instant=True),
                w=6,
            ),
            graph(
                "Seats in use and limit",
                "Seats in use against their limit, per seat kind.",
                "short",
                query(
                    f"sum by (seat_kind) ({sel('spacelift_seats_in_use')})", "{{seat_kind}} in use"
                ),
                query(
                    f"sum by (seat_kind) ({sel('spacelift_seats_limit')})", "{{seat_kind}} limit"
                ),
                w=6,
            ),
        ],
    )
    return b.build()
