"""scripts/move_exercises.py on copies of the real chapters: the exercise sections leave the
chapters (Summary kept), each chapter ends with a {doc} link to its exercise page, nothing else
changes, and a second run changes nothing. Also: every exercise page is in the table of contents
under its chapter, and scripts/sync_colab.py covers the exercise pages' set-up cells."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "move_exercises.py"
EXERCISE_TAGS = {"exercise-stub", "exercise-check", "solution"}
GATES = ("{exercise-start}", "{exercise-end}", "{solution-start}", "{solution-end}")


def _exercise_pages() -> list[Path]:
    return sorted((REPO / "chapters").glob("[0-9][0-9]_exercises.ipynb"))


def _chapters_with_pages() -> list[Path]:
    return [c for c in sorted((REPO / "chapters").glob("[0-9][0-9]_*.ipynb"))
            if not c.name.endswith("_exercises.ipynb") and c.with_name(f"{c.name[:2]}_exercises.ipynb").is_file()]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


@pytest.fixture
def book(tmp_path: Path) -> Path:
    (tmp_path / "chapters").mkdir()
    for nb in sorted((REPO / "chapters").glob("*.ipynb")):
        shutil.copy(nb, tmp_path / "chapters" / nb.name)
    return tmp_path


def test_every_chapter_1_to_6_has_an_exercise_page():
    assert [p.name[:2] for p in _exercise_pages()] == ["01", "02", "03", "04", "05", "06", "07", "08", "09"]


def test_moving_leaves_summary_and_a_link_and_nothing_else(book: Path):
    before = {p.name: nbformat.read(p, as_version=4) for p in (book / "chapters").glob("*.ipynb")}
    result = _run("--root", str(book))
    assert result.returncode == 0, result.stdout + result.stderr
    for chapter in _chapters_with_pages():
        nb = nbformat.read(book / "chapters" / chapter.name, as_version=4)
        old = before[chapter.name]
        # no exercise is left in the chapter
        assert not any(EXERCISE_TAGS & set(c.metadata.get("tags", [])) for c in nb.cells), chapter.name
        assert not any(g in c.source for c in nb.cells for g in GATES), chapter.name
        assert not any("check." in c.source and c.cell_type == "code" and "exercises import check" in c.source
                       for c in nb.cells), chapter.name
        # the summary is kept, and everything before it is untouched
        summary = [i for i, c in enumerate(nb.cells) if "## Summary" in c.source]
        assert summary, f"{chapter.name}: the Summary is gone"
        at = next(i for i, c in enumerate(nb.cells) if c.get("id") == "exercises-link")
        keep = at - 1  # the cell holding the Summary may have lost its exercises heading
        assert [c.source for c in nb.cells[:keep]] == [c.source for c in old.cells[:keep]]
        assert [c.get("outputs") for c in nb.cells[:keep]] == [c.get("outputs") for c in old.cells[:keep]]
        # it ends with the link to the exercise page, listing its exercises
        link = nb.cells[at]  # (only the chapter's budget cell may follow it)
        assert all(c.get("id", "").startswith("budget") for c in nb.cells[at + 1:]), chapter.name
        page = chapter.name[:2] + "_exercises"
        assert link.cell_type == "markdown" and link.source.startswith("## Exercises")
        assert f"{{doc}}`{page}`" in link.source
        titles = [line for line in link.source.splitlines() if line.startswith("* ")]
        assert len(titles) >= 3
    # the exercise pages themselves are not touched
    for page in _exercise_pages():
        assert (book / "chapters" / page.name).read_bytes() == page.read_bytes()


def test_a_second_run_changes_nothing(book: Path):
    assert _run("--root", str(book)).returncode == 0
    first = {p.name: p.read_bytes() for p in (book / "chapters").glob("*.ipynb")}
    again = _run("--root", str(book))
    assert again.returncode == 0 and "already link" in again.stdout
    assert {p.name: p.read_bytes() for p in (book / "chapters").glob("*.ipynb")} == first
    assert _run("--root", str(book), "--check").returncode == 0


def test_check_mode_changes_nothing(book: Path):
    first = {p.name: p.read_bytes() for p in (book / "chapters").glob("*.ipynb")}
    result = _run("--root", str(book), "--check")
    assert {p.name: p.read_bytes() for p in (book / "chapters").glob("*.ipynb")} == first
    still_there = any("{exercise-start}" in c.source for ch in _chapters_with_pages()
                      for c in nbformat.read(ch, as_version=4).cells)
    assert result.returncode == (1 if still_there else 0), result.stdout


def test_a_chapter_without_an_exercise_page_is_left_alone(book: Path):
    lone = book / "chapters" / "99_lonely.ipynb"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Chapter 99\n\n## Exercises\n\nHere.")])
    nbformat.write(nb, lone)
    before = lone.read_bytes()
    assert _run("--root", str(book)).returncode == 0
    assert lone.read_bytes() == before


def test_exercise_pages_are_in_the_toc_under_their_chapter():
    toc = yaml.safe_load((REPO / "_toc.yml").read_text(encoding="utf-8"))
    entries = [e for part in toc["parts"] for e in part["chapters"]]
    for page in _exercise_pages():
        parent = [e for e in entries if str(e["file"]).startswith(f"chapters/{page.name[:2]}_")
                  and not str(e["file"]).endswith("_exercises")]
        assert len(parent) == 1, page.name
        assert {"file": f"chapters/{page.stem}"} in parent[0].get("sections", []), page.name


def test_sync_colab_covers_the_exercise_pages():
    import sync_colab  # scripts/: pytest's pythonpath (pyproject.toml)

    covered = set(sync_colab.chapter_notebooks())
    spec = sync_colab.install_spec()
    for page in _exercise_pages():
        assert page in covered, page.name
        assert sync_colab.sync_notebook(page, spec, write=False) is None, page.name
