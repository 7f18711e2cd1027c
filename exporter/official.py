"""Spacelift's official exporter (github.com/spacelift-io/prometheus-exporter), in one place.

Its metric families and its `serve` flags, each with what this exporter does instead. The
README's comparison table is generated from these lists (``python -m exporter.docgen``) and
tests/test_official_dropin.py starts the exporter as the official README and Kubernetes
example do and checks every family marked served is on /metrics, and every one marked
missing is not (so the list cannot silently go stale in either direction).

Sources: the official README's "Available Metrics" table and its testdata/golden/*.prom
(the `spacelift_scrape_collector_*` families), serve_command.go for the flags.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OfficialMetric:
    name: str
    labels: tuple[str, ...]
    here: str  # how this exporter serves it ("same" = same name, labels and meaning)
    missing: str | None = None  # why it is not served, if it is not


_SCRAPE = "polls are not scrapes here: Spacelift is polled on a schedule, never per scrape"

METRICS: tuple[OfficialMetric, ...] = (
    OfficialMetric("spacelift_public_worker_pool_runs_pending", (), "same, plus `account`"),
    OfficialMetric("spacelift_public_worker_pool_workers_busy", (), "same, plus `account`"),
    OfficialMetric("spacelift_public_worker_pool_parallelism", (), "same, plus `account`"),
    *(
        OfficialMetric(
            f"spacelift_worker_pool_{m}",
            ("worker_pool_id", "worker_pool_name"),
            "same, plus `account` and `space`",
        )
        for m in ("runs_pending", "workers_busy", "workers", "workers_drained")
    ),
    *(
        OfficialMetric(f"spacelift_current_billing_period_{m}", (), "same, plus `account`")
        for m in (
            "start_timestamp_seconds",
            "end_timestamp_seconds",
            "used_private_seconds",
            "used_public_seconds",
            "used_seats",
        )
    ),
    OfficialMetric(
        "spacelift_current_stacks_count_by_state",
        ("state",),
        "same, plus `account` (area `aggregates`)",
    ),
    OfficialMetric(
        "spacelift_current_resources_count_by_drift",
        ("state",),
        "same, plus `account` (area `aggregates`)",
    ),
    *(
        OfficialMetric(f"spacelift_current_{m}", (), "same, plus `account` (area `aggregates`)")
        for m in ("avg_stack_size_by_resource_count", "average_run_duration", "median_run_duration")
    ),
    OfficialMetric(
        "spacelift_scrape_duration_seconds",
        (),
        "`spacelift_poll_duration_seconds{area}`",
        _SCRAPE,
    ),
    OfficialMetric(
        "spacelift_scrape_collector_success",
        ("collector",),
        "`spacelift_poll_success{area}`",
        _SCRAPE,
    ),
    OfficialMetric(
        "spacelift_scrape_collector_supported",
        ("collector",),
        "`spacelift_poll_permission_denied{area}` (inverted)",
        _SCRAPE,
    ),
    OfficialMetric(
        "spacelift_scrape_collector_duration_seconds",
        ("collector",),
        "`spacelift_poll_duration_seconds{area}`",
        _SCRAPE,
    ),
    OfficialMetric(
        "spacelift_build_info",
        ("version", "commit", "goversion"),
        "same name; labels `version`, `revision`, `python_version`",
    ),
)


@dataclass(frozen=True)
class OfficialFlag:
    flag: str
    alias: str | None
    env: str
    default: str
    here: str


FLAGS: tuple[OfficialFlag, ...] = (
    OfficialFlag(
        "--api-endpoint", "-e", "SPACELIFT_PROMEX_API_ENDPOINT", "", "`--spacelift-api-endpoint`"
    ),
    OfficialFlag(
        "--api-key-id",
        "-k",
        "SPACELIFT_PROMEX_API_KEY_ID",
        "",
        "the key id (after `SPACELIFT_API_KEY_ID`)",
    ),
    OfficialFlag(
        "--api-key-secret",
        "-s",
        "SPACELIFT_PROMEX_API_KEY_SECRET",
        "",
        "the key secret (after `SPACELIFT_API_KEY_SECRET`)",
    ),
    OfficialFlag(
        "--api-key-secret-file",
        None,
        "SPACELIFT_PROMEX_API_KEY_SECRET_FILE",
        "",
        "`--spacelift-api-key-secret-file` (re-read at every token exchange)",
    ),
    OfficialFlag(
        "--listen-address",
        "-l",
        "SPACELIFT_PROMEX_LISTEN_ADDRESS",
        ":9953",
        "`--web.listen-address`",
    ),
    OfficialFlag(
        "--scrape-timeout",
        "-t",
        "SPACELIFT_PROMEX_SCRAPE_TIMEOUT",
        "5s",
        "`http.poll_timeout` (default 2m): bounds one poll of one area, since scrapes never "
        "call Spacelift; the per-request `http.timeout` is capped at it",
    ),
    OfficialFlag(
        "--ca-cert-path",
        None,
        "SPACELIFT_PROMEX_CA_CERT_PATH",
        "",
        "`http.ca_cert_path`: a PEM CA trusted in addition to the system's",
    ),
    OfficialFlag(
        "--is-development",
        "-d",
        "SPACELIFT_PROMEX_IS_DEVELOPMENT",
        "false",
        "`--log.level=debug`",
    ),
)

# The official image's probe path (its Kubernetes example's readinessProbe).
PROBE_PATH = "/health"
