#!/usr/bin/env bash
# Set up (if needed) and run the service on its embedded default: each session gets its own
# Jupyter server. Extra arguments go to 'keepalive serve' (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/keepalive serve "$@"
