"""The book's table of contents (``_toc.yml``): its documents and which of them are notebooks.

One definition for the scripts (``execute_chapters.py``, ``add_budget_cells.py``) and the site
tests (``tests/site/sitecheck.py`` re-exports it; pytest finds ``scripts/`` through
``pythonpath`` in ``pyproject.toml``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def toc_files(root: Path = REPO) -> list[str]:
    """The documents of the book's ``_toc.yml`` (root first), without suffix."""
    import yaml

    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    files = [toc["root"]]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "file" in node:
                files.append(str(node["file"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in toc.items() if k != "root"})
    return [f.removesuffix(".md").removesuffix(".ipynb") for f in files]


def chapter_notebooks(root: Path = REPO) -> list[str]:
    """The book's chapters that are notebooks, as ``chapters/NN_name`` (in the table of contents)."""
    return [f for f in toc_files(root) if (root / f"{f}.ipynb").is_file()]
