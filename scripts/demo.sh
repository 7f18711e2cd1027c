#!/usr/bin/env bash
# The exporter against its built-in Spacelift simulator: no account, no credentials.
# Then open http://localhost:9953/ (extra flags are passed on, e.g. --web.listen-address :9100).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e . </dev/null
exec .venv/bin/spacelift-exporter demo "$@"
