#!/usr/bin/env bash
# The main job on a fresh machine: install (pinned), train the course's models, execute the
# chapters and build the site. Prints how long each stage took:
#   install        pinned Python packages (.venv) and the site's npm libraries (skipped when
#                  nothing they depend on changed)
#   zoo training   the course's small models (course_utils.zoo; cached under COURSE_CACHE)
#   execution      the chapters executed by the build (jupyter-cache: only changed chapters)
#   build          the rest of the Jupyter Book build (parse, render, write the HTML)
# A re-run with nothing changed reuses all of it. `bash scripts/site.sh --fresh` drops the
# execution cache (every chapter is executed again); the zoo is kept (delete COURSE_CACHE for that).
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
stage_start=$T0
SUMMARY=""
stage() {  # close the previous stage (print its duration), then announce the next one
  local now; now=$(date +%s)
  if [ -n "${STAGE:-}" ]; then
    echo "=== ${STAGE}: $((now - stage_start)) s"
    SUMMARY+="$(printf '%-14s %6s s' "$STAGE" $((now - stage_start)))"$'\n'
  fi
  STAGE="$1"; stage_start=$now
  [ -n "$1" ] && echo "=== $1 ..."
  return 0
}

stage "install"
# install.sh runs pip, which takes a while even when everything is installed: skip it when the
# pins, the package's metadata and the script are those of the last successful install.
want=$(cat requirements/constraints.txt pyproject.toml scripts/install.sh 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ -x .venv/bin/python ] && [ "$(cat .venv/.course-install.sha256 2>/dev/null)" = "$want" ]; then
  echo "installed packages are up to date"
else
  bash scripts/install.sh
  echo "$want" > .venv/.course-install.sha256
fi
bash scripts/prepare_static.sh
. .venv/bin/activate
set -a; . scripts/offline.env; set +a

stage "zoo training"
# Trained here, not inside a chapter: a chapter's page then shows loading a model, not training it.
python - <<'PY'
import time
from course_utils import zoo
for name in zoo.ZOO:
    t = time.perf_counter()
    zoo.path(name, progress=False)
    print(f"{name}: ready in {time.perf_counter() - t:.0f} s ({zoo.zoo_dir() / name})")
PY

stage "execution + build"
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
bash scripts/build_site.sh "$@" 2>&1 | tee "$LOG"
# The build executes the chapters (myst-nb logs each execution); split its time in two.
build_s=$(( $(date +%s) - stage_start ))
# (|| true: with nothing executed grep finds no line, and pipefail would end the script here)
exec_s=$({ grep -o "Executed notebook in [0-9.]* seconds" "$LOG" || true; } | awk '{s += $4} END {printf "%d", s}')
executed=$(grep -c "Executed notebook in" "$LOG" || true)
cached=$(grep -c "Using cached notebook" "$LOG" || true)
STAGE=""
SUMMARY+="$(printf '%-14s %6s s  (%s chapters executed, %s from the cache)' execution "$exec_s" "$executed" "$cached")"$'\n'
SUMMARY+="$(printf '%-14s %6s s' build $((build_s - exec_s)))"$'\n'
echo "=== execution: ${exec_s} s (${executed} chapters executed, ${cached} from the cache)"
echo "=== build: $((build_s - exec_s)) s"
echo
echo "Stages of scripts/site.sh:"
printf '%s' "$SUMMARY"
printf '%-14s %6s s\n' total $(( $(date +%s) - T0 ))
