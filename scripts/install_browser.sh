#!/usr/bin/env bash
# Install Debian's headless-capable Chromium for the browser tests (tests/site), and the fonts a
# reader's browser has, if missing. Playwright's own browser download needs the internet;
# Debian's packages come from the distribution's mirror, which CI reaches.
#   fonts-dejavu-core       the page text and the math, with no network
#   fonts-noto-color-emoji  emoji and marks (✅ ❌ 🤗) as readers see them, not as empty boxes
# Idempotent: a no-op when Chromium and both fonts are installed.
set -euo pipefail
CHROMIUM=${COURSE_CHROMIUM:-/usr/bin/chromium}
PACKAGES=(chromium fonts-dejavu-core fonts-noto-color-emoji)
missing=()
[ -x "$CHROMIUM" ] || missing+=(chromium)
for font in fonts-dejavu-core fonts-noto-color-emoji; do
  dpkg-query -W -f='${Status}' "$font" 2>/dev/null | grep -q "install ok installed" || missing+=("$font")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
[ -x "$CHROMIUM" ] || { echo "install_browser.sh: $CHROMIUM is still missing" >&2; exit 1; }
fc-list 2>/dev/null | grep -qi "Noto Color Emoji" || { echo "install_browser.sh: the emoji font is not visible to fontconfig" >&2; exit 1; }
"$CHROMIUM" --version
