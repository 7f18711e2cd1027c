#!/usr/bin/env python3
"""The values table of the chart's README, generated from values.yaml.

    python deploy/helm/readme.py           # rewrite the table in spacelift-exporter/README.md
    python deploy/helm/readme.py --check   # exit 1 if it is stale (the tests run this)

A key is documented by the ``# --`` comment right above it (continued by the ``#`` lines that
follow), as helm-docs reads them; its default is the value in values.yaml. A key whose
comment is on its parent (``podSecurityContext``) is shown whole.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parent / "spacelift-exporter"
BEGIN, END = "<!-- BEGIN generated:values -->\n", "<!-- END generated:values -->"
_KEY = re.compile(r"^( *)([A-Za-z_][A-Za-z0-9_]*):")


def documented(values_text: str) -> list[tuple[str, str]]:
    """(dotted key, description) for every key with a ``# --`` comment, in file order."""
    out: list[tuple[str, str]] = []
    path: list[tuple[int, str]] = []  # (indent, key) of the enclosing keys
    comment: list[str] | None = None
    for line in values_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = [stripped[4:].strip()]
            continue
        if comment is not None and stripped.startswith("#"):
            comment.append(stripped[1:].strip())
            continue
        m = _KEY.match(line)
        if m:
            indent = len(m.group(1))
            while path and path[-1][0] >= indent:
                path.pop()
            path.append((indent, m.group(2)))
            if comment is not None:
                out.append((".".join(k for _, k in path), " ".join(comment)))
        if stripped:
            comment = None
    return out


def _default(values: dict[str, Any], key: str) -> str:
    value: Any = values
    for part in key.split("."):
        value = value[part]
    if isinstance(value, str) and "\n" in value:
        return "(multi-line)"
    return "`" + json.dumps(value, separators=(", ", ": ")) + "`"


def table(values_text: str) -> str:
    values = yaml.safe_load(values_text)
    rows = ["| Key | Default | Description |", "|---|---|---|"]
    for key, text in documented(values_text):
        rows.append(f"| `{key}` | {_default(values, key)} | {text} |")
    return "\n".join(rows)


def render(readme: str, values_text: str) -> str:
    head, found, rest = readme.partition(BEGIN)
    _, found_end, tail = rest.partition(END)
    if not (found and found_end):
        raise SystemExit("README.md has no generated:values markers")
    return head + BEGIN + table(values_text) + "\n" + END + tail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if README.md is stale")
    args = parser.parse_args(argv)
    readme_path = CHART / "README.md"
    current = readme_path.read_text()
    fresh = render(current, (CHART / "values.yaml").read_text())
    if args.check:
        if fresh != current:
            print(f"{readme_path} is stale: run python deploy/helm/readme.py", file=sys.stderr)
            return 1
        return 0
    readme_path.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
