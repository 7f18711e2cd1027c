"""Scrape throughput and latency of the exporter's HTTP server, with N concurrent scrapers.

Starts ``python -m exporter demo`` from a checkout (this one by default; ``--tree`` another,
say a ``git worktree`` of an older commit, to compare before and after), waits until it is
ready, then for 1, 10, 50 and 200 concurrent scrapers runs keep-alive GETs of /metrics with
``Accept-Encoding: gzip`` (as Prometheus asks) for a few seconds each, from two client
processes over loopback. Prints req/s, p50, p99 and errors per level, then the same at 10
scrapers while 500 other connections sit half-sent (slowloris), with the server's thread
count. Everything is bounded in time; asserts nothing.

    python bench/http_load.py [--tree DIR] [--levels 1,10,50,200] [--seconds 4] [--path P]
    python bench/http_load.py --cheroot    # the same routes served by cheroot (pip install
                                           # cheroot first): the library we compared with
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUEST = (
    b"GET %s HTTP/1.1\r\nHost: bench\r\nAccept-Encoding: gzip\r\nUser-Agent: http_load\r\n\r\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape(sock: socket.socket, path: bytes) -> bool:
    """One keep-alive request; False when the server closed it."""
    sock.sendall(REQUEST % path)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return False
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return False
        body += chunk
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode())
    return b"connection: close" not in head.lower()


def client(port: int, path: bytes, threads: int, until: float, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    import threading

    results: list[tuple[list[float], int]] = []

    def run() -> None:
        lat: list[float] = []
        errors = 0
        sock = None
        while time.monotonic() < until:
            try:
                if sock is None:
                    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
                t0 = time.perf_counter()
                ok = scrape(sock, path)
                lat.append(time.perf_counter() - t0)
                if not ok:
                    sock.close()
                    sock = None
            except OSError:
                errors += 1
                if sock is not None:
                    sock.close()
                sock = None
                time.sleep(0.01)
        if sock is not None:
            sock.close()
        results.append((lat, errors))

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    out.put(([x for lat, _ in results for x in lat], sum(e for _, e in results)))


def load(port: int, path: bytes, concurrency: int, seconds: float) -> dict[str, float]:
    out: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    until = time.monotonic() + seconds
    split = [concurrency // 2, concurrency - concurrency // 2] if concurrency > 1 else [1]
    procs = [
        multiprocessing.Process(target=client, args=(port, path, n, until, out)) for n in split if n
    ]
    for p in procs:
        p.start()
    lat: list[float] = []
    errors = 0
    for _ in procs:
        got, err = out.get(timeout=seconds + 60)
        lat += got
        errors += err
    for p in procs:
        p.join(timeout=10)
    lat.sort()
    q = statistics.quantiles(lat, n=100) if len(lat) > 1 else [0.0] * 99
    return {"rps": len(lat) / seconds, "p50": q[49], "p99": q[98], "errors": errors}


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return -1


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the exporter exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.sendall(b"GET /readyz HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit("the exporter did not become ready")


def serve_with_cheroot(port: int) -> None:
    """Run the demo with exporter.web's routes behind cheroot's WSGI server (16 threads,
    backlog 1024, as ours), for comparison only."""
    import threading
    from typing import Any

    from cheroot import wsgi

    from exporter import cli, web
    from exporter.httpd import Request

    def serve(app: Any, host: str, port: int, auth: Any = None, limits: Any = None) -> Any:
        site = web.Web(app, auth or web.WebAuth(None), web.routes(app))

        def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
            headers = {
                k[5:].replace("_", "-").lower(): v
                for k, v in environ.items()
                if k.startswith("HTTP_")
            }
            method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
            query = environ.get("QUERY_STRING", "")
            resp = site.handle(Request(method, path, query, headers, b"", environ["REMOTE_ADDR"]))
            body = [resp.body] if isinstance(resp.body, bytes) else list(resp.body)
            length = str(sum(map(len, body)))
            fixed = [("Content-Type", resp.content_type), ("Content-Length", length)]
            start_response(f"{resp.status} -", [*fixed, *resp.headers])
            return body

        server = wsgi.Server((host, port), wsgi_app, numthreads=16, request_queue_size=1024)
        server.prepare()
        threading.Thread(target=server.serve, daemon=True).start()
        server.server_address = server.bind_addr
        server.shutdown, server.server_close = server.stop, lambda: None
        return server, None

    web.serve = serve  # type: ignore[assignment]
    sys.exit(cli.main(["demo", "--web.listen-address", f"127.0.0.1:{port}", "--log.level", "warn"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tree", type=Path, default=ROOT, help="checkout to run the exporter from")
    ap.add_argument("--levels", default="1,10,50,200")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--slow", type=int, default=500, help="half-sent connections held")
    ap.add_argument("--path", default="/metrics", help="/healthz: the server's own cost")
    ap.add_argument("--cheroot", action="store_true", help="serve the routes with cheroot")
    ap.add_argument("--serve-cheroot", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_cheroot:
        serve_with_cheroot(args.serve_cheroot)
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(args.tree.resolve()))
    command = [sys.executable, "-m", "exporter", "demo", "--web.listen-address",
               f"127.0.0.1:{port}", "--log.level", "warn"]  # fmt: skip
    if args.cheroot:
        command = [sys.executable, __file__, "--serve-cheroot", str(port)]
    proc = subprocess.Popen(
        command, cwd=args.tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_ready(port, proc)
        what = "cheroot" if args.cheroot else "exporter"
        print(f"server: {what} from {args.tree} (pid {proc.pid})")
        print(f"{'scrapers':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
        for level in (int(x) for x in args.levels.split(",")):
            r = load(port, args.path.encode(), level, args.seconds)
            print(
                f"{level:>8} {r['rps']:>8.0f} {r['p50'] * 1e3:>8.1f} {r['p99'] * 1e3:>8.1f} "
                f"{r['errors']:>7.0f}"
            )
        held = []
        deadline = time.monotonic() + 20
        for _ in range(args.slow):
            if time.monotonic() > deadline:
                break
            try:
                # from other loopback addresses: many clients, as on a network
                source = (f"127.0.{1 + len(held) // 250}.{2 + len(held) % 250}", 0)
                s = socket.create_connection(("127.0.0.1", port), 2, source)
                s.sendall(b"GET /metrics HTTP/1.1\r\nHost: slow\r\n")  # never finished
                held.append(s)
            except OSError:
                break
        time.sleep(0.5)
        threads = threads_of(proc.pid)
        r = load(port, args.path.encode(), 10, args.seconds)
        print(
            f"with {len(held)} half-sent connections held: 10 scrapers {r['rps']:.0f} req/s, "
            f"p99 {r['p99'] * 1e3:.1f} ms, errors {r['errors']:.0f}; server threads {threads}"
        )
        for s in held:
            s.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
