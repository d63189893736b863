#!/usr/bin/env bash
# The student edition and its site (no solutions) into _build/student/_build/html: the site's
# vendored browser libraries first (as scripts/build_site.sh), then the package's builder.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/install.sh
. .venv/bin/activate
set -a; . scripts/offline.env; set +a
bash scripts/prepare_static.sh
python -m course_grading.student --out student_edition/ --build-site "$@"
