"""The exporter's own instruments: API traffic and token exchanges.

Built on a private registry in ``main`` and injected; nothing is registered at import time.
Poll health (``spacelift_up``, ``spacelift_poll_*``) is derived from the snapshot store in
``exporter.health`` instead, so it can never disagree with what ``/metrics`` serves.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from exporter.families import MetricDef

# Upper bounds fit GraphQL calls: most answer in tens of ms, a 50-stack page can take seconds.
REQUEST_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

API_REQUESTS = MetricDef(
    "spacelift_api_requests",
    "counter",
    "HTTP requests sent to the Spacelift GraphQL API, by operation and outcome.",
    ("account", "operation", "outcome"),
)
API_REQUEST_DURATION = MetricDef(
    "spacelift_api_request_duration_seconds",
    "histogram",
    "Duration of HTTP requests to the Spacelift GraphQL API.",
    ("account", "operation"),
    REQUEST_BUCKETS,
)
TOKEN_EXCHANGES = MetricDef(
    "spacelift_api_token_exchanges",
    "counter",
    "Exchanges of the API key for a JWT (apiKeyUser), by outcome: success, failure (the key "
    "was refused) or error (Spacelift unreachable or failing).",
    ("account", "outcome"),
)
RATE_LIMITED = MetricDef(
    "spacelift_api_rate_limited",
    "counter",
    "HTTP 429 answers received from the Spacelift API.",
    ("account",),
)

STATE_FILE_WRITES = MetricDef(
    "spacelift_state_file_writes",
    "counter",
    "Writes of --state.file (after a poll that changed what it holds), by outcome: success or "
    "failure (the previous file stays; a restart may count or miss runs since its last write).",
    ("outcome",),
)

# Webhooks: what each delivery did. accepted/duplicate/stale passed the signature check; the
# others were refused with a 4xx (account "" when the delivery names no configured account).
WEBHOOK_OUTCOMES = (
    "accepted",
    "duplicate",
    "stale",
    "bad_signature",
    "malformed",
    "too_large",
    "unknown_account",
    "overloaded",
)
# From a run's state change to its delivery: Spacelift sends within seconds; retries after a
# 5xx come minutes later.
WEBHOOK_DELAY_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
WEBHOOK_DELIVERIES = MetricDef(
    "spacelift_webhook_deliveries",
    "counter",
    "Spacelift webhook deliveries received, by outcome: accepted (recorded), duplicate (seen "
    "already), stale (older than what is known), bad_signature, malformed, too_large, "
    "unknown_account (refused, nothing recorded), overloaded (503: too many deliveries "
    "waiting for a poll to finish; Spacelift retries).",
    ("account", "outcome"),
)
WEBHOOK_LAST_DELIVERY = MetricDef(
    "spacelift_webhook_last_delivery_timestamp_seconds",
    "gauge",
    "When the last correctly signed webhook delivery of the account arrived.",
    ("account",),
)
WEBHOOK_DELAY = MetricDef(
    "spacelift_webhook_delivery_delay_seconds",
    "histogram",
    "Time from a run's state change (the delivery's timestamp) to the delivery's arrival.",
    ("account",),
    WEBHOOK_DELAY_BUCKETS,
)
# Only with --web.config.file (exporter.webconfig.ReloadCollector), as Prometheus' own
# prometheus_config_last_reload_successful and _success_timestamp_seconds.
WEB_CONFIG_RELOAD = MetricDef(
    "spacelift_web_config_last_reload_successful",
    "gauge",
    "1 when the last change of --web.config.file was read and is in force; 0 when it was "
    "refused (unreadable, invalid or empty) and the previous web config stays in force.",
    (),
)
WEB_CONFIG_RELOAD_TIME = MetricDef(
    "spacelift_web_config_last_reload_success_timestamp_seconds",
    "gauge",
    "When --web.config.file was last read successfully (at start or after a change).",
    (),
)

METRICS = (
    API_REQUESTS,
    API_REQUEST_DURATION,
    TOKEN_EXCHANGES,
    RATE_LIMITED,
    STATE_FILE_WRITES,
    WEBHOOK_DELIVERIES,
    WEBHOOK_LAST_DELIVERY,
    WEBHOOK_DELAY,
    WEB_CONFIG_RELOAD,
    WEB_CONFIG_RELOAD_TIME,
)


def _counter(metric: MetricDef, registry: CollectorRegistry) -> Counter:
    return Counter(metric.name, metric.help, metric.labels, registry=registry)


def _gauge(metric: MetricDef, registry: CollectorRegistry) -> Gauge:
    return Gauge(metric.name, metric.help, metric.labels, registry=registry)


def _histogram(metric: MetricDef, registry: CollectorRegistry) -> Histogram:
    """Buckets come from the definition, the one place the README table reads them too."""
    return Histogram(
        metric.name, metric.help, metric.labels, buckets=metric.buckets, registry=registry
    )


class SelfMetrics:
    def __init__(self, registry: CollectorRegistry, api: CollectorRegistry | None = None) -> None:
        """``api``: where the Spacelift API traffic goes (it changes only while a poll runs,
        so the app renders that registry with each poll instead of on every scrape)."""
        api = api or registry
        self.requests = _counter(API_REQUESTS, api)
        self.duration = _histogram(API_REQUEST_DURATION, api)
        self.exchanges = _counter(TOKEN_EXCHANGES, api)
        self.rate_limited_total = _counter(RATE_LIMITED, api)
        self.state_file_writes = _counter(STATE_FILE_WRITES, registry)
        self.webhook_deliveries = _counter(WEBHOOK_DELIVERIES, registry)
        self.webhook_last = _gauge(WEBHOOK_LAST_DELIVERY, registry)
        self.webhook_delay = _histogram(WEBHOOK_DELAY, registry)

    def request(self, account: str, operation: str, outcome: str, seconds: float) -> None:
        self.requests.labels(account, operation, outcome).inc()
        self.duration.labels(account, operation).observe(seconds)

    def token_exchange(self, account: str, outcome: str) -> None:
        self.exchanges.labels(account, outcome).inc()

    def rate_limited(self, account: str) -> None:
        self.rate_limited_total.labels(account).inc()

    def state_file_write(self, ok: bool) -> None:
        self.state_file_writes.labels("success" if ok else "failure").inc()

    def init_state_file(self) -> None:
        """With --state.file set: both outcomes exposed at 0 from the start."""
        for outcome in ("success", "failure"):
            self.state_file_writes.labels(outcome)

    def init_account(self, account: str) -> None:
        """Expose zeroes before the first event, so rate() and alerts see a starting point."""
        for outcome in ("success", "failure", "error"):
            self.exchanges.labels(account, outcome)
        self.rate_limited_total.labels(account)

    def webhook_delivery(
        self,
        account: str,
        outcome: str | None,
        at: float | None = None,
        delay: float | None = None,
    ) -> None:
        """One delivery (``outcome`` None: counted later); ``at`` and ``delay`` only for
        correctly signed ones."""
        if outcome is not None:
            self.webhook_deliveries.labels(account, outcome).inc()
        if at is not None:
            self.webhook_last.labels(account).set(at)
        if delay is not None:
            self.webhook_delay.labels(account).observe(max(0.0, delay))

    def init_webhooks(self, accounts: list[str]) -> None:
        """Every outcome at 0 for each account receiving webhooks (with several, also "" for
        deliveries that cannot be told apart), so increase() sees the first of each."""
        for account in [*accounts, ""] if len(accounts) > 1 else accounts:
            for outcome in WEBHOOK_OUTCOMES:
                self.webhook_deliveries.labels(account, outcome)
