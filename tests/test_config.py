"""Configuration: what a user typing flags or writing YAML sees when they get it wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from exporter import cli
from exporter.config import ConfigError, Overrides, load, normalize_endpoint
from exporter.secret import Secret

ROOT = Path(__file__).resolve().parents[1]
ENV = {"SPACELIFT_API_KEY_ID": "01HKEYID", "SPACELIFT_API_KEY_SECRET": "s3cr3t-value"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return path


def test_bare_host_endpoint_is_normalised_and_names_the_account() -> None:
    cfg = load(Overrides(endpoint="acme.app.spacelift.io"), env=ENV)
    (account,) = cfg.accounts
    assert account.endpoint == "https://acme.app.spacelift.io/graphql"
    assert account.name == "acme"
    assert normalize_endpoint("https://acme.app.spacelift.io/", "k") == account.endpoint


def test_official_exporter_environment_works_as_drop_in() -> None:
    env = {
        "SPACELIFT_PROMEX_API_ENDPOINT": "https://acme.app.spacelift.io",
        "SPACELIFT_PROMEX_API_KEY_ID": "01HKEYID",
        "SPACELIFT_PROMEX_API_KEY_SECRET": "s3cr3t-value",
    }
    (account,) = load(Overrides(), env=env).accounts
    assert account.credentials.key_id == "01HKEYID"
    assert account.credentials.secret().reveal() == "s3cr3t-value"


def test_custom_env_var_names_and_pre_generated_token() -> None:
    env = {"MY_TOKEN": "eyJ.token.sig"}
    cfg = load(Overrides(endpoint="acme.app.spacelift.io", token_env_var="MY_TOKEN"), env=env)
    creds = cfg.accounts[0].credentials
    assert creds.token == Secret("eyJ.token.sig")
    assert creds.key_id is None


def test_secret_file_is_re_read_at_every_call(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("first\n")
    cfg = load(
        Overrides(endpoint="acme.app.spacelift.io", key_secret_file=secret),
        env={"SPACELIFT_API_KEY_ID": "oidc::issuer::key"},
    )
    creds = cfg.accounts[0].credentials
    assert creds.secret().reveal() == "first"
    secret.write_text("rotated\n")
    assert creds.secret().reveal() == "rotated"


def test_several_accounts_with_per_area_settings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
accounts:
  - endpoint: acme.app.spacelift.io
  - name: staging
    endpoint: https://acme-staging.app.spacelift.io/graphql
    areas: {usage: {enabled: false}}
areas:
  worker_pools: {interval: 15s}
http: {timeout: 5s, retries: 2}
""",
    )
    cfg = load(Overrides(config_file=path), env=ENV)
    assert [a.name for a in cfg.accounts] == ["acme", "staging"]
    assert cfg.accounts[0].areas["worker_pools"].interval == 15.0
    assert cfg.accounts[1].areas["worker_pools"].interval == 15.0  # inherits the defaults
    assert "usage" in cfg.accounts[0].enabled_areas()
    assert "usage" not in cfg.accounts[1].enabled_areas()
    assert cfg.http.timeout == 5.0 and cfg.http.retries == 2


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "accounts: [{endpoint: a.app.spacelift.io}]\nlog: {level: debug}\n")
    cfg = load(Overrides(config_file=path, log_level="error", listen_address=":9999"), env=ENV)
    assert cfg.log_level == "error"
    assert cfg.listen_address == ":9999"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("accounts: [{endpoint: a.app.spacelift.io, colour: blue}]", "accounts[0].colour"),
        ("accounts: [{endpoint: a.app.spacelift.io}]\nareas: {runz: {}}", "areas.runz"),
        (
            "accounts: [{endpoint: a.app.spacelift.io}]\nareas: {usage: {interval: soon}}",
            "areas.usage.interval",
        ),
        (
            "accounts: [{endpoint: a.app.spacelift.io}]\nareas: {usage: {enabled: 'yes'}}",
            "areas.usage.enabled",
        ),
        ("accounts: [{endpoint: a.app.spacelift.io}]\nhttp: {retries: many}", "http.retries"),
        ("accounts: [{endpoint: a.app.spacelift.io}]\nlog: {format: xml}", "log.format"),
        ("accounts: [{name: x}]", "accounts[0].endpoint"),
        ("accounts: {endpoint: a}", "accounts"),
        ("accounts: [{endpoint: a.app.spacelift.io}]\nweb: {listen_address: nope}", "web."),
        ("accounts: [{endpoint: 'a:b:c'}]", "accounts[0].endpoint"),
        ("accounts: [{endpoint: 'https://[::1'}]", "accounts[0].endpoint"),
        ("accounts: [{endpoint: 'https://u:pw@a.app.spacelift.io'}]", "accounts[0].endpoint"),
        ("accounts: [{endpoint: a.app.spacelift.io}]\nareas: {usage: false}", "areas.usage"),
        ("accounts: [{endpoint: a.app.spacelift.io}]\nareas: {usage: {interval: .nan}}", "areas."),
        ("accounts: [{endpoint: a.app.spacelift.io}]\nhttp: {timeout: .inf}", "http.timeout"),
        ("accounts: [{endpoint: a.app.spacelift.io}]\nhttp: {timeout: 5m}", "http.timeout"),
        ("accounts: [{endpoint: a.app.spacelift.io}]\nweb: false", "web"),
    ],
)
def test_broken_config_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(Overrides(config_file=write(tmp_path, text)), env=ENV)
    assert err.value.key.startswith(key), str(err.value)


def test_missing_credentials_name_the_variables() -> None:
    with pytest.raises(ConfigError) as err:
        load(Overrides(endpoint="acme.app.spacelift.io"), env={})
    assert "SPACELIFT_API_KEY_ID" in str(err.value)
    assert "SPACELIFT_API_TOKEN" in str(err.value)


def test_key_id_without_secret_is_an_error() -> None:
    with pytest.raises(ConfigError) as err:
        load(Overrides(endpoint="acme.app.spacelift.io"), env={"SPACELIFT_API_KEY_ID": "x"})
    assert "SPACELIFT_API_KEY_SECRET" in str(err.value)


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), **env},
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def test_broken_config_file_exits_2_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "accounts: [{endpoint: a.app.spacelift.io}]\nhttp: {timeout: -1}\n")
    proc = run_cli("--config.file", str(path), env=ENV)
    assert proc.returncode == 2
    assert "http.timeout" in proc.stderr
    assert "s3cr3t-value" not in proc.stderr + proc.stdout


def test_unparseable_yaml_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, "accounts: [\n  - endpoint: a\n  bad: : :\n")
    proc = run_cli("check-config", "--config.file", str(path), env=ENV)
    assert proc.returncode == 2
    assert "--config.file" in proc.stderr and "line" in proc.stderr


def test_check_config_prints_effective_config_without_secrets() -> None:
    proc = run_cli("check-config", "--spacelift-api-endpoint", "acme.app.spacelift.io", env=ENV)
    assert proc.returncode == 0, proc.stderr
    assert "s3cr3t-value" not in proc.stdout + proc.stderr
    shown = json.loads(proc.stdout)
    account = shown["accounts"][0]
    assert account["endpoint"] == "https://acme.app.spacelift.io/graphql"
    assert account["credentials"]["api_key_id"] == "01HKEYID"
    assert account["credentials"]["api_key_secret"] == "<redacted>"
    assert set(account["areas"]) >= {"worker_pools", "usage"}


def test_secret_never_shows_in_repr_of_config() -> None:
    cfg = load(Overrides(endpoint="acme.app.spacelift.io"), env=ENV)
    assert "s3cr3t-value" not in repr(cfg)
    assert "s3cr3t-value" not in str(cfg.redacted())
    assert "s3cr3t-value" not in f"{cfg.accounts[0].credentials.key_secret}"


def test_no_account_at_all_points_at_demo() -> None:
    assert cli.main(["check-config"]) == 2


def test_a_value_pasted_as_a_variable_name_is_not_echoed() -> None:
    proc = run_cli(
        "check-config",
        "--spacelift-api-endpoint",
        "acme.app.spacelift.io",
        "--spacelift-api-token-env-var",
        "eyJhbGciOi.SECRETJWTPAYLOAD.sig",
        env={},
    )
    assert proc.returncode == 2
    assert "api_token_env_var" in proc.stderr
    assert "SECRETJWTPAYLOAD" not in proc.stderr + proc.stdout


def test_check_config_validates_the_web_config_too(tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    web.write_text("tls_server_config: {cert_file: a.crt}\n")
    proc = run_cli(
        "check-config",
        "--spacelift-api-endpoint",
        "acme.app.spacelift.io",
        "--web.config.file",
        str(web),
        env=ENV,
    )
    assert proc.returncode == 2
    assert "tls_server_config.key_file" in proc.stderr


ACCOUNT = "accounts: [{endpoint: a.app.spacelift.io}]\n"
LAUGHS = "".join(
    f"l{i}: &l{i} [{', '.join([f'*l{i - 1}' if i else '{lol: x}'] * 9)}]\n" for i in range(9)
)


@pytest.mark.parametrize(
    ("content", "key"),
    [
        pytest.param(
            ACCOUNT.encode() + b"log: {level: \xffinfo}\n", "--config.file", id="not-utf8"
        ),
        pytest.param(ACCOUNT + "areas: " + "[" * 5000 + "]" * 5000, "--config.file", id="deep"),
        pytest.param(ACCOUNT + LAUGHS, "l4", id="billion-laughs"),
        pytest.param(
            "accounts:\n  - endpoint: a.app.spacelift.io\n    endpoint: b.app.spacelift.io\n",
            "accounts[0].endpoint",
            id="duplicate-key",
        ),
        pytest.param(
            ACCOUNT + "areas: {usage: {interval: 1000000000000000000000000000000}}",
            "areas.usage.interval",
            id="duration-overflow-int",
        ),
        pytest.param(
            ACCOUNT + "http: {poll_timeout: 99999999999999999999999h}",
            "http.poll_timeout",
            id="duration-overflow-str",
        ),
        pytest.param(
            ACCOUNT + "areas: {stacks: {stack_labels: [team, {env: prod}]}}",
            "areas.stacks.stack_labels[1]",
            id="non-string-list-item",
        ),
        pytest.param(
            ACCOUNT + "http: {retries: " + "9" * 5000 + "}", "--config.file", id="5000-digits"
        ),
        pytest.param(ACCOUNT + "a: &a [*a]\n", "a", id="recursive-alias"),
        pytest.param(
            "accounts: [{endpoint: 'https://a_é.example/graphql'}]",
            "accounts[0].endpoint",
            id="host-httpx-refuses",
        ),
    ],
)
@pytest.mark.parametrize("command", ["check-config", "run"])
def test_hostile_config_file_exits_2_naming_the_key(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    content: str | bytes,
    key: str,
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(cli, "_run", lambda *a, **k: pytest.fail("run would have started"))
    path = tmp_path / "config.yml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert cli.main([command, "--config.file", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"configuration error: {key}" in err, err
    assert "Traceback" not in err and len(err) < 500, err


def test_yaml_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "accounts:\n  - endpoint: a.app.spacelift.io\n    areas: {runs: &fast {interval: 15s}}\n"
        + "areas: {stacks: {<<: *fast, per_stack: false}, usage: *fast}\n",
    )
    cfg = load(Overrides(config_file=path), env=ENV)
    assert cfg.accounts[0].areas["runs"].interval == 15
    assert cfg.accounts[0].areas["usage"].interval == 15
