#!/usr/bin/env bash
# Best effort: a headless Chromium plus the websocket-client package for tests/serving/test_playground.py
# (which drives Chromium over the DevTools protocol). Never fails the CI: without a browser the
# playground test skips and says why. Usage: bash .ci/install_browser.sh
set -u
cd "$(dirname "$0")/.." || exit 0
log() { echo "install_browser: $*"; }

have_browser() { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }

if have_browser; then
  log "browser present: $(command -v chromium || command -v chromium-browser)"
elif command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
      log "not root and no passwordless sudo; skipping the chromium install"; fi
  fi
  if [ "$(id -u)" = "0" ] || [ -n "$SUDO" ]; then
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 $SUDO apt-get update -qq >/dev/null 2>&1 || log "apt-get update failed"
    timeout 900 $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
      || timeout 900 $SUDO apt-get install -y -qq --no-install-recommends chromium-browser >/dev/null 2>&1 \
      || log "could not install chromium with apt-get"
  fi
else
  log "no apt-get here; install Chromium by hand to run the playground test"
fi

PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY="$(command -v python3 || true)"
if [ -n "$PY" ]; then
  "$PY" -c "import websocket" 2>/dev/null \
    || timeout 300 "$PY" -m pip install -q "websocket-client>=1.6" >/dev/null 2>&1 \
    || log "could not install websocket-client"
fi

have_browser && log "ok" || log "no browser: tests/serving/test_playground.py will skip"
exit 0
