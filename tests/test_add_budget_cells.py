"""scripts/add_budget_cells.py: inserts each chapter's budget cells once, and the line renders
with the numbers the run glued."""
from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("add_budget_cells", REPO / "scripts" / "add_budget_cells.py")
abc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(abc)


def test_a_chapter_gets_its_cells_once(tmp_path: Path) -> None:
    path = tmp_path / "04_sampling.ipynb"
    shutil.copy(REPO / "chapters" / "04_sampling.ipynb", path)
    original = nbformat.read(path, as_version=4)
    assert abc.main(["--check", str(path)]) == 1 or abc.has_budget_cells(original)
    assert abc.main([str(path)]) == 0
    once = path.read_text(encoding="utf-8")
    assert abc.main([str(path)]) == 0
    assert path.read_text(encoding="utf-8") == once  # idempotent: nothing changes the second time
    assert abc.main(["--check", str(path)]) == 0
    nb = nbformat.read(path, as_version=4)
    ids = [c.get("id") for c in nb.cells]
    assert ids.count(abc.STATEMENT_ID) == 1 and ids.count(abc.MEASURE_ID) == 1
    banner = abc._banner_index(nb)
    assert ids[banner + 1] == abc.STATEMENT_ID and ids[-1] == abc.MEASURE_ID
    assert "{glue:text}`budget_minutes`" in nb.cells[banner + 1].source
    assert "chapter_budget()" in nb.cells[-1].source
    assert nb.cells[-1].metadata["tags"] == ["hide-input"]  # bookkeeping: its code folded away
    # every other cell is untouched, in order
    kept = [c for c in nb.cells if c.get("id") not in (abc.STATEMENT_ID, abc.MEASURE_ID)]
    budget_ids = (abc.STATEMENT_ID, abc.MEASURE_ID)
    assert [c.source for c in kept] == [c.source for c in original.cells if c.get("id") not in budget_ids]


def test_a_notebook_without_a_banner_is_refused(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print(1)")])
    with pytest.raises(ValueError, match="banner"):
        abc.add_budget_cells(nb, "x")


def test_the_budget_line_renders_the_glued_numbers(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Chapter 9 — Tiny"),
        nbformat.v4.new_code_cell("import os; os.environ['COURSE_OFFLINE'] = '1'\n"
                                  "from course_utils import banner\n_ = banner()"),
        nbformat.v4.new_code_cell("x = sum(range(10**6))"),
    ])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    abc.add_budget_cells(nb, "09_tiny")
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    (tmp_path / "conf.py").write_text("extensions = ['myst_nb']\nnb_execution_mode = 'off'\nmaster_doc = 'tiny'\n"
                                      "exclude_patterns = ['_build']\n")
    nbformat.write(nb, tmp_path / "tiny.ipynb")
    build = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-W", "-E", str(tmp_path),
                            str(tmp_path / "_build")], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", (tmp_path / "_build" / "tiny.html").read_text()))
    m = re.search(r"the whole chapter ran in ([0-9.]+) min on (\d+) CPU cores with (\d+) torch threads? ?, "
                  r"with a peak memory of ([0-9.]+) GB", text)
    assert m, text[:2000]
    assert float(m.group(1)) >= 0 and int(m.group(2)) >= 1 and int(m.group(3)) >= 1 and float(m.group(4)) > 0
