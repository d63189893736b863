"""The student edition: chapter notebooks without solutions, and a site built without them.

Usage (from the book's root)::

    python -m course_grading.student --out student_edition/      # notebooks
    python -m course_grading.student --build-site                # site -> _build/student/

A chapter notebook (the book edition) holds, for each exercise, a stub cell (tag
``exercise-stub``), a gated solution (``solution-start`` ... ``solution-end`` markdown cells
around real, executed code) and a one-line check cell (tag ``exercise-check``). The student
notebook keeps the task, the stub and the check, drops the gated solution (and any code
cell tagged ``solution``), turns the sphinx-exercise directives into plain Markdown (Jupyter
and Colab do not render them) and clears every output. Its metadata lists the exercises
(``metadata.course.exercises``), which the grader uses as the expected list.

The student *site* is built from a staged copy of the book in which solution code cells are
tagged ``remove-cell`` -- executed, so that later cells still work, but not shown -- and
``hide_solutions`` is set. Check cells are tagged ``remove-output``: on the site the stub
raises ``NotImplementedError``, so the "passed" that the hidden solution earned would be a
verdict the page did not earn; the check is shown without one, and a note says to run it.
(sphinx-exercise 1.2.1's ``hide_solutions`` alone does not handle gated solutions:
``solution-start`` disappears but its code cells stay, and the orphaned ``solution-end`` node
fails a ``-W`` build with "unknown node type: <solution_end_node>".)
"""
from __future__ import annotations

import argparse
import copy
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

STUB_TAG = "exercise-stub"
CHECK_TAG = "exercise-check"
SOLUTION_TAG = "solution"
CHECK_CALL = re.compile(r"\bcheck\.([A-Za-z_]\w*)\s*\(")
_OPEN = re.compile(r"^(?P<fence>`{3,}|:{3,})\{(?P<name>[\w-]+)\}[ \t]*(?P<arg>.*?)\s*$")
GATES = ("exercise-start", "exercise-end", "solution-start", "solution-end")


class ExerciseLayoutError(ValueError):
    """A chapter notebook whose exercise cells do not follow the convention."""


@dataclass
class Directive:
    name: str
    arg: str
    options: dict[str, str]
    body: list[str]
    start: int  #: first line (the opening fence)
    end: int    #: last line (the closing fence), inclusive


def parse_directives(text: str) -> list[Directive]:
    """Top-level MyST directives (```` ```{name} arg ```` or ``:::{name}``) of a Markdown text."""
    lines = text.splitlines()
    found: list[Directive] = []
    i = 0
    while i < len(lines):
        m = _OPEN.match(lines[i].strip())
        if not m:
            i += 1
            continue
        fence = m["fence"]
        j = i + 1
        while j < len(lines) and not (lines[j].strip().startswith(fence[0] * len(fence))
                                      and set(lines[j].strip()) == {fence[0]}):
            j += 1
        inner = lines[i + 1: j]
        options: dict[str, str] = {}
        k = 0
        while k < len(inner) and re.match(r"^\s*:[\w-]+:", inner[k]):
            key, _, value = inner[k].strip()[1:].partition(":")
            options[key] = value.strip()
            k += 1
        found.append(Directive(m["name"], m["arg"], options, inner[k:], i, min(j, len(lines) - 1)))
        i = j + 1
    return found


def _tags(cell: Any) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


def cell_source(cell: Any) -> str:
    """A cell's source as one string (nbformat allows a list of lines)."""
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)




def _gates(cell: Any) -> list[str]:
    if cell.get("cell_type") != "markdown":
        return []
    return [d.name for d in parse_directives(cell_source(cell)) if d.name in GATES]


@dataclass
class Layout:
    """Where the exercises of a chapter notebook are (cell indices)."""

    solution_cells: set[int] = field(default_factory=set)   #: inside a gate, markers included
    gate_markers: set[int] = field(default_factory=set)     #: solution-start / -end cells
    exercises: list[str] = field(default_factory=list)      #: checker names, in order


def analyse(nb: Any, name: str = "notebook") -> Layout:
    """Find the gated solutions and the check calls; raise :class:`ExerciseLayoutError`
    (naming the notebook and cell) when the gates are unbalanced or a check is hidden
    inside a solution."""
    layout = Layout()
    open_at: int | None = None
    for i, cell in enumerate(nb.cells):
        gates = _gates(cell)
        if "solution-start" in gates:
            if open_at is not None:
                raise ExerciseLayoutError(f"{name}, cell {i}: solution-start inside the solution opened at cell "
                                          f"{open_at}; close it with a solution-end cell first.")
            if "solution-end" in gates:
                raise ExerciseLayoutError(f"{name}, cell {i}: put solution-start and solution-end in separate "
                                          "markdown cells, with the solution's code cells between them.")
            open_at = i
        if open_at is not None:
            layout.solution_cells.add(i)
            if CHECK_TAG in _tags(cell):
                raise ExerciseLayoutError(f"{name}, cell {i}: the check cell is inside the solution opened at cell "
                                          f"{open_at}; move it after the solution-end cell (the student edition "
                                          "removes the whole solution).")
        if "solution-end" in gates:
            if open_at is None:
                raise ExerciseLayoutError(f"{name}, cell {i}: solution-end without a solution-start before it.")
            layout.gate_markers.update({open_at, i})
            open_at = None
        if cell.get("cell_type") == "code" and SOLUTION_TAG in _tags(cell) and open_at is None:
            layout.solution_cells.add(i)
        # Every check call the student edition keeps is an exercise (tagged `exercise-check` or not).
        if cell.get("cell_type") == "code" and i not in layout.solution_cells:
            layout.exercises.extend(n for n in CHECK_CALL.findall(cell_source(cell)) if n not in layout.exercises)
    if open_at is not None:
        raise ExerciseLayoutError(f"{name}, cell {open_at}: solution-start is never closed; add a markdown cell "
                                  "with a solution-end directive after the solution's code.")
    return layout


def _plain_markdown(text: str) -> str:
    """Exercise directives -> headings; solution directives -> removed (student edition)."""
    lines = text.splitlines()
    out: list[str] = []
    cursor = 0
    for d in parse_directives(text):
        out.extend(lines[cursor:d.start])
        cursor = d.end + 1
        if d.name in ("exercise-start", "exercise"):
            title = d.arg or "Exercise"
            out.append(f"### Exercise: {title}" if d.arg else "### Exercise")
            if d.body and d.name == "exercise":
                out.extend([""] + d.body)
        elif d.name in ("exercise-end", "solution-end", "solution-start", "solution"):
            continue
        else:  # any other directive (note, math, ...) stays as it is
            out.extend(lines[d.start:d.end + 1])
    out.extend(lines[cursor:])
    return "\n".join(out).strip("\n")


def _clear(cell: Any) -> None:
    if cell.get("cell_type") == "code":
        cell["outputs"] = []
        cell["execution_count"] = None
    cell.get("metadata", {}).pop("execution", None)


def make_student_notebook(nb: Any, source: str = "notebook") -> Any:
    """A copy of the chapter notebook ``nb`` for students (see the module docstring)."""
    layout = analyse(nb, source)
    student = copy.deepcopy(nb)
    cells = []
    for i, cell in enumerate(student.cells):
        if i in layout.solution_cells:
            continue
        if cell.get("cell_type") == "markdown" and parse_directives(cell_source(cell)):
            cell["source"] = _plain_markdown(cell_source(cell))
            if not cell["source"].strip():
                continue
        _clear(cell)
        cells.append(cell)
    student.cells = cells
    meta = student.setdefault("metadata", {})
    meta["course"] = {"edition": "student", "source": source, "exercises": layout.exercises}
    return student


SITE_CHECK_NOTE = ("*Run this check in your own notebook (Colab or Jupyter) once your function is written: "
                   "it says whether it is right, and what is wrong if not.*")


def _only_checks(source: str) -> bool:
    """Whether a code cell holds check calls and nothing else (comments and blank lines aside)."""
    lines = [ln.strip() for ln in source.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    return bool(lines) and all(CHECK_CALL.match(ln) or ln.startswith("check.") for ln in lines)


def _add_tag(cell: Any, tag: str) -> None:
    tags = cell.setdefault("metadata", {}).setdefault("tags", [])
    if tag not in tags:
        tags.append(tag)


def make_site_notebook(nb: Any, source: str = "notebook") -> Any:
    """A copy of ``nb`` for the student *site*: solution code still runs but is not shown, and
    a check shows no verdict (the one it would show belongs to the hidden solution)."""
    import nbformat

    layout = analyse(nb, source)
    site = copy.deepcopy(nb)
    cells = []
    for i, cell in enumerate(site.cells):
        if i in layout.gate_markers or (i in layout.solution_cells and cell.get("cell_type") != "code"):
            continue  # the markers and any solution prose
        if i in layout.solution_cells:
            _add_tag(cell, "remove-cell")
        cells.append(cell)
        if cell.get("cell_type") == "code" and i not in layout.solution_cells and (
                CHECK_TAG in _tags(cell) or _only_checks(cell_source(cell))):
            _add_tag(cell, "remove-output")
            cells.append(nbformat.v4.new_markdown_cell(SITE_CHECK_NOTE))
    site.cells = cells
    return site


# --------------------------------------------------------------------------- files

def find_book_root(start: Path | None = None) -> Path:
    """The folder with ``_toc.yml``: ``start`` (default: the current directory) or a parent."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").is_file():
            return folder
    raise SystemExit(f"no _toc.yml in {here} or its parents: run this from the book's root, or pass --book PATH")


def chapter_notebooks(root: Path) -> list[Path]:
    return sorted((root / "chapters").glob("*.ipynb"))


def write_student_edition(notebooks: Iterable[Path], out: Path, root: Path | None = None) -> list[Path]:
    """Write the student notebooks into ``out``; returns their paths."""
    import nbformat

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        rel = str(path.relative_to(root)) if root and path.is_relative_to(root) else path.name
        student = make_student_notebook(nb, rel)
        target = out / path.name
        nbformat.write(student, target)
        written.append(target)
    return written


_SKIP = {".git", ".venv", "_build", "artifacts", ".cache", "tests", "benchmarks", "src", "node_modules",
         "__pycache__", ".pytest_cache", ".ipynb_checkpoints", "student_edition"}


def student_site_config(config: dict[str, Any]) -> dict[str, Any]:
    """The book's ``_config.yml`` (as a dict) changed for the student site."""
    cfg = copy.deepcopy(config)
    cfg["title"] = f"{cfg.get('title', 'Course')} (student edition)"
    sphinx = cfg.setdefault("sphinx", {})
    sphinx.setdefault("config", {})["hide_solutions"] = True
    return cfg


def stage_student_site(root: Path, stage: Path) -> Path:
    """Copy the book into ``stage`` with solutions hidden; returns ``stage``."""
    import nbformat
    import yaml

    if stage.exists():
        shutil.rmtree(stage)
    shutil.copytree(root, stage, ignore=lambda folder, names: [n for n in names if n in _SKIP])
    for path in sorted((stage / "chapters").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        nbformat.write(make_site_notebook(nb, str(path.relative_to(stage))), path)
    config = yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8")) or {}
    (stage / "_config.yml").write_text(yaml.safe_dump(student_site_config(config), sort_keys=False),
                                       encoding="utf-8")
    return stage


def build_command(stage: Path, output: Path) -> list[str]:
    """``jupyter-book build`` of the staged book; the pages land in ``output/_build/html``."""
    exe = Path(sys.executable).with_name("jupyter-book")
    return [str(exe) if exe.exists() else "jupyter-book", "build", str(stage), "--path-output", str(output),
            "-W", "-n", "--keep-going"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m course_grading.student",
        description="Make the student edition: chapter notebooks with solutions replaced by their stubs "
                    "(checks kept, outputs cleared), and optionally the site without solutions.")
    parser.add_argument("notebooks", nargs="*", type=Path, help="chapter notebooks (default: chapters/*.ipynb)")
    parser.add_argument("--out", type=Path, default=Path("student_edition"), help="folder for the student notebooks")
    parser.add_argument("--book", type=Path, default=None, help="the book's root (default: found from here)")
    parser.add_argument("--build-site", action="store_true",
                        help="also build the site without solutions into _build/student/ (takes minutes)")
    parser.add_argument("--stage-only", action="store_true",
                        help="with --build-site: prepare _build/student_src/ and print the build command")
    args = parser.parse_args(argv)
    root = find_book_root(args.book)
    notebooks = [p.resolve() for p in args.notebooks] or chapter_notebooks(root)
    if not notebooks:
        print(f"no chapter notebooks in {root / 'chapters'}", file=sys.stderr)
        return 1
    try:
        written = write_student_edition(notebooks, args.out, root)
    except ExerciseLayoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in written:
        import nbformat
        names = nbformat.read(path, as_version=4).metadata["course"]["exercises"]
        print(f"{path}: {len(names)} exercise(s){': ' + ', '.join(names) if names else ''}")
    if args.build_site:
        # The same vendored browser libraries as the main site, installed by the repository's
        # script (not run from here): scripts/build_student_site.sh runs it first.
        if not args.stage_only and not (root / "site" / "static" / "vendor").is_dir():
            print("error: the site's browser libraries are missing: run `bash scripts/prepare_static.sh` "
                  "first (or `bash scripts/build_student_site.sh`)", file=sys.stderr)
            return 1
        stage = stage_student_site(root, root / "_build" / "student_src")
        command = build_command(stage, root / "_build" / "student")
        print("student site staged in", stage)
        if args.stage_only:
            print("build with:", " ".join(command))
            return 0
        rc = subprocess.call(command, cwd=root)
        if rc == 0:
            print(f"Student site built: open {root / '_build' / 'student' / '_build' / 'html' / 'index.html'}")
        return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
