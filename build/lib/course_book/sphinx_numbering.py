"""Sphinx extension: exercises (and figures, tables, code listings) numbered per chapter.

Listed in ``_config.yml`` under ``sphinx.extra_extensions``. The book's toctree is not
numbered (each chapter's title already says "Chapter 4 — ..."), so Sphinx numbers every
enumerable node across the whole book: chapter 4 opened on "Exercise 15". This extension
renumbers them after Sphinx has, page by page: the k-th exercise of the page titled
"Chapter 4 — ..." becomes "Exercise 4.k"; on a page whose title names no chapter the
numbering restarts at 1.

It rewrites ``env.toc_fignumbers``, the one table that both the captions/titles (Sphinx's
HTML writer, sphinx-exercise's ``get_node_number``) and the references (``{numref}``,
``{ref}`` to an exercise, sphinx-exercise's solution titles) read, so they stay consistent.
"""
from __future__ import annotations

import re
from typing import Any

from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment

#: "Chapter 4 — Sampling" -> 4 (the number the reader sees in the page title).
CHAPTER_TITLE = re.compile(r"^\s*Chapter\s+(\d+)\b")


def chapter_number(title: str) -> int | None:
    """The chapter number a page title states (``"Chapter 4 — Sampling"`` -> 4), else None."""
    m = CHAPTER_TITLE.match(title)
    return int(m.group(1)) if m else None


FigNumbers = dict[str, dict[str, tuple[int, ...]]]


def renumber(fignumbers: FigNumbers, chapter: int | None) -> FigNumbers:
    """One page's numbers ``{figtype: {node id: number}}``, renumbered from 1 in page order.

    Sphinx's numbers grow through the page, so their order is the page order; the new number
    is ``(chapter, k)``, or ``(k,)`` on a page that is no chapter.
    """
    out: dict[str, dict[str, tuple[int, ...]]] = {}
    for figtype, numbers in fignumbers.items():
        ordered = sorted(numbers.items(), key=lambda item: item[1])
        prefix = () if chapter is None else (chapter,)
        out[figtype] = {node_id: (*prefix, k) for k, (node_id, _) in enumerate(ordered, start=1)}
    return out


def _on_env_get_updated(app: Sphinx, env: BuildEnvironment) -> list[str]:
    changed = []
    for docname, fignumbers in env.toc_fignumbers.items():
        title = env.titles[docname].astext() if docname in env.titles else ""
        new = renumber(fignumbers, chapter_number(title))
        if new != fignumbers:
            env.toc_fignumbers[docname] = new
            changed.append(docname)
    return changed  # these pages are written again (their numbers changed)


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the extension (Sphinx entry point)."""
    # After Sphinx's TocTreeCollector (priority 500) has assigned the book-wide numbers.
    app.connect("env-get-updated", _on_env_get_updated, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
