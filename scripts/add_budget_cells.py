#!/usr/bin/env python
"""Give each chapter its budget line: how long it ran and how much memory it took.

Idempotent: run it as often as you like (it updates the two cells it owns, never adds them twice):

* a Markdown cell right after the chapter's banner cell, whose numbers are glued from the run
  that built the site (``{glue:text}`budget_minutes``` ...), and a sentence on what changes on a GPU;
* a code cell at the very end that measures the run: ``course_utils.runtime.chapter_budget()``
  (time since ``banner()``, peak resident memory) and glues those numbers; tagged ``hide-input``,
  so the page shows its printed line and folds its code away.

The cells are recognised by their ids (``budget-statement``, ``budget-measure``). The numbers
appear once the notebook is executed (``python scripts/regen_notebooks.py chapters/X.ipynb``;
the site build executes it anyway).

    python scripts/add_budget_cells.py                 # every chapter of _toc.yml
    python scripts/add_budget_cells.py chapters/04_sampling.ipynb
    python scripts/add_budget_cells.py --check          # exit 1 if a chapter lacks its cells
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
STATEMENT_ID, MEASURE_ID = "budget-statement", "budget-measure"
MEASURE_TAG = "hide-input"  # myst-nb: the measuring cell's code folded behind a toggle

#: What changes on a GPU, chapter by chapter (the chapter's owner knows best; default below).
GPU_NOTES: dict[str, str] = {}
DEFAULT_GPU_NOTE = ("On a GPU runtime (e.g. Colab) the banner's device line says `cuda` and the models run "
                    "there, so the compute-heavy cells take a fraction of this time.")
ZOO_NOTE = ("The first run on a new machine also trains the course's small models once (they are cached "
            "afterwards); the time above does not include that.")
SMOLLM2_NOTE = ("Offline, the first run on a new machine also dequantizes SmolLM2's 4-bit weights once "
                "(cached afterwards).")

MEASURE_SOURCE = """\
# The budget line at the top of this chapter comes from here: the time since the banner
# cell and the peak memory of this run (glued into the page when the site is built).
from course_utils.runtime import chapter_budget

_ = chapter_budget()"""


def statement_source(stem: str, uses_zoo: bool, uses_smollm2: bool = False) -> str:
    """The Markdown of the budget line for chapter ``stem`` (e.g. ``04_sampling``)."""
    text = ("**Budget.** When this page was built, the whole chapter ran in {glue:text}`budget_minutes` min "
            "on {glue:text}`budget_cpus` CPU cores with {glue:text}`budget_threads`, with a peak memory of "
            "{glue:text}`budget_peak_gb` GB (measured by the last cell). " + GPU_NOTES.get(stem, DEFAULT_GPU_NOTE))
    return text + (" " + ZOO_NOTE if uses_zoo else "") + (" " + SMOLLM2_NOTE if uses_smollm2 else "")


def _banner_index(nb: nbformat.NotebookNode) -> int:
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and re.search(r"\bbanner\(", cell.source):
            return i
    raise ValueError("no cell calls banner(): the budget is measured from the banner, add it first")


def add_budget_cells(nb: nbformat.NotebookNode, stem: str) -> bool:
    """Insert or update the two budget cells of ``nb``; True if the notebook changed."""
    before = nbformat.writes(nb)
    uses_zoo = any(c.cell_type == "code" and re.search(r"\bzoo\b", c.source) for c in nb.cells)
    uses_smollm2 = any(c.cell_type == "code" and "SMOLLM2" in c.source for c in nb.cells)
    cells = [c for c in nb.cells if c.get("id") not in (STATEMENT_ID, MEASURE_ID)]
    old = {c.get("id"): c for c in nb.cells if c.get("id") in (STATEMENT_ID, MEASURE_ID)}
    nb.cells = cells
    statement = old.get(STATEMENT_ID) or nbformat.v4.new_markdown_cell(id=STATEMENT_ID)
    statement.source = statement_source(stem, uses_zoo, uses_smollm2)
    measure = old.get(MEASURE_ID) or nbformat.v4.new_code_cell(id=MEASURE_ID)
    measure.source = MEASURE_SOURCE
    # Bookkeeping, not what a reader came for: the page folds the code away (its printed line stays).
    tags = measure.metadata.setdefault("tags", [])
    if MEASURE_TAG not in tags:
        tags.append(MEASURE_TAG)
    nb.cells.insert(_banner_index(nb) + 1, statement)
    nb.cells.append(measure)
    return nbformat.writes(nb) != before


def has_budget_cells(nb: nbformat.NotebookNode) -> bool:
    ids = [c.get("id") for c in nb.cells]
    return (STATEMENT_ID in ids and ids[-1] == MEASURE_ID
            and ids.index(STATEMENT_ID) == _banner_index(nb) + 1)


def _chapters() -> list[Path]:
    from book_toc import chapter_notebooks  # scripts/: this script's own folder

    return [REPO / f"{c}.ipynb" for c in chapter_notebooks(REPO)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every chapter of _toc.yml")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a chapter lacks its cells")
    args = parser.parse_args(argv)
    missing = []
    for path in args.notebooks or _chapters():
        nb = nbformat.read(path, as_version=4)
        if args.check:
            if not has_budget_cells(nb):
                missing.append(str(path))
            continue
        changed = add_budget_cells(nb, path.stem)
        if changed:
            nbformat.write(nb, path)
        print(f"{path}: {'budget cells added/updated' if changed else 'up to date'}")
    if missing:
        print("no budget cells (run scripts/add_budget_cells.py): " + ", ".join(missing), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
