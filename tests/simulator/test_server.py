"""Transport, auth, gates, faults and accounting of the simulator, over real HTTP."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from exporter.simulator import Simulator

from .conftest import EXCHANGE, KEY_ID, Client

VIEWER = "query Viewer { viewer { id name } }"


def _claims(jwt: str) -> dict:
    payload = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_exchange_returns_a_jwt_with_endpoint_audience(sim: Simulator, clock) -> None:
    c = Client(sim)
    user = c.login()
    assert user["id"] == KEY_ID
    assert user["validUntil"] == int(clock.now()) + 3600
    claims = _claims(user["jwt"])
    assert claims["aud"] == [sim.url.removesuffix("/graphql")]
    assert claims["exp"] == user["validUntil"] and claims["iat"] == int(clock.now())
    assert claims["sub"]
    assert c.q(VIEWER)["data"]["viewer"]["id"]


def test_wrong_secret_is_unauthorized(sim: Simulator) -> None:
    c = Client(sim)
    r = c.post(EXCHANGE, {"id": KEY_ID, "secret": "nope"}, auth=False)
    assert r.status_code == 200
    body = r.json()
    assert body["data"] == {"apiKeyUser": None}
    assert body["errors"][0]["message"] == "unauthorized"


def test_token_expiry_follows_the_sim_clock(client: Client, sim: Simulator) -> None:
    assert client.q(VIEWER)["data"]["viewer"] is not None
    sim.world.advance(3601)
    assert client.q(VIEWER)["data"] == {"viewer": None}
    body = client.q(
        "query S { stacks { id } spaces { id }"
        " searchStacks(input: {first: 5}) { edges { node { id } } } }"
    )
    assert body["data"] == {"stacks": [], "spaces": [], "searchStacks": {"edges": []}}
    assert "errors" not in body
    body = client.q("query W { workerPools { id } }")
    assert body["data"] is None and body["errors"][0]["message"] == "unauthorized"
    client.login()  # re-exchange works again
    assert client.q(VIEWER)["data"]["viewer"] is not None


def test_pregenerated_token_and_expire_tokens(sim: Simulator) -> None:
    c = Client(sim)
    c.token = sim.issue_token(60)
    assert c.q(VIEWER)["data"]["viewer"] is not None
    sim.expire_tokens()
    assert c.q(VIEWER)["data"]["viewer"] is None
    c.token = sim.issue_token(60)
    sim.world.advance(61)
    assert c.q(VIEWER)["data"]["viewer"] is None


def test_401_switch(sim: Simulator) -> None:
    sim.unauthorized_http_401 = True
    c = Client(sim)
    assert c.post(VIEWER).status_code == 401
    c.login()  # the exchange itself needs no token
    assert c.post(VIEWER).status_code == 200


def test_validation_failure_is_a_graphql_error(client: Client) -> None:
    body = client.q("query Bad { stacks { id notAField } }")
    assert "data" not in body
    assert "notAField" in body["errors"][0]["message"]


def test_mutations_other_than_exchange_are_unauthorized(client: Client) -> None:
    body = client.q('mutation L { stackLock(id: "x") { id } }')
    assert body["data"] is None and body["errors"][0]["message"] == "unauthorized"


def test_gate_fields_nulls_data(client: Client, sim: Simulator) -> None:
    sim.gate_fields({"usage", "publicWorkerPool", "metrics"})
    body = client.q("query U { usage { usedSeats } workerPools { id } }")
    assert body["data"] is None  # usage: Usage! is non-null, so the whole data goes
    assert body["errors"][0]["message"] == "not available for machine sessions"
    body = client.q("query M { metrics { hasStacks } workerPools { id } }")
    assert body["data"]["metrics"] is None and body["data"]["workerPools"]
    assert client.q("query W { workerPools { id } }")["data"]["workerPools"]


def test_non_admin_key(client: Client, sim: Simulator) -> None:
    sim.admin = False
    for field in (
        "usage { usedSeats }",
        "seats { user { limit } }",
        "apiKeys { id }",
        "roles { id }",
    ):
        body = client.q(f"query A {{ {field} }}")
        assert body["errors"][0]["message"] == "unauthorized", field
    for field in ("managedUsers { id }", "managedUserGroups { id }"):
        assert client.q(f"query A {{ {field} }}")["errors"][0]["message"] == "unauthorized"
    body = client.q(
        "query P { workerPools { id } searchStacks(input: {first: 2}) { edges { node { id } } } }"
    )
    assert "errors" not in body and body["data"]["workerPools"]


def test_fault_http_status_limited_to_operation_and_times(client: Client, sim: Simulator) -> None:
    sim.faults.http_status(503, operation="Viewer", times=2, body="unavailable")
    assert client.post("query Other { viewer { id } }", op="Other").status_code == 200
    r = client.post(VIEWER, op="Viewer")
    assert r.status_code == 503 and r.text == "unavailable"
    assert client.post(VIEWER, op="Viewer").status_code == 503
    assert client.post(VIEWER, op="Viewer").status_code == 200


def test_fault_rate_limit(client: Client, sim: Simulator) -> None:
    sim.faults.rate_limit(retry_after=7)
    r = client.post(VIEWER)
    assert r.status_code == 429 and r.headers["Retry-After"] == "7"
    assert r.json()["errors"]
    assert client.post(VIEWER).status_code == 200


def test_steady_rate_limiter(client: Client, sim: Simulator) -> None:
    sim.rate_limit(0.001, burst=2)
    codes = [client.post(VIEWER).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    sim.rate_limit(None)
    assert client.post(VIEWER).status_code == 200


def test_fault_malformed(client: Client, sim: Simulator) -> None:
    sim.faults.malformed()
    r = client.post(VIEWER)
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    sim.faults.malformed(kind="shape")
    assert client.post(VIEWER).json()["data"]["workerPools"] == "oops"
    assert client.q(VIEWER)["data"]["viewer"]


def test_fault_field_error(client: Client, sim: Simulator) -> None:
    sim.faults.field_error("workerPools", "internal error", times=1)
    body = client.q("query W { workerPools { id } viewer { id } }")
    assert body["data"] is None and body["errors"][0]["message"] == "internal error"
    assert client.q("query W { workerPools { id } }")["data"]["workerPools"]
    sim.faults.field_error("apiKeys", "boom")
    for _ in range(2):
        assert client.q("query K { apiKeys { id } }")["errors"][0]["message"] == "boom"
    sim.faults.clear()
    assert client.q("query K { apiKeys { id } }")["data"]["apiKeys"]


def test_fault_latency(client: Client, sim: Simulator) -> None:
    sim.faults.latency(0.5, operation="Viewer", times=1)
    with pytest.raises(httpx.TimeoutException):
        client.post(VIEWER, op="Viewer", timeout=0.1)
    assert client.post(VIEWER, op="Viewer").status_code == 200


def test_fault_drop_connection(client: Client, sim: Simulator) -> None:
    sim.faults.drop_connection()
    with pytest.raises(httpx.TransportError):
        client.post(VIEWER)
    assert client.post(VIEWER).status_code == 200


def test_request_accounting(client: Client, sim: Simulator) -> None:
    sim.reset_counts()
    client.q(VIEWER, op="Viewer")
    client.q(VIEWER, op="Viewer")
    client.q("{ viewer { id } }")
    sim.faults.http_status(502)
    client.post(VIEWER, op="Viewer")
    assert sim.requests == {"Viewer": 3, "<anonymous>": 1}
    log = sim.request_log
    assert log[0]["operation_type"] == "query" and log[0]["root_fields"] == ["viewer"]
    assert [e["status"] for e in log] == [200, 200, 200, 502]
    sim.reset_counts()
    assert not sim.requests and not sim.request_log


def test_get_root_and_stop_frees_port(world) -> None:
    sim = Simulator(world).start()
    port = sim.port
    assert "simulator" in httpx.get(f"http://127.0.0.1:{port}/").text.lower()
    sim.stop()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
    again = Simulator(world, port=port).start()  # the port is free again
    again.stop()


def test_stop_ends_keep_alive_connections(world) -> None:
    sim = Simulator(world).start()
    c = Client(sim)
    c.login()
    assert c.post(VIEWER).status_code == 200  # the connection is now pooled
    sim.stop()
    with pytest.raises(httpx.TransportError):
        c.post(VIEWER)


def test_cli_prints_endpoint_and_serves() -> None:
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter.simulator", "--port", "0", "--stacks", "20"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line and KEY_ID in line
        url = line.split()[3]
        r = httpx.post(
            url, json={"query": EXCHANGE, "variables": {"id": KEY_ID, "secret": "sim-secret"}}
        )
        assert r.json()["data"]["apiKeyUser"]["jwt"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


def test_short_ttl_and_401_for_expired_token(sim: Simulator) -> None:
    sim.token_ttl = 30
    c = Client(sim)
    user = c.login()
    assert user["validUntil"] == int(sim.world.clock.now()) + 30
    sim.unauthorized_http_401 = True
    assert c.post(VIEWER).status_code == 200
    sim.world.advance(30)
    assert c.post(VIEWER).status_code == 401


def test_syntax_error_and_bad_variables(client: Client) -> None:
    body = client.q("query { stacks { id ")
    assert "data" not in body and body["errors"]
    body = client.q("query S($id: ID!) { stack(id: $id) { id } }", {})
    assert body["data"] is None and "$id" in body["errors"][0]["message"]
    r = client.http.post(client.sim.url, content=b"not json")
    assert r.status_code == 400
