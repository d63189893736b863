#!/usr/bin/env bash
# The newest-versions lane (scripts/newest_lane.py): install the newest versions pyproject.toml's
# ranges allow into .venv-newest and execute every chapter offline; a failure names the package
# and version that broke it. scripts/test.sh stays the pinned lane.
set -euo pipefail
cd "$(dirname "$0")/.."
set -a; . scripts/offline.env; set +a   # the offline world, inherited by the lane's runs
exec python3 scripts/newest_lane.py "$@"
