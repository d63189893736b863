#!/usr/bin/env bash
# The main job on a fresh machine: install (pinned) and build the executed site.
set -eo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
bash scripts/build_site.sh "$@"
