"""Which certificates the Spacelift client trusts.

Self-hosted Spacelift often sits behind a private CA. ``http.ca_cert_path`` (the official
exporter's ``--ca-cert-path``) adds that CA to the trust the client has anyway; it never
replaces it, so a proxy or SaaS endpoint with a public certificate keeps working.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import certifi  # httpx's own default bundle (httpx depends on it)


def verify(ca_cert_path: Path | None) -> ssl.SSLContext | bool:
    """The ``verify`` argument for httpx: its default, or the system's, httpx's and ours."""
    if ca_cert_path is None:
        return True
    ctx = ssl.create_default_context()  # the system's trust store
    ctx.load_verify_locations(cafile=certifi.where())
    ctx.load_verify_locations(cafile=str(ca_cert_path))
    return ctx
