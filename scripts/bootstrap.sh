#!/usr/bin/env bash
# Set up .venv with the project and its dev tools; install missing Debian packages when root.
# Sourced by scripts/run and scripts/test (idempotent: a no-op when nothing changed).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${OPENCHAT_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"

need_apt=()
have_deb() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
if command -v dpkg-query >/dev/null 2>&1; then
  # venv support for Debian's own python3; Xvfb + Mesa for the desktop app's headless tests.
  if ! "$PY" -c "import ensurepip, venv" >/dev/null 2>&1; then need_apt+=(python3-venv); fi
  for pkg in ${OPENCHAT_APT_PACKAGES:-}; do have_deb "$pkg" || need_apt+=("$pkg"); done
fi
if ((${#need_apt[@]})); then
  if [ "$(id -u)" = 0 ]; then
    echo "bootstrap: apt-get install ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "bootstrap: missing Debian packages: ${need_apt[*]} (run as root or: sudo apt-get install ${need_apt[*]})" >&2
    exit 1
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "bootstrap: creating $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.openchat-installed"
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
  echo "bootstrap: installing the project and its dev tools into $VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e "$ROOT[dev]"
  touch "$stamp"
fi
export PATH="$VENV/bin:$PATH"
