"""Command line: run (default), serve, check-config, once, demo, doctor."""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import prometheus_client

from exporter import __version__, config, logsetup
from exporter.app import App
from exporter.secret import Secret

log = logging.getLogger("exporter")

# serve: the command of Spacelift's official exporter, so its container args work unchanged.
COMMANDS = ("run", "serve", "check-config", "once", "demo", "doctor")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="spacelift-exporter",
        description="Prometheus exporter for Spacelift: runs, worker pools, stacks, API keys.",
    )
    p.add_argument(
        "command",
        nargs="?",
        default="run",
        choices=COMMANDS,
        help="run: serve /metrics (default); serve: the same, as Spacelift's official "
        "exporter names it; check-config: validate and print the effective "
        "configuration, secrets redacted; once: poll every area once and print the exposition; "
        "demo: start the built-in Spacelift simulator and serve metrics from it; "
        "doctor: check the connection, the key, the schema and every area against the account "
        "(exit 0 all work, 1 not, 2 bad configuration)",
    )
    p.add_argument("--version", action="version", version=f"spacelift-exporter {__version__}")
    p.add_argument("--config.file", dest="config_file", type=Path, help="YAML configuration file")
    g = p.add_argument_group("Spacelift connection (names as in Cartography's integration)")
    g.add_argument(
        "--spacelift-api-endpoint",
        dest="endpoint",
        help="https://ACCOUNT.app.spacelift.io/graphql, or just ACCOUNT.app.spacelift.io",
    )
    g.add_argument(
        "--spacelift-api-key-id-env-var",
        dest="key_id_env_var",
        help=f"variable holding the API key id (default {config.DEFAULT_KEY_ID_ENV})",
    )
    g.add_argument(
        "--spacelift-api-key-secret-env-var",
        dest="key_secret_env_var",
        help=f"variable holding the API key secret (default {config.DEFAULT_KEY_SECRET_ENV})",
    )
    g.add_argument(
        "--spacelift-api-key-secret-file",
        dest="key_secret_file",
        type=Path,
        help="file holding the API key secret, re-read at every token exchange (OIDC keys)",
    )
    g.add_argument(
        "--spacelift-api-token-env-var",
        dest="token_env_var",
        help="variable holding a pre-generated JWT, used as is "
        f"(default {config.DEFAULT_TOKEN_ENV})",
    )
    h = p.add_argument_group("Spacelift webhooks (run state changes pushed in real time)")
    h.add_argument(
        "--spacelift-webhook-secret-env-var",
        dest="webhook_secret_env_var",
        help="variable holding the secret of the Spacelift named webhook "
        f"(default {config.DEFAULT_WEBHOOK_SECRET_ENV}; webhooks are received when it is set)",
    )
    h.add_argument(
        "--spacelift-webhook-secret-file",
        dest="webhook_secret_file",
        type=Path,
        help="file holding the webhook secret, re-read when it changes",
    )
    h.add_argument(
        "--webhook.listen-address",
        dest="webhook_listen_address",
        help="serve the webhook on a listener of its own, e.g. :9955 (default: the metrics "
        "listener); --web.config.file TLS applies to both",
    )
    h.add_argument(
        "--webhook.path", dest="webhook_path", help=f"default {config.DEFAULT_WEBHOOK_PATH}"
    )
    e = p.add_argument_group(
        "EC2 ownership from CloudTrail exports in S3 (names as in Cartography's integration)"
    )
    e.add_argument(
        "--spacelift-ec2-ownership-s3-bucket",
        dest="ec2_s3_bucket",
        help="bucket holding the Athena exports of CloudTrail events; enables the "
        "ec2_ownership area (needs pip install 'spacelift-exporter[aws]')",
    )
    e.add_argument(
        "--spacelift-ec2-ownership-s3-prefix",
        dest="ec2_s3_prefix",
        help="prefix of the export files in the bucket (default: the whole bucket)",
    )
    e.add_argument(
        "--spacelift-ec2-ownership-aws-profile",
        dest="ec2_aws_profile",
        help="AWS profile for S3 access (default: the standard AWS credential chain)",
    )
    w = p.add_argument_group("web and logs")
    w.add_argument("--web.listen-address", dest="listen_address", help="default :9953")
    w.add_argument("--web.telemetry-path", dest="telemetry_path", help="default /metrics")
    w.add_argument(
        "--web.config.file",
        dest="web_config_file",
        type=Path,
        help="TLS and basic auth, in the exporter-toolkit format",
    )
    w.add_argument("--log.level", dest="log_level", choices=config.LOG_LEVELS)
    w.add_argument("--log.format", dest="log_format", choices=config.LOG_FORMATS)
    p.add_argument(
        "--state.file",
        dest="state_file",
        type=Path,
        help="where the run ledger (and the EC2 exports already read) survive restarts",
    )
    d = p.add_argument_group("demo")
    d.add_argument(
        "--demo.simulator-port",
        dest="demo_simulator_port",
        type=int,
        help=f"port of the demo's Spacelift simulator on 127.0.0.1 (default {DEMO_SIM_PORT}; "
        "0 picks a free one), so `once` and `doctor` can be pointed at it",
    )
    _official_flags(p)
    d = p.add_argument_group("doctor")
    d.add_argument(
        "--output", dest="doctor_output", choices=("table", "json"),
        help="doctor: a readable table (default) or JSON",
    )  # fmt: skip
    d.add_argument(
        "--capture", dest="doctor_capture", type=Path, metavar="DIR",
        help="doctor: also write every answer received into DIR, tokens removed and names, "
        "ids and labels replaced by placeholders (safe to attach to a bug report)",
    )  # fmt: skip
    return p


def _official_flags(p: argparse.ArgumentParser) -> None:
    """Flags of Spacelift's official exporter (`spacelift-promex serve`), same names, aliases
    and SPACELIFT_PROMEX_* variables; each sets the setting of this exporter nearest in
    meaning (the README's comparison table lists them)."""
    o = p.add_argument_group("Spacelift's official exporter's flags (spacelift-promex serve)")
    o.add_argument(
        "--api-endpoint",
        "-e",
        dest="endpoint",
        help="= --spacelift-api-endpoint [$SPACELIFT_PROMEX_API_ENDPOINT]",
    )
    o.add_argument(
        "--api-key-id", "-k", dest="api_key_id", help="API key id [$SPACELIFT_PROMEX_API_KEY_ID]"
    )
    o.add_argument(
        "--api-key-secret",
        "-s",
        dest="api_key_secret",
        type=Secret,
        help="API key secret; visible to `ps`, prefer the variable or a file "
        "[$SPACELIFT_PROMEX_API_KEY_SECRET]",
    )
    o.add_argument(
        "--api-key-secret-file",
        dest="key_secret_file",
        type=Path,
        help="= --spacelift-api-key-secret-file [$SPACELIFT_PROMEX_API_KEY_SECRET_FILE]",
    )
    o.add_argument(
        "--listen-address",
        "-l",
        dest="listen_address",
        help="= --web.listen-address [$SPACELIFT_PROMEX_LISTEN_ADDRESS]",
    )
    o.add_argument(
        "--scrape-timeout",
        "-t",
        dest="scrape_timeout",
        help="time one poll of one area may take (http.poll_timeout; scrapes never wait for "
        "Spacelift here) [$SPACELIFT_PROMEX_SCRAPE_TIMEOUT]",
    )
    o.add_argument(
        "--ca-cert-path",
        dest="ca_cert_path",
        type=Path,
        help="PEM CA certificate trusted for the Spacelift API in addition to the system's "
        "(http.ca_cert_path) [$SPACELIFT_PROMEX_CA_CERT_PATH]",
    )
    o.add_argument(
        "--is-development",
        "-d",
        dest="is_development",
        nargs="?",
        const="true",
        metavar="BOOL",
        help="debug logging (= --log.level=debug) [$SPACELIFT_PROMEX_IS_DEVELOPMENT]",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # `_created` series double every counter's series count and no dashboard uses them.
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    overrides = config.Overrides(
        **{
            k: v
            for k, v in vars(args).items()
            if k != "command" and not k.startswith("doctor_") and v is not None
        }
    )
    try:
        if args.command == "demo":
            return _demo(overrides)
        cfg = config.load(overrides)
    except config.ConfigError as exc:
        print(f"spacelift-exporter: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-config":
        from exporter.webconfig import WebAuth

        try:
            WebAuth(cfg.web_config_file)
        except config.ConfigError as exc:
            print(f"spacelift-exporter: web config error: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(cfg.redacted(), indent=2, default=str))
        return 0
    if args.command == "doctor":
        from exporter import doctor

        logsetup.setup("error", cfg.log_format)  # the report says it all
        output = args.doctor_output or "table"
        return doctor.run(cfg, output=output, capture=args.doctor_capture)
    logsetup.setup(cfg.log_level, cfg.log_format)
    if args.command == "once":
        return _once(cfg)
    return _run(cfg)


def _once(cfg: config.Config) -> int:
    app = App(cfg)
    for client in app.clients.values():
        client.one_shot = True  # a refused connection is the answer: no retry, no backoff
    if cfg.log_level != "debug":
        # "serving the last good data" is the daemon's story; here the summary below says it.
        logging.getLogger("exporter.app").setLevel(logging.ERROR)
    interrupted = threading.Event()

    def interrupt(*_: Any) -> None:
        # Closing the clients ends every poll in flight (pauses, blocked reads) at once;
        # a KeyboardInterrupt would instead wait for them and end in a traceback.
        interrupted.set()
        app.close()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)
    try:
        ok = app.poll_all()
        if interrupted.is_set():
            print("spacelift-exporter: interrupted", file=sys.stderr)
            return 130
        body, _ = app.exposition.render("text/plain")
        sys.stdout.write(body.decode())
        for line in _failures(app):
            print(line, file=sys.stderr)
        return 0 if ok else 1
    finally:
        app.close()


def _failures(app: App) -> list[str]:
    """One line per distinct failure, naming the areas it hit (five areas, one cause)."""
    by_error: dict[tuple[str, str], list[str]] = {}
    for (account, area), st in app.store.items():
        if not st.ok:
            # The cause without the operation that met it: `Op: host: connection refused`.
            cause = (st.error or "").split(": ", 1)[-1] if st.error else "failed"
            by_error.setdefault((account, cause), []).append(area)
    return [
        f"{account} ({', '.join(areas)}): {cause}" for (account, cause), areas in by_error.items()
    ]


def _run(
    cfg: config.Config, before_stop: Any = None, announce: Any = None, on_serving: Any = None
) -> int:
    from exporter import scheduler, web, webhooks
    from exporter.webconfig import WebAuth

    try:
        auth = WebAuth(cfg.web_config_file)
    except config.ConfigError as exc:
        print(f"spacelift-exporter: web config error: {exc}", file=sys.stderr)
        return 2
    stop = threading.Event()  # set by a signal from here on, even during start-up
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    app = App(cfg)
    host, port = config.parse_listen(cfg.listen_address, "web.listen_address")
    hook, flusher = None, None
    if cfg.webhooks_enabled():
        receiver = webhooks.Receiver(cfg.accounts, app.observe_webhook, app.self_metrics)
        hook = webhooks.Endpoint(cfg.webhook.path, receiver, cfg.webhook.max_body_bytes)
        flusher = webhooks.Flusher(app.flush_webhooks, app.webhook_wake).start()
    own = cfg.webhook.listen_address if hook is not None else None
    try:
        server, _ = web.serve(app, host, port, auth, webhook=None if own else hook)
    except OSError as exc:
        log.error("cannot listen", extra={"address": cfg.listen_address, "error": exc.strerror})
        return 1
    hook_address = server.server_address
    if own is not None and hook is not None:
        try:
            whost, wport = config.parse_listen(own, "webhook.listen_address")
            hook_address = web.listen_webhook(server, app, whost, wport, auth, hook)
        except OSError as exc:
            log.error("cannot listen", extra={"address": own, "error": exc.strerror})
            server.shutdown()
            server.server_close()
            return 1
    if hook is not None:
        log.info(
            "receiving Spacelift webhooks",
            extra={
                "path": hook.path,
                "address": "{}:{}".format(*hook_address[:2]),
                "accounts": ",".join(a.name for a in cfg.accounts if a.webhook_secret),
            },
        )
    if on_serving is not None:
        on_serving(hook_address[1], hook, auth.tls_enabled)
    sched = scheduler.start(app)
    log.info(
        "serving",
        extra={
            "address": f"{host or '0.0.0.0'}:{server.server_address[1]}",
            "tls": auth.tls_enabled,
            "version": __version__,
            "accounts": ",".join(a.name for a in cfg.accounts),
        },
    )
    if announce:
        announce(host, server.server_address[1])
    stop.wait()
    log.info("shutting down")
    sched.shutdown(wait=False)
    server.shutdown()
    server.server_close()
    if flusher is not None:
        flusher.stop()  # serves and saves what the last deliveries recorded
    app.close()
    if before_stop:
        before_stop()
    return 0


DEMO_KEY_ID = "01HXSIMKEY0000000000000000"
DEMO_KEY_SECRET = "sim-secret"  # the simulator's built-in key; not a secret
DEMO_LISTEN = "127.0.0.1:9953"  # loopback unless told otherwise: a demo is not for the network
DEMO_SIM_PORT = 9954  # fixed, so the printed commands keep working from one demo to the next


def _demo(overrides: config.Overrides) -> int:
    from exporter.simulator.demo import start_demo_simulator

    sim_port = (
        DEMO_SIM_PORT if overrides.demo_simulator_port is None else overrides.demo_simulator_port
    )
    # Read first: a missing --config.file is an error before anything starts.
    raw = config.read_file(overrides.config_file) if overrides.config_file else {}
    try:
        sim = start_demo_simulator(port=sim_port)
    except OSError as exc:
        raise config.ConfigError(
            "--demo.simulator-port", f"cannot listen on 127.0.0.1:{sim_port}: {exc.strerror}"
        ) from None
    try:
        cfg = demo_config(overrides, raw, sim.url)
    except config.ConfigError:
        sim.stop()
        raise
    logsetup.setup(cfg.log_level, cfg.log_format)
    log.info("demo: built-in Spacelift simulator started", extra={"endpoint": sim.url})
    senders: list[Any] = []

    def send_webhooks(port: int, hook: Any, tls: bool) -> None:
        """The simulator posts its run events, signed, to the demo's webhook."""
        from exporter.simulator.webhooks import WebhookSender

        account = cfg.accounts[0]
        if hook is None or account.webhook_secret is None:
            return
        url = f"{'https' if tls else 'http'}://127.0.0.1:{port}{hook.path}"
        secret = account.webhook_secret.reveal().decode()
        senders.append(
            WebhookSender(sim.world, url, secret, account="demo", tick=1.0, verify=not tls).start()
        )
        log.info("demo: the simulator posts run events to the webhook", extra={"url": url})

    def stop() -> None:
        for sender in senders:
            sender.stop()
        sim.stop()

    return _run(
        cfg, before_stop=stop, announce=partial(_demo_hint, sim.url), on_serving=send_webhooks
    )


def demo_config(overrides: config.Overrides, raw: dict[str, Any], endpoint: str) -> config.Config:
    """The demo's configuration: the file's settings (web, log, areas) if one was given,
    its accounts replaced by the simulator, and loopback unless an address was chosen."""
    raw = dict(raw)
    overrides = replace(overrides, config_file=None)
    web = raw.get("web")
    if not (isinstance(web, dict) and web.get("listen_address")):
        overrides.listen_address = overrides.listen_address or DEMO_LISTEN
    raw["accounts"] = [{"name": "demo", "endpoint": endpoint}]
    # Faster than production defaults so the demo moves while you watch it.
    raw.setdefault(
        "areas",
        {
            "usage": {"interval": "30s"},
            "stacks": {"interval": "15s"},
            "runs": {"interval": "15s"},
            "access": {"interval": "1m"},
        },
    )
    env = {"SPACELIFT_API_KEY_ID": DEMO_KEY_ID, "SPACELIFT_API_KEY_SECRET": DEMO_KEY_SECRET}
    # The webhook secret as for `run` (a real Spacelift webhook pointed at the demo is then
    # accepted); without one, a random one so the simulator's own deliveries show webhooks.
    hook_var = overrides.webhook_secret_env_var or config.DEFAULT_WEBHOOK_SECRET_ENV
    env[hook_var] = os.environ.get(hook_var) or secrets.token_hex(16)
    return config.load(overrides, env=env, raw=raw)


def _demo_hint(endpoint: str, host: str, port: int) -> None:
    flag = f"--spacelift-api-endpoint {endpoint}"
    hint = "\n".join(
        [
            f"Demo: metrics on http://{host or 'localhost'}:{port}/ from a simulated Spacelift "
            f"account at {endpoint}",
            "Try the other commands against the simulator (its built-in API key, not a secret):",
            f"  export SPACELIFT_API_KEY_ID={DEMO_KEY_ID}"
            f" SPACELIFT_API_KEY_SECRET={DEMO_KEY_SECRET}",
            f"  spacelift-exporter check-config {flag}",
            f"  spacelift-exporter once {flag}",
            f"  spacelift-exporter doctor {flag}",
        ]
    )
    print(hint, file=sys.stderr, flush=True)
