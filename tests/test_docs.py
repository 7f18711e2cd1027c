"""Every PromQL example in the README and docs/ is valid PromQL (checked by promtool)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.processes import need

ROOT = Path(__file__).resolve().parents[1]
# runbooks.md is checked, query by query, by tests/test_alert_rules.py
DOCS = [
    ROOT / "README.md",
    *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name != "runbooks.md"),
]


def queries(path: Path) -> list[str]:
    """The ```promql blocks' queries: a comment line or a blank line starts the next one."""
    found = []
    for block in re.findall(r"```promql\n(.*?)```", path.read_text(), flags=re.S):
        current: list[str] = []
        for line in [*block.splitlines(), ""]:
            if not line.strip() or line.lstrip().startswith("#"):
                if current:
                    found.append("\n".join(current))
                current = []
            else:
                current.append(line)
    return found


@pytest.mark.parametrize("doc", DOCS, ids=[p.name for p in DOCS])
def test_promql_examples_parse(doc: Path, tmp_path: Path) -> None:
    exprs = queries(doc)
    if not exprs:
        pytest.skip(f"{doc.name} has no PromQL examples")
    rules = [{"record": f"docs:example_{i}", "expr": q} for i, q in enumerate(exprs)]
    path = tmp_path / "examples.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": doc.stem, "rules": rules}]}))
    result = subprocess.run(
        [need("promtool"), "check", "rules", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
