#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: unit, server extension, and end-to-end
# tests with real xpra, Chromium, Jupyter servers and the real service on loopback.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
