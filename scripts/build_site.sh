#!/usr/bin/env bash
# Build the executed site into _build/html (warnings are errors). --fresh drops the
# execution cache first, so every chapter is executed anew.
set -eo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/install.sh
. .venv/bin/activate
# The inline backend, as in a notebook: with Agg, plt.show() would leave no figure in the site.
export MPLBACKEND=module://matplotlib_inline.backend_inline PYTHONHASHSEED=0 TOKENIZERS_PARALLELISM=false
if [ "${1:-}" = "--fresh" ]; then rm -rf _build/.jupyter_cache _build/jupyter_execute; fi
[ -x scripts/prepare_static.sh ] && bash scripts/prepare_static.sh
jupyter-book build . -W -n --keep-going
echo "Site built: open $PWD/_build/html/index.html"
