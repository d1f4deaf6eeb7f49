#!/usr/bin/env bash
# Set up what the demo needs on a fresh machine, then run it: emulated poles -> packet
# forwarders -> the gateway -> MQTT, live in the terminal (Ctrl-C stops it cleanly).
# Usage: bash scripts/demo.sh [options of `python3 -m sim demo`, e.g. --poles 12 --duration 7200]
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -e .
# The MicroPython WebAssembly VM (pinned in package-lock.json) runs one pole's firmware;
# without node/npm every pole runs on CPython.
if command -v npm >/dev/null 2>&1; then
    npm ci --silent --no-audit --no-fund
else
    echo "demo: npm not found, so no pole runs on the MicroPython VM" >&2
fi

exec python3 -m sim demo "$@"
