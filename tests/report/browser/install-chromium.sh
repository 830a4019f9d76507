#!/usr/bin/env bash
# Installs Debian's chromium for the report's browser test (tests/report/test_page_browser.py), if missing.
# Idempotent: does nothing when `chromium` is on PATH. Needs root (or sudo) and the Debian archive.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null
