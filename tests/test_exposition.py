"""The served exposition: parts rendered once, bodies written as chunks, gzip as one
member, and readiness that waits for the rendering."""

from __future__ import annotations

import threading
import zlib
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from exporter import web
from exporter.app import App
from exporter.exposition import Exposition
from exporter.families import FamilyBuilder
from exporter.simulator import SimClock, Simulator
from tests.conftest import make_app
from tests.support.wait import until
from tests.test_textformat import assert_identical

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


@pytest.fixture
def app(sim: Simulator, clock: SimClock) -> Iterator[App]:
    app = make_app(sim, clock)
    yield app
    app.close()


def test_served_bodies_match_prometheus_client_and_gzip_is_one_member(app: App) -> None:
    """Every part of a real poll against prometheus_client's rendering; then the served
    bodies: gzip is one gzip member holding exactly the plain bytes, in both formats, also
    after parts were re-rendered (the cached checksum carried over the unchanged ones)."""
    assert app.poll_all()
    parts = app.exposition._parts
    for source in parts.values():
        if callable(source):
            builder = FamilyBuilder()
            source(builder)
            assert_identical(builder)
    live = CollectorRegistry()
    Counter("spacelift_test_live", "Rendered per scrape.", registry=live).inc()
    recent = CollectorRegistry()  # the process metrics' place: re-read at most every second
    Counter("spacelift_test_recent", "Rendered at most every second.", registry=recent).inc(2)
    exposition = Exposition(parts, live, recent)
    for refresh in ((), ("health",), ("stacks", "health")):
        exposition.refresh(*refresh)
        for accept in (OPENMETRICS, None):  # OpenMetrics first, as Prometheus asks
            plain, ctype, encoding = exposition.body(accept, gzip=False)
            zipped, zipped_type, zipped_encoding = exposition.body(accept, gzip=True)
            assert (encoding, zipped_type, zipped_encoding) == (None, ctype, "gzip")
            body = b"".join(plain)
            assert body.endswith(b"# EOF\n") == (accept == OPENMETRICS)
            assert b"spacelift_stacks{" in body and b"spacelift_test_live_total 1.0" in body
            assert b"spacelift_test_recent_total 2.0" in body
            # One member: a reader that stops after the first (httpx does) gets everything.
            first_member = zlib.decompressobj(16 + zlib.MAX_WBITS)
            assert first_member.decompress(b"".join(zipped)) == body
            assert first_member.eof and not first_member.unused_data


def test_ready_only_once_metrics_serves_the_data(app: App) -> None:
    """Between a poll's record and its rendering, /readyz still says 503; once it says 200,
    the very next scrape has the area's series."""
    for key in app.pollers:
        if key[1] != "stacks":
            app.poll(key)
    rendering, release = threading.Event(), threading.Event()
    refresh = app.exposition.refresh

    def held_refresh(*names: str) -> None:
        if "stacks" in names:
            rendering.set()
            release.wait(30)
        refresh(*names)

    app.exposition.refresh = held_refresh  # type: ignore[method-assign]
    server, _ = web.serve(app, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    poll = threading.Thread(target=app.poll, args=(("sim", "stacks"),))
    try:
        poll.start()
        assert rendering.wait(30)
        assert app.store.get(("sim", "stacks")).settled  # recorded, not rendered yet
        ready = httpx.get(url + "/readyz")
        assert ready.status_code == 503 and "sim/stacks" in ready.text
        assert b"spacelift_stacks{" not in httpx.get(url + "/metrics").content
        release.set()
        until(lambda: httpx.get(url + "/readyz").status_code == 200, timeout=30, what="ready")
        assert b"spacelift_stacks{" in httpx.get(url + "/metrics").content
    finally:
        release.set()
        poll.join()
        server.shutdown()
        server.server_close()
