"""The committed notebooks are complete: every glued name their Markdown uses is glued by one of
their cells in the committed outputs, and every code cell has been executed.

The outputs are committed (made only by ``scripts/regen_notebooks.py``) so that GitHub and Colab
show results; the site is built from a fresh execution, which would hide a notebook whose committed
outputs are stale. Both failures below are that staleness: a ``{glue:text}`name``` whose name no
committed output carries (the cell that glues it was added or changed after the last regeneration),
and a code cell with no execution count and no output (added after it). A cell meant never to run
carries myst-nb's own tag, ``skip-execution``.

Fix either by regenerating the notebook: ``python scripts/regen_notebooks.py chapters/X.ipynb``.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]

#: ``{glue}`name```, ``{glue:text}`name:.2f```, ``{glue:md}`name```, ... and another page's
#: ``{glue:text}`other.ipynb::name```.
ROLE = re.compile(r"\{glue(?::[a-z]+)?\}`(?P<target>[^`]+)`")
#: ```` ```{glue:figure} name ```` and ```` ```{glue:math} name ```` (also ``{glue}``).
DIRECTIVE = re.compile(r"^(?:`{3,}|:{3,})\{glue(?::[a-z]+)?\}[ \t]+(?P<target>\S+)", re.M)

#: Notebooks this branch cannot regenerate, with the reason and who fixes them. Each entry must
#: still fail (``test_known_exceptions_are_still_needed``), so a fixed notebook leaves the list.
KNOWN: dict[str, str] = {}


def committed_notebooks() -> list[str]:
    """The notebooks under chapters/ that git tracks (untracked drafts are not committed outputs)."""
    out = subprocess.run(["git", "ls-files", "chapters/*.ipynb"], cwd=ROOT, capture_output=True, text=True,
                         check=False)
    names = out.stdout.split() if out.returncode == 0 else []
    return sorted(names) or sorted(str(p.relative_to(ROOT)) for p in (ROOT / "chapters").glob("*.ipynb"))


def glue_references(nb: nbformat.NotebookNode) -> list[tuple[str | None, str]]:
    """(other notebook or None, name) for every glued value the Markdown cells use."""
    refs = []
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for match in [*ROLE.finditer(cell.source), *DIRECTIVE.finditer(cell.source)]:
            target = match.group("target").strip()
            page, _, name = target.rpartition("::")
            refs.append((page or None, name.split(":")[0].strip()))
    return refs


def glued_names(nb: nbformat.NotebookNode) -> set[str]:
    """The names myst-nb's ``glue`` stored in the committed outputs."""
    return {out.get("metadata", {}).get("scrapbook", {}).get("name")
            for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])} - {None}


def unexecuted_cells(nb: nbformat.NotebookNode) -> list[str]:
    """Code cells with neither an execution count nor an output (and no skip-execution tag)."""
    return [f"cell {i} (id {cell.get('id')}): {cell.source.strip().splitlines()[0][:60] if cell.source.strip() else ''}"
            for i, cell in enumerate(nb.cells)
            if cell.cell_type == "code" and cell.get("execution_count") is None and not cell.get("outputs")
            and "skip-execution" not in cell.get("metadata", {}).get("tags", [])]


#: A glued NumPy scalar: myst-nb formats ``{glue:text}`name:.2f``` from the text/plain repr, and
#: NumPy 2 writes ``np.float64(0.5)``, which it cannot read (a build warning, an error under -W).
NUMPY_REPR = re.compile(r"^np\.[a-z]+[0-9]*\(")


def numpy_glues(nb: nbformat.NotebookNode) -> list[str]:
    """The glued names whose committed value is a NumPy scalar's repr (glue ``float(x)`` instead)."""
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            name = o.get("metadata", {}).get("scrapbook", {}).get("name")
            text = "".join(v for k, v in o.get("data", {}).items() if k.endswith("text/plain"))
            if name and NUMPY_REPR.match(text):
                out.append(name)
    return out


def problems(path: str) -> list[str]:
    nb = nbformat.read(ROOT / path, as_version=4)
    found = [f"unexecuted code {c}" for c in unexecuted_cells(nb)]
    found += [f"the glued value {n!r} is a NumPy scalar (glue float(...) or int(...))" for n in numpy_glues(nb)]
    own = glued_names(nb)
    for page, name in glue_references(nb):
        if page is None:
            if name not in own:
                found.append(f"the Markdown uses the glued name {name!r}, which no committed output glues")
            continue
        other = (ROOT / path).parent / page
        if not other.is_file() or name not in glued_names(nbformat.read(other, as_version=4)):
            found.append(f"the Markdown uses {page}::{name}, which {page}'s committed outputs do not glue")
    return sorted(set(found))


NOTEBOOKS = committed_notebooks()


@pytest.mark.parametrize("path", NOTEBOOKS)
def test_committed_notebook_is_executed_and_glues_what_it_uses(path: str):
    if path in KNOWN:
        pytest.xfail(KNOWN[path])
    found = problems(path)
    assert not found, (f"{path} (regenerate it: python scripts/regen_notebooks.py {path}):\n  "
                       + "\n  ".join(found))


def test_known_exceptions_are_still_needed():
    for path, reason in KNOWN.items():
        assert path in NOTEBOOKS, f"{path} is not a committed notebook: drop it from KNOWN"
        assert problems(path), f"{path} is complete now: drop it from KNOWN ({reason})"


def test_the_check_finds_what_it_should(tmp_path: Path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("Loss {glue:text}`loss:.2f`, {glue}`acc` and {glue:md}`who`.\n\n"
                                              "```{glue:figure} fig\n:name: f\n```"),
                nbformat.v4.new_code_cell("glue('loss', 1.0)", execution_count=1, outputs=[
                    nbformat.v4.new_output("display_data", data={"text/plain": "1.0"},
                                           metadata={"scrapbook": {"name": "loss", "mime_prefix": ""}})]),
                nbformat.v4.new_code_cell("x = 1")]
    skipped = nbformat.v4.new_code_cell("raise SystemExit")
    skipped.metadata["tags"] = ["skip-execution"]
    nb.cells.append(skipped)
    assert [name for _, name in glue_references(nb)] == ["loss", "acc", "who", "fig"]
    assert glued_names(nb) == {"loss"}
    assert [u.split(" (")[0] for u in unexecuted_cells(nb)] == ["cell 2"]
    numpy_value = nbformat.v4.new_output("display_data", data={"application/papermill.record/text/plain":
                                                               "np.float64(0.5)"},
                                         metadata={"scrapbook": {"name": "acc", "mime_prefix": ""}})
    nb.cells[1].outputs.append(numpy_value)
    assert numpy_glues(nb) == ["acc"]
