"""The chapters as the book build executed them, checked the way nbval checks them.

CI executes every chapter once: the book build does it (``scripts/build_site.sh --fresh``, with
``nb_execution_raise_on_error``, so a cell that raises fails the build) and jupyter-cache keeps each
executed notebook, whole, in ``_build/.jupyter_cache`` (myst-nb's copies in ``_build/jupyter_execute``
lack the glue outputs, which it moves out). This module then makes the comparison nbval's
``--nbval-lax`` mode makes, on those executions instead of a second one: every cell marked
``# NBVAL_CHECK_OUTPUT`` (token ids, parameter counts, pass/fail tables) must print what the
committed notebook shows, with nbval's rules (images, metadata and execution counts are not
compared; outputs are compared per stream name and per MIME type). Running nbval itself,
``pytest --nbval-lax --nbval-current-env chapters/<chapter>.ipynb``, still works for one chapter.
"""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[2]
CHAPTERS = sorted((REPO / "chapters").glob("*.ipynb"))
MARK = "# NBVAL_CHECK_OUTPUT"
# What nbval leaves out of a comparison (nbval/plugin.py, IPyNbFile.skip_compare, without nbdime).
SKIP = {"metadata", "traceback", "prompt_number", "output_type", "name", "execution_count",
        "application/vnd.jupyter.widget-view+json", "image/png", "image/jpeg"}


def executed_notebook(chapter: Path) -> Any:
    """The build's execution of ``chapter``'s current code, from the book's jupyter-cache."""
    from jupyter_cache import get_cache

    cache_dir = Path(os.environ.get("COURSE_BUILD_DIR", REPO / "_build")) / ".jupyter_cache"
    assert cache_dir.is_dir(), f"{cache_dir} is missing: build the book first (bash scripts/build_site.sh)"
    cache = get_cache(cache_dir)
    try:  # matched by a hash of the code cells: an execution of older code does not match
        record = cache.match_cache_notebook(nbformat.read(chapter, as_version=4))
    except KeyError:
        pytest.fail(f"the book's execution cache has no execution of {chapter.name}'s current code: "
                    "rebuild the book (bash scripts/build_site.sh)")
    return cache.get_cache_bundle(record.pk).nb


def _text(value: Any) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def comparable(outputs: list[Any]) -> dict[str, list[str]]:
    """A cell's outputs keyed as nbval keys them: stream name, or each MIME type of the data."""
    keyed: dict[str, list[str]] = defaultdict(list)
    streams: dict[str, str] = {}
    for out in outputs:
        if out.get("output_type") == "stream":  # nbval compares streams coalesced, per name
            streams[out["name"]] = streams.get(out["name"], "") + _text(out.get("text", ""))
            continue
        for key, value in out.items():
            if key == "data":
                for mime, content in value.items():
                    if mime not in SKIP:
                        keyed[mime].append(_text(content))
            elif key not in SKIP:
                keyed[key].append(_text(value))
    for name, text in streams.items():
        keyed[f"stream:{name}"].append(text)
    return dict(keyed)


def differences(committed: Any, executed: Any) -> list[str]:
    """Cells marked ``# NBVAL_CHECK_OUTPUT`` whose executed outputs differ from the committed ones."""
    ref_cells = [c for c in committed.cells if c.cell_type == "code"]
    new_cells = [c for c in executed.cells if c.cell_type == "code"]
    if [c.source for c in ref_cells] != [c.source for c in new_cells]:
        return ["the executed notebook's code is not the committed notebook's (stale build?)"]
    found = []
    for i, (ref, new) in enumerate(zip(ref_cells, new_cells)):
        if MARK not in ref.source:
            continue
        want, got = comparable(ref.outputs), comparable(new.outputs)
        if want != got:
            first_line = ref.source.splitlines()[1] if len(ref.source.splitlines()) > 1 else ref.source
            found.append(f"code cell {i} ({first_line.strip()[:60]!r}):\n    committed: {want}\n    executed:  {got}")
    return found


def errors(executed: Any) -> list[str]:
    """Error outputs, outside cells tagged to show one (``raises-exception``)."""
    return [f"code cell {i}: {out.get('ename')}: {out.get('evalue')}"
            for i, cell in enumerate(c for c in executed.cells if c.cell_type == "code")
            if "raises-exception" not in cell.get("metadata", {}).get("tags", [])
            for out in cell.get("outputs", []) if out.get("output_type") == "error"]


@pytest.mark.browser  # needs the book built (scripts/test.sh builds it first)
@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda p: p.stem)
def test_executed_chapter_matches_its_checked_outputs(chapter: Path) -> None:
    committed = nbformat.read(chapter, as_version=4)
    executed = executed_notebook(chapter)
    assert errors(executed) == []
    diffs = differences(committed, executed)
    assert diffs == [], (f"{chapter.name}: outputs marked {MARK} changed. If the change is intended, regenerate "
                         "the chapter (python scripts/regen_notebooks.py " + f"chapters/{chapter.name}):\n  "
                         + "\n  ".join(diffs))


def test_the_comparison_catches_a_changed_output() -> None:
    """The test of the test: a marked cell whose number changed is reported, an unmarked one is not."""
    def notebook(marked: str, unmarked: str) -> Any:
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(f"{MARK}\nprint(1)", outputs=[
                        nbformat.v4.new_output("stream", name="stdout", text=marked)]),
                    nbformat.v4.new_code_cell("x", outputs=[
                        nbformat.v4.new_output("execute_result", data={"text/plain": unmarked,
                                                                       "image/png": "AAAA"}, execution_count=2)])]
        return nb
    assert differences(notebook("124439\n", "0.5"), notebook("124439\n", "0.7")) == []
    diffs = differences(notebook("124439\n", "0.5"), notebook("124440\n", "0.5"))
    assert len(diffs) == 1 and "124440" in diffs[0]
    # streams split differently are the same output (nbval coalesces them)
    split = notebook("", "0.5")
    split.cells[0].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1244"),
                              nbformat.v4.new_output("stream", name="stdout", text="39\n")]
    assert differences(notebook("124439\n", "0.5"), split) == []
    # an error output is reported unless the cell is tagged to show one
    bad = notebook("124439\n", "0.5")
    bad.cells[1].outputs = [nbformat.v4.new_output("error", ename="ValueError", evalue="boom", traceback=[])]
    assert errors(bad) == ["code cell 1: ValueError: boom"]
    bad.cells[1].metadata["tags"] = ["raises-exception"]
    assert errors(bad) == []
