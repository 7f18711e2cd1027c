"""Webhook configuration: where the secret comes from, and what a mistake looks like."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.config import ConfigError, Overrides, load

ROOT = Path(__file__).resolve().parents[1]
ENV = {"SPACELIFT_API_KEY_ID": "01HKEYID", "SPACELIFT_API_KEY_SECRET": "s3cr3t-value"}
ONE = {"accounts": [{"endpoint": "acme.app.spacelift.io"}]}


def test_no_secret_no_webhooks() -> None:
    cfg = load(Overrides(), env=ENV, raw=dict(ONE))
    assert not cfg.webhooks_enabled()


def test_default_variable_a_named_variable_and_a_file(tmp_path: Path) -> None:
    cfg = load(Overrides(), env={**ENV, "SPACELIFT_WEBHOOK_SECRET": "w1"}, raw=dict(ONE))
    secret = cfg.accounts[0].webhook_secret
    assert secret is not None and secret.reveal() == b"w1"
    cfg = load(Overrides(webhook_secret_env_var="HOOK"), env={**ENV, "HOOK": "w2"}, raw=dict(ONE))
    assert cfg.accounts[0].webhook_secret is not None
    assert cfg.accounts[0].webhook_secret.reveal() == b"w2"
    path = tmp_path / "hook"
    path.write_text("w3\n")
    cfg = load(Overrides(webhook_secret_file=path), env=ENV, raw=dict(ONE))
    secret = cfg.accounts[0].webhook_secret
    assert secret is not None and secret.reveal() == b"w3"
    path.write_text("rotated-and-longer\n")  # re-read when it changes
    assert secret.reveal() == b"rotated-and-longer"


def test_per_account_secrets_in_the_file(tmp_path: Path) -> None:
    (tmp_path / "b").write_text("wb")
    raw = {
        "accounts": [
            {"endpoint": "a.app.spacelift.io", "webhook_secret_env_var": "HOOK_A"},
            {"endpoint": "b.app.spacelift.io", "webhook_secret_file": str(tmp_path / "b")},
            {"endpoint": "c.app.spacelift.io"},
        ],
        "webhook": {"path": "/hooks/sl", "listen_address": ":9954", "max_body_size": 65536},
    }
    cfg = load(Overrides(), env={**ENV, "HOOK_A": "secret-a-9z"}, raw=raw)
    got = {a.name: a.webhook_secret.reveal() if a.webhook_secret else None for a in cfg.accounts}
    assert got == {"a": b"secret-a-9z", "b": b"wb", "c": None}
    assert (cfg.webhook.path, cfg.webhook.listen_address) == ("/hooks/sl", ":9954")
    assert "secret-a-9z" not in repr(cfg) + json.dumps(cfg.redacted(), default=str)


@pytest.mark.parametrize(
    ("raw", "env", "key"),
    [
        ({"webhook": {"path": "/metrics"}}, {}, "webhook.path"),
        ({"webhook": {"listen_address": "nowhere"}}, {}, "webhook.listen_address"),
        ({"webhook": {"max_body_size": 10}}, {}, "webhook.max_body_size"),
        ({"webhook": {"surprise": 1}}, {}, "webhook.surprise"),
        (
            {"accounts": [{"endpoint": "a.app.spacelift.io", "webhook_secret_env_var": "NOPE"}]},
            {},
            "accounts[0].webhook_secret_env_var",
        ),
        (
            {"accounts": [{"endpoint": "a.app.spacelift.io", "webhook_secret_file": "/nope"}]},
            {},
            "accounts[0].webhook_secret_file",
        ),
    ],
)
def test_mistakes_name_the_key(raw: dict[str, object], env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(Overrides(), env={**ENV, **env}, raw={**ONE, **raw})
    assert err.value.key == key


def test_check_config_shows_where_the_secret_comes_from_never_its_value() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", "--spacelift-api-endpoint", "acme"],
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(ROOT),
            **ENV,
            "SPACELIFT_WEBHOOK_SECRET": "hush-hush",
        },
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["accounts"][0]["webhook_secret"] == "$SPACELIFT_WEBHOOK_SECRET"
    assert out["webhook"]["path"] == "/webhooks/spacelift"
    assert "hush-hush" not in proc.stdout + proc.stderr
