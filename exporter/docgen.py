"""Generated parts of the README: metrics reference and permissions, from the definitions.

``python -m exporter.docgen`` rewrites them in place; ``--check`` exits 1 when the README is
out of date (the tests run that check), so the reference can never drift from the code.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from exporter import health, official, selfmetrics
from exporter.areas import AREAS
from exporter.families import MetricDef

README = Path(__file__).resolve().parents[1] / "README.md"


def _rows(metrics: tuple[MetricDef, ...] | list[MetricDef]) -> list[str]:
    rows = []
    for m in metrics:
        labels = ", ".join(f"`{label}`" for label in m.labels) or "none"
        rows.append(f"| `{m.exposed_name}` | {m.kind} | {labels} | {m.help} |")
    return rows


def metrics_section() -> str:
    head = ["| Metric | Type | Labels | Meaning |", "|---|---|---|---|"]
    parts = []
    for spec in AREAS.values():
        parts += [f"#### {spec.title} (area `{spec.name}`)", "", *head, *_rows(spec.metrics), ""]
    parts += ["#### Exporter health", "", *head, *_rows(health.METRICS), ""]
    parts += ["#### Spacelift API traffic", "", *head, *_rows(selfmetrics.METRICS)]
    return "\n".join(parts)


def permissions_section() -> str:
    rows = ["| Area | Default interval | Permission needed |", "|---|---|---|"]
    for spec in AREAS.values():
        enabled = "" if spec.enabled_by_default else " (off by default)"
        rows.append(
            f"| `{spec.name}`{enabled} | {spec.default_interval:.0f}s | {spec.permission} |"
        )
    return "\n".join(rows)


def options_section() -> str:
    rows = ["| Setting | Type | Default | Meaning |", "|---|---|---|---|"]
    for spec in AREAS.values():
        enabled = str(spec.enabled_by_default).lower()
        rows.append(f"| `areas.{spec.name}.enabled` | bool | `{enabled}` | Poll this area. |")
        rows.append(
            f"| `areas.{spec.name}.interval` | duration | `{spec.default_interval:.0f}s` | "
            "Time between polls (at least 5s). |"
        )
        for name, opt in spec.options.items():
            kind = (
                opt.type.__name__
                if isinstance(opt.type, type)
                else "/".join(t.__name__ for t in opt.type)
            )
            rows.append(f"| `areas.{spec.name}.{name}` | {kind} | `{opt.default!r}` | {opt.help} |")
    return "\n".join(rows)


def optional_fields_section() -> str:
    rows = ["| Field | Area | Metrics absent without it |", "|---|---|---|"]
    for spec in AREAS.values():
        for coordinate, metrics in spec.optional.items():
            lost = ", ".join(f"`{m.exposed_name}`" for m in metrics) or "none (costs requests)"
            rows.append(f"| `{coordinate}` | `{spec.name}` | {lost} |")
    return "\n".join(rows)


def official_section() -> str:
    """One table: the official exporter's metrics, flags and endpoints, and their match here."""
    rows = ["| Official exporter | Here |", "|---|---|"]
    for m in official.METRICS:
        labels = "{" + ", ".join(m.labels) + "}" if m.labels else ""
        here = m.here
        if m.missing:
            here = f"**missing**: {m.missing}" + (f"; nearest: {m.here}" if m.here else "")
        rows.append(f"| metric `{m.name}{labels}` | {here} |")
    for f in official.FLAGS:
        alias = f", `{f.alias}`" if f.alias else ""
        default = f" (default `{f.default}`)" if f.default else ""
        rows.append(f"| `serve {f.flag}`{alias}, `${f.env}`{default} | {f.here} |")
    rows.append(f"| `{official.PROBE_PATH}` (readiness probe) | same as `/healthz` |")
    rows.append("| port 9953 | same |")
    rows.append("| image command `/usr/bin/spacelift-promex serve` | same (a link) |")
    return "\n".join(rows)


SECTIONS = {
    "metrics": metrics_section,
    "optional-fields": optional_fields_section,
    "permissions": permissions_section,
    "options": options_section,
    "official": official_section,
}


def render(text: str) -> str:
    for name, make in SECTIONS.items():
        begin, end = f"<!-- BEGIN generated:{name} -->\n", f"<!-- END generated:{name} -->"
        head, found, rest = text.partition(begin)
        _, found_end, tail = rest.partition(end)
        if not (found and found_end):
            raise SystemExit(f"README has no generated:{name} markers")
        text = head + begin + make() + "\n" + end + tail
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the README is stale")
    args = parser.parse_args(argv)
    current = README.read_text()
    fresh = render(current)
    if args.check:
        if fresh != current:
            print("README.md is out of date: run python -m exporter.docgen", file=sys.stderr)
            return 1
        return 0
    README.write_text(fresh)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
