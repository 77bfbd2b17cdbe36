#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: unit, server extension, and end-to-end
# tests with real xpra, Chromium, Jupyter servers and the real service on loopback.
# Extra arguments go to pytest.
#
# Two runs: the in-process tests (tests/unit, tests/keepalive_jupyter) in parallel, two workers
# per CPU (pytest-xdist); then the end-to-end ones (tests/e2e, tests/integration: marked e2e by
# tests/conftest.py) three at a time (KEEPALIVE_TEST_E2E_WORKERS). A test spends much of its
# time waiting on its sessions, and sessions starting keep the cores busy only in bursts: on a
# 2-core machine two workers left the cores idle part of the time (/proc/stat over a whole run),
# three keep them busy.
# Tests sharing a module's fixture stay on one worker (--dist loadgroup, groups made by
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
# Two in-process workers per CPU: they wait on their Jupyter servers and subprocesses much of
# the time, and with one per CPU the cores were idle about half of this part.
in_process_workers=$(( 2 * $(nproc) ))
"${pytest[@]}" -m "not e2e" -n "$in_process_workers" "$@" || status=$?
in_process=$status
status=0
workers=${KEEPALIVE_TEST_E2E_WORKERS:-3}
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
