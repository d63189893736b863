"""Chapter 3 writes its GPT in cells tagged ``ch03-gpt`` (nanoGPT style: the attention, the MLP,
the block, the model with its KV cache, generation and loading); ``course_utils.gpt`` holds the
same code for the exercises, the tests and later chapters. One definition: each class on the page
must be the package's statement for statement (tests/_page_code.py says what may differ).
Behaviour is tested on the package (tests/test_gpt.py) and on the page itself (the chapter's own
checks against the library, executed in CI).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from _page_code import (
    code_sources,
    edited,
    names_imported_from,
    page_definitions,
    same_code,
)

from course_utils import gpt

CHAPTER = Path(__file__).resolve().parents[1] / "chapters" / "03_gpt2_internals.ipynb"
ON_THE_PAGE = ["CausalSelfAttention", "MLP", "Block", "GPTOutput", "GPT"]
PAGE = page_definitions(CHAPTER, "ch03-gpt")


def test_the_page_writes_the_whole_model() -> None:
    assert sorted(PAGE) == sorted(ON_THE_PAGE), "cells tagged ch03-gpt must define exactly these"
    assert not any("inspect" in src for src in code_sources(CHAPTER)), "code is written, not printed"
    assert not names_imported_from(CHAPTER) & set(ON_THE_PAGE), (
        "the chapter uses its own model, not the package's")


@pytest.mark.parametrize("name", ON_THE_PAGE)
def test_page_class_is_the_package_class(name: str) -> None:
    assert same_code(PAGE[name], getattr(gpt, name)), (
        f"chapter 3's {name} and course_utils.gpt.{name} differ: change both (one definition)")


def test_the_comparison_sees_a_changed_line() -> None:
    """The normalisation must not hide a real difference (a test that cannot fail checks nothing)."""
    changed = edited(PAGE["CausalSelfAttention"], "split(self.n_embd, dim=2)", "split(self.n_embd, dim=-1)")
    assert not same_code(changed, gpt.CausalSelfAttention)
    # a method left out of the page's class is a difference too
    trimmed = ast.parse(ast.unparse(PAGE["GPT"])).body[0]
    assert isinstance(trimmed, ast.ClassDef)
    trimmed.body = [n for n in trimmed.body
                    if not (isinstance(n, ast.FunctionDef) and n.name == "generate")]
    assert not same_code(trimmed, gpt.GPT)
