"""Configuration: the YAML file, the command-line flags over it, and their validation.

Everything here is data. ``load`` returns a frozen ``Config`` or raises ``ConfigError``
naming the key at fault (the CLI turns that into exit status 2). Secrets are wrapped in
``Secret`` as soon as they are read, so no repr, log line or ``check-config`` output shows them.
"""

from __future__ import annotations

import math
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from exporter import yamlsafe
from exporter.secret import Secret

DEFAULT_LISTEN = ":9953"  # the port of Spacelift's official exporter
DEFAULT_KEY_ID_ENV = "SPACELIFT_API_KEY_ID"
DEFAULT_KEY_SECRET_ENV = "SPACELIFT_API_KEY_SECRET"
DEFAULT_TOKEN_ENV = "SPACELIFT_API_TOKEN"
# Spacelift's official exporter reads these; honoured so it can be swapped for this one.
PROMEX_ENDPOINT_ENV = "SPACELIFT_PROMEX_API_ENDPOINT"
PROMEX_KEY_ID_ENV = "SPACELIFT_PROMEX_API_KEY_ID"
PROMEX_KEY_SECRET_ENV = "SPACELIFT_PROMEX_API_KEY_SECRET"
DEFAULT_WEBHOOK_SECRET_ENV = "SPACELIFT_WEBHOOK_SECRET"
DEFAULT_WEBHOOK_PATH = "/webhooks/spacelift"
DEFAULT_WEBHOOK_MAX_BODY = 1 << 20  # 1 MiB: a run event is about 1 KiB
PROMEX_KEY_SECRET_FILE_ENV = "SPACELIFT_PROMEX_API_KEY_SECRET_FILE"
PROMEX_LISTEN_ENV = "SPACELIFT_PROMEX_LISTEN_ADDRESS"
PROMEX_SCRAPE_TIMEOUT_ENV = "SPACELIFT_PROMEX_SCRAPE_TIMEOUT"
PROMEX_CA_CERT_ENV = "SPACELIFT_PROMEX_CA_CERT_PATH"
PROMEX_IS_DEVELOPMENT_ENV = "SPACELIFT_PROMEX_IS_DEVELOPMENT"


class ConfigError(Exception):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key


@dataclass(frozen=True)
class Credentials:
    key_id: str | None = None
    key_secret: Secret | None = None
    key_secret_file: Path | None = None
    token: Secret | None = None
    source: str = ""  # where they came from, for check-config (names, never values)

    def secret(self) -> Secret:
        """The key secret; a file is re-read at every call (OIDC tokens rotate)."""
        if self.key_secret_file is not None:
            try:
                return Secret(self.key_secret_file.read_text().strip())
            except OSError as exc:
                raise ConfigError("api_key_secret_file", f"cannot read: {exc.strerror}") from None
        return self.key_secret or Secret("")


@dataclass(frozen=True)
class WebhookSecret:
    """The secret of the account's Spacelift named webhook (HMAC key of X-Signature-256),
    from a variable or a file; a file is re-read when it changes (a rotated secret)."""

    value: Secret | None = None
    file: Path | None = None
    source: str = ""  # where it came from, for check-config (names, never values)

    def reveal(self) -> bytes:
        if self.file is None:
            return (self.value or Secret("")).reveal().encode()
        try:
            stat = self.file.stat()
            cached = _FILE_SECRETS.get(self.file)
            if cached is None or cached[0] != (stat.st_mtime_ns, stat.st_size):
                cached = ((stat.st_mtime_ns, stat.st_size), self.file.read_bytes().strip())
                _FILE_SECRETS[self.file] = cached
            return cached[1]
        except OSError:
            return b""  # unreadable now: every delivery fails its signature check (401)


_FILE_SECRETS: dict[Path, tuple[tuple[int, int], bytes]] = {}


@dataclass(frozen=True)
class WebhookConfig:
    """The receiver of Spacelift webhooks (run state changes pushed in real time)."""

    path: str = DEFAULT_WEBHOOK_PATH
    listen_address: str | None = None  # None: on the metrics listener
    max_body_bytes: int = DEFAULT_WEBHOOK_MAX_BODY


@dataclass(frozen=True)
class AreaConfig:
    enabled: bool
    interval: float
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AccountConfig:
    name: str
    endpoint: str
    credentials: Credentials
    areas: Mapping[str, AreaConfig]
    webhook_secret: WebhookSecret | None = None  # None: webhooks not received for it

    def enabled_areas(self) -> list[str]:
        return [name for name, area in self.areas.items() if area.enabled]


@dataclass(frozen=True)
class HttpConfig:
    timeout: float = 10.0  # one HTTP request
    retries: int = 3  # on connection errors, timeouts, 5xx and 429
    poll_timeout: float = 120.0  # everything one poll of one area may take
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    # A PEM CA trusted for the Spacelift API on top of the system's (self-hosted Spacelift).
    ca_cert_path: Path | None = None


@dataclass(frozen=True)
class Config:
    accounts: tuple[AccountConfig, ...]
    http: HttpConfig = HttpConfig()
    listen_address: str = DEFAULT_LISTEN
    telemetry_path: str = "/metrics"
    log_level: str = "info"
    log_format: str = "logfmt"
    state_file: Path | None = None
    web_config_file: Path | None = None
    webhook: WebhookConfig = WebhookConfig()

    def webhooks_enabled(self) -> bool:
        return any(a.webhook_secret is not None for a in self.accounts)

    def redacted(self) -> dict[str, Any]:
        """The effective configuration as plain data, secrets replaced, for check-config."""
        return {
            "accounts": [
                {
                    "name": a.name,
                    "endpoint": a.endpoint,
                    "credentials": _describe_credentials(a.credentials),
                    "webhook_secret": a.webhook_secret.source if a.webhook_secret else None,
                    "areas": {
                        name: {"enabled": ar.enabled, "interval": ar.interval, **ar.options}
                        for name, ar in a.areas.items()
                    },
                }
                for a in self.accounts
            ],
            "http": vars(self.http),
            "web": {
                "listen_address": self.listen_address,
                "telemetry_path": self.telemetry_path,
                "config_file": str(self.web_config_file) if self.web_config_file else None,
            },
            "log": {"level": self.log_level, "format": self.log_format},
            "state_file": str(self.state_file) if self.state_file else None,
            "webhook": vars(self.webhook),
        }


def _describe_credentials(c: Credentials) -> dict[str, Any]:
    out: dict[str, Any] = {"source": c.source}
    if c.token is not None:
        out["token"] = str(c.token)
    else:
        out["api_key_id"] = c.key_id
        out["api_key_secret"] = (
            f"<read from {c.key_secret_file}>" if c.key_secret_file else str(c.key_secret)
        )
    return out


# -- flags -> overrides --------------------------------------------------------------------


@dataclass
class Overrides:
    """Command-line flags; None means not given, so the file (or the default) applies."""

    config_file: Path | None = None
    endpoint: str | None = None
    key_id_env_var: str | None = None
    key_secret_env_var: str | None = None
    key_secret_file: Path | None = None
    token_env_var: str | None = None
    listen_address: str | None = None
    telemetry_path: str | None = None
    web_config_file: Path | None = None
    log_level: str | None = None
    log_format: str | None = None
    state_file: Path | None = None
    webhook_secret_env_var: str | None = None
    webhook_secret_file: Path | None = None
    webhook_listen_address: str | None = None
    webhook_path: str | None = None
    # Spacelift's official exporter's flags (`serve`), mapped onto the settings above.
    api_key_id: str | None = None
    api_key_secret: Secret | None = None
    scrape_timeout: str | None = None
    ca_cert_path: Path | None = None
    is_development: str | None = None
    demo_simulator_port: int | None = None  # `demo` only: where its simulator listens
    # Cartography's EC2 ownership flags: they enable the ec2_ownership area for every
    # account, over the file's top-level `areas.ec2_ownership`.
    ec2_s3_bucket: str | None = None
    ec2_s3_prefix: str | None = None
    ec2_aws_profile: str | None = None


# -- loading ---------------------------------------------------------------------------------

TOP_KEYS = {"accounts", "areas", "http", "web", "log", "state_file", "webhook"}
ACCOUNT_KEYS = {
    "name",
    "endpoint",
    "api_key_id",
    "api_key_id_env_var",
    "api_key_secret_env_var",
    "api_key_secret_file",
    "api_token_env_var",
    "areas",
    "webhook_secret_env_var",
    "webhook_secret_file",
}
WEBHOOK_KEYS = {"path", "listen_address", "max_body_size"}
HTTP_KEYS = {"timeout", "retries", "poll_timeout", "backoff_base", "backoff_max", "ca_cert_path"}
LOG_LEVELS = ("debug", "info", "warn", "error")
LOG_FORMATS = ("logfmt", "json")


def load(
    overrides: Overrides,
    env: Mapping[str, str] | None = None,
    raw: dict[str, Any] | None = None,
) -> Config:
    """Validate the file (or ``raw``, the same structure in memory) with the flags over it."""
    env = os.environ if env is None else env
    if raw is None:
        raw = _read_yaml(overrides.config_file) if overrides.config_file else {}
    _check_keys(raw, TOP_KEYS, "")

    area_defaults = _area_table(_ec2_flags(raw.get("areas"), overrides), "areas", None)
    accounts_raw = raw.get("accounts")
    if accounts_raw is not None and not isinstance(accounts_raw, list):
        raise ConfigError("accounts", "must be a list of accounts")
    accounts_raw = list(accounts_raw or [])

    endpoint_flag = overrides.endpoint or env.get(PROMEX_ENDPOINT_ENV)
    if endpoint_flag:
        if len(accounts_raw) > 1:
            raise ConfigError(
                "--spacelift-api-endpoint", "cannot be used with several accounts in the file"
            )
        base = dict(accounts_raw[0]) if accounts_raw else {}
        base["endpoint"] = endpoint_flag
        accounts_raw = [base]
    if not accounts_raw:
        raise ConfigError(
            "--spacelift-api-endpoint",
            "no Spacelift account configured: pass --spacelift-api-endpoint or list "
            "`accounts` in --config.file (or run `spacelift-exporter demo` to try the simulator)",
        )

    accounts: list[AccountConfig] = []
    for i, item in enumerate(accounts_raw):
        accounts.append(_account(item, f"accounts[{i}]", area_defaults, overrides, env))
    names = [a.name for a in accounts]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError("accounts", f"account names must be unique, repeated: {dupes}")

    web = _section(raw, "web", {"listen_address", "telemetry_path", "config_file"})
    log = _section(raw, "log", {"level", "format"})
    http = _official_http(_http(_section(raw, "http", HTTP_KEYS)), overrides, env)
    listen = (
        overrides.listen_address
        or env.get(PROMEX_LISTEN_ENV)
        or _str(web, "listen_address", "web.", DEFAULT_LISTEN)
    )
    path = overrides.telemetry_path or _str(web, "telemetry_path", "web.", "/metrics")
    if not path.startswith("/") or path in ("/", "/healthz", "/health", "/readyz"):
        raise ConfigError("web.telemetry_path", f"must be a path other than /, got {path!r}")
    parse_listen(listen, "web.listen_address")
    development = _official_bool(overrides.is_development, PROMEX_IS_DEVELOPMENT_ENV, env)
    level = (
        overrides.log_level or ("debug" if development else _str(log, "level", "log.", "info"))
    ).lower()
    if level not in LOG_LEVELS:
        raise ConfigError("log.level", f"must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    fmt = (overrides.log_format or _str(log, "format", "log.", "logfmt")).lower()
    if fmt not in LOG_FORMATS:
        raise ConfigError("log.format", f"must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    state_file = overrides.state_file
    if state_file is None and raw.get("state_file") is not None:
        state_file = Path(_str(raw, "state_file", "", ""))
    web_config = overrides.web_config_file
    if web_config is None and web.get("config_file"):
        web_config = Path(_str(web, "config_file", "web.", ""))
    webhook = _webhook(_section(raw, "webhook", WEBHOOK_KEYS), overrides, path)
    return Config(tuple(accounts), http, listen, path, level, fmt, state_file, web_config, webhook)


def _webhook(raw: Mapping[str, Any], overrides: Overrides, telemetry_path: str) -> WebhookConfig:
    path = overrides.webhook_path or _str(raw, "path", "webhook.", DEFAULT_WEBHOOK_PATH)
    if not path.startswith("/") or path in ("/", "/healthz", "/health", "/readyz", telemetry_path):
        raise ConfigError("webhook.path", f"must be a path of its own, got {path!r}")
    listen = overrides.webhook_listen_address or _str(raw, "listen_address", "webhook.", "")
    if listen:
        parse_listen(listen, "webhook.listen_address")
    size = raw.get("max_body_size", DEFAULT_WEBHOOK_MAX_BODY)
    if not isinstance(size, int) or isinstance(size, bool) or not 1024 <= size <= 64 << 20:
        raise ConfigError(
            "webhook.max_body_size", f"must be bytes from 1024 to 64 MiB, got {size!r}"
        )
    return WebhookConfig(path, listen or None, size)


def _webhook_secret(
    item: Mapping[str, Any], key: str, overrides: Overrides, env: Mapping[str, str]
) -> WebhookSecret | None:
    """The account's webhook secret: a file (flag, then file key) or a variable (flag, file
    key, SPACELIFT_WEBHOOK_SECRET by default); None when neither is set."""
    p = key + "."
    file_raw = overrides.webhook_secret_file or item.get("webhook_secret_file")
    if file_raw:
        path = Path(str(file_raw))
        if not path.is_file():
            raise ConfigError(f"{p}webhook_secret_file", f"{path} is not a readable file")
        return WebhookSecret(file=path, source=f"file {path}")
    var = overrides.webhook_secret_env_var or _str(
        item, "webhook_secret_env_var", p, DEFAULT_WEBHOOK_SECRET_ENV
    )
    if not _ENV_NAME.fullmatch(var):
        raise ConfigError(
            f"{p}webhook_secret_env_var",
            "must be the name of an environment variable (letters, digits, _), "
            "not its value; the value given is not shown",
        )
    value = env.get(var)
    if not value:
        if overrides.webhook_secret_env_var or item.get("webhook_secret_env_var"):
            raise ConfigError(f"{p}webhook_secret_env_var", f"${var} is empty or not set")
        return None
    return WebhookSecret(value=Secret(value), source=f"${var}")


def read_file(path: Path) -> dict[str, Any]:
    """The configuration file as plain data (ConfigError if unreadable or not valid YAML)."""
    return _read_yaml(path)


def _ec2_flags(areas: Any, overrides: Overrides) -> Any:
    """The --spacelift-ec2-ownership-* flags over the file's `areas.ec2_ownership`."""
    flags = {
        "s3_bucket": overrides.ec2_s3_bucket,
        "s3_prefix": overrides.ec2_s3_prefix,
        "aws_profile": overrides.ec2_aws_profile,
    }
    given = {k: v for k, v in flags.items() if v is not None}
    if not given or not isinstance(areas if areas is not None else {}, dict):
        return areas
    areas = dict(areas or {})
    section = areas.get("ec2_ownership")
    section = dict(section) if isinstance(section, dict) else {}
    if "s3_bucket" in given:
        section["enabled"] = True
    areas["ec2_ownership"] = {**section, **given}
    return areas


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = f.read(yamlsafe.MAX_BYTES + 1)  # bounded: never read a huge file whole
    except OSError as exc:
        raise ConfigError("--config.file", f"cannot read {path}: {exc.strerror}") from None
    try:
        loaded = yamlsafe.load(data)
    except yamlsafe.YamlError as exc:
        line = f" line {exc.line}" if exc.line is not None else ""
        raise ConfigError(exc.path or "--config.file", f"{path}{line}: {exc.problem}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError("--config.file", f"{path} must hold a mapping at the top level")
    return loaded


def _account(
    item: Any,
    key: str,
    area_defaults: Mapping[str, AreaConfig],
    overrides: Overrides,
    env: Mapping[str, str],
) -> AccountConfig:
    if not isinstance(item, dict):
        raise ConfigError(key, "must be a mapping")
    _check_keys(item, ACCOUNT_KEYS, key + ".")
    endpoint_raw = _str(item, "endpoint", key + ".", "")
    if not endpoint_raw:
        raise ConfigError(f"{key}.endpoint", "is required")
    endpoint = normalize_endpoint(endpoint_raw, f"{key}.endpoint")
    name = _str(item, "name", key + ".", "") or account_name(endpoint)
    if not re.fullmatch(r"[A-Za-z0-9_.:-]+", name):
        raise ConfigError(f"{key}.name", f"must be a simple identifier, got {name!r}")
    creds = _credentials(item, key, overrides, env)
    areas = _area_table(item.get("areas"), f"{key}.areas", area_defaults)
    webhook_secret = _webhook_secret(item, key, overrides, env)
    return AccountConfig(name, endpoint, creds, areas, webhook_secret)


def _credentials(
    item: Mapping[str, Any], key: str, overrides: Overrides, env: Mapping[str, str]
) -> Credentials:
    p = key + "."
    token_var = overrides.token_env_var or _str(item, "api_token_env_var", p, DEFAULT_TOKEN_ENV)
    id_var = overrides.key_id_env_var or _str(item, "api_key_id_env_var", p, DEFAULT_KEY_ID_ENV)
    secret_var = overrides.key_secret_env_var or _str(
        item, "api_key_secret_env_var", p, DEFAULT_KEY_SECRET_ENV
    )
    for name, var in (
        ("api_token_env_var", token_var),
        ("api_key_id_env_var", id_var),
        ("api_key_secret_env_var", secret_var),
    ):
        # A value pasted where a variable NAME belongs would otherwise be echoed in errors.
        if not _ENV_NAME.fullmatch(var):
            raise ConfigError(
                f"{p}{name}",
                "must be the name of an environment variable (letters, digits, _), "
                "not its value; the value given is not shown",
            )
    secret_file_raw = (
        overrides.key_secret_file
        or item.get("api_key_secret_file")
        or env.get(PROMEX_KEY_SECRET_FILE_ENV)
    )
    secret_file = Path(str(secret_file_raw)) if secret_file_raw else None
    key_id = (
        overrides.api_key_id
        or _str(item, "api_key_id", p, "")
        or env.get(id_var)
        or env.get(PROMEX_KEY_ID_ENV)
    )
    secret_value = (
        (overrides.api_key_secret.reveal() if overrides.api_key_secret else None)
        or env.get(secret_var)
        or env.get(PROMEX_KEY_SECRET_ENV)
    )

    if key_id and (secret_value or secret_file):
        if secret_file is not None and not secret_file.is_file():
            raise ConfigError(f"{p}api_key_secret_file", f"{secret_file} is not a readable file")
        source = f"api key from ${id_var}" + (
            f", secret file {secret_file}" if secret_file else f", secret from ${secret_var}"
        )
        return Credentials(
            key_id=key_id,
            key_secret=None if secret_file else Secret(secret_value or ""),
            key_secret_file=secret_file,
            source=source,
        )
    token = env.get(token_var)
    if token:
        return Credentials(token=Secret(token), source=f"pre-generated token from ${token_var}")
    # Named as the user would fix it: the file's key if the file chose the variable's name,
    # else the variable itself (the flags only rename it).
    if key_id:
        raise ConfigError(
            _named(item, p, "api_key_secret_env_var", secret_var),
            f"API key id is set but ${secret_var} is empty and no api_key_secret_file is given",
        )
    raise ConfigError(
        _named(item, p, "api_key_id_env_var", id_var),
        f"no credentials: set ${id_var} and ${secret_var}, or ${token_var}",
    )


def _named(item: Mapping[str, Any], prefix: str, key: str, variable: str) -> str:
    return f"{prefix}{key}" if item.get(key) else f"${variable}"


def _area_table(
    raw: Any, key: str, defaults: Mapping[str, AreaConfig] | None
) -> dict[str, AreaConfig]:
    from exporter.areas import AREAS  # late: areas import config types for their options

    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(key, "must be a mapping of area name to settings")
    _check_keys(raw, set(AREAS), key + ".")
    out: dict[str, AreaConfig] = {}
    for name, spec in AREAS.items():
        base = (
            defaults[name]
            if defaults
            else AreaConfig(
                spec.enabled_by_default,
                spec.default_interval,
                {k: o.default for k, o in spec.options.items()},
            )
        )
        settings = raw.get(name)
        settings = {} if settings is None else settings
        where = f"{key}.{name}"
        if not isinstance(settings, dict):
            raise ConfigError(where, "must be a mapping")
        _check_keys(settings, {"enabled", "interval", *spec.options}, where + ".")
        enabled = settings.get("enabled", base.enabled)
        if not isinstance(enabled, bool):
            raise ConfigError(f"{where}.enabled", f"must be true or false, got {enabled!r}")
        interval = base.interval
        if "interval" in settings:
            interval = parse_duration(settings["interval"], f"{where}.interval")
            if interval < 5:
                raise ConfigError(f"{where}.interval", "must be at least 5s")
        options = dict(base.options)
        for opt_name, opt in spec.options.items():
            if opt_name in settings:
                value = settings[opt_name]
                if not isinstance(value, opt.type) or (
                    isinstance(value, bool) and opt.type in (int, float)
                ):
                    raise ConfigError(f"{where}.{opt_name}", f"wrong type: {opt.help}")
                if isinstance(value, list):
                    _check_string_list(value, f"{where}.{opt_name}")
                options[opt_name] = value
        if enabled and spec.check is not None:
            problem = spec.check(options)
            if problem is not None:
                raise ConfigError(f"{where}.{problem[0]}", problem[1])
        out[name] = AreaConfig(enabled, interval, options)
    return out


def _check_string_list(value: list[Any], key: str) -> None:
    """List options hold names (label keys...): strings, not mappings or numbers."""
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise ConfigError(f"{key}[{i}]", f"must be a non-empty string, got {_short(item)}")


def _http(raw: Mapping[str, Any]) -> HttpConfig:
    d = HttpConfig()
    retries = raw.get("retries", d.retries)
    if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries <= 10:
        raise ConfigError("http.retries", f"must be a whole number from 0 to 10, got {retries!r}")
    vals = {
        k: parse_duration(raw[k], f"http.{k}") if k in raw else getattr(d, k)
        for k in ("timeout", "poll_timeout", "backoff_base", "backoff_max")
    }
    for k, v in vals.items():
        if v <= 0:
            raise ConfigError(f"http.{k}", "must be positive")
    if vals["timeout"] > vals["poll_timeout"]:
        raise ConfigError("http.timeout", "must not exceed http.poll_timeout")
    if vals["backoff_base"] > vals["backoff_max"]:
        raise ConfigError("http.backoff_base", "must not exceed http.backoff_max")
    ca = raw.get("ca_cert_path")
    if ca is not None and not isinstance(ca, str):
        raise ConfigError("http.ca_cert_path", "must be the path of a PEM file")
    return HttpConfig(retries=retries, ca_cert_path=Path(ca) if ca else None, **vals)


def _official_http(http: HttpConfig, overrides: Overrides, env: Mapping[str, str]) -> HttpConfig:
    """Spacelift's official exporter's --scrape-timeout and --ca-cert-path, nearest meaning.

    Its scrape timeout bounds the API calls behind one scrape; here scrapes never call the
    API, so it bounds one poll of one area (http.poll_timeout), and one request within it.
    """
    changes: dict[str, Any] = {}
    timeout_raw, key = overrides.scrape_timeout, "--scrape-timeout"
    if timeout_raw is None and env.get(PROMEX_SCRAPE_TIMEOUT_ENV):
        timeout_raw, key = env[PROMEX_SCRAPE_TIMEOUT_ENV], PROMEX_SCRAPE_TIMEOUT_ENV
    if timeout_raw is not None:
        seconds = parse_duration(timeout_raw, key)
        if seconds <= 0:
            raise ConfigError(key, "must be greater than 0")
        changes["poll_timeout"] = seconds
        changes["timeout"] = min(http.timeout, seconds)
    ca, key = overrides.ca_cert_path, "--ca-cert-path"
    if ca is None and env.get(PROMEX_CA_CERT_ENV):
        ca, key = Path(env[PROMEX_CA_CERT_ENV]), PROMEX_CA_CERT_ENV
    if ca is not None:
        changes["ca_cert_path"] = ca
    else:
        ca, key = http.ca_cert_path, "http.ca_cert_path"
    if ca is not None:
        try:
            ssl.create_default_context(cafile=str(ca))
        except OSError as exc:
            problem = exc.strerror or "no PEM certificate in it"
            raise ConfigError(key, f"cannot load {ca} as a PEM CA certificate: {problem}") from None
    return replace(http, **changes) if changes else http


_TRUE = {"1", "t", "true"}  # Go's strconv.ParseBool, which the official exporter uses
_FALSE = {"0", "f", "false"}


def _official_bool(flag: str | None, var: str, env: Mapping[str, str]) -> bool:
    value, key = (flag, "--is-development") if flag is not None else (env.get(var), var)
    if value is None or value == "":
        return False
    if value.lower() not in _TRUE | _FALSE:
        raise ConfigError(key, f"must be true or false, got {value!r}")
    return value.lower() in _TRUE


def _section(raw: Mapping[str, Any], name: str, keys: set[str]) -> dict[str, Any]:
    value = raw.get(name)
    value = {} if value is None else value
    if not isinstance(value, dict):
        raise ConfigError(name, "must be a mapping")
    _check_keys(value, keys, name + ".")
    return value


def _check_keys(raw: Mapping[str, Any], allowed: set[str], prefix: str) -> None:
    for k in raw:
        if k not in allowed:
            raise ConfigError(
                f"{prefix}{k}", f"unknown key (expected one of: {', '.join(sorted(allowed))})"
            )


def _str(raw: Mapping[str, Any], name: str, prefix: str, default: str) -> str:
    value = raw.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise ConfigError(f"{prefix}{name}", f"must be a string, got {type(value).__name__}")
    return value


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DURATION = re.compile(r"^(\d{1,15}(?:\.\d{1,9})?)(ms|s|m|h|d)?$")
# Longer than any sensible interval or timeout, and small enough for timedelta and sockets.
MAX_DURATION = 7 * 86400.0


def parse_duration(value: Any, key: str) -> float:
    """Seconds from a number or a Prometheus-style string: 500ms, 30s, 5m, 1h, 1d."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(key, f"must be a duration like 30s or 5m, got {_short(value)}")
    if isinstance(value, str):
        m = _DURATION.match(value.strip())
        if not m:
            raise ConfigError(key, f"must be a duration like 30s or 5m, got {_short(value)}")
        scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}[m.group(2)]
        seconds = float(m.group(1)) * scale
    else:
        if (isinstance(value, float) and not math.isfinite(value)) or value < 0:
            raise ConfigError(key, f"must be a finite, non-negative duration, got {value!r}")
        # float() of a huge int raises OverflowError; compare first.
        seconds = float(value) if value <= MAX_DURATION else math.inf
    if seconds > MAX_DURATION:
        raise ConfigError(key, f"must be at most {MAX_DURATION / 86400:.0f}d")
    return seconds


def _short(value: Any) -> str:
    """A value for an error message, cut so a pasted blob cannot flood the terminal."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def normalize_endpoint(value: str, key: str) -> str:
    """Accept `acme.app.spacelift.io`, `https://acme.app.spacelift.io` or the /graphql URL."""
    value = value.strip()
    if "://" not in value:
        value = "https://" + value
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        raise ConfigError(key, f"not a Spacelift URL or host: {value!r}") from None
    if parts.username or parts.password:
        # Credentials in the URL would be printed by check-config and logs; refuse them.
        raise ConfigError(key, "must not contain user:password@; use the API key variables")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(key, f"not a Spacelift URL or host: {value!r}")
    path = parts.path.rstrip("/")
    if not path.endswith("/graphql"):
        path += "/graphql"
    url = f"{parts.scheme}://{parts.netloc}{path}"
    try:
        # What the client will send to: a host httpx refuses (bad IDNA, spaces) would fail
        # every poll as an internal error; refuse it here, where check-config sees it.
        httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        raise ConfigError(key, f"not a Spacelift URL or host: {_short(value)}") from None
    if any(c.isspace() for c in parts.netloc) or parts.port == 0:
        raise ConfigError(key, f"not a Spacelift URL or host: {_short(value)}")
    return url


def account_name(endpoint: str) -> str:
    """The account label by default: `acme` for acme.app.spacelift.io."""
    host = urlsplit(endpoint).hostname or "spacelift"
    if re.fullmatch(r"[\d.]+|localhost|\[.*\]|[0-9a-f:]+", host):
        return host.replace(":", "_")
    return host.split(".")[0]


def parse_listen(value: str, key: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(key, f"must be [host]:port, got {value!r}")
    return host.strip("[]"), int(port)
