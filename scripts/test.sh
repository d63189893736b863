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

stage "lint and types (ruff, mypy)"
# Fast, and first: a lint failure should not wait for ten minutes of tests. The rules and the
# reasons for them are in pyproject.toml ([tool.ruff], [tool.mypy]).
ruff check src tests scripts .ci
mypy

stage "unit tests"
run_pytest -q -m "not browser and not online" tests

stage "book build (-W -n, fresh execution of every chapter)"
# The one execution of the chapters: a cell that raises fails the build (nb_execution_raise_on_error).
# nbval would execute every chapter a second time only to compare the cells marked
# NBVAL_CHECK_OUTPUT; tests/site/test_executed_chapters.py makes that comparison on this execution.
bash scripts/build_site.sh --fresh

stage "executed chapters (nbval's comparison) and the site in headless Chromium"
run_pytest -q -m browser tests/site
stage "online path (every chapter against a stand-in hub, network closed)"
# What Colab runs: COURSE_OFFLINE=0, every hub name resolved from tiny stand-ins of the same
# classes (tests/online/standin_hub.py), and the install the chapters' first cell does.
run_pytest -q -m online tests/online

stage ""
echo "=== total: $(( $(date +%s) - T0 )) s"
