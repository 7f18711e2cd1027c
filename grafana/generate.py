"""Write the dashboards' JSON from their Python source, or check the committed JSON.

    python -m grafana.generate            # (re)write grafana/dashboards/<uid>.json
    python -m grafana.generate --check    # exit 1 if a committed file differs or is missing
    python grafana/generate.py [--check]  # the same

The JSON is deterministic (sorted keys, two-space indent, trailing newline), so a diff of a
regenerated file shows exactly what changed in the source.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path
from typing import Any

if not __package__:  # run as `python grafana/generate.py`: make `grafana` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from grafana.dashboards_src import DASHBOARDS

OUT_DIR = Path(__file__).resolve().parent / "dashboards"


def render(uid: str) -> str:
    """The JSON text of one dashboard, exactly as committed."""
    model = DASHBOARDS[uid]()
    # Round-trip through plain JSON so the file depends only on the data, not on the SDK's
    # encoder settings.
    data: Any = json.loads(JSONEncoder().encode(model))
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render_all() -> dict[str, str]:
    return {f"{uid}.json": render(uid) for uid in DASHBOARDS}


def check(out_dir: Path = OUT_DIR) -> list[str]:
    """Names of the files that differ from the generator's output (or are missing/extra)."""
    wanted = render_all()
    problems = []
    for name, text in wanted.items():
        path = out_dir / name
        if not path.exists():
            problems.append(f"{name}: missing")
        elif path.read_text() != text:
            diff = difflib.unified_diff(
                path.read_text().splitlines(),
                text.splitlines(),
                f"committed/{name}",
                f"generated/{name}",
                lineterm="",
            )
            shown = "\n".join(list(diff)[:40])
            problems.append(f"{name}: differs from the generator's output\n{shown}")
    for path in sorted(out_dir.glob("*.json")):
        if path.name not in wanted:
            problems.append(f"{path.name}: not produced by the generator (remove it)")
    return problems


def write(out_dir: Path = OUT_DIR) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_all().items():
        path = out_dir / name
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grafana.generate", description=__doc__)
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if the committed JSON differs from the generator's output",
    )
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output directory")
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.out)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run `python -m grafana.generate` and commit the result", file=sys.stderr)
            return 1
        print(f"{len(DASHBOARDS)} dashboards up to date in {args.out}")
        return 0
    for path in write(args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
