"""``spacelift-exporter doctor`` against the simulator in each mode, through the command line;
``--capture`` and the replay of captured answers (tests/fixtures/captures, made by
``tests/fixtures/captures/make.py``) as regression tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exporter import cli
from exporter.app import App
from exporter.config import Overrides, load
from exporter.simulator import Simulator, World
from exporter.simulator.replay import Replay
from exporter.simulator.server import OLD_SELF_HOSTED
from tests.conftest import CREDENTIALS, KEY_ID, KEY_SECRET, samples

FIXTURES = Path(__file__).parent / "fixtures" / "captures"
MACHINE_GATES = {"Stack.state", "stacks", "searchStacksSuggestions", "usage", "metrics"}


def doctor(
    sim_url: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *args: str,
    secret: str = KEY_SECRET,
) -> tuple[int, str]:
    monkeypatch.setenv("SPACELIFT_API_KEY_ID", KEY_ID)
    monkeypatch.setenv("SPACELIFT_API_KEY_SECRET", secret)
    code = cli.main(["doctor", "--spacelift-api-endpoint", sim_url, *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def app_at(url: str) -> App:
    raw = {"accounts": [{"name": "sim", "endpoint": url}], "http": {"retries": 0}}
    return App(load(Overrides(), env=CREDENTIALS, raw=raw))


def no_secrets(text: str, sim: Simulator) -> None:
    assert KEY_SECRET not in text
    assert not any(token in text for token in sim.issued_tokens)


def test_healthy_account_exits_0_with_every_area_ok(
    sim: Simulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out = doctor(sim.url, capsys, monkeypatch)
    assert code == 0, out
    assert "Every enabled area works." in out
    for area in ("worker_pools", "stacks", "runs", "access", "aggregates"):
        assert f"area {area}" in out
    assert "documents valid against the live schema" in out
    no_secrets(out, sim)

    code, out = doctor(sim.url, capsys, monkeypatch, "--output", "json")
    report = json.loads(out)
    assert code == 0 and report["ok"] is True
    checks = {c["check"]: c["status"] for c in report["accounts"][0]["checks"]}
    assert set(checks.values()) == {"ok"}
    assert {"connection", "identity", "schema", "area stacks"} <= set(checks)


def test_older_release_is_degraded_but_working(
    world: World, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with Simulator(
        world, key_id=KEY_ID, key_secret=KEY_SECRET, missing_fields=OLD_SELF_HOSTED
    ) as old:
        code, out = doctor(old.url, capsys, monkeypatch, "--output", "json")
    assert code == 0, out
    checks = {c["check"]: c for c in json.loads(out)["accounts"][0]["checks"]}
    assert checks["schema"]["status"] == "degraded"
    assert any("Cannot query field" in p and "seats" in p for p in checks["schema"]["problems"])
    assert checks["area access"]["status"] == "degraded"
    assert checks["area access"]["fields"][0]["field"] == "Query.seats"
    assert "upgrading" in checks["area access"]["fields"][0]["remedy"]
    assert checks["area worker_pools"]["fields"][0]["reason"] == "missing"


def test_machine_user_key_names_the_gaps_and_exits_1(
    sim: Simulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sim.gate_fields(MACHINE_GATES)
    code, out = doctor(sim.url, capsys, monkeypatch)
    assert code == 1, out
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith("  area ")}
    assert "degraded" in lines["stacks"] and "Stack.state refused" in lines["stacks"]
    assert "not a machine user" in out  # the remedy
    assert "machine user: yes" in out and "admin: yes" in out  # who the key is
    assert "permission gap" in lines["usage"]
    assert "Some areas do not work" in out
    no_secrets(out, sim)


def test_wrong_secret_and_unreachable_exit_1_without_secrets(
    sim: Simulator, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out = doctor(sim.url, capsys, monkeypatch, secret="not-the-secret")
    assert code == 1
    assert "connection" in out and "failed" in out and "check the key id and secret" in out
    assert "not-the-secret" not in out
    url = sim.url
    sim.stop()
    code, out = doctor(url, capsys, monkeypatch, "--output", "json")
    assert code == 1
    (check,) = json.loads(out)["accounts"][0]["checks"]
    assert check["status"] == "failed" and "unreachable" in check["detail"]


def test_broken_configuration_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("SPACELIFT_API_KEY_ID", raising=False)
    monkeypatch.delenv("SPACELIFT_API_KEY_SECRET", raising=False)
    monkeypatch.delenv("SPACELIFT_API_TOKEN", raising=False)
    assert cli.main(["doctor", "--spacelift-api-endpoint", "acme.app.spacelift.io"]) == 2
    assert "configuration error" in capsys.readouterr().err


def test_capture_is_sanitized_and_replays_to_the_same_series(
    sim: Simulator,
    world: World,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    code, _ = doctor(sim.url, capsys, monkeypatch, "--capture", str(tmp_path))
    assert code == 0
    text = "".join(p.read_text() for p in tmp_path.glob("*.json"))
    no_secrets(text, sim)
    assert KEY_ID not in text
    for st in list(world.stacks.values())[:5]:
        assert f'"{st.id}"' not in text and f'"{st.repository}"' not in text
    assert '"FINISHED"' in text or '"NONE"' in text  # enum values kept
    live = app_at(sim.url)
    live.poll_all()
    with Replay(tmp_path) as replay:
        replayed = app_at(replay.url)
        replayed.poll_all()

    def shape(app: object) -> dict[str, int]:
        out: dict[str, int] = {}
        for (name, _), _v in samples(app).items():  # type: ignore[arg-type]
            if name.startswith("spacelift_") and "poll" not in name and "api_" not in name:
                out[name] = out.get(name, 0) + 1
        return out

    assert shape(replayed) == shape(live)


@pytest.mark.parametrize("fixture", ["healthy", "machine-key"])
def test_captured_answers_stay_regression_tests(fixture: str) -> None:
    with Replay(FIXTURES / fixture) as replay:
        app = app_at(replay.url)
        app.poll_all()
    got = samples(app)
    stacks = [k for k in got if k[0] == "spacelift_stack_info"]
    assert len(stacks) == 8
    gaps = {dict(k[1])["field"] for k in got if k[0] == "spacelift_api_field_unavailable"}
    states = [k for k in got if k[0] == "spacelift_stack_state"]
    if fixture == "machine-key":
        assert gaps == {"Stack.state", "Query.metrics"}
        assert states == []
        assert app.store.get(("sim", "usage")).permission_denied
    else:
        assert gaps == set() and len(states) == 8
