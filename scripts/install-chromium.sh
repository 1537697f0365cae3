#!/usr/bin/env bash
# Install headless Chromium (Debian package `chromium`) for tests/test_dashboard_browser.py.
# Idempotent: does nothing when chromium is already on PATH. CI calls this before the tests.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  echo "chromium already installed: $(command -v chromium)"
  exit 0
fi
echo "installing chromium (Debian package, with its libraries about 300 MB) for the dashboard's browser test"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends chromium
chromium --version
