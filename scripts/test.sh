#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run the whole suite.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# mosquitto: the real MQTT broker of the gateway and HIL tests (Debian puts it in /usr/sbin);
# mbpoll: a C Modbus master (libmodbus) the meter HIL tests read our meter with, as technicians do;
# zbar-tools (zbarimg): an independent QR decoder for the TR005 labels the field tool prints.
missing=""
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing="mosquitto"
command -v mbpoll >/dev/null || missing="$missing mbpoll"
command -v zbarimg >/dev/null || missing="$missing zbar-tools"  # scans the device labels' QR codes
command -v chromium >/dev/null || missing="$missing chromium"  # the status page, in a real browser
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
    else
        echo "test.sh: not installed:$missing; the tests that need them will be skipped" \
             "(sudo apt-get install$missing)" >&2
    fi
fi
python3 -m pip install --quiet --disable-pip-version-check -e ".[test]"
# The real MicroPython VM (WebAssembly build) for the on-VM tests, and playwright-core to drive
# chromium for the status page's test; both pinned in package-lock.json.
npm ci --silent --no-audit --no-fund

python3 -m pytest "$@"
