"""``--web.config.file`` in the exporter-toolkit format: TLS and basic auth.

The same file Prometheus' own exporters read (``promtool check web-config`` accepts every
example we ship). It is re-read when it changes: users and hashes at the next request, the
certificate at the next connection, so rotating either needs no restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from exporter.config import ConfigError

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


def parse(path: Path) -> WebConfig:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError("--web.config.file", f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError:
        raise ConfigError("--web.config.file", f"{path} is not valid YAML") from None
    if not isinstance(raw, dict):
        raise ConfigError("--web.config.file", "must hold a mapping")
    for key in raw:
        if key not in ("tls_server_config", "basic_auth_users", "http_server_config"):
            raise ConfigError(key, "unknown key in the web config file")
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
        if not isinstance(hashed, str) or not _BCRYPT.fullmatch(hashed):
            raise ConfigError(f"basic_auth_users.{user}", "must be a bcrypt hash")
        users[str(user)] = hashed.encode()
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
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise ConfigError("http_server_config.headers", "must map header names to strings")
    return dict(headers)


def ssl_context(tls: dict[str, Any], base: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSIONS[tls.get("min_version", "TLS12")]
    if "max_version" in tls:
        ctx.maximum_version = TLS_VERSIONS[tls["max_version"]]
    try:
        ctx.load_cert_chain(_path(base, tls["cert_file"]), _path(base, tls["key_file"]))
        ctx.verify_mode = CLIENT_AUTH[tls.get("client_auth_type", "NoClientCert")]
        if tls.get("client_ca_file"):
            ctx.load_verify_locations(_path(base, tls["client_ca_file"]))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("tls_server_config", f"cannot load certificates: {exc}") from None
    return ctx


def _path(base: Path, value: str) -> str:
    # Relative paths are relative to the web config file, as in exporter-toolkit.
    return str(base / value) if not os.path.isabs(value) else value


class WebAuth:
    """Holds the current web config, re-reading the file when its mtime changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._mtime = 0.0
        self._config = WebConfig()
        self._ok_cache: set[bytes] = set()
        self.ssl: ssl.SSLContext | None = None
        if path is not None:
            self._load()

    def _load(self) -> None:
        assert self.path is not None
        cfg = parse(self.path)
        ctx = ssl_context(cfg.tls, self.path.parent) if cfg.tls else None
        self._config, self.ssl, self._ok_cache = cfg, ctx, set()
        self._mtime = self.path.stat().st_mtime

    def refresh(self) -> None:
        """Re-read after a change; a broken edit keeps the previous config in force."""
        if self.path is None:
            return
        with self._lock:
            try:
                if self.path.stat().st_mtime != self._mtime:
                    self._load()
            except (OSError, ConfigError):
                pass

    @property
    def tls_enabled(self) -> bool:
        return self.ssl is not None

    @property
    def headers(self) -> dict[str, str]:
        return self._config.headers

    def client_allowed(self, peer_cert: dict[str, Any] | None) -> bool:
        """``client_allowed_sans``: the verified client certificate must name one of them."""
        allowed = self._config.allowed_sans
        if not allowed:
            return True
        names = {value for _, value in (peer_cert or {}).get("subjectAltName", ())}
        return bool(names & allowed)

    def allowed(self, authorization: str | None) -> bool:
        users = self._config.users
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
        if any(hmac.compare_digest(token, ok) for ok in self._ok_cache):
            return True
        hashed = users.get(user, _DUMMY_HASH)
        secret = password.encode()
        fits = len(secret) <= _BCRYPT_MAX  # a longer one still pays the compare, and fails
        ok = bcrypt.checkpw(secret[:_BCRYPT_MAX], hashed) and user in users and fits
        if ok:
            self._ok_cache.add(token)
        return ok
