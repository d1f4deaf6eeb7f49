#!/usr/bin/env bash
# Set up everything the tests need on a fresh machine, then run the whole suite.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -e ".[test]"
# The real MicroPython VM (WebAssembly build, pinned in package-lock.json) for the on-VM tests.
npm ci --silent --no-audit --no-fund

python3 -m pytest "$@"
