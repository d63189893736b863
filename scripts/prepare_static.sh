#!/usr/bin/env bash
# Put the browser libraries the built site serves itself into site/static/vendor, so that no
# page loads anything from a CDN (the site must work with no network at all):
#   MathJax 3 (math), require.js + d3 5.7.0 + jQuery 2.1.0 (bertviz's head/model views).
# And, for the browser tests only (not published with the site), axe-core into site/test-vendor:
# tests/site injects it into each page to check accessibility, with no network either.
# They come from the npm registry, pinned by site/package.json + site/package-lock.json
# (integrity hashes), installed with `npm ci`; course_book.sphinx_offline adds site/static to
# the book's static files and points the pages at these copies.
# Idempotent and fast: nothing is installed or copied again when the lock file is unchanged.
set -euo pipefail
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$SELF")/../site"
OUT=static/vendor
TEST_OUT=test-vendor
STAMP="$OUT/.lock.sha256"
want=$( (cat package-lock.json; cat "$SELF") | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -f "$OUT/mathjax/tex-mml-chtml.js" ] \
   && [ -f "$TEST_OUT/axe-core/axe.min.js" ]; then
  exit 0
fi
if ! command -v npm >/dev/null; then  # a bare Debian machine: npm from the distribution
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q npm
fi
command -v npm >/dev/null || { echo "prepare_static.sh: npm is missing (Debian: apt-get install -y npm)" >&2; exit 1; }
# npm ci: exactly the lock file's versions, verified against its integrity hashes.
npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
rm -rf "$OUT"
mkdir -p "$OUT/mathjax" "$OUT/requirejs" "$OUT/d3" "$OUT/jquery"
# MathJax: the TeX+MathML -> CommonHTML bundle (what Sphinx loads by default) plus the pieces it
# loads on demand (TeX extensions, CHTML woff fonts, menu, accessibility); not the SVG bundles.
MJ=node_modules/mathjax/es5
cp "$MJ/tex-mml-chtml.js" "$MJ/startup.js" "$MJ/core.js" "$MJ/loader.js" "$OUT/mathjax/"
mkdir -p "$OUT/mathjax/output"
cp -r "$MJ/input" "$MJ/ui" "$MJ/a11y" "$MJ/sre" "$MJ/adaptors" "$OUT/mathjax/"
cp -r "$MJ/output/chtml" "$MJ/output/chtml.js" "$OUT/mathjax/output/"
cp node_modules/mathjax/LICENSE "$OUT/mathjax/LICENSE"
# require.js (the AMD loader bertviz's output calls), d3 and jQuery (the modules it requires).
cp node_modules/requirejs/require.js "$OUT/requirejs/require.js"
cp node_modules/d3/dist/d3.min.js node_modules/d3/LICENSE "$OUT/d3/"
cp node_modules/jquery/dist/jquery.min.js "$OUT/jquery/"
cp node_modules/jquery/MIT-LICENSE.txt "$OUT/jquery/LICENSE" 2>/dev/null || cp node_modules/jquery/LICENSE.txt "$OUT/jquery/LICENSE" 2>/dev/null || true
# axe-core: the accessibility engine the browser tests run in each page (tests/site/sitecheck.py).
rm -rf "$TEST_OUT"
mkdir -p "$TEST_OUT/axe-core"
cp node_modules/axe-core/axe.min.js node_modules/axe-core/LICENSE "$TEST_OUT/axe-core/"
node -e '
const fs = require("fs");
const v = {};
for (const p of ["mathjax", "requirejs", "d3", "jquery", "axe-core"]) v[p] = require("./node_modules/" + p + "/package.json").version;
fs.writeFileSync(process.argv[1], JSON.stringify(v, null, 2) + "\n");
' "$OUT/versions.json"
echo "$want" > "$STAMP"
echo "prepare_static.sh: site/static/vendor ready: $(tr -d '\n ' < "$OUT/versions.json")"
