"""Chapter 6 writes its flash-style attention (the online-softmax block state, the merge, the
tiled loop; cells tagged ``ch06-flash``) and its grouped-query attention (``ch06-gqa``) in cells;
``course_utils.efficient`` holds the same code for the exercises, the tests and later code. One
definition: each definition on the page must be the package's statement for statement
(tests/_page_code.py says what may differ). Behaviour is tested on the package
(tests/test_efficient.py) and on the page (the chapter's own checks, executed in CI).
"""
from __future__ import annotations

from pathlib import Path

import pytest
from _page_code import (
    code_sources,
    edited,
    names_imported_from,
    page_definitions,
    same_code,
)

from course_utils import efficient

CHAPTER = Path(__file__).resolve().parents[1] / "chapters" / "06_efficient_attention.ipynb"
FLASH = ["BlockState", "finite_or_zero", "block_state", "merge_blocks", "tile_mask",
         "tiled_attention"]
GQA = ["GroupedQueryAttention"]
PAGE = {**page_definitions(CHAPTER, "ch06-flash"), **page_definitions(CHAPTER, "ch06-gqa")}


def test_the_page_writes_the_attention() -> None:
    assert sorted(page_definitions(CHAPTER, "ch06-flash")) == sorted(FLASH)
    assert sorted(page_definitions(CHAPTER, "ch06-gqa")) == sorted(GQA)
    assert not any("inspect" in src or "show_source" in src for src in code_sources(CHAPTER)), (
        "code is written, not printed")
    assert not names_imported_from(CHAPTER) & set(FLASH + GQA), "the chapter uses its own definitions"


@pytest.mark.parametrize("name", FLASH + GQA)
def test_page_definition_is_the_package_definition(name: str) -> None:
    assert same_code(PAGE[name], getattr(efficient, name)), (
        f"chapter 6's {name} and course_utils.efficient.{name} differ: change both")


def test_the_comparison_sees_a_changed_line() -> None:
    """The normalisation must not hide a real difference (a test that cannot fail checks nothing)."""
    changed = edited(PAGE["tiled_attention"], "min(S, i1 + offset)", "min(S, i1 + offset + 1)")
    assert not same_code(changed, efficient.tiled_attention)
    swapped = edited(PAGE["merge_blocks"], "a.m - m0", "m0 - a.m")
    assert not same_code(swapped, efficient.merge_blocks)
