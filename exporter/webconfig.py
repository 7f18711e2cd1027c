"""``--web.config.file`` in the exporter-toolkit format: TLS and basic auth.

The same file Prometheus' own exporters read (``promtool check web-config`` accepts every
example we ship). It is re-read when it changes: users and hashes at the next request, the
certificate at the next connection, so rotating either needs no restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import yamlsafe
from exporter.config import ConfigError
from exporter.selfmetrics import WEB_CONFIG_RELOAD, WEB_CONFIG_RELOAD_TIME

log = logging.getLogger(__name__)

CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# Go's "ask for a certificate but do not verify it" has no equivalent in Python's ssl module;
# refusing them beats silently verifying (or not) where the user expected otherwise.
UNSUPPORTED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert")
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
TLS_KEYS = {
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
    "client_allowed_sans",
}
# exporter-toolkit keys whose Go semantics we cannot honour: an error, never silently ignored.
TLS_UNSUPPORTED = {"cipher_suites", "curve_preferences", "prefer_server_cipher_suites"}
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Headers that frame or authenticate the answer: the server's alone.
_SERVER_HEADERS = {
    "content-length", "content-type", "content-encoding", "transfer-encoding", "connection",
    "keep-alive", "upgrade", "trailer", "te", "www-authenticate", "allow", "date",
}  # fmt: skip
# $2b$<cost>$<22 characters of salt><31 of hash>: anything else makes bcrypt raise at login.
_BCRYPT = re.compile(r"\$2[aby]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
# bcrypt reads at most 72 bytes of a password (bcrypt 5 raises on more): a longer one is wrong.
_BCRYPT_MAX = 72
# Unknown users pay for a bcrypt compare too, so response time does not reveal who exists.
_DUMMY_HASH = bcrypt.hashpw(b"not-a-password", bcrypt.gensalt(10))


@dataclass(frozen=True)
class WebConfig:
    tls: dict[str, Any] | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    allowed_sans: frozenset[str] = frozenset()
    headers: dict[str, str] = field(default_factory=dict)


def parse(path: Path, allow_empty: bool = True) -> WebConfig:
    """Read and check the file. Empty means no TLS and no auth at start; on a reload it is
    refused (most often a file caught half-written)."""
    try:
        with path.open("rb") as f:
            data = f.read(yamlsafe.MAX_BYTES + 1)  # bounded: never read a huge file whole
    except OSError as exc:
        raise ConfigError("--web.config.file", f"cannot read {path}: {exc.strerror}") from None
    try:
        raw = yamlsafe.load(data)
    except yamlsafe.YamlError as exc:
        line = f" line {exc.line}" if exc.line is not None else ""
        raise ConfigError(exc.path or "--web.config.file", f"{path}{line}: {exc.problem}") from None
    if raw is None:
        if not allow_empty:
            raise ConfigError("--web.config.file", f"{path} is empty")
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("--web.config.file", "must hold a mapping")
    for key in raw:
        if key not in ("tls_server_config", "basic_auth_users", "http_server_config"):
            raise ConfigError(str(key), "unknown key in the web config file")
    tls = raw.get("tls_server_config")
    sans: frozenset[str] = frozenset()
    if tls is not None:
        if not isinstance(tls, dict):
            raise ConfigError("tls_server_config", "must be a mapping")
        for key in tls:
            if key in TLS_UNSUPPORTED:
                raise ConfigError(f"tls_server_config.{key}", "is not supported by this exporter")
            if key not in TLS_KEYS:
                raise ConfigError(f"tls_server_config.{key}", "unknown key")
        for key in ("cert_file", "key_file", "client_ca_file"):
            if key in tls and not isinstance(tls[key], str):
                raise ConfigError(f"tls_server_config.{key}", "must be a file path")
        for key in ("cert_file", "key_file"):
            if not tls.get(key):
                raise ConfigError(f"tls_server_config.{key}", "is required with TLS")
        auth = tls.get("client_auth_type", "NoClientCert")
        if auth in UNSUPPORTED_CLIENT_AUTH:
            raise ConfigError(
                "tls_server_config.client_auth_type",
                f"{auth} is not supported: use VerifyClientCertIfGiven or "
                "RequireAndVerifyClientCert with client_ca_file",
            )
        if not isinstance(auth, str) or auth not in CLIENT_AUTH:
            raise ConfigError("tls_server_config.client_auth_type", f"unknown value {auth!r}")
        if auth != "NoClientCert" and not tls.get("client_ca_file"):
            raise ConfigError("tls_server_config.client_ca_file", f"is required with {auth}")
        for key in ("min_version", "max_version"):
            if key in tls and (not isinstance(tls[key], str) or tls[key] not in TLS_VERSIONS):
                raise ConfigError(f"tls_server_config.{key}", f"unknown version {tls[key]!r}")
        raw_sans = tls.get("client_allowed_sans") or []
        if not isinstance(raw_sans, list) or not all(isinstance(x, str) for x in raw_sans):
            raise ConfigError("tls_server_config.client_allowed_sans", "must be a list of names")
        if raw_sans and auth != "RequireAndVerifyClientCert":
            raise ConfigError(
                "tls_server_config.client_allowed_sans",
                "needs client_auth_type: RequireAndVerifyClientCert",
            )
        sans = frozenset(raw_sans)
    headers = _http_server_config(raw.get("http_server_config"))
    users_raw = raw.get("basic_auth_users")
    users_raw = {} if users_raw is None else users_raw
    if not isinstance(users_raw, dict):
        raise ConfigError("basic_auth_users", "must map user names to bcrypt hashes")
    users = {}
    for user, hashed in users_raw.items():
        if not isinstance(user, str) or not user or ":" in user:
            raise ConfigError(f"basic_auth_users.{user}", "a user name is text without ':'")
        if not isinstance(hashed, str) or not _BCRYPT.fullmatch(hashed):
            raise ConfigError(f"basic_auth_users.{user}", "must be a bcrypt hash")
        users[user] = hashed.encode()
    return WebConfig(tls=tls, users=users, allowed_sans=sans, headers=headers)


def _http_server_config(raw: Any) -> dict[str, str]:
    """Only ``headers`` (added to every response); HTTP/2 is not served by this exporter."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError("http_server_config", "must be a mapping")
    for key in raw:
        if key == "http2" and raw[key] is False:
            continue
        if key != "headers":
            raise ConfigError(f"http_server_config.{key}", "is not supported by this exporter")
    headers = raw.get("headers") or {}
    if not isinstance(headers, dict):
        raise ConfigError("http_server_config.headers", "must map header names to strings")
    for name, value in headers.items():
        key = f"http_server_config.headers.{name}"
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise ConfigError(key, "is not a valid header name")
        if name.lower() in _SERVER_HEADERS:
            raise ConfigError(key, "is set by the server itself")
        # A CR or LF would end the header and start another (or the body): response splitting.
        if not isinstance(value, str) or _CONTROL.search(value):
            raise ConfigError(key, "must be text on one line, without control characters")
    return dict(headers)


def ssl_context(tls: dict[str, Any], base: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[tls.get("min_version", "TLS12")]
    if "max_version" in tls:
        ctx.maximum_version = TLS_VERSIONS[tls["max_version"]]
    for key in ("cert_file", "key_file", "client_ca_file"):
        if tls.get(key) and not os.access(_path(base, tls[key]), os.R_OK):
            raise ConfigError(f"tls_server_config.{key}", f"cannot read {tls[key]}")
    try:
        ctx.load_cert_chain(_path(base, tls["cert_file"]), _path(base, tls["key_file"]))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            "tls_server_config.cert_file", f"cannot load with key_file: {exc}"
        ) from None
    ctx.verify_mode = CLIENT_AUTH[tls.get("client_auth_type", "NoClientCert")]
    if tls.get("client_ca_file"):
        try:
            ctx.load_verify_locations(_path(base, tls["client_ca_file"]))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("tls_server_config.client_ca_file", f"cannot load: {exc}") from None
    return ctx


def _stat(path: str) -> tuple[int, ...]:
    try:
        st = os.stat(path)
    except OSError as exc:
        return (-1, exc.errno or 0)
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)


def _context(cfg: WebConfig, path: Path) -> ssl.SSLContext | None:
    return ssl_context(cfg.tls, path.parent) if cfg.tls else None


def _path(base: Path, value: str) -> str:
    # Relative paths are relative to the web config file, as in exporter-toolkit.
    return str(base / value) if not os.path.isabs(value) else value


@dataclass(frozen=True)
class _InForce:
    config: WebConfig
    ssl: ssl.SSLContext | None
    ok_cache: set[bytes]  # good credentials of this config's life (bcrypt is slow on purpose)


class WebAuth:
    """Holds the web config in force, re-reading the file when it changes.

    A change that cannot be read, parsed or checked, or that is empty, is refused: the
    previous configuration stays in force, a warning says why, and ``last_reload_ok`` (on
    /metrics) turns 0 until a good version arrives. Switching TLS on or off needs a restart
    (the listener is plain or TLS from the start); basic auth goes off only when a valid,
    non-empty file has no ``basic_auth_users``.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[tuple[int, ...], ...] = ()
        self._state = _InForce(WebConfig(), None, set())
        self.last_reload_ok = True
        self.last_reload_success = time.time()
        if path is not None:
            cfg = parse(path)
            self._state = _InForce(cfg, _context(cfg, path), set())
            self._stamp = self._stamp_now()

    def _stamp_now(self) -> tuple[tuple[int, ...], ...]:
        """What tells a change: the file's and its certificates' (rotated on their own, by
        cert-manager say) mtime, size and inode (a Kubernetes volume swaps a symlink)."""
        assert self.path is not None
        tls = self._state.config.tls or {}
        files = [str(self.path)] + [
            _path(self.path.parent, tls[k])
            for k in ("cert_file", "key_file", "client_ca_file")
            if isinstance(tls.get(k), str)
        ]
        return tuple(_stat(f) for f in files)

    def refresh(self) -> None:
        """Re-read after a change (called per request and per TLS connection: one stat)."""
        if self.path is None:
            return
        with self._lock:
            stamp = self._stamp_now()
            if stamp == self._stamp:
                return
            self._stamp = stamp
            try:
                self._reload(self.path)
            except ConfigError as exc:
                self._refused(str(exc))
            except Exception as exc:  # whatever happens, the server keeps serving
                log.exception("web config reload failed")
                self._refused(repr(exc))

    def _reload(self, path: Path) -> None:
        """Check and swap in the new version whole, or raise and change nothing."""
        cfg = parse(path, allow_empty=False)
        if (cfg.tls is None) != (self._state.ssl is None):
            was = "on" if self._state.ssl else "off"
            raise ConfigError("tls_server_config", f"TLS is {was} since start: restart to change")
        old = self._state.config
        self._state = _InForce(cfg, _context(cfg, path), set())
        self._stamp = self._stamp_now()  # the new certificate files are watched from now on
        self.last_reload_ok, self.last_reload_success = True, time.time()
        log.info(
            "web config reloaded",
            extra={"file": str(path), "tls": cfg.tls is not None, "users": len(cfg.users)},
        )
        if old.users and not cfg.users:
            log.warning("basic auth is off: the new web config has no basic_auth_users")

    def _refused(self, error: str) -> None:
        self.last_reload_ok = False
        log.warning(
            "web config change refused: the previous configuration stays in force",
            extra={"file": str(self.path), "error": error},
        )

    @property
    def ssl(self) -> ssl.SSLContext | None:
        return self._state.ssl

    @property
    def tls_enabled(self) -> bool:
        return self.ssl is not None

    @property
    def headers(self) -> dict[str, str]:
        return self._state.config.headers

    def client_allowed(self, peer_cert: dict[str, Any] | None) -> bool:
        """``client_allowed_sans``: the verified client certificate must name one of them."""
        allowed = self._state.config.allowed_sans
        if not allowed:
            return True
        names = {value for _, value in (peer_cert or {}).get("subjectAltName", ())}
        return bool(names & allowed)

    def allowed(self, authorization: str | None) -> bool:
        state = self._state  # one config for the whole check, even during a reload
        users = state.config.users
        if not users:
            return True
        if not authorization or not authorization.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        # bcrypt is slow on purpose; remember the good answers of this config's life.
        token = hashlib.sha256(f"{user}\0{password}".encode()).digest()
        if any(hmac.compare_digest(token, ok) for ok in state.ok_cache):
            return True
        hashed = users.get(user, _DUMMY_HASH)
        secret = password.encode()
        fits = len(secret) <= _BCRYPT_MAX  # a longer one still pays the compare, and fails
        ok = bcrypt.checkpw(secret[:_BCRYPT_MAX], hashed) and user in users and fits
        if ok:
            state.ok_cache.add(token)
        return ok


class ReloadCollector(Collector):
    """``spacelift_web_config_last_reload_successful`` and its timestamp, as Prometheus'
    own ``prometheus_config_last_reload_successful``: a refused change is visible on
    /metrics, not only in the log."""

    def __init__(self, auth: WebAuth) -> None:
        self.auth = auth

    def collect(self) -> Iterable[Metric]:
        ok, when = self.auth.last_reload_ok, self.auth.last_reload_success
        yield GaugeMetricFamily(WEB_CONFIG_RELOAD.name, WEB_CONFIG_RELOAD.help, float(ok))
        yield GaugeMetricFamily(WEB_CONFIG_RELOAD_TIME.name, WEB_CONFIG_RELOAD_TIME.help, when)
