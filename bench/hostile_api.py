"""What one poll costs against a hostile endpoint: wall time and peak memory.

Each case runs one worker-pools poll in a child process (so its peak RSS is its own) against
``tests/support/hostile.py`` on loopback, with ``http.timeout`` 2 s and ``http.poll_timeout``
5 s. A child still running after ``--cap`` seconds is killed and reported as such. Prints
figures; asserts nothing.

    python bench/hostile_api.py [--cases gzip-bomb,drip,...] [--cap 30]
    python bench/hostile_api.py --exporter-root /path/to/older/checkout   # "before"
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("gzip-bomb", "deep-json", "drip", "slow-headers", "endless-chunks")
BOMB = 1 << 30  # bytes once inflated (about 1 MB on the wire)


def child(case: str) -> None:
    """Run one poll (in this process) and print its outcome as JSON."""
    from exporter.app import App  # from --exporter-root (first on PYTHONPATH)
    from exporter.areas import AREAS
    from exporter.config import Overrides, load

    # The fixture from this checkout, whichever exporter is measured.
    spec = importlib.util.spec_from_file_location("hostile", ROOT / "tests/support/hostile.py")
    assert spec is not None and spec.loader is not None
    hostile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hostile)

    behaviours = {
        "gzip-bomb": lambda: hostile.answer(hostile.gzip_bomb(BOMB), encoding="gzip"),
        "deep-json": lambda: hostile.answer(b'{"data":' + b"[" * 200_000 + b"]" * 200_000 + b"}"),
        "drip": hostile.drip_body,
        "slow-headers": hostile.slow_headers,
        "endless-chunks": hostile.endless_chunks,
    }
    behaviour = behaviours[case]()  # built before measuring: the bomb is compressed here
    with hostile.Hostile() as endpoint:
        endpoint.behave(behaviour)
        raw = {
            "accounts": [{"name": "hostile", "endpoint": endpoint.url}],
            "areas": {name: {"enabled": name == "worker_pools"} for name in AREAS},
            "http": {"timeout": "2s", "poll_timeout": "5s", "retries": 1},
        }
        cfg = load(Overrides(), env={"SPACELIFT_API_TOKEN": "a.b.c"}, raw=raw)
        app = App(cfg)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.monotonic()
        app.poll(("hostile", "worker_pools"))
        seconds = time.monotonic() - started
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        state = app.store.get(("hostile", "worker_pools"))
        import exporter

        print(
            json.dumps(
                {
                    "from": str(Path(exporter.__file__).parents[1]),
                    "seconds": seconds,
                    "rss_growth_mb": (peak - before) / 1024,
                    "kind": state.error_kind,
                    "error": (state.error or "")[:70],
                }
            )
        )


def run(case: str, cap: float, exporter_root: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(exporter_root)}
    cmd = [sys.executable, __file__, "--child", case]
    started = time.monotonic()
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=cap, check=False)
    except subprocess.TimeoutExpired:
        return f"{case:15} still polling after {cap:.0f}s (killed)"
    lines = [x for x in out.stdout.splitlines() if x.startswith("{")]
    if not lines:
        return f"{case:15} crashed after {time.monotonic() - started:.1f}s: {out.stderr[-200:]}"
    r = json.loads(lines[-1])
    assert r["from"] == str(exporter_root), r["from"]  # measured what was asked
    return (
        f"{case:15} poll {r['seconds']:6.2f}s  RSS +{r['rss_growth_mb']:7.1f} MB  "
        f"{r['kind']}: {r['error']}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--cap", type=float, default=30.0, help="seconds before a child is killed")
    ap.add_argument("--exporter-root", type=Path, default=ROOT, help="checkout to measure")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    print(f"exporter from {args.exporter_root}; http.timeout 2s, poll_timeout 5s")
    for case in args.cases.split(","):
        print(run(case, args.cap, args.exporter_root), flush=True)


if __name__ == "__main__":
    main()
