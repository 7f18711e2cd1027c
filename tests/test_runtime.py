"""The long-running parts: scheduler jobs, log formats, the demo command."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import httpx
import pytest

from exporter import logsetup, scheduler
from exporter.areas import AREAS
from exporter.simulator import SimClock, Simulator
from tests.conftest import make_app
from tests.support.processes import ROOT, free_port
from tests.support.wait import until


def test_one_job_per_account_area_polling_at_start(sim: Simulator, clock: SimClock) -> None:
    app = make_app(sim, clock, areas={"usage": {"interval": "10m"}})
    sched = scheduler.start(app)
    try:
        until(app.ready, timeout=20, what="first poll of every area")
        jobs = {job.id: job for job in sched.get_jobs()}
        assert set(jobs) == {f"sim/{a}" for a, spec in AREAS.items() if spec.enabled_by_default}
        assert jobs["sim/usage"].trigger.interval.total_seconds() == 600
        assert all(j.max_instances == 1 and j.coalesce for j in jobs.values())
    finally:
        sched.shutdown(wait=True)
        app.close()


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_log_lines_carry_structured_fields(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    logsetup.setup("info", fmt)
    try:
        logging.getLogger("exporter.test").warning(
            "poll failed", extra={"account": "acme", "area": "usage", "error": "HTTP 503"}
        )
        logging.getLogger("exporter.test").debug("hidden at info")
    finally:
        logging.getLogger().handlers.clear()
    line = capsys.readouterr().err.strip()
    assert "\n" not in line
    if fmt == "json":
        record = json.loads(line)
        assert record["level"] == "warn" and record["account"] == "acme"
        assert record["msg"] == "poll failed" and record["error"] == "HTTP 503"
    else:
        assert 'msg="poll failed"' in line and "account=acme" in line
        assert 'error="HTTP 503"' in line and "level=warn" in line


def test_demo_serves_the_simulated_account() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", "demo", "--web.listen-address", f"127.0.0.1:{port}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        until(lambda: httpx.get(url + "/readyz").status_code == 200, timeout=30, what="demo")
        body = httpx.get(url + "/metrics").text
        assert 'spacelift_up{account="demo"} 1.0' in body
        assert "spacelift_worker_pool_workers_busy{" in body
        assert "spacelift_public_worker_pool_parallelism" in body
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err.decode()
