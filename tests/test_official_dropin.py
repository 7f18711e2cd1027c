"""Swapping Spacelift's official exporter for this one: same command line, variables, probe
path and metric names (exporter/official.py lists them); and its --ca-cert-path for a
self-hosted Spacelift behind a private CA."""

from __future__ import annotations

import json
import os
import platform
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter import cli, official, trust
from exporter.app import App
from exporter.areas import AREAS
from exporter.config import ConfigError, Overrides, load
from exporter.simulator import SimClock, Simulator, World, WorldConfig
from tests.conftest import KEY_ID, KEY_SECRET
from tests.support.processes import ROOT, _Process


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    world = World(
        WorldConfig(
            seed=3,
            stacks=12,
            spaces=2,
            pools=2,
            workers_per_pool=2,
            api_keys=3,
            users=4,
            activity=10,
        ),
        SimClock(start=float(int(time.time()))),
    )
    world.advance(3600)  # an hour of runs: Spacelift's run duration aggregates have data
    with Simulator(world, key_id=KEY_ID, key_secret=KEY_SECRET) as s:
        yield s


class OfficialStyleExporter(_Process):
    """The exporter started with nothing but what the official docs give it."""

    name = "exporter-official-style"

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        super().__init__()
        self.args = args
        # No SPACELIFT_* from the test's own environment: only what the official docs set.
        base = {k: v for k, v in os.environ.items() if not k.startswith("SPACELIFT_")}
        self.env = {**base, "PYTHONPATH": str(ROOT), **env}

    def __enter__(self) -> OfficialStyleExporter:
        args = [a.replace("{port}", str(self.port)) for a in self.args]
        env = {k: v.replace("{port}", str(self.port)) for k, v in self.env.items()}
        self._start([sys.executable, "-m", "exporter", *args], env)
        return self

    def wait_ready(self) -> None:
        self._wait_http(official.PROBE_PATH)  # the official readiness probe
        self._wait_http("/readyz")  # every area polled: the families below are all present

    def families(self) -> dict[str, dict[str, str]]:
        """Family name -> labels of its first sample, as served on /metrics."""
        text = httpx.get(self.url + "/metrics", timeout=10).text
        out: dict[str, dict[str, str]] = {}
        for family in text_string_to_metric_families(text):
            if family.samples:
                out[family.name] = family.samples[0].labels
        return out


def check_official_names(exporter: OfficialStyleExporter) -> None:
    served = exporter.families()
    missing = [m.name for m in official.METRICS if m.missing is None and m.name not in served]
    assert not missing, f"official families not served: {missing}"
    # A family listed as missing that is now served means the README table is stale.
    stale = [m.name for m in official.METRICS if m.missing is not None and m.name in served]
    assert not stale, f"served now, update exporter/official.py: {stale}"
    build = served["spacelift_build_info"]
    assert build["python_version"] == platform.python_version()
    assert build["version"] and build["revision"]


def test_started_as_the_official_docs_start_it(sim: Simulator) -> None:
    # The official Kubernetes example's Deployment: no args, four variables, readinessProbe
    # httpGet /health on port 9953 (here a free port, written the same way).
    kubernetes = {
        "SPACELIFT_PROMEX_API_ENDPOINT": sim.endpoint,  # https://<account>.app.spacelift.io
        "SPACELIFT_PROMEX_API_KEY_ID": KEY_ID,
        "SPACELIFT_PROMEX_API_KEY_SECRET": KEY_SECRET,
        "SPACELIFT_PROMEX_LISTEN_ADDRESS": ":{port}",
    }
    # The official README's command line (spacelift-promex serve --listen-address ":9999"
    # --api-endpoint ... --api-key-id ... --api-key-secret ...), with the short aliases and
    # variables of its `serve --help`.
    readme = ["serve", "--listen-address", ":{port}", "--api-endpoint", sim.endpoint]
    readme += ["-k", KEY_ID, "--api-key-secret", KEY_SECRET, "-d"]
    with (
        OfficialStyleExporter([], kubernetes) as from_kubernetes,
        OfficialStyleExporter(readme, {"SPACELIFT_PROMEX_SCRAPE_TIMEOUT": "30s"}) as from_readme,
    ):  # both start at once; each is then checked alone
        for exporter in (from_kubernetes, from_readme):
            exporter.wait_ready()
            assert httpx.get(exporter.url + "/health").status_code == 200
            check_official_names(exporter)
        readme_log, kubernetes_log = from_readme.output(), from_kubernetes.output()
    assert "level=debug" in readme_log and "level=debug" not in kubernetes_log  # -d
    assert KEY_SECRET not in readme_log + kubernetes_log


def check_config(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
    env: dict[str, str] | None = None,
) -> tuple[int, str, str]:
    """`spacelift-exporter check-config ARGS` with only ``env``'s SPACELIFT_* variables."""
    for name in os.environ:
        if name.startswith("SPACELIFT_"):
            monkeypatch.delenv(name)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    code = cli.main(["check-config", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_official_settings_map_to_their_nearest_meaning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(KEY_SECRET + "\n")
    env = {
        "SPACELIFT_PROMEX_API_ENDPOINT": "https://acme.app.spacelift.io",
        "SPACELIFT_PROMEX_API_KEY_ID": KEY_ID,
        "SPACELIFT_PROMEX_API_KEY_SECRET_FILE": str(secret_file),
        "SPACELIFT_PROMEX_SCRAPE_TIMEOUT": "5s",
        "SPACELIFT_PROMEX_IS_DEVELOPMENT": "true",
        "SPACELIFT_PROMEX_LISTEN_ADDRESS": ":9999",
    }
    code, out, err = check_config(monkeypatch, capsys, env=env)
    assert code == 0, err
    cfg = json.loads(out)
    assert cfg["accounts"][0]["endpoint"] == "https://acme.app.spacelift.io/graphql"
    assert cfg["accounts"][0]["credentials"]["api_key_secret"] == f"<read from {secret_file}>"
    assert cfg["http"]["poll_timeout"] == 5.0 and cfg["http"]["timeout"] == 5.0
    assert cfg["web"]["listen_address"] == ":9999"
    assert cfg["log"]["level"] == "debug"
    # A flag beats its variable, as in the official exporter.
    code, out, _ = check_config(
        monkeypatch, capsys, "--scrape-timeout", "1m", "-l", ":9000", env=env
    )
    assert json.loads(out)["http"]["poll_timeout"] == 60.0
    assert json.loads(out)["web"]["listen_address"] == ":9000"


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"SPACELIFT_PROMEX_SCRAPE_TIMEOUT": "0s"}, "SPACELIFT_PROMEX_SCRAPE_TIMEOUT"),
        ({"SPACELIFT_PROMEX_IS_DEVELOPMENT": "yes"}, "SPACELIFT_PROMEX_IS_DEVELOPMENT"),
        ({"SPACELIFT_PROMEX_CA_CERT_PATH": "/nonexistent.pem"}, "SPACELIFT_PROMEX_CA_CERT_PATH"),
    ],
)
def test_bad_official_settings_exit_2_naming_the_variable(env: dict[str, str], key: str) -> None:
    creds = {
        "SPACELIFT_PROMEX_API_ENDPOINT": "acme.app.spacelift.io",
        "SPACELIFT_PROMEX_API_KEY_ID": KEY_ID,
        "SPACELIFT_PROMEX_API_KEY_SECRET": KEY_SECRET,
    }
    with pytest.raises(ConfigError) as err:
        load(Overrides(), env={**creds, **env})
    assert err.value.key == key


# -- self-hosted Spacelift behind a private CA ----------------------------------------------


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def private_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("private-ca")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *ec, "-days", "2", "-subj", "/CN=Spacelift Self-Hosted Test CA",
            "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))  # fmt: skip
    openssl("req", *ec, "-subj", "/CN=spacelift.internal",
            "-keyout", str(d / "server.key"), "-out", str(d / "server.csr"))  # fmt: skip
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", str(d / "server.csr"), "-CA", str(d / "ca.crt"),
            "-CAkey", str(d / "ca.key"), "-CAcreateserial", "-days", "2",
            "-extfile", str(d / "server.ext"), "-out", str(d / "server.crt"))  # fmt: skip
    return d


@pytest.fixture(scope="module")
def tls_sim(private_ca: Path) -> Iterator[Simulator]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(private_ca / "server.crt", private_ca / "server.key")
    world = World(
        WorldConfig(seed=5, stacks=4, spaces=1, pools=1, workers_per_pool=1, api_keys=1, users=1),
        SimClock(start=float(int(time.time()))),
    )
    with Simulator(world, key_id=KEY_ID, key_secret=KEY_SECRET, tls=ctx) as s:
        yield s


def poll_once(sim: Simulator, env: dict[str, str], overrides: Overrides) -> list[str]:
    """Poll every area once; the errors of those that failed."""
    raw = {
        "accounts": [{"name": "selfhosted", "endpoint": sim.url}],
        "http": {"timeout": "5s", "retries": 0},
    }
    creds = {"SPACELIFT_API_KEY_ID": KEY_ID, "SPACELIFT_API_KEY_SECRET": KEY_SECRET}
    app = App(load(overrides, env={**creds, **env}, raw=raw))
    try:
        app.poll_all()
        return [f"{area}: {st.error}" for (_, area), st in app.store.items() if not st.ok]
    finally:
        app.close()


def test_ca_cert_path_trusts_a_private_ca(tls_sim: Simulator, private_ca: Path) -> None:
    assert tls_sim.url.startswith("https://")
    # Without the CA the certificate is refused: the option is what makes it work.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.post(tls_sim.url, json={"query": "{ viewer { id } }"})
    failures = poll_once(tls_sim, {}, Overrides())
    assert len(failures) == sum(a.enabled_by_default for a in AREAS.values()), failures
    # The official flag, and its variable.
    assert poll_once(tls_sim, {}, Overrides(ca_cert_path=private_ca / "ca.crt")) == []
    env = {"SPACELIFT_PROMEX_CA_CERT_PATH": str(private_ca / "ca.crt")}
    assert poll_once(tls_sim, env, Overrides()) == []


def test_ca_cert_is_added_to_the_system_trust_not_instead(private_ca: Path) -> None:
    ctx = trust.verify(private_ca / "ca.crt")
    assert isinstance(ctx, ssl.SSLContext)
    subjects = {
        value for cert in ctx.get_ca_certs() for rdn in cert["subject"] for key, value in rdn
        if key == "commonName"
    }  # fmt: skip
    assert "Spacelift Self-Hosted Test CA" in subjects
    system = ssl.create_default_context().cert_store_stats()["x509_ca"]
    assert ctx.cert_store_stats()["x509_ca"] > system  # the system's CAs are all still there
    assert system > 0


def test_a_file_without_a_certificate_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "ca.crt"
    bad.write_text("not a certificate\n")
    code, _, err = check_config(
        monkeypatch,
        capsys,
        "--api-endpoint", "acme.app.spacelift.io", "-k", KEY_ID, "--ca-cert-path", str(bad),
        env={"SPACELIFT_PROMEX_API_KEY_SECRET": KEY_SECRET},
    )  # fmt: skip
    assert code == 2 and "--ca-cert-path" in err and KEY_SECRET not in err
