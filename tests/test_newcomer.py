"""What someone trying the exporter for the first time meets: `once`, errors, the demo."""

from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exporter import cli
from exporter.config import ConfigError, Overrides, load
from tests.support.processes import ROOT, free_port
from tests.support.wait import until

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def exporter(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args],
        capture_output=True,
        text=True,
        env={**ENV, **(env or {})},
        timeout=60,
        check=False,
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once closed


def test_once_against_an_unreachable_endpoint_names_the_host_at_once() -> None:
    port = closed_port()
    started = time.monotonic()
    proc = exporter(
        "once",
        "--spacelift-api-endpoint",
        f"http://127.0.0.1:{port}",
        env={"SPACELIFT_API_KEY_ID": "01HKEY", "SPACELIFT_API_KEY_SECRET": "s"},
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 1
    assert f"127.0.0.1:{port}: connection refused" in proc.stderr, proc.stderr
    for daemon_talk in ("serving the last good data", "next attempt"):
        assert daemon_talk not in proc.stderr, proc.stderr
    assert len(proc.stderr.splitlines()) == 1, proc.stderr  # one cause, said once
    assert elapsed < 10, "six areas must not each wait through their own retries"


@pytest.mark.parametrize(
    ("overrides", "raw", "key"),
    [
        (Overrides(endpoint="acme.app.spacelift.io"), None, "$SPACELIFT_API_KEY_ID"),
        (Overrides(endpoint="acme.app.spacelift.io", key_id_env_var="MY_ID"), None, "$MY_ID"),
        (
            Overrides(),
            {"accounts": [{"endpoint": "a.app.spacelift.io", "api_key_id_env_var": "K"}]},
            "accounts[0].api_key_id_env_var",
        ),
    ],
)
def test_missing_credentials_are_named_as_the_user_would_set_them(
    overrides: Overrides, raw: dict[str, object] | None, key: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load(overrides, env={}, raw=raw)
    assert err.value.key == key


def test_demo_binds_loopback_unless_told_otherwise() -> None:
    url = "http://127.0.0.1:1/graphql"
    assert cli.demo_config(Overrides(), {}, url).listen_address.startswith("127.0.0.1:")
    told = cli.demo_config(Overrides(listen_address=":9100"), {}, url)
    assert told.listen_address == ":9100"
    from_file = cli.demo_config(Overrides(), {"web": {"listen_address": "0.0.0.0:9100"}}, url)
    assert from_file.listen_address == "0.0.0.0:9100"


def test_demo_with_a_missing_config_file_is_an_error(tmp_path: Path) -> None:
    proc = exporter(
        "demo", "--config.file", str(tmp_path / "nope.yml"), "--demo.simulator-port", "0"
    )
    assert proc.returncode == 2
    assert "--config.file" in proc.stderr


def test_the_demo_shows_commands_that_work_against_its_simulator(tmp_path: Path) -> None:
    log = tmp_path / "demo.log"
    with log.open("w") as out:
        argv = [sys.executable, "-m", "exporter", "demo", "--web.listen-address", "127.0.0.1:0"]
        demo = subprocess.Popen(
            [*argv, "--demo.simulator-port", str(free_port())],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=out,
            text=True,
        )
    try:
        hint = until(lambda: "doctor" in log.read_text() and log.read_text(), what="the hint")
        lines = [x.strip() for x in hint.splitlines()]
        export = next(x for x in lines if x.startswith("export "))
        env = dict(kv.split("=", 1) for kv in shlex.split(export)[1:])
        for command in ("check-config", "once", "doctor"):
            line = next(x for x in lines if x.startswith(f"spacelift-exporter {command} "))
            proc = exporter(*shlex.split(line)[1:], env=env)
            assert proc.returncode == 0, proc.stdout + proc.stderr
    finally:
        demo.terminate()
        demo.wait(timeout=15)
