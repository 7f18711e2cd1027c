"""--web.config.file: basic auth and TLS as Prometheus' own exporters do them."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import httpx
import pytest

from exporter import web
from exporter.app import App
from exporter.config import ConfigError
from exporter.simulator import SimClock, Simulator
from exporter.webconfig import WebAuth
from tests.conftest import make_app
from tests.support.processes import need

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "deploy/web-config.example.yml"


def hashed(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()


def make_certs(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            "-keyout", str(directory / "server.key"), "-out", str(directory / "server.crt"),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip


@pytest.fixture
def app(sim: Simulator, clock: SimClock) -> Iterator[App]:
    application = make_app(sim, clock)
    application.poll_all()
    yield application
    application.close()


def serve(app: App, config: Path) -> tuple[web.Server, str]:
    auth = WebAuth(config)
    server, _ = web.serve(app, "127.0.0.1", 0, auth)
    scheme = "https" if auth.tls_enabled else "http"
    return server, f"{scheme}://127.0.0.1:{server.server_address[1]}"


def test_basic_auth(app: App, tmp_path: Path) -> None:
    cfg = tmp_path / "web.yml"
    cfg.write_text(f"basic_auth_users:\n  prom: '{hashed('right')}'\n")
    server, url = serve(app, cfg)
    try:
        denied = httpx.get(url + "/metrics")
        assert denied.status_code == 401
        assert denied.headers["WWW-Authenticate"].startswith("Basic")
        assert httpx.get(url + "/metrics", auth=("prom", "wrong")).status_code == 401
        assert httpx.get(url + "/metrics", auth=("nobody", "right")).status_code == 401
        ok = httpx.get(url + "/metrics", auth=("prom", "right"))
        assert ok.status_code == 200 and b"spacelift_up" in ok.content
        assert httpx.get(url + "/healthz").status_code == 200  # for container health checks

        # re-read on change: a rotated password applies without a restart
        cfg.write_text(f"basic_auth_users:\n  prom: '{hashed('rotated')}'\n")
        os.utime(cfg, (1, 1))  # a different mtime even within the same second
        assert httpx.get(url + "/metrics", auth=("prom", "rotated")).status_code == 200
        assert httpx.get(url + "/metrics", auth=("prom", "right")).status_code == 401
    finally:
        server.shutdown()
        server.server_close()


def test_tls_with_the_shipped_example(app: App, tmp_path: Path) -> None:
    cfg = tmp_path / "web-config.yml"
    shutil.copy(EXAMPLE, cfg)
    make_certs(tmp_path / "tls")
    check = subprocess.run(
        [need("promtool"), "check", "web-config", str(cfg)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    server, url = serve(app, cfg)
    try:
        assert url.startswith("https://")
        ca = ssl.create_default_context(cafile=str(tmp_path / "tls/server.crt"))
        resp = httpx.get(url + "/metrics", verify=ca, auth=("prometheus", "change-me"))
        assert resp.status_code == 200 and b"spacelift_worker_pool_workers" in resp.content
        with pytest.raises(httpx.HTTPError):
            httpx.get(url.replace("https", "http") + "/metrics", timeout=3)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("basic_auth_users:\n  prom: plaintext\n", "basic_auth_users.prom"),
        ("tls_server_config:\n  cert_file: a.crt\n", "tls_server_config.key_file"),
        (
            "tls_server_config: {cert_file: a, key_file: b, min_version: SSL3}\n",
            "tls_server_config",
        ),
        ("tls_config: {}\n", "tls_config"),
    ],
)
def test_broken_web_config_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    cfg = tmp_path / "web.yml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        WebAuth(cfg)
    assert err.value.key.startswith(key)
