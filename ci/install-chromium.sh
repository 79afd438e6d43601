#!/usr/bin/env bash
# Install Debian's chromium, which the docs build runs headless to screenshot the demo's
# reports (docs/screenshots.py, tests/test_docs.py). Idempotent; needs root (or sudo) and apt.
set -euo pipefail
for name in chromium chromium-browser google-chrome; do
  if command -v "$name" >/dev/null; then
    echo "chromium already installed: $(command -v "$name")"
    exit 0
  fi
done
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-liberation fonts-dejavu-core
command -v chromium
