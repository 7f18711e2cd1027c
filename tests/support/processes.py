"""Real processes for the end-to-end layers: the exporter, Prometheus, Alertmanager.

Each is a context manager that starts the process on a free loopback port, waits until it
answers, and always stops it (and frees the port) on exit, even when the test fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.support.wait import until

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def need(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        raise RuntimeError(f"{binary} is not installed: run the README's test command")
    return path


class _Process:
    name = "process"

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "output.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _start(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=self.dir
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def _wait_http(self, path: str, timeout: float = 30.0) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.output()}")
            return httpx.get(self.url + path, timeout=2).status_code == 200

        try:
            until(ready, timeout=timeout, what=f"{self.name} {path}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ExporterProcess(_Process):
    """``python -m exporter`` against ``endpoint`` with the simulator's credentials."""

    name = "exporter"

    def __init__(
        self,
        endpoint: str,
        config: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        key_id: str = "01HXSIMKEY0000000000000000",
        key_secret: str = "sim-secret",
    ) -> None:
        super().__init__()
        self.config = {"accounts": [{"name": "sim", "endpoint": endpoint}], **(config or {})}
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "SPACELIFT_API_KEY_ID": key_id,
            "SPACELIFT_API_KEY_SECRET": key_secret,
            **(env or {}),
        }

    def __enter__(self) -> ExporterProcess:
        cfg = self.dir / "config.yml"
        cfg.write_text(yaml.safe_dump(self.config))
        argv = [sys.executable, "-m", "exporter", "--config.file", str(cfg)]
        argv += ["--web.listen-address", f"127.0.0.1:{self.port}", "--log.level", "debug"]
        self._start(argv, self.env)
        self._wait_http("/readyz")
        return self

    def metrics(self, accept: str | None = None) -> httpx.Response:
        headers = {"Accept": accept} if accept else {}
        return httpx.get(self.url + "/metrics", headers=headers, timeout=10)


class PrometheusProcess(_Process):
    """A real Prometheus scraping ``targets`` every second, evaluating ``rule_files``."""

    name = "prometheus"

    def __init__(
        self,
        targets: list[str],
        rule_files: list[Path] | None = None,
        alertmanager: str | None = None,
        job: str = "spacelift",
        interval: str = "1s",
    ) -> None:
        super().__init__()
        self.targets = targets
        self.rule_files = rule_files or []
        self.alertmanager = alertmanager
        self.job = job
        self.interval = interval

    def __enter__(self) -> PrometheusProcess:
        config: dict[str, Any] = {
            "global": {"scrape_interval": self.interval, "evaluation_interval": self.interval},
            "scrape_configs": [
                {"job_name": self.job, "static_configs": [{"targets": self.targets}]}
            ],
            "rule_files": [str(p) for p in self.rule_files],
        }
        if self.alertmanager:
            target = self.alertmanager.removeprefix("http://")
            config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [target]}]}]}
        cfg = self.dir / "prometheus.yml"
        cfg.write_text(yaml.safe_dump(config))
        self._start(
            [
                need("prometheus"),
                f"--config.file={cfg}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ]
        )
        self._wait_http("/-/ready")
        return self

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query; raises on a PromQL error, returns the result vector."""
        resp = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        body = resp.json()
        if body.get("status") != "success":
            raise AssertionError(f"query {promql!r} failed: {body.get('error')}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for(self, promql: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until ``promql`` returns a non-empty result."""
        return until(lambda: self.query(promql), timeout=timeout, what=promql)

    def alerts(self) -> list[dict[str, Any]]:
        resp = httpx.get(f"{self.url}/api/v1/alerts", timeout=10).json()
        alerts: list[dict[str, Any]] = resp["data"]["alerts"]
        return alerts

    def rules(self) -> list[dict[str, Any]]:
        """Every loaded rule with its evaluation health (``ok``, ``err``, ``unknown``)."""
        resp = httpx.get(f"{self.url}/api/v1/rules", timeout=10).json()
        return [r for g in resp["data"]["groups"] for r in g["rules"]]


class AlertmanagerProcess(_Process):
    """A real Alertmanager (clustering off) sending every alert to the webhook ``receiver_url``.

    Grouping and timings are short so a test sees notifications within seconds:
    ``group_wait``/``group_interval`` 1 s, and resolved alerts are sent (``send_resolved``).
    """

    name = "alertmanager"

    def __init__(
        self,
        receiver_url: str,
        group_by: tuple[str, ...] = ("alertname", "account"),
        group_wait: str = "1s",
        group_interval: str = "1s",
        repeat_interval: str = "1h",
    ) -> None:
        super().__init__()
        self.config: dict[str, Any] = {
            "route": {
                "receiver": "test",
                "group_by": list(group_by),
                "group_wait": group_wait,
                "group_interval": group_interval,
                "repeat_interval": repeat_interval,
            },
            "receivers": [
                {
                    "name": "test",
                    "webhook_configs": [{"url": receiver_url, "send_resolved": True}],
                }
            ],
        }

    def __enter__(self) -> AlertmanagerProcess:
        cfg = self.dir / "alertmanager.yml"
        cfg.write_text(yaml.safe_dump(self.config))
        self._start(
            [
                need("prometheus-alertmanager"),
                f"--config.file={cfg}",
                f"--storage.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",  # no gossip port, no peers
            ]
        )
        self._wait_http("/-/ready")
        return self

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts the Alertmanager holds now (API v2)."""
        resp = httpx.get(f"{self.url}/api/v2/alerts", timeout=10)
        resp.raise_for_status()
        alerts: list[dict[str, Any]] = resp.json()
        return alerts
