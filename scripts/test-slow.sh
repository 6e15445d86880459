#!/bin/sh
# The slow suite (python -m pytest -m slow). The report's browser test needs Chromium: Debian's
# chromium package is installed first when it is missing (as root, or through sudo).
set -e
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium
fi
exec python -m pytest -m slow "$@"
