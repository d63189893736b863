#!/usr/bin/env bash
# The main job on a fresh machine: install (pinned), train the course's models, execute the
# chapters and build the site. Prints how long each stage took:
#   install        pinned Python packages (.venv) and the site's npm libraries (skipped when
#                  nothing they depend on changed)
#   zoo training   the course's small models (course_utils.zoo; cached under COURSE_CACHE)
#   execution      the notebooks, executed into the build's cache (jupyter-cache: only changed ones)
#   build          the Jupyter Book build proper (parse, render, write the HTML)
# Zoo training and execution share parallel lanes (scripts/execute_chapters.py), so each is given
# as the time its lanes spent on it, and both together as wall-clock time.
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

stage "zoo training + execution + build"
# build_site.sh trains the zoo and executes the notebooks in two lanes (scripts/execute_chapters.py:
# the zoo, then the chapters that use it; the others beside it; one torch thread a lane), then builds.
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
bash scripts/build_site.sh "$@" 2>&1 | tee "$LOG"
all_s=$(( $(date +%s) - stage_start ))
STAGE=""
read -r wall_s zoo_s nb_s lanes < <(python - "$LOG" <<'PY'
import json, sys
lines = [l for l in open(sys.argv[1]) if l.startswith("SUMMARY ")]
s = json.loads(lines[-1][8:]) if lines else {"wall_seconds": 0, "zoo_seconds": 0, "notebook_seconds": 0, "lanes": 0}
print(round(s["wall_seconds"]), round(s["zoo_seconds"]), round(s["notebook_seconds"]), s["lanes"])
PY
)
executed=$(grep -c ": executed in" "$LOG" || true)
cached=$(grep -c ": in the cache" "$LOG" || true)
SUMMARY+="$(printf '%-14s %6s s  (lane time)' "zoo training" "$zoo_s")"$'\n'
SUMMARY+="$(printf '%-14s %6s s  (lane time: %s notebooks executed, %s from the cache)' execution "$nb_s" "$executed" "$cached")"$'\n'
SUMMARY+="$(printf '%-14s %6s s  (wall clock of both, on %s lanes side by side)' "  together" "$wall_s" "$lanes")"$'\n'
SUMMARY+="$(printf '%-14s %6s s' build $((all_s - wall_s)))"$'\n'
echo
echo "Stages of scripts/site.sh:"
printf '%s' "$SUMMARY"
printf '%-14s %6s s\n' total $(( $(date +%s) - T0 ))
