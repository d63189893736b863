"""course_book.sphinx_numbering: exercises and figures numbered per chapter, references intact."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from course_book.sphinx_numbering import chapter_number, renumber

REPO = Path(__file__).resolve().parents[2]


def test_chapter_number_comes_from_the_title() -> None:
    assert chapter_number("Chapter 4 — Sampling and decoding") == 4
    assert chapter_number("Chapter 12: Long") == 12
    assert chapter_number("Transformers, Inside Out") is None
    assert chapter_number("About Chapter 3") is None


def test_renumber_keeps_page_order_and_restarts() -> None:
    numbers = {"exercise": {"ex-b": (16,), "ex-a": (15,), "ex-c": (17,)}, "figure": {"fig-x": (9,)}}
    assert renumber(numbers, 4) == {"exercise": {"ex-a": (4, 1), "ex-b": (4, 2), "ex-c": (4, 3)},
                                    "figure": {"fig-x": (4, 1)}}
    assert renumber(numbers, None)["exercise"] == {"ex-a": (1,), "ex-b": (2,), "ex-c": (3,)}


def _exercise(label: str, title: str) -> str:
    return f".. exercise:: {title}\n   :label: {label}\n\n   Do it.\n\n"


def test_a_book_numbers_exercises_per_chapter_and_references_resolve(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text("extensions = ['sphinx_exercise', 'course_book.sphinx_numbering']\n")
    (src / "index.rst").write_text("Book\n====\n\n.. toctree::\n\n   ch3\n   ch4\n")
    (src / "ch3.rst").write_text("Chapter 3 — First\n=================\n\n" + _exercise("ex-a", "A")
                                 + _exercise("ex-b", "B"))
    (src / "ch4.rst").write_text("Chapter 4 — Second\n==================\n\n" + _exercise("ex-c", "C")
                                 + _exercise("ex-d", "D") + "See :numref:`ex-b` and :numref:`ex-d`.\n\n"
                                 ".. solution:: ex-d\n\n   Done.\n")
    out = tmp_path / "html"
    # In its own process: Sphinx registers node classes globally, a second app in this process warns.
    build = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-E", str(src), str(out)],
                           capture_output=True, text=True)
    assert build.returncode == 0 and "WARNING" not in build.stderr, build.stderr
    ch3, ch4 = ((out / f"{d}.html").read_text() for d in ("ch3", "ch4"))
    def text(html):
        return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))

    assert "Exercise 3.1" in text(ch3) and "Exercise 3.2" in text(ch3)
    assert "Exercise 4.1" in text(ch4) and "Exercise 4.2" in text(ch4)
    assert not re.search(r"Exercise [34]\b(?!\.)", text(ch3) + text(ch4))  # no book-wide "Exercise 4"
    # references (to another chapter and within the page) and the solution's title agree
    assert re.search(r'href="ch3.html#ex-b"[^>]*>.*?Exercise 3\.2', ch4)
    assert re.search(r'href="#ex-d"[^>]*>.*?Exercise 4\.2', ch4)
    assert "Solution to" in text(ch4) and re.search(r"Solution to\s*Exercise 4\.2", text(ch4))


@pytest.mark.browser
def test_the_built_book_numbers_exercises_per_chapter() -> None:
    """On the built site, chapter N's exercises are N.1, N.2, ... (not numbered across the book)."""
    import sitecheck
    from conftest import site_dir

    site = site_dir()
    checked = 0
    for chapter in sitecheck.chapter_notebooks():
        html = (site / f"{chapter}.html").read_text(encoding="utf-8")
        title = re.search(r"<h1>(.*?)<", html, re.S).group(1)
        n = chapter_number(title)
        found = re.findall(r"Exercise (\d+(?:\.\d+)?)", re.sub(r"<[^>]+>", " ", html))
        if not found:
            continue
        expected_prefix = f"{n}." if n is not None else ""
        assert all(x.startswith(expected_prefix) for x in found), (chapter, sorted(set(found)))
        assert f"{expected_prefix}1" in found, (chapter, sorted(set(found)))
        checked += 1
    assert checked, "no chapter has exercises: the numbering check would test nothing"
