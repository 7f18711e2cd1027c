"""What a scrape, a re-render, a poll and start-up cost as the account grows, against two
baselines measured in the same run: a static file server of the same bytes (the limit for
serving) and a prometheus_client exporter that builds the same series on every scrape (the
usual way exporters are written). Prints figures and ratios; asserts nothing.

For each account size the simulator runs in its own process, and so do the exporter, the
baselines and the scrape client, so each figure is one process's own:

- scrape: median and p99 latency of sequential scrapes and the server's CPU per scrape, gzip
  with Prometheus's Accept header (OpenMetrics) and plain with none (text);
- re-render: every part of the exposition rendered again (what the poll thread pays), and
  the scrape p99 while that runs in a loop against the p99 when idle (the GIL);
- start-up to /readyz, resident memory once ready, and its peak under 10 concurrent scrapers;
- CPU per poll of each area, with the shares spent parsing JSON and rendering.

    python bench/scrape_cost.py [--sizes 100,1000,10000] [--big 50000] [--scrapes 200]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEY_ID, SECRET = "01HXSIMKEY0000000000000000", "sim-secret"
CREDENTIALS = {"SPACELIFT_API_KEY_ID": KEY_ID, "SPACELIFT_API_KEY_SECRET": SECRET}
# What Prometheus sends (scrape_protocols' default order): it prefers OpenMetrics.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
TICK = os.sysconf("SC_CLK_TCK")


# -- helper processes -------------------------------------------------------------------------


@contextmanager
def process(argv: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )  # fmt: skip
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def first_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line:
        raise RuntimeError(f"{proc.args} exited without answering")
    return line


def this(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), *args]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def memory_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def http_get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def scrape(
    port: int, path: str, accept: str | None, gz: bool, count: int, save: str = ""
) -> dict[str, Any]:
    """``count`` sequential scrapes from a client process: latencies and the body's size
    (and the body in the file ``save``)."""
    argv = this("--client", str(port), path, accept or "", "1" if gz else "0", str(count), save)
    out = subprocess.run(argv, capture_output=True, text=True, check=True, cwd=ROOT)
    return dict(json.loads(out.stdout))


def client_main(port: int, path: str, accept: str, gz: bool, count: int, save: str) -> None:
    headers = {"Accept-Encoding": "gzip" if gz else "identity"}
    if accept:
        headers["Accept"] = accept
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    times, body = [], b""
    for i in range(count + 2):  # two to warm up (variants built, connection open)
        t0 = time.perf_counter()
        conn.request("GET", path, headers=headers)
        body = conn.getresponse().read()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    if save:
        Path(save).write_bytes(body)
    print(json.dumps({"times": times, "bytes": len(body)}))


def timing(
    port: int, path: str, pid: int, accept: str | None, gz: bool, n: int, save: str = ""
) -> dict[str, Any]:
    cpu0 = cpu_seconds(pid)
    result = scrape(port, path, accept, gz, n, save)
    cpu = (cpu_seconds(pid) - cpu0) / (n + 2)
    times = sorted(result["times"])
    return {
        "p50": statistics.median(times) * 1000,
        "p99": times[min(len(times) - 1, int(len(times) * 0.99))] * 1000,
        "cpu": cpu * 1000,
        "bytes": result["bytes"],
    }


# -- baselines --------------------------------------------------------------------------------


def static_main(directory: str) -> None:
    """A static file server (http.server, as our own endpoint) over HTTP/1.1 keep-alive."""
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Handler(SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

    class Server(ThreadingHTTPServer):
        def get_request(self) -> tuple[socket.socket, Any]:
            sock, addr = super().get_request()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as our endpoint
            return sock, addr

    server = Server(("127.0.0.1", 0), partial(Handler, directory=directory))
    print(server.server_address[1], flush=True)
    server.serve_forever()


def client_python_main(path: str) -> None:
    """The usual prometheus_client exporter: a collector that builds every family on each
    scrape (here from the series of a saved exposition), served by start_http_server."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import Metric
    from prometheus_client.parser import text_string_to_metric_families

    data = [
        (f.name, f.documentation, f.type, [(s.name, s.labels, s.value) for s in f.samples])
        for f in text_string_to_metric_families(Path(path).read_text())
    ]

    class Rebuilt:
        def collect(self) -> Iterator[Metric]:
            for name, doc, kind, samples in data:
                family = Metric(name, doc, kind)
                for sample_name, labels, value in samples:
                    family.add_sample(sample_name, dict(labels), value)
                yield family

    registry = CollectorRegistry()
    registry.register(Rebuilt())  # type: ignore[arg-type]
    server, _ = start_http_server(0, "127.0.0.1", registry)
    print(server.server_port, flush=True)
    threading.Event().wait()


# -- the exporter ------------------------------------------------------------------------------


def exporter_config(directory: Path, endpoint: str) -> Path:
    # Intervals long enough that no poll runs while scrapes are measured.
    areas = ("worker_pools", "public_worker_pool", "usage", "access", "stacks", "runs")
    raw = {
        "accounts": [{"name": "bench", "endpoint": endpoint}],
        "areas": {a: {"interval": "1h"} for a in areas},
    }
    path = directory / "config.yml"
    path.write_text(json.dumps(raw))  # JSON is YAML
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure_process(endpoint: str, scrapes: int, slow: int, work: Path) -> dict[str, Any]:
    """The real exporter process: start-up, memory, scrapes; then both baselines."""
    port = free_port()
    argv = [sys.executable, "-m", "exporter", "--config.file", str(exporter_config(work, endpoint))]
    argv += ["--web.listen-address", f"127.0.0.1:{port}", "--log.level", "warn"]
    out: dict[str, Any] = {}
    started = time.perf_counter()
    with process(argv, CREDENTIALS) as exporter:
        while True:
            if exporter.poll() is not None:
                raise RuntimeError("the exporter exited")
            try:
                if http_get(port, "/readyz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.02)
        out["startup_s"] = time.perf_counter() - started
        # Ready must mean rendered: the first scrape after /readyz has every area.
        out["ready_complete"] = b"spacelift_stacks{" in http_get(port, "/metrics")[1]
        out["rss_mb"] = memory_mb(exporter.pid)
        pid = exporter.pid
        gz = timing(port, "/metrics", pid, PROMETHEUS_ACCEPT, True, scrapes, f"{work}/metrics.gz")
        plain = timing(port, "/metrics", pid, None, False, scrapes, f"{work}/metrics")
        out["series"] = sum(
            1 for line in (work / "metrics").read_bytes().splitlines() if not line.startswith(b"#")
        )
        out["exporter"] = {"gzip": gz, "plain": plain}
        # Ten scrapers at once, each body's bytes in flight: the peak of resident memory.
        with_many = [
            subprocess.Popen(this("--client", str(port), "/metrics", "", "0", "3", ""),
                             stdout=subprocess.DEVNULL, cwd=ROOT)
            for _ in range(10)
        ]  # fmt: skip
        for p in with_many:
            p.wait()
        out["peak_rss_mb"] = memory_mb(exporter.pid, "VmHWM")
    with process(this("--serve-static", str(work))) as static:
        port = int(first_line(static))
        out["static"] = {
            "gzip": timing(port, "/metrics.gz", static.pid, None, False, scrapes),
            "plain": timing(port, "/metrics", static.pid, None, False, scrapes),
        }
    with process(this("--serve-client-python", str(work / "metrics"))) as baseline:
        port = int(first_line(baseline))
        out["client_python"] = {
            "gzip": timing(port, "/metrics", baseline.pid, PROMETHEUS_ACCEPT, True, slow),
            "plain": timing(port, "/metrics", baseline.pid, None, False, slow),
        }
    return out


def measure_in_process(endpoint: str, scrapes: int) -> dict[str, Any]:
    """Poll CPU per area, re-render cost, and scrape p99 while re-rendering."""
    import prometheus_client

    from exporter import web
    from exporter.app import App
    from exporter.config import Overrides, load
    from exporter.families import FamilyBuilder

    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]  # as the CLI
    cfg = load(
        Overrides(), env=CREDENTIALS, raw={"accounts": [{"name": "b", "endpoint": endpoint}]}
    )
    app = App(cfg)
    out: dict[str, Any] = {}
    try:
        app.poll_all()  # token, first snapshots
        server, _ = web.serve(app, "127.0.0.1", 0)
        port = server.server_address[1]
        scrape(port, "/metrics", PROMETHEUS_ACCEPT, True, 1)  # Prometheus's variant is warm
        out["areas"] = poll_cpu(app)
        exposition = app.exposition
        collect, render = [], []
        for _ in range(3):  # CPU time of this thread: the machine may be busy with others
            t0 = time.thread_time()
            for source in exposition._parts.values():
                if callable(source):
                    source(FamilyBuilder())
            collect.append(time.thread_time() - t0)
            t0 = time.thread_time()
            exposition.refresh()
            render.append(time.thread_time() - t0)
        out["collect_ms"] = statistics.median(collect) * 1000
        out["render_ms"] = statistics.median(render) * 1000
        pid = os.getpid()
        out["idle"] = timing(port, "/metrics", pid, PROMETHEUS_ACCEPT, True, scrapes)
        stop = threading.Event()
        renders = []

        def rerender() -> None:
            while not stop.is_set():
                exposition.refresh()
                renders.append(1)

        loop = threading.Thread(target=rerender)
        loop.start()
        try:
            t0 = time.perf_counter()
            out["busy"] = timing(port, "/metrics", pid, PROMETHEUS_ACCEPT, True, scrapes)
            out["busy"]["seconds"] = time.perf_counter() - t0
        finally:
            stop.set()
            loop.join()
        out["busy"]["renders"] = len(renders)
        server.shutdown()
        server.server_close()
    finally:
        app.close()
    return out


def poll_cpu(app: Any) -> dict[str, dict[str, float]]:
    """One more poll of every area, each alone: CPU seconds of the polling thread, and how
    much of it went to json.loads and to rendering."""
    spent: dict[str, float] = {}

    def timed(kind: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[kind] = spent.get(kind, 0.0) + time.thread_time() - t0

        return wrapper

    real_loads, real_refresh = json.loads, app.exposition.refresh
    json.loads = timed("json", real_loads)
    app.exposition.refresh = timed("render", real_refresh)
    out = {}
    try:
        for key in app.pollers:
            spent.clear()
            t0, wall = time.thread_time(), time.perf_counter()
            app.poll(key)
            total, wall = time.thread_time() - t0, time.perf_counter() - wall
            out[key[1]] = {
                "cpu_s": total,
                "wall_s": wall,
                **{k: v / total for k, v in spent.items()},
            }
    finally:
        json.loads = real_loads
        app.exposition.refresh = real_refresh
    return out


def measure(stacks: int, scrapes: int) -> dict[str, Any]:
    pools = max(2, stacks // 200)
    argv = [sys.executable, "-m", "exporter.simulator", "--port", "0", "--stacks", str(stacks)]
    argv += ["--pools", str(pools), "--activity", "2", "--seed", "1"]
    with process(argv) as sim, tempfile.TemporaryDirectory(prefix="scrape-cost-") as work:
        endpoint = first_line(sim).split()[3]
        slow = max(3, min(scrapes, 20_000 // stacks))  # the per-scrape exporter is slow
        out = measure_process(endpoint, scrapes, slow, Path(work))
        out.update(measure_in_process(endpoint, scrapes))
    out["stacks"] = stacks
    return out


# -- report -----------------------------------------------------------------------------------


def report(rows: list[dict[str, Any]]) -> None:
    def ratio(a: float, b: float) -> str:
        return f"{a / b:.1f}x" if b else "-"

    print("\nScrape (latency p50 ms / server CPU ms per scrape; ratio: exporter / static file)")
    print(
        f"{'stacks':>7} {'series':>7} {'body KB':>8} {'gzip KB':>8} | {'gzip':>13} {'static':>13}"
        f" {'ratio':>6} | {'plain':>13} {'static':>13} {'ratio':>6} | {'client_python':>15}"
        f" {'vs ours':>8}"
    )
    for r in rows:
        e, s, c = r["exporter"], r["static"], r["client_python"]
        series = r["series"]
        print(
            f"{r['stacks']:>7} {series:>7} {e['plain']['bytes'] / 1024:>8.0f}"
            f" {e['gzip']['bytes'] / 1024:>8.0f} |"
            f" {e['gzip']['p50']:>6.2f}/{e['gzip']['cpu']:>6.2f} {s['gzip']['p50']:>6.2f}/"
            f"{s['gzip']['cpu']:>6.2f} {ratio(e['gzip']['p50'], s['gzip']['p50']):>6} |"
            f" {e['plain']['p50']:>6.2f}/{e['plain']['cpu']:>6.2f} {s['plain']['p50']:>6.2f}/"
            f"{s['plain']['cpu']:>6.2f} {ratio(e['plain']['p50'], s['plain']['p50']):>6} |"
            f" {c['gzip']['p50']:>7.0f}/{c['gzip']['cpu']:>7.0f}"
            f" {ratio(c['gzip']['p50'], e['gzip']['p50']):>8}"
        )
    print("client_python: a prometheus_client exporter building the same series per scrape (gzip).")

    print("\nRe-render and the GIL (scrapes: gzip, Prometheus's Accept header)")
    print(
        f"{'stacks':>7} {'collect ms':>10} {'re-render ms':>12} | {'idle p50':>8} {'idle p99':>8}"
        f" | {'busy p50':>8} {'busy p99':>8} {'p99 ratio':>9} {'renders':>12}"
    )
    for r in rows:
        i, b = r["idle"], r["busy"]
        renders = f"{b['renders']} in {b['seconds']:.1f}s"
        print(
            f"{r['stacks']:>7} {r['collect_ms']:>10.0f} {r['render_ms']:>12.0f} |"
            f" {i['p50']:>8.2f} {i['p99']:>8.2f} | {b['p50']:>8.2f} {b['p99']:>8.2f}"
            f" {ratio(b['p99'], i['p99']):>9} {renders:>12}"
        )
    print(
        "collect: the collectors alone; re-render: every part again, collectors included, as "
        "the poll thread pays it (CPU ms); busy: scrapes while re-renders run in a loop "
        "(renders: how many completed meanwhile)."
    )

    print("\nStart-up and memory (exporter process; the simulator runs in another)")
    print(
        f"{'stacks':>7} {'to /readyz s':>12} {'complete':>8} {'RSS MB':>7} {'peak MB':>8}"
        f" {'MB per 1,000 stacks':>20}"
    )
    base = rows[0]
    for r in rows:
        per = (
            (r["rss_mb"] - base["rss_mb"]) / (r["stacks"] - base["stacks"]) * 1000
            if r["stacks"] != base["stacks"]
            else float("nan")
        )
        print(
            f"{r['stacks']:>7} {r['startup_s']:>12.2f} {'yes' if r['ready_complete'] else 'NO':>8}"
            f" {r['rss_mb']:>7.0f} {r['peak_rss_mb']:>8.0f} {per:>20.1f}"
        )
    print(
        f"complete: the first /metrics after /readyz held the stacks; per 1,000 stacks: growth "
        f"over {base['stacks']} stacks; peak: VmHWM after 10 concurrent plain scrapers."
    )

    print("\nCPU per poll (the polling thread; shares of it: JSON parsing, rendering)")
    print(
        f"{'stacks':>7} {'area':<20} {'poll s':>7} {'CPU ms':>8} {'json':>6} {'render':>7}"
        f" {'other':>6}"
    )
    for r in rows:
        for area, a in r["areas"].items():
            json_share, render_share = a.get("json", 0.0), a.get("render", 0.0)
            print(
                f"{r['stacks']:>7} {area:<20} {a['wall_s']:>7.2f} {a['cpu_s'] * 1000:>8.1f}"
                f" {json_share:>6.0%} {render_share:>7.0%} {1 - json_share - render_share:>6.0%}"
            )
    print("poll s: wall time against the simulator; other: HTTP, building snapshots, collecting.")
    capacity(rows)


def capacity(rows: list[dict[str, Any]]) -> None:
    """The largest account one process serves on one core, with every area at its default
    interval (stacks 60 s, runs 30 s) and a gzip scrape every 15 s.

    Each area's CPU and wall time per poll are extrapolated from the two largest sizes as
    a power law (a and b at sizes n and m: a * (x / n) ** log(b / a, m / n)), since some grow
    faster than the account. Two limits: the CPU of all polls fits in one core, and each
    poll finishes within its interval (at the simulator's speed: Spacelift's own latency
    per page decides that one in production)."""
    import math

    from exporter.areas import AREAS

    if len(rows) < 2:
        return
    small, big = rows[-2], rows[-1]
    n, m = small["stacks"], big["stacks"]

    def at(x: float, area: str, key: str) -> float:
        a, b = small["areas"][area][key], big["areas"][area][key]
        k = math.log(b / a) / math.log(m / n) if a > 0 and b > 0 else 1.0
        return float(b * (x / m) ** k)

    def cpu_per_minute(x: float) -> float:
        polls = sum(
            at(x, area, "cpu_s") * 60 / AREAS[area].default_interval for area in big["areas"]
        )
        return polls + big["exporter"]["gzip"]["cpu"] / 1000 * 4 * x / m

    def largest(fits: Callable[[float], bool]) -> int:
        x = float(m)
        while fits(x * 1.01) and x < 1e8:
            x *= 1.01
        return int(x // 1000 * 1000)

    by_cpu = largest(lambda x: cpu_per_minute(x) <= 60)
    slowest = max(big["areas"], key=lambda a: big["areas"][a]["wall_s"] / AREAS[a].default_interval)
    by_wall = largest(
        lambda x: all(at(x, a, "wall_s") <= AREAS[a].default_interval for a in big["areas"])
    )
    print(
        f"\nOne core, stacks every 60 s (every area at its default interval, a gzip scrape every "
        f"15 s): at {m:,} stacks the exporter uses {cpu_per_minute(m):.1f} CPU s per minute "
        f"({cpu_per_minute(m) / 60:.0%} of a core). Extrapolated: the CPU fits one core up to "
        f"about {by_cpu:,} stacks; every poll finishes within its interval up to about "
        f"{by_wall:,} stacks ({slowest} first, at the simulator's speed). Largest account one "
        f"process serves: about {min(by_cpu, by_wall):,} stacks."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--big", default="", help="larger sizes, e.g. 50000 (run last)")
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--save", help="also write the figures to this JSON file")
    parser.add_argument("--report", help="print the tables of a file written by --save")
    parser.add_argument("--client", nargs=6, help=argparse.SUPPRESS)
    parser.add_argument("--serve-static", help=argparse.SUPPRESS)
    parser.add_argument("--serve-client-python", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        port, path, accept, gz, count, save = args.client
        return client_main(int(port), path, accept, gz == "1", int(count), save)
    if args.serve_static:
        return static_main(args.serve_static)
    if args.serve_client_python:
        return client_python_main(args.serve_client_python)
    if args.report:
        return report(json.loads(Path(args.report).read_text()))
    sizes = [int(s) for s in f"{args.sizes},{args.big}".strip(",").split(",")]
    rows = []
    for n in sizes:
        print(f"measuring {n} stacks...", file=sys.stderr, flush=True)
        rows.append(measure(n, args.scrapes))
        if args.save:
            Path(args.save).write_text(json.dumps(rows))
    report(rows)


if __name__ == "__main__":
    main()
