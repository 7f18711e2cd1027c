#!/usr/bin/env bash
# Everything the tests need, on a fresh Debian machine, then the tests themselves:
# Debian's prometheus (promtool) and prometheus-alertmanager (amtool), a virtualenv with the
# project and its test extras, lint, format, type checks and pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v amtool >/dev/null 2>&1 || missing+=(prometheus-alertmanager)
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]' </dev/null

paths=(exporter tests bench grafana alerts deploy)
existing=()
for p in "${paths[@]}"; do [ -e "$p" ] && existing+=("$p"); done
.venv/bin/ruff check "${existing[@]}"
.venv/bin/ruff format --check "${existing[@]}"
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
