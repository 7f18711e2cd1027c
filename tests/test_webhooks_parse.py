"""The delivery parser and the signature, on Spacelift's documented payload and variations."""

from __future__ import annotations

import json
from typing import Any

import pytest

from exporter.webhooks import Malformed, parse, signature

# The default run payload as docs/integrations/webhooks.md ("Run events") shows it.
DOCUMENTED = {
    "account": "spacelift-io",
    "state": "FINISHED",
    "stateVersion": 4,
    "timestamp": 1596979684,
    "run": {
        "id": "01EF9PFPNFFM2MQXTJKHK1B869",
        "branch": "master",
        "commit": {
            "authorLogin": "marcinwyszynski",
            "authorName": "Marcin Wyszynski",
            "hash": "0ee3a3b7266daf5a1d44a193a0f48ce995fa75eb",
            "message": "Update demo.tf",
            "timestamp": 1596705932,
            "url": "https://github.com/spacelift-io/demo/commit/0ee3a3b",
        },
        "createdAt": 1596979665,
        "delta": {"added": 0, "changed": 0, "deleted": 0, "resources": 1},
        "triggeredBy": "marcinw@spacelift.io",
        "type": "TRACKED",
    },
    "stack": {"id": "spacelift-demo", "name": "Spacelift demo", "description": "", "labels": []},
}


def body(**changes: Any) -> bytes:
    doc = json.loads(json.dumps(DOCUMENTED))
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = doc
        for p in parents:
            node = node[p]
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return json.dumps(doc).encode()


def test_the_documented_payload() -> None:
    account, obs = parse(body())
    assert account == "spacelift-io"
    assert (obs.run_id, obs.stack_id, obs.run_type, obs.state) == (
        "01EF9PFPNFFM2MQXTJKHK1B869",
        "spacelift-demo",
        "TRACKED",
        "FINISHED",
    )
    assert (obs.state_version, obs.timestamp, obs.created_at, obs.commit_ts) == (
        4,
        1596979684.0,
        1596979665.0,
        1596705932.0,
    )


def test_timestamps_in_nanoseconds_or_milliseconds_are_seconds() -> None:
    _, obs = parse(body(timestamp=1596979684_000_000_000, run__createdAt=1596979665_000))
    assert (obs.timestamp, obs.created_at) == (1596979684.0, 1596979665.0)


@pytest.mark.parametrize(
    "changes",
    [
        {"state": None},
        {"state": "finished; drop table"},
        {"stateVersion": "4"},
        {"stateVersion": True},
        {"stateVersion": -1},
        {"timestamp": "yesterday"},
        {"run__id": "x" * 300},
        {"run__id": "has space"},
        {"run__type": None},
        {"stack": None},
        {"account": {"name": "spacelift-io"}},
    ],
)
def test_what_is_not_a_run_event_is_malformed(changes: dict[str, Any]) -> None:
    with pytest.raises(Malformed):
        parse(body(**changes))


def test_signature_is_githubs_sha256_hmac_of_the_raw_body() -> None:
    # the value GitHub documents for secret "It's a Secret to Everybody", body "Hello, World!"
    assert signature(b"It's a Secret to Everybody", b"Hello, World!") == (
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )
