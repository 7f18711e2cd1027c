"""Write the dashboards' JSON from their Python source, or check the committed JSON.

    python -m grafana.generate            # (re)write grafana/dashboards/ and grafana/export/
    python -m grafana.generate --check    # exit 1 if a committed file differs or is missing
    python grafana/generate.py [--check]  # the same

Each dashboard is written in two forms from the same model: ``dashboards/<uid>.json`` for
provisioning (file provider, Helm chart sidecar), and ``export/<uid>.json`` in Grafana's
"export for sharing externally" form (``__inputs`` asking for the Prometheus data source,
``__requires``), which imports on grafana.com and in Grafana's UI without edits.

The JSON is deterministic (sorted keys, two-space indent, trailing newline), so a diff of a
regenerated file shows exactly what changed in the source.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import json
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

if not __package__:  # run as `python grafana/generate.py`: make `grafana` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grafana_foundation_sdk.cog.encoder import JSONEncoder

from grafana.dashboards_src import DASHBOARDS

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
EXPORT_DIR = Path(__file__).resolve().parent / "export"

# The Grafana line whose types the pinned grafana-foundation-sdk has ("<epoch>!<version>").
GRAFANA_VERSION = version("grafana-foundation-sdk").rpartition("!")[2]
DS_INPUT = "DS_PROMETHEUS"
# Names Grafana gives its core panel plugins in __requires ("row" is not a plugin).
PANEL_NAMES = {
    "bargauge": "Bar gauge",
    "barchart": "Bar chart",
    "gauge": "Gauge",
    "heatmap": "Heatmap",
    "piechart": "Pie chart",
    "stat": "Stat",
    "state-timeline": "State timeline",
    "table": "Table",
    "text": "Text",
    "timeseries": "Time series",
}


def _dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def model(uid: str) -> Any:
    """One dashboard as plain JSON data (the provisioning form)."""
    # Round-trip through plain JSON so the file depends only on the data, not on the SDK's
    # encoder settings.
    return json.loads(JSONEncoder().encode(DASHBOARDS[uid]()))


def export_form(dashboard: dict[str, Any]) -> dict[str, Any]:
    """Grafana's shareable export of a dashboard: the importer asks for a Prometheus data
    source and writes its uid wherever ``${DS_PROMETHEUS}`` stands, here the default of the
    ``datasource`` variable every panel already uses."""
    out = copy.deepcopy(dashboard)
    (var,) = [v for v in out["templating"]["list"] if v["type"] == "datasource"]
    var["current"] = {"selected": False, "text": f"${{{DS_INPUT}}}", "value": f"${{{DS_INPUT}}}"}
    panels = {p["type"] for p in _panels(out["panels"])} - {"row"}
    unknown = panels - set(PANEL_NAMES)
    if unknown:
        raise SystemExit(f"add the Grafana names of panel types {sorted(unknown)} to PANEL_NAMES")
    out["__inputs"] = [
        {
            "name": DS_INPUT,
            "label": "Prometheus",
            "description": "The Prometheus that scrapes spacelift-exporter",
            "type": "datasource",
            "pluginId": "prometheus",
            "pluginName": "Prometheus",
        }
    ]
    out["__elements"] = {}
    out["__requires"] = [
        {"type": "grafana", "id": "grafana", "name": "Grafana", "version": GRAFANA_VERSION},
        {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
        *(
            {"type": "panel", "id": p, "name": PANEL_NAMES[p], "version": ""}
            for p in sorted(panels)
        ),
    ]
    out["id"] = None
    return out


def provisioning_form(exported: dict[str, Any]) -> dict[str, Any]:
    """The inverse of ``export_form`` (the tests check the two forms agree through it)."""
    out = copy.deepcopy(exported)
    for key in ("__inputs", "__elements", "__requires", "id"):
        out.pop(key, None)
    for var in out["templating"]["list"]:
        if var["type"] == "datasource":
            var.pop("current", None)
    return out


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [q for p in panels for q in (p, *_panels(p.get("panels", [])))]


def render(uid: str) -> str:
    """The JSON text of one dashboard, exactly as committed."""
    return _dumps(model(uid))


def render_export(uid: str) -> str:
    """The JSON text of one dashboard's export form, exactly as committed."""
    return _dumps(export_form(model(uid)))


def render_all() -> dict[str, str]:
    return {f"{uid}.json": render(uid) for uid in DASHBOARDS}


def render_all_export() -> dict[str, str]:
    return {f"{uid}.json": render_export(uid) for uid in DASHBOARDS}


def check(out_dir: Path = OUT_DIR, export_dir: Path = EXPORT_DIR) -> list[str]:
    """Names of the files that differ from the generator's output (or are missing/extra)."""
    return _check(render_all(), out_dir) + _check(render_all_export(), export_dir)


def _check(wanted: dict[str, str], out_dir: Path) -> list[str]:
    problems = []
    for name, text in wanted.items():
        path = out_dir / name
        if not path.exists():
            problems.append(f"{out_dir.name}/{name}: missing")
        elif path.read_text() != text:
            diff = difflib.unified_diff(
                path.read_text().splitlines(),
                text.splitlines(),
                f"committed/{name}",
                f"generated/{name}",
                lineterm="",
            )
            shown = "\n".join(list(diff)[:40])
            problems.append(f"{out_dir.name}/{name}: differs from the generator's output\n{shown}")
    for path in sorted(out_dir.glob("*.json")):
        if path.name not in wanted:
            problems.append(
                f"{out_dir.name}/{path.name}: not produced by the generator (remove it)"
            )
    return problems


def write(out_dir: Path = OUT_DIR, export_dir: Path = EXPORT_DIR) -> list[Path]:
    return _write(render_all(), out_dir) + _write(render_all_export(), export_dir)


def _write(files: dict[str, str], out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
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
    parser.add_argument(
        "--export-out", type=Path, default=EXPORT_DIR, help="output directory of the export form"
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.out, args.export_out)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run `python -m grafana.generate` and commit the result", file=sys.stderr)
            return 1
        print(f"{len(DASHBOARDS)} dashboards up to date in {args.out}")
        return 0
    for path in write(args.out, args.export_out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
