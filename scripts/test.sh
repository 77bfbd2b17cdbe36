#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: unit, server extension, and end-to-end
# tests with real xpra, Chromium, Jupyter servers and the real service on loopback.
# Extra arguments go to pytest.
#
# Two runs: the in-process tests (tests/unit, tests/keepalive_jupyter) in parallel, a worker
# per CPU (pytest-xdist); then the end-to-end ones (tests/e2e, tests/integration: marked e2e by
# tests/conftest.py) one at a time, since each needs the machine's CPU for its own sessions.
# Arguments that select by mark (-m) make it one plain run instead.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --test
pytest=(.venv/bin/python -m pytest -p no:cacheprovider)

for argument in "$@"; do
  if [[ "$argument" == "-m" || "$argument" == -m?* ]]; then
    exec "${pytest[@]}" "$@"
  fi
done

# pytest's exit code 5 means "no tests collected": a selection with none of one kind is fine.
status=0
"${pytest[@]}" -m "not e2e" -n logical "$@" || status=$?
in_process=$status
status=0
echo "--- end-to-end tests (one at a time) ---"
"${pytest[@]}" -m e2e "$@" || status=$?
end_to_end=$status

if [[ $in_process -eq 5 && $end_to_end -eq 5 ]]; then
  exit 5
fi
for code in "$in_process" "$end_to_end"; do
  if [[ $code -ne 0 && $code -ne 5 ]]; then
    exit "$code"
  fi
done
exit 0
