#!/usr/bin/env bash
# Build the executed site into _build/html (warnings are errors). --fresh drops the
# execution cache first, so every chapter is executed anew. --execute-only stops after the
# execution (the zoo trained, every chapter in the build's cache); a later run renders from it
# (scripts/test.sh runs the unit tests in between).
set -euo pipefail
cd "$(dirname "$0")/.."
fresh=0; execute_only=0
for arg in "$@"; do
  case "$arg" in
    --fresh) fresh=1 ;;
    --execute-only) execute_only=1 ;;
    *) echo "build_site.sh: unknown option '$arg' (it takes --fresh and --execute-only)" >&2; exit 2 ;;
  esac
done
[ -x .venv/bin/python ] || bash scripts/install.sh
. .venv/bin/activate
# The offline, seeded world (the inline plot backend among it): the site shows what CI tests.
set -a; . scripts/offline.env; set +a
if [ "$fresh" = 1 ]; then rm -rf _build/.jupyter_cache _build/jupyter_execute; fi
# jupyter-cache keys an execution on the notebook's code only. Key it on the pinned versions too
# (requirements/constraints.txt, which install.sh installs, and Python's version): after an
# upgrade every chapter re-executes instead of serving outputs computed with the old versions.
env_key=$( { cat requirements/constraints.txt; python -VV; } | sha256sum | cut -c1-16)
if [ -d _build/.jupyter_cache ] && [ "$(cat _build/.jupyter_cache.environment 2>/dev/null)" != "$env_key" ]; then
  echo "Pinned versions differ from those of the cached execution: every chapter re-executes."
  rm -rf _build/.jupyter_cache _build/jupyter_execute
fi
[ -x scripts/prepare_static.sh ] && bash scripts/prepare_static.sh
# Train the zoo and execute the notebooks with jupyter-cache's executor in two lanes of one torch
# thread each, into the build's execution cache (scripts/execute_chapters.py says why); the build
# below then finds every chapter there and only renders. COURSE_JOBS=1: one lane, torch on every core.
python scripts/execute_chapters.py
echo "$env_key" > _build/.jupyter_cache.environment   # the cache now holds executions under these versions
if [ "$execute_only" = 1 ]; then echo "Every chapter executed into _build/.jupyter_cache."; exit 0; fi
jupyter-book build . -W -n --keep-going
echo "Site built: open $PWD/_build/html/index.html"
