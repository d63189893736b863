#!/usr/bin/env bash
# Build the executed site into _build/html (warnings are errors). --fresh drops the
# execution cache first, so every chapter is executed anew.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/install.sh
. .venv/bin/activate
# The offline, seeded world (the inline plot backend among it): the site shows what CI tests.
set -a; . scripts/offline.env; set +a
if [ "${1:-}" = "--fresh" ]; then rm -rf _build/.jupyter_cache _build/jupyter_execute; fi
[ -x scripts/prepare_static.sh ] && bash scripts/prepare_static.sh
jupyter-book build . -W -n --keep-going
echo "Site built: open $PWD/_build/html/index.html"
