"""--state.file: atomic rewrite, sections, and a clean start on anything unreadable."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from exporter.areas.run_ledger import Ledger
from exporter.statefile import FORMAT, StateFile, section_key


def test_sections_round_trip_and_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "state.json"
    sf = StateFile(path)
    assert sf.load() == {}
    assert sf.save(section_key("acme", "runs"), {"x": 1})
    assert sf.save(section_key("other", "runs"), [1, 2])
    assert StateFile(path).load() == {"acme/runs": {"x": 1}, "other/runs": [1, 2]}
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]
    assert json.loads(path.read_text())["format"] == FORMAT


@pytest.mark.parametrize(
    "content", ["", "[]", "{}", '{"format": "something-else", "sections": {}}', "\x00\x01"]
)
def test_corrupt_file_gives_a_clean_start_and_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: str
) -> None:
    path = tmp_path / "state.json"
    path.write_text(content)
    with caplog.at_level(logging.WARNING):
        assert StateFile(path).load() == {}
    assert any("state file corrupt" in r.getMessage() for r in caplog.records)


def test_unwritable_location_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    sf = StateFile(blocker / "state.json")  # a file where a directory should be
    with caplog.at_level(logging.WARNING):
        assert not sf.save("a/runs", {})
    assert any("cannot write the state file" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"\xff\xfe{garbage", id="not-utf8"),
        pytest.param(b"[" * 200_000 + b"]" * 200_000, id="deep-json"),
        pytest.param(
            b'{"format": "spacelift-exporter-state/1", "sections": {"a/runs": {"x": NaN}}}',
            id="nan",
        ),
        pytest.param(b'{"format": "spacelift-exporter-state/1", "sections": [1]}', id="shape"),
    ],
)
def test_hostile_state_file_gives_a_clean_start_and_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, content: bytes
) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        assert StateFile(path).load() == {}
    assert any("state file corrupt" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("count", [-3, 10**30])
def test_a_run_ledger_with_an_absurd_counter_is_refused(count: int) -> None:
    raw = Ledger(baseline=1_780_000_000.0).to_json()
    raw["finished"] = [["root", "stack", "TRACKED", "FINISHED", count]]
    with pytest.raises(ValueError):
        Ledger.from_json(json.loads(json.dumps(raw)))
