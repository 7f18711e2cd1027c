"""The Spacelift client against the simulator over real HTTP: auth, refresh, retries, errors."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from exporter.areas import worker_pools
from exporter.client import SpaceliftClient
from exporter.config import Credentials, HttpConfig
from exporter.errors import (
    AuthError,
    MalformedResponseError,
    PermissionDeniedError,
    PollTimeout,
    RateLimitedError,
    ServerError,
    TransportFailure,
)
from exporter.secret import Secret
from exporter.simulator import SimClock, Simulator
from tests.conftest import make_config

EXCHANGE = "SpaceliftExporterGetToken"
POOLS = "SpaceliftExporterWorkerPools"
HTTP = HttpConfig(timeout=2.0, retries=2, poll_timeout=30.0, backoff_base=0.01, backoff_max=0.05)


class Sleeps(list[float]):
    """Records the client's pauses instead of taking them."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def client_for(
    sim: Simulator,
    clock: SimClock,
    http: HttpConfig = HTTP,
    sleeps: Sleeps | None = None,
    credentials: Credentials | None = None,
) -> SpaceliftClient:
    account = make_config(sim).accounts[0]
    if credentials is not None:
        account = replace(account, credentials=credentials)
    return SpaceliftClient(
        account, http, clock=clock.now, sleep=sleeps if sleeps is not None else Sleeps()
    )


def pools(client: SpaceliftClient) -> list[object]:
    return list(client.query(worker_pools.DOCUMENT).require("workerPools")["workerPools"])


def test_exchanges_the_key_once_and_reuses_the_token(sim: Simulator, clock: SimClock) -> None:
    client = client_for(sim, clock)
    for _ in range(3):
        assert len(pools(client)) == 2
    assert sim.requests[EXCHANGE] == 1
    assert sim.requests[POOLS] == 3


def test_refreshes_the_token_before_it_expires(sim: Simulator, clock: SimClock) -> None:
    client = client_for(sim, clock)
    pools(client)
    clock.advance(3600 - 50)  # less than a minute left: refresh before sending
    pools(client)
    assert sim.requests[EXCHANGE] == 2
    assert all(r["status"] == 200 for r in sim.request_log)
    assert sim.requests[POOLS] == 2  # no request was wasted on a stale token


def test_recovers_from_a_token_the_server_no_longer_accepts(
    sim: Simulator, clock: SimClock
) -> None:
    client = client_for(sim, clock)
    pools(client)
    sim.expire_tokens()  # e.g. revoked, or the server's clock disagrees with ours
    assert len(pools(client)) == 2
    assert sim.requests[EXCHANGE] == 2
    assert sim.requests[POOLS] == 3  # refused once, retried once


def test_concurrent_pollers_share_one_exchange(sim: Simulator, clock: SimClock) -> None:
    client = client_for(sim, clock)
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def poll() -> None:
        barrier.wait()
        try:
            pools(client)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=poll) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sim.requests[EXCHANGE] == 1


def test_pre_generated_token_is_used_as_is(sim: Simulator, clock: SimClock) -> None:
    token = sim.issue_token(600)
    client = client_for(sim, clock, credentials=Credentials(token=Secret(token)))
    assert len(pools(client)) == 2
    assert sim.requests[EXCHANGE] == 0
    clock.advance(601)
    with pytest.raises(AuthError, match="expired"):
        pools(client)
    assert sim.requests[EXCHANGE] == 0  # nothing to exchange: the token is all we have


def test_wrong_secret_is_an_auth_error_and_backs_off(sim: Simulator, clock: SimClock) -> None:
    creds = Credentials(key_id="01HXSIMKEY0000000000000000", key_secret=Secret("wrong-secret"))
    client = client_for(sim, clock, credentials=creds)
    with pytest.raises(AuthError) as err:
        pools(client)
    assert "wrong-secret" not in str(err.value)
    with pytest.raises(AuthError, match="next attempt"):
        pools(client)  # inside the backoff window: no second exchange is sent
    assert sim.requests[EXCHANGE] == 1


def test_429_honours_retry_after(sim: Simulator, clock: SimClock) -> None:
    sleeps = Sleeps()
    client = client_for(sim, clock, sleeps=sleeps)
    pools(client)
    sim.faults.rate_limit(retry_after=7, operation=POOLS, times=1)
    assert len(pools(client)) == 2
    assert sleeps == [7.0]


def test_429_longer_than_the_poll_budget_fails_fast(sim: Simulator, clock: SimClock) -> None:
    sleeps = Sleeps()
    client = client_for(sim, clock, http=replace(HTTP, poll_timeout=5.0), sleeps=sleeps)
    pools(client)
    sim.faults.rate_limit(retry_after=600, operation=POOLS, times=1)
    with pytest.raises(RateLimitedError):
        pools(client)
    assert sleeps == []


def test_5xx_is_retried_with_backoff(sim: Simulator, clock: SimClock) -> None:
    sleeps = Sleeps()
    client = client_for(sim, clock, sleeps=sleeps)
    pools(client)
    sim.faults.http_status(503, operation=POOLS, times=2)
    assert len(pools(client)) == 2
    # equal-jitter exponential backoff: attempt n waits between base*2^n/2 and base*2^n
    assert len(sleeps) == 2
    assert HTTP.backoff_base / 2 <= sleeps[0] <= HTTP.backoff_base
    assert HTTP.backoff_base <= sleeps[1] <= min(HTTP.backoff_max, 2 * HTTP.backoff_base)
    sim.faults.http_status(502, operation=POOLS, times=None)
    with pytest.raises(ServerError):
        pools(client)
    assert sim.requests[POOLS] == 1 + 3 + 3  # first, then each failure tried 1 + 2 retries


def test_timeout_is_bounded_and_retried(sim: Simulator, clock: SimClock) -> None:
    http = replace(HTTP, timeout=0.2, retries=1)
    client = client_for(sim, clock, http=http)
    pools(client)
    sim.faults.latency(1.0, operation=POOLS, times=None)
    with pytest.raises(TransportFailure, match="timed out"):
        pools(client)
    assert sim.requests[POOLS] == 1 + 2  # the first poll, then one try and one retry


def test_a_poll_never_outlives_its_budget(sim: Simulator, clock: SimClock) -> None:
    # Each request would be answered within its own timeout, but the poll as a whole may
    # not take longer than poll_timeout: the client stops instead of retrying on and on.
    http = replace(HTTP, timeout=0.5, retries=10, poll_timeout=1.2)
    client = client_for(sim, clock, http=http)
    pools(client)
    sim.faults.latency(1.0, operation=POOLS, times=None)
    with client.budget(1.2), pytest.raises((PollTimeout, TransportFailure)):
        pools(client)
    assert sim.requests[POOLS] <= 1 + 3  # three tries fit in 1.2 s, not eleven


def test_dropped_connection_is_retried(sim: Simulator, clock: SimClock) -> None:
    client = client_for(sim, clock)
    pools(client)
    sim.faults.drop_connection(operation=POOLS, times=1)
    assert len(pools(client)) == 2


def test_malformed_body_is_a_typed_error(sim: Simulator, clock: SimClock) -> None:
    client = client_for(sim, clock)
    pools(client)
    sim.faults.malformed(operation=POOLS, times=1)
    with pytest.raises(MalformedResponseError):
        pools(client)


def test_machine_session_gate_is_a_permission_gap(sim: Simulator, clock: SimClock) -> None:
    client = client_for(sim, clock)
    sim.gate_fields({"usage"})
    with pytest.raises(PermissionDeniedError, match="not available for machine sessions"):
        client.query("query SpaceliftExporterUsage { usage { usedSeats } }").require("usage")


def test_permission_refusal_is_not_retried_again_with_the_same_token(
    sim: Simulator, clock: SimClock
) -> None:
    client = client_for(sim, clock)
    sim.admin = False
    usage = "query SpaceliftExporterUsage { usage { usedSeats } }"
    for _ in range(3):
        with pytest.raises(PermissionDeniedError):
            client.query(usage).require("usage")
    # one re-exchange to rule out a stale token, then the refusal is taken as final
    assert sim.requests[EXCHANGE] == 2
    assert sim.requests["SpaceliftExporterUsage"] == 4
    assert len(pools(client)) == 2  # the same token still serves what the key may read


def test_revoked_pre_generated_token_is_an_auth_failure(sim: Simulator, clock: SimClock) -> None:
    client = client_for(sim, clock, credentials=Credentials(token=Secret(sim.issue_token(3600))))
    assert len(pools(client)) == 2
    sim.expire_tokens()  # revoked: its exp claim is still in the future
    with pytest.raises(AuthError, match="not logged in"):
        pools(client)


def test_http_401_with_a_fresh_token_is_an_auth_failure(sim: Simulator, clock: SimClock) -> None:
    client = client_for(sim, clock, credentials=Credentials(token=Secret("not.a.token")))
    sim.unauthorized_http_401 = True
    with pytest.raises(AuthError):
        pools(client)


def test_outage_during_the_exchange_is_an_outage_not_an_auth_failure(
    sim: Simulator, clock: SimClock
) -> None:
    client = client_for(sim, clock)
    sim.faults.http_status(503, operation=EXCHANGE, times=None)
    with pytest.raises(ServerError):
        pools(client)
    sim.faults.clear()
    assert len(pools(client)) == 2  # no long auth backoff after an outage


def test_failed_refresh_keeps_using_a_token_still_valid(sim: Simulator, clock: SimClock) -> None:
    client = client_for(sim, clock)
    pools(client)
    clock.advance(3600 - 30)  # refresh due, token still valid for 30 s
    sim.faults.http_status(503, operation=EXCHANGE, times=None)
    assert len(pools(client)) == 2
    assert sim.requests[EXCHANGE] > 1  # it did try to refresh


def test_a_clock_ahead_of_spacelift_does_not_re_exchange_at_every_request(
    sim: Simulator, clock: SimClock
) -> None:
    account = make_config(sim).accounts[0]
    ahead = SimClock(start=clock.now() + 2 * 3600)  # our clock 2 h ahead, tokens live 1 h
    client = SpaceliftClient(account, HTTP, clock=ahead.now, sleep=Sleeps())
    for _ in range(3):
        pools(client)
    assert sim.requests[EXCHANGE] == 1
    ahead.advance(3600 - 50)  # the token's own lifetime still decides when to refresh
    pools(client)
    assert sim.requests[EXCHANGE] == 2


def test_a_long_lived_token_is_used_and_exchanged_again_within_a_week(
    sim: Simulator, clock: SimClock
) -> None:
    sim.token_ttl = 30 * 86400  # a self-hosted release issuing month-long tokens
    client = client_for(sim, clock)
    pools(client)
    clock.advance(6 * 86400)
    pools(client)
    assert sim.requests[EXCHANGE] == 1  # the token was used as given, not refused
    clock.advance(86400)
    pools(client)
    assert sim.requests[EXCHANGE] == 2  # but never held for more than a week
