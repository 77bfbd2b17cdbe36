#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: unit, server extension, and end-to-end
# tests with real xpra, Chromium, Jupyter servers and the real service on loopback.
# Extra arguments go to pytest.
#
# Two runs: the in-process tests (tests/unit, tests/keepalive_jupyter) in parallel, a worker
# per CPU (pytest-xdist); then the end-to-end ones (tests/e2e, tests/integration: marked e2e by
# tests/conftest.py) two at a time (KEEPALIVE_TEST_E2E_WORKERS): a session's start keeps about one
# core busy, and a test spends much of its time waiting on its sessions, so two fill a 2-core
# machine. Tests sharing a module's fixture stay on one worker (--dist loadgroup, groups made by
# tests/conftest.py, which also gives each worker's services uids and displays of their own).
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
workers=${KEEPALIVE_TEST_E2E_WORKERS:-2}
echo "--- end-to-end tests ($workers at a time) ---"
"${pytest[@]}" -m e2e -n "$workers" --dist loadgroup "$@" || status=$?
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
