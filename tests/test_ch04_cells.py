"""Chapter 4 writes its sampler in cells tagged ``ch04-sampler``; ``course_utils.sampling`` holds the
same code for the exercises, the tests and later chapters. One definition: each function on the page
must be the package's statement for statement (tests/_page_code.py says what may differ). Behaviour
against ``generate`` is tested on the package (tests/test_sampling.py) and on the page itself (the
chapter's own exactness checks, executed in CI).
"""
from __future__ import annotations

from pathlib import Path

import pytest
from _page_code import code_sources, edited, page_definitions, same_code

from course_utils import sampling

CHAPTER = Path(__file__).resolve().parents[1] / "chapters" / "04_sampling.ipynb"
ON_THE_PAGE = ["next_token_logits", "apply_temperature", "top_k_filter", "top_p_filter",
               "apply_repetition_penalty", "ban_repeated_ngrams", "process_logits", "decode",
               "greedy_decode", "sample_decode", "beam_candidates", "beam_search"]
PAGE = page_definitions(CHAPTER, "ch04-sampler")


def test_the_page_writes_the_whole_sampler() -> None:
    assert sorted(PAGE) == sorted(ON_THE_PAGE), "cells tagged ch04-sampler must define exactly these"
    assert not any("inspect.getsource" in src for src in code_sources(CHAPTER)), "code is written, not printed"


@pytest.mark.parametrize("name", ON_THE_PAGE)
def test_page_function_is_the_package_function(name: str) -> None:
    assert same_code(PAGE[name], getattr(sampling, name), aliases=("S",)), (
        f"chapter 4's {name} and course_utils.sampling.{name} differ: change both (one definition)")


def test_the_comparison_sees_a_changed_line() -> None:
    """The normalisation must not hide a real difference (a test that cannot fail checks nothing)."""
    changed = edited(PAGE["top_p_filter"], "1 - top_p", "1 - top_p / 2")
    assert not same_code(changed, sampling.top_p_filter, aliases=("S",))
