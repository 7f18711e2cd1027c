"""The example PromQL in docs/access.md returns what its prose says (promtool test rules)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.processes import need

DOC = Path(__file__).parents[1] / "docs/access.md"
DAY = 86400
NOW = 100 * DAY  # the evaluation time; the series below are constant from 0 to NOW


def blocks() -> list[str]:
    return re.findall(r"```promql\n(.*?)```", DOC.read_text(), flags=re.S)


def series(name: str, value: float, **labels: str) -> dict[str, str]:
    text = ",".join(f'{k}="{v}"' for k, v in {"account": "acme", **labels}.items())
    return {"series": f"{name}{{{text}}}", "values": f"{value:.0f}x100"}


INPUT = [
    series("spacelift_api_key_role_bindings", 2, role="space-admin", space="root", via="direct"),
    series("spacelift_api_key_role_bindings", 1, role="space-admin", space="root", via="idp_group"),
    series("spacelift_api_key_role_bindings", 5, role="space-reader", space="root", via="direct"),
    series("spacelift_api_keys", 1, key_type="SECRET", admin="true"),
    series("spacelift_api_keys", 0, key_type="OIDC", admin="true"),
    series("spacelift_api_keys", 7, key_type="SECRET", admin="false"),
    *(
        series(
            "spacelift_api_key_info",
            1,
            api_key_id=k,
            api_key_name=f"{k}-name",
            key_type="SECRET",
            admin="false",
            machine_user="true",
        )
        for k in ("stale", "fresh", "never", "new")
    ),
    series("spacelift_api_key_last_used_timestamp_seconds", 0, api_key_id="stale"),
    series("spacelift_api_key_last_used_timestamp_seconds", NOW - DAY, api_key_id="fresh"),
    series("spacelift_api_key_created_timestamp_seconds", 0, api_key_id="stale"),
    series("spacelift_api_key_created_timestamp_seconds", 0, api_key_id="fresh"),
    series("spacelift_api_key_created_timestamp_seconds", 0, api_key_id="never"),
    series("spacelift_api_key_created_timestamp_seconds", NOW - DAY, api_key_id="new"),
    series("spacelift_api_key_expiry_timestamp_seconds", NOW + 3 * DAY, api_key_id="stale"),
    series("spacelift_api_key_expiry_timestamp_seconds", NOW + 30 * DAY, api_key_id="fresh"),
    series("spacelift_api_key_expiry_timestamp_seconds", NOW - DAY, api_key_id="never"),
    series("spacelift_api_key_roles", 0, api_key_id="never"),
    series("spacelift_api_key_roles", 2, api_key_id="fresh"),
    series("spacelift_seats_in_use", 6, seat_kind="user"),
    series("spacelift_seats_in_use", 4, seat_kind="api_key"),
    series("spacelift_seats_limit", 50, seat_kind="user"),
]


def sample(value: float, name: str | None = None, **labels: str) -> dict[str, Any]:
    text = ",".join(f'{k}="{v}"' for k, v in {"account": "acme", **labels}.items())
    return {"labels": f"{name or ''}{{{text}}}", "value": value}


EXPECTED = [
    # space-admin on root: 2 direct + 1 via IdP group + 1 legacy admin key
    [sample(4)],
    # unused for 90 days: only "stale" (used 100 days ago), with its name
    [sample(NOW, None, api_key_id="stale", api_key_name="stale-name")],
    # created over 90 days ago and never used: "never" (not "new", created yesterday)
    [sample(0, "spacelift_api_key_created_timestamp_seconds", api_key_id="never")],
    # expiring within 7 days: "stale" (3 days left), not "fresh" (30) nor "never" (expired)
    [sample(3 * DAY, None, api_key_id="stale")],
    [sample(0, "spacelift_api_key_roles", api_key_id="never")],
    [sample(6 / 50, None, seat_kind="user")],
]


def test_example_queries_return_what_the_doc_says(tmp_path: Path) -> None:
    queries = blocks()
    assert len(queries) == len(EXPECTED), "a PromQL example was added or removed: update EXPECTED"
    tests = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1d",
                "input_series": INPUT,
                "promql_expr_test": [
                    {"expr": q.strip(), "eval_time": f"{NOW // DAY}d", "exp_samples": want}
                    for q, want in zip(queries, EXPECTED, strict=True)
                ],
            }
        ],
    }
    path = tmp_path / "access_docs_test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run(
        [need("promtool"), "test", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
