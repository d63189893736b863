#!/usr/bin/env bash
# Install everything (pinned) and run every test, offline: unit tests, the book built with
# warnings as errors from a fresh execution of every chapter (each chapter executes once), the
# executed chapters' checked outputs compared nbval's way, the built site in headless Chromium,
# and the chapters' online path.
set -euo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
stage_start=$T0
stage() {  # print how long the previous stage took, then announce the next one
  local now; now=$(date +%s)
  [ -n "${STAGE:-}" ] && echo "=== ${STAGE}: $((now - stage_start)) s"
  STAGE="$1"; stage_start=$now
  [ -n "$1" ] && echo "=== $1 ..."
  return 0
}
# pytest exits 5 when it collected nothing: that is a failure here (a suite that ran no test).
run_pytest() {
  set +e; python -m pytest "$@"; local rc=$?; set -e
  if [ $rc -eq 5 ]; then echo "pytest collected no tests for: $*" >&2; return 1; fi
  return $rc
}

stage "install (pinned)"
bash scripts/install.sh
bash scripts/install_browser.sh   # Debian chromium for tests/site (apt-get only when missing)
. .venv/bin/activate

# The offline world, explicitly: CI has no network, and nothing may wait on a hub.
set -a; . scripts/offline.env; set +a
export COURSE_EXERCISES_STRICT=1   # a failing check in the book (a wrong solution) fails the run
export COURSE_CACHE="${COURSE_CACHE:-$PWD/.cache/course}"   # the zoo trains once per run, shared below

stage "lint (ruff, import-linter)"
# Fast, and first: a lint failure should not wait for ten minutes of tests. The rules and the
# reasons for them are in pyproject.toml ([tool.ruff], [tool.mypy]).
ruff check src tests scripts .ci chapters benchmarks   # chapters: code lines fit the page (chapters/ruff.toml)
lint-imports --no-cache   # import boundaries: .importlinter (the runtime does not import the grader; no cycles)

stage "zoo training and execution of every chapter (parallel lanes), types (mypy) beside them"
# The book's one execution, first: two lanes of one torch thread (scripts/execute_chapters.py says
# why), the zoo's training and then the notebooks that use it, and beside it the other notebooks,
# into the build's jupyter-cache. In one stage, not a zoo stage and a later build stage, so no core
# idles while the zoo trains (the notebooks that need no zoo model fill the other). A cell that raises fails the run. mypy (one process,
# about a minute on one core) runs beside the lanes instead of before them, for the same reason.
MYPY_LOG=$(mktemp)
mypy > "$MYPY_LOG" 2>&1 &
MYPY_PID=$!
trap 'kill "$MYPY_PID" 2>/dev/null || true; rm -f "$MYPY_LOG"' EXIT
bash scripts/build_site.sh --fresh --execute-only
set +e; wait "$MYPY_PID"; mypy_rc=$?; set -e
echo "--- mypy:"; cat "$MYPY_LOG"
if [ "$mypy_rc" -ne 0 ]; then echo "mypy failed (its output is above)" >&2; exit 1; fi

# Two pytest processes (pytest-xdist), one torch thread each, for the same reason: the tests'
# models are small, and a second thread adds little to one of them. --dist loadfile keeps a test
# file's module fixtures (a trained toy model, a graded class) in one process. The zoo is trained
# (COURSE_CACHE, above).
LANES=$(python -c 'import os; print(min(os.cpu_count() or 1, 4))')
stage "unit tests"
OMP_NUM_THREADS=1 run_pytest -q -n "$LANES" --dist loadfile --durations=8 -m "not browser and not online" tests

stage "book build (-W -n, rendering the execution above)"
# Every chapter is in the cache from the stage above, so the build only renders; warnings are
# errors. nbval would execute every chapter a second time only to compare the cells marked
# NBVAL_CHECK_OUTPUT; tests/site/test_executed_chapters.py makes that comparison on this execution.
bash scripts/build_site.sh

stage "executed chapters (nbval's comparison) and the site in headless Chromium"
run_pytest -q -m browser tests/site
stage "online path (every chapter against a stand-in hub, network closed)"
# What Colab runs: COURSE_OFFLINE=0, every hub name resolved from tiny stand-ins of the same
# classes (tests/online/standin_hub.py), and the install the chapters' first cell does.
# (--dist load: each chapter is one test, and the chapters spread over the processes.)
OMP_NUM_THREADS=1 run_pytest -q -n "$LANES" --dist load -m online tests/online

stage ""
echo "=== total: $(( $(date +%s) - T0 )) s"
