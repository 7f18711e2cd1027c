"""Everything Spacelift sends is bounded: time per request, bytes before and after
decompression, JSON nesting, numbers, error text.

httpx's timeouts bound each socket operation, not a request: a server that sends one header
byte a second, drips its body or streams chunks forever keeps a request alive indefinitely.
``RequestDeadlines`` wraps httpcore's network backend so that every connect, read and write
waits at most until the calling thread's request deadline, and so that ``abort()`` can wake
reads blocked on a socket when the process shuts down. Name resolution, which no socket
timeout bounds (``getaddrinfo`` waits as long as the system resolver does), runs in a daemon
thread that the request waits for only until its deadline.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import socket
import threading
import time
import weakref
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore
import httpx

MAX_ANSWER_BYTES = 32 << 20  # compressed and decompressed; answers are paged, a page is small
MAX_JSON_DEPTH = 64  # our documents nest about 10 levels
MAX_INT_DIGITS = 20  # JSON integers longer than this are refused before int() sees them
MAX_MESSAGE = 300  # characters of Spacelift's error text kept for logs, pages and errors


class AnswerTooLarge(Exception):
    pass


class AnswerUnreadable(Exception):
    pass


# -- time ------------------------------------------------------------------------------------


class RequestDeadlines:
    """Per-thread request deadlines (``time.monotonic``), enforced on every socket call."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._streams: weakref.WeakSet[_Stream] = weakref.WeakSet()
        self._lock = threading.Lock()
        self.aborted = False

    @contextmanager
    def until(self, deadline: float) -> Iterator[None]:
        previous = getattr(self._local, "deadline", None)
        self._local.deadline = deadline
        try:
            yield
        finally:
            self._local.deadline = previous

    def install(self, client: httpx.Client) -> None:
        """Bound every pool of ``client`` (default transport and proxy mounts).

        httpx has no public hook for the network backend; its pools keep it in
        ``_network_backend``. Transports that are not httpx's own (tests' mocks) are left alone.
        """
        transports = [client._transport, *client._mounts.values()]
        for transport in transports:
            pool: Any = getattr(transport, "_pool", None)
            if isinstance(transport, httpx.HTTPTransport) and hasattr(pool, "_network_backend"):
                pool._network_backend = _Backend(pool._network_backend, self)

    def abort(self) -> None:
        """Wake every read blocked on a socket (shutdown): the process is stopping."""
        self.aborted = True
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            stream.shutdown()

    def timeout(self, timeout: float | None, kind: type[Exception]) -> float | None:
        """``timeout`` cut to what is left before the calling thread's deadline."""
        if self.aborted:
            raise kind("the exporter is stopping")
        deadline = getattr(self._local, "deadline", None)
        if deadline is None:
            return timeout
        left = float(deadline) - time.monotonic()
        if left <= 0:
            raise kind("request time budget exhausted")
        return left if timeout is None else min(timeout, left)

    def track(self, stream: _Stream) -> _Stream:
        with self._lock:
            self._streams.add(stream)
        return stream


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, deadlines: RequestDeadlines) -> None:
        self._inner = inner
        self._deadlines = deadlines

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._deadlines.timeout(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._deadlines.timeout(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        timeout = self._deadlines.timeout(timeout, httpcore.ConnectTimeout)
        inner = self._inner.start_tls(ssl_context, server_hostname, timeout)
        return self._deadlines.track(_Stream(inner, self._deadlines))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)

    def shutdown(self) -> None:
        sock = self._inner.get_extra_info("socket")
        if isinstance(sock, socket.socket):
            # socket.socket's own shutdown, also for an SSLSocket: wakes a blocked recv
            # without touching the TLS state another thread is using.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend, deadlines: RequestDeadlines) -> None:
        self._inner = inner
        self._deadlines = deadlines

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        last: Exception | None = None
        for address in self._resolve(host, port, timeout):
            left = self._deadlines.timeout(timeout, httpcore.ConnectTimeout)
            try:
                stream = self._inner.connect_tcp(address, port, left, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc  # the next address, as socket.create_connection would
                continue
            return self._deadlines.track(_Stream(stream, self._deadlines))
        assert last is not None
        raise last

    def _resolve(self, host: str, port: int, timeout: float | None) -> list[str]:
        """The addresses of ``host``, waited for until the deadline only (TLS still checks
        the name: httpcore passes it to start_tls separately)."""
        try:
            ipaddress.ip_address(host.split("%")[0])
            return [host]
        except ValueError:
            pass
        answer: list[Any] = []
        done = threading.Event()

        def resolve() -> None:
            try:
                answer.append(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
            except Exception as exc:  # gaierror, and UnicodeError for a name IDNA refuses
                answer.append(exc)
            done.set()

        threading.Thread(target=resolve, name=f"resolve {host}", daemon=True).start()
        end = None if timeout is None else time.monotonic() + timeout
        while not done.is_set():
            # Short waits, so that abort() (the process stopping) is noticed too.
            left = self._deadlines.timeout(timeout, httpcore.ConnectTimeout)
            if end is not None and time.monotonic() >= end:
                raise httpcore.ConnectTimeout(f"resolving {host} timed out")
            done.wait(0.1 if left is None else min(0.1, left))
        if isinstance(answer[0], Exception):
            raise httpcore.ConnectError(str(answer[0]))
        return list(dict.fromkeys(str(info[4][0]) for info in answer[0]))

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = self._deadlines.timeout(timeout, httpcore.ConnectTimeout)
        stream = self._inner.connect_unix_socket(path, timeout, socket_options)
        return self._deadlines.track(_Stream(stream, self._deadlines))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


# -- size ------------------------------------------------------------------------------------

ACCEPT_ENCODING = "gzip, deflate"  # what read_body can inflate with a bound


def read_body(resp: httpx.Response, limit: int = MAX_ANSWER_BYTES) -> bytes:
    """The body, decompressed, refused as soon as either size passes ``limit``.

    httpx would inflate a whole network chunk at once (a 64 KB chunk of a gzip bomb is 64 MB);
    here every inflate step is capped at what the limit still allows.
    """
    declared = resp.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > limit:
        raise AnswerTooLarge(f"answer of {declared} bytes, more than {limit}")
    inflate = _decompressor(resp.headers.get("Content-Encoding", ""))
    received = 0
    out = bytearray()
    try:
        for chunk in resp.iter_raw():
            received += len(chunk)
            if received > limit:
                raise AnswerTooLarge(f"answer larger than {limit} bytes")
            if inflate is None:
                out += chunk
            else:
                while chunk and not inflate.eof:
                    out += inflate.decompress(chunk, limit + 1 - len(out))
                    if len(out) > limit:
                        raise AnswerTooLarge(f"answer larger than {limit} bytes once inflated")
                    chunk = inflate.unconsumed_tail
        if inflate is not None:
            out += inflate.flush()
    except zlib.error as exc:
        raise AnswerUnreadable(f"compressed body cannot be inflated: {exc}") from None
    if len(out) > limit:
        raise AnswerTooLarge(f"answer larger than {limit} bytes once inflated")
    return bytes(out)


def _decompressor(encoding: str) -> Any:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(zlib.MAX_WBITS | 16)
    if encoding == "deflate":
        return zlib.decompressobj(zlib.MAX_WBITS | 32)  # zlib or gzip header, auto-detected
    raise AnswerUnreadable(f"unsupported Content-Encoding {cut(encoding, 40)!r}")


# -- JSON ------------------------------------------------------------------------------------


def loads(body: bytes) -> Any:
    """JSON with bounded nesting and numbers; ``AnswerUnreadable`` for anything else."""
    try:
        value = json.loads(
            body, parse_int=_bounded_int, parse_float=_finite_float, parse_constant=_no_constant
        )
    except RecursionError:
        raise AnswerUnreadable(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, our refusals
        raise AnswerUnreadable(f"not JSON: {cut(str(exc), 120)}") from None
    _check_depth(value)
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"a {len(text)}-digit integer")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"a number out of range ({cut(text, 30)})")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _check_depth(value: Any) -> None:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise AnswerUnreadable(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))


# -- text ------------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def cut(text: str, limit: int = MAX_MESSAGE) -> str:
    """Text from outside made fit for a log line, a page or a label: one line, bounded."""
    text = _CONTROL.sub(" ", text[: limit * 4])
    return text if len(text) <= limit else text[: limit - 1] + "…"
