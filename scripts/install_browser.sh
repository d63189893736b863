#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for the browser tests (tests/site), if missing.
# Playwright's own browser download needs the internet; Debian's package comes from the
# distribution's mirror, which CI reaches. Idempotent: a no-op when /usr/bin/chromium exists.
set -euo pipefail
CHROMIUM=${COURSE_CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# fonts-dejavu-core: a font for the page text and math that needs no network either.
$SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
[ -x "$CHROMIUM" ] || { echo "install_browser.sh: $CHROMIUM is still missing" >&2; exit 1; }
"$CHROMIUM" --version
