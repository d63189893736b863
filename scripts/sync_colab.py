"""Copy the repository named in _config.yml into the Colab set-up cell of every chapter notebook
(the chapters and their exercise pages, ``chapters/NN_*.ipynb``).

The repository is named once, in ``_config.yml`` (``repository.url`` and ``repository.branch``).
On Colab the second cell of each chapter installs ``course_utils`` from it::

    # Set-up: on Colab, install the course's helper package (a no-op anywhere else).
    import sys
    if "google.colab" in sys.modules:
        !pip install -q "git+https://github.com/OWNER/REPO@BRANCH"

    python scripts/sync_colab.py            # rewrite the install line where it differs
    python scripts/sync_colab.py --check    # exit 1 (and say where) when a chapter disagrees

Only the URL in the install line changes; the rest of the notebook is left as it is. The URL
goes without the ``course-utils @`` name pip also accepts: with it the line ran past the book's
88-character code column (pip reads the name from the package it builds).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
COLAB_MARKER = '"google.colab" in sys.modules'
# The install line's requirement: "git+<url>[@<ref>]" in double quotes.
_INSTALL = re.compile(r'(!pip install [^"\n]*")([^"\n]*)(")')


def install_spec(config_path: Path = ROOT / "_config.yml") -> str:
    """The requirement the Colab cell must install, from ``_config.yml``'s repository."""
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}
    repo = config.get("repository") or {}
    url = str(repo.get("url") or "").rstrip("/")
    if not url.startswith("https://"):
        raise SystemExit(f"sync_colab.py: {config_path} needs repository.url (an https:// URL), got {url!r}")
    url = url.removesuffix(".git")
    branch = str(repo.get("branch") or "").strip()
    return f"git+{url}" + (f"@{branch}" if branch else "")


def chapter_notebooks(root: Path = ROOT) -> list[Path]:
    """The chapter notebooks, in order: chapters and exercise pages (``NN_exercises.ipynb``)."""
    return sorted((root / "chapters").glob("[0-9]*.ipynb"))


def sync_notebook(path: Path, spec: str, *, write: bool) -> str | None:
    """Make ``path``'s Colab cell install ``spec``.

    Returns None when the notebook already agrees, else a one-line description of the
    difference (and, when ``write``, rewrites the notebook where only the install line changed).
    """
    nb = nbformat.read(path, as_version=4)
    cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and COLAB_MARKER in c.source]
    if not cells:
        return f"{path.name}: no Colab set-up cell (a code cell with `if {COLAB_MARKER}:`); see NOTEBOOKS.md"
    index = cells[0]
    if index != 1:
        return f"{path.name}: the Colab set-up cell is cell {index + 1}, it must be the second cell"
    cell = nb.cells[index]
    matches = list(_INSTALL.finditer(cell.source))
    if len(matches) != 1:
        return f'{path.name}: the set-up cell needs exactly one line `!pip install -q "{spec}"`'
    current = matches[0].group(2)
    if current == spec:
        return None
    if write:
        m = matches[0]
        cell.source = cell.source[: m.start(2)] + spec + cell.source[m.end(2):]
        nbformat.write(nb, path)
    return f"{path.name}: installs {current!r}, _config.yml says {spec!r}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a chapter disagrees")
    ap.add_argument("--root", type=Path, default=ROOT, help="the book's folder (default: this repository)")
    args = ap.parse_args(argv)
    spec = install_spec(args.root / "_config.yml")
    notebooks = chapter_notebooks(args.root)
    if not notebooks:
        print(f"sync_colab.py: no chapters/*.ipynb under {args.root}", file=sys.stderr)
        return 1
    problems = []
    for nb in notebooks:
        diff = sync_notebook(nb, spec, write=not args.check)
        if diff:
            problems.append(diff)
            print(("MISMATCH " if args.check else "fixed ") + diff)
    unfixable = [p for p in problems if "installs" not in p]
    if args.check and problems:
        print(f"{len(problems)} of {len(notebooks)} chapters disagree with _config.yml; "
              "run `python scripts/sync_colab.py`", file=sys.stderr)
        return 1
    if unfixable:
        return 1
    print(f"{len(notebooks)} notebooks (chapters and exercise pages) install {spec!r} on Colab")
    return 0


if __name__ == "__main__":
    sys.exit(main())
