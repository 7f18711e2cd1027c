"""--web.config.file: basic auth and TLS as Prometheus' own exporters do them."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def serve(app: App, config: Path | None) -> tuple[web.Server, str]:
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
        assert httpx.get(url + "/readyz").status_code == 200  # and readiness probes

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
        # plain HTTP on the TLS port: told so, as Go's servers do
        plain = httpx.get(url.replace("https", "http") + "/metrics", timeout=3)
        assert plain.status_code == 400 and b"HTTPS server" in plain.content
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
        ("tls_server_config: {cert_file: 123, key_file: b}\n", "tls_server_config.cert_file"),
        ("tls_server_config: {cert_file: a, key_file: b, min_version: [x]}\n", "tls_server_"),
        (
            "tls_server_config: {cert_file: a, key_file: b, cipher_suites: [X]}\n",
            "tls_server_config.cipher_suites",
        ),
        (
            "tls_server_config: {cert_file: a, key_file: b,"
            " client_auth_type: RequireAnyClientCert}\n",
            "tls_server_config.client_auth_type",
        ),
        ("http_server_config: {http2: true}\n", "http_server_config.http2"),
        ("basic_auth_users: [x]\n", "basic_auth_users"),
    ],
)
def test_broken_web_config_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    cfg = tmp_path / "web.yml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        WebAuth(cfg)
    assert err.value.key.startswith(key)


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def signed_cert(d: Path, name: str, san: str) -> None:
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", str(d / f"{name}.key"), "-out", str(d / f"{name}.csr"))  # fmt: skip
    ext = d / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\n")
    openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.crt"),
            "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
            "-extfile", str(ext), "-out", str(d / f"{name}.crt"))  # fmt: skip


def test_mutual_tls_with_allowed_sans(app: App, tmp_path: Path) -> None:
    d = tmp_path
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=ca",
            "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))  # fmt: skip
    signed_cert(d, "server", "IP:127.0.0.1")
    signed_cert(d, "prometheus", "DNS:prometheus.example")
    signed_cert(d, "intruder", "DNS:intruder.example")
    cfg = d / "web.yml"
    cfg.write_text(
        "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"
        "  client_allowed_sans: [prometheus.example]\n"
        "http_server_config:\n  headers: {X-Content-Type-Options: nosniff}\n"
    )
    # (no promtool check here: Debian's promtool 2.42 predates client_allowed_sans)
    server, url = serve(app, cfg)

    def get(client_name: str | None) -> httpx.Response:
        ctx = ssl.create_default_context(cafile=str(d / "ca.crt"))
        if client_name:
            ctx.load_cert_chain(d / f"{client_name}.crt", d / f"{client_name}.key")
        with httpx.Client(verify=ctx, timeout=5) as client:
            return client.get(url + "/metrics")

    try:
        ok = get("prometheus")
        assert ok.status_code == 200 and b"spacelift_up" in ok.content
        assert ok.headers["X-Content-Type-Options"] == "nosniff"
        assert get("intruder").status_code == 403  # valid certificate, SAN not allowed
        with pytest.raises(httpx.HTTPError):
            get(None)  # no certificate: the handshake fails
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("header", "gzipped"),
    [("gzip", True), ("deflate, gzip;q=0.5", True), ("gzip;q=0", False), (None, False)],
)
def test_gzip_only_when_accepted(app: App, header: str | None, gzipped: bool) -> None:
    server, url = serve(app, None)
    try:
        headers = {"Accept-Encoding": header} if header else {"Accept-Encoding": "identity"}
        resp = httpx.get(url + "/metrics", headers=headers)
        assert (resp.headers.get("content-encoding") == "gzip") is gzipped
    finally:
        server.shutdown()
        server.server_close()


# -- hostile files and reloads -------------------------------------------------------------

GOOD_HASH = hashed("right")
LAUGHS = "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}' if i else '{lol: x}'] * 9)}]\n" for i in range(9)
)
ENV = {"SPACELIFT_API_KEY_ID": "01HKEYID", "SPACELIFT_API_KEY_SECRET": "s3cr3t-value"}


@pytest.mark.parametrize(
    ("content", "key"),
    [
        pytest.param(b"basic_auth_users:\n  prom: \xff\n", "--web.config.file", id="not-utf8"),
        pytest.param("basic_auth_users: " + "[" * 5000, "--web.config.file", id="deep"),
        pytest.param(LAUGHS, "l4", id="billion-laughs"),
        pytest.param(
            f"basic_auth_users:\n  prom: '{GOOD_HASH}'\n  prom: '{GOOD_HASH}'\n",
            "basic_auth_users.prom",
            id="duplicate-key",
        ),
        pytest.param(
            "basic_auth_users:\n  prom: $2b$10$tooshort\n", "basic_auth_users.prom", id="bad-hash"
        ),
        pytest.param(
            'http_server_config:\n  headers:\n    X-Frame-Options: "DENY\\r\\nSet-Cookie: a=b"\n',
            "http_server_config.headers.X-Frame-Options",
            id="header-crlf",
        ),
        pytest.param(
            "http_server_config:\n  headers: {Content-Length: '0'}\n",
            "http_server_config.headers.Content-Length",
            id="framing-header",
        ),
        pytest.param(
            "tls_server_config: {cert_file: missing.crt, key_file: missing.key}\n",
            "tls_server_config.cert_file",
            id="missing-cert",
        ),
    ],
)
@pytest.mark.parametrize("command", ["check-config", "run"])
def test_hostile_web_config_exits_2_naming_the_key(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    content: str | bytes,
    key: str,
) -> None:
    from exporter import cli

    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    path = tmp_path / "web.yml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    argv = [command, "--spacelift-api-endpoint", "a.app.spacelift.io", "--web.config.file"]
    assert cli.main([*argv, str(path), "--web.listen-address", "127.0.0.1:0"]) == 2
    err = capsys.readouterr().err
    assert f"web config error: {key}" in err, err
    assert "Traceback" not in err and len(err) < 500, err


def rewrite(path: Path, content: bytes | str) -> None:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    stamp = path.stat().st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(stamp, stamp))  # a new mtime even within the clock's granularity


def reload_metric(url: str, **kw: Any) -> float:
    body = httpx.get(url + "/metrics", **kw).text
    line = next(x for x in body.splitlines() if x.startswith(RELOAD_OK + " "))
    return float(line.split()[1])


RELOAD_OK = "spacelift_web_config_last_reload_successful"


def test_a_broken_reload_keeps_auth_and_the_server(
    app: App, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = tmp_path / "web.yml"
    cfg.write_text(f"basic_auth_users:\n  prom: '{GOOD_HASH}'\n")
    server, url = serve(app, cfg)
    creds = {"auth": ("prom", "right")}
    try:
        assert reload_metric(url, **creds) == 1
        broken: list[bytes | str | None] = [
            b"",  # an editor's truncate-then-write, caught in between
            b"basic_auth_users:\n  prom: \xff\xfe\n",  # not UTF-8
            "basic_auth_users: [",  # not YAML
            "basic_auth_users:\n  prom: plaintext\n",  # not a hash
            "basic_auth_users:\n" + "  a: b\n" * 3 + LAUGHS,  # not a web config
            None,  # the file removed
        ]
        for content in broken:
            caplog.clear()
            if content is None:
                cfg.unlink()
            else:
                rewrite(cfg, content)
            assert httpx.get(url + "/metrics").status_code == 401  # auth still on
            assert httpx.get(url + "/healthz").status_code == 200  # the server alive
            assert reload_metric(url, **creds) == 0  # and saying so
            assert any("web config change refused" in r.getMessage() for r in caplog.records)
        rewrite(cfg, f"basic_auth_users:\n  prom: '{hashed('rotated')}'\n")
        assert reload_metric(url, auth=("prom", "rotated")) == 1
        assert httpx.get(url + "/metrics", auth=("prom", "right")).status_code == 401
        # a valid file that says "no users" turns auth off: that is what it says
        rewrite(cfg, "http_server_config: {headers: {X-Frame-Options: DENY}}\n")
        assert httpx.get(url + "/metrics").status_code == 200
    finally:
        server.shutdown()
        server.server_close()


def test_tls_reload_rotates_certificates_and_never_turns_tls_off(app: App, tmp_path: Path) -> None:
    make_certs(tmp_path / "tls")
    first = (tmp_path / "tls/server.crt").read_bytes()
    cfg = tmp_path / "web.yml"
    cfg.write_text("tls_server_config: {cert_file: tls/server.crt, key_file: tls/server.key}\n")
    server, url = serve(app, cfg)
    port = server.server_address[1]

    def served_cert() -> bytes:
        pem = ssl.get_server_certificate(("127.0.0.1", port), timeout=5)
        return ssl.PEM_cert_to_DER_cert(pem)

    try:
        assert served_cert() == ssl.PEM_cert_to_DER_cert(first.decode())
        # cert-manager renews the files; the web config itself does not change
        make_certs(tmp_path / "tls")
        renewed = (tmp_path / "tls/server.crt").read_bytes()
        assert renewed != first
        assert served_cert() == ssl.PEM_cert_to_DER_cert(renewed.decode())
        # a valid file without TLS: refused (the listener is TLS since start), TLS stays
        rewrite(cfg, f"basic_auth_users:\n  prom: '{GOOD_HASH}'\n")
        assert served_cert() == ssl.PEM_cert_to_DER_cert(renewed.decode())
        ctx = ssl.create_default_context(cafile=str(tmp_path / "tls/server.crt"))
        assert reload_metric(url, verify=ctx) == 0
        assert httpx.get(url.replace("https", "http") + "/healthz").status_code == 400
    finally:
        server.shutdown()
        server.server_close()
