"""Move the exercises out of the chapter notebooks: each chapter ends with a link to its own
exercise page, ``chapters/NN_exercises.ipynb``.

    python scripts/move_exercises.py            # rewrite the chapters that still hold exercises
    python scripts/move_exercises.py --check    # change nothing; exit 1 if a chapter would change

For every chapter ``chapters/NN_<name>.ipynb`` that has an exercise notebook
``chapters/NN_exercises.ipynb`` beside it:

1. everything from the chapter's ``## Exercises`` heading to the end of the notebook is removed
   (when the heading shares a cell with the Summary, the Summary part of that cell stays);
2. one markdown cell is appended: an ``## Exercises`` heading and a MyST ``{doc}`` link to the
   exercise page, with the titles of its exercises (read from its ``exercise-start`` directives).

Running it again changes nothing (the appended cell is the new ``## Exercises`` section, and it is
rebuilt identically). A chapter without an exercise notebook is left alone. Prose elsewhere in a
chapter that still mentions "the exercise(s)" is listed, for a person to reword.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
HEADING = re.compile(r"^## Exercises\s*$", re.M)
START = re.compile(r"^```\{exercise-start\}[ \t]*(?P<title>.*?)[ \t]*$", re.M)
MENTION = re.compile(r"\bexercises?\b", re.I)


def exercise_titles(path: Path) -> list[str]:
    """The titles of the exercises of an exercise notebook, in order."""
    nb = nbformat.read(path, as_version=4)
    return [m.group("title") or "Exercise" for c in nb.cells if c.cell_type == "markdown"
            for m in START.finditer(c.source)]


def link_cell_source(chapter: Path, exercises: Path) -> str:
    titles = exercise_titles(exercises)
    lines = ["## Exercises", "",
             f"This chapter's exercises are on their own page, {{doc}}`{exercises.stem}`. Each states its difficulty "
             "and time; most carry the chapter's ideas to something it did not show (one marked *practice* "
             "rebuilds a piece of the chapter instead: write it without reading the chapter's version, then "
             "compare), and each check says what is wrong, not only whether."]
    if titles:
        lines += [""] + [f"* {t}" for t in titles]
    return "\n".join(lines)


def move(chapter: Path, exercises: Path, *, write: bool) -> tuple[bool, list[str]]:
    """Rewrite ``chapter`` (if ``write``); return (whether it changes, prose still mentioning exercises)."""
    nb = nbformat.read(chapter, as_version=4)
    where = next((i for i, c in enumerate(nb.cells) if c.cell_type == "markdown" and HEADING.search(c.source)), None)
    if where is None:
        raise SystemExit(f"move_exercises.py: {chapter} has no '## Exercises' heading; nothing to cut")
    if nb.cells[where].get("id") == "exercises-link":  # moved already: cells after it (the budget cell) stay
        return False, []
    cells = list(nb.cells[:where])
    before = nb.cells[where].source[: HEADING.search(nb.cells[where].source).start()].rstrip()
    if before:  # the Summary shared the cell with the heading: keep it
        kept = nbformat.from_dict(dict(nb.cells[where]))
        kept.source = before
        cells.append(kept)
    link = nbformat.v4.new_markdown_cell(link_cell_source(chapter, exercises))
    link["id"] = "exercises-link"  # a fixed id: the same bytes on every run
    cells.append(link)
    changed = _sources(cells) != _sources(nb.cells)
    mentions = [f"{chapter.name}, cell {i}: {line.strip()[:100]}" for i, c in enumerate(cells[:-1])
                if c.cell_type == "markdown" for line in c.source.splitlines() if MENTION.search(line)]
    if changed and write:
        nb.cells = cells
        nbformat.write(nb, chapter)
    return changed, mentions


def _sources(cells: list) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source) for c in cells]


def pairs(root: Path) -> list[tuple[Path, Path]]:
    """(chapter, its exercise notebook) for every chapter that has one."""
    out = []
    for chapter in sorted((root / "chapters").glob("[0-9][0-9]_*.ipynb")):
        number = chapter.name[:2]
        exercises = chapter.with_name(f"{number}_exercises.ipynb")
        if chapter != exercises and exercises.is_file():
            out.append((chapter, exercises))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a chapter would change")
    ap.add_argument("--root", type=Path, default=ROOT, help="the book's folder (default: this repository)")
    args = ap.parse_args(argv)
    found = pairs(args.root)
    if not found:
        print(f"move_exercises.py: no chapters/NN_exercises.ipynb under {args.root}", file=sys.stderr)
        return 1
    changed = []
    for chapter, exercises in found:
        did, mentions = move(chapter, exercises, write=not args.check)
        if did:
            changed.append(chapter.name)
            print(("would move " if args.check else "moved ") + f"{chapter.name}'s exercises -> {exercises.name}")
        for m in mentions:
            print(f"  note: still mentions exercises: {m}")
    if args.check and changed:
        return 1
    if not changed:
        print(f"{len(found)} chapters already link to their exercise pages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
