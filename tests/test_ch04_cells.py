"""Chapter 4 writes its sampler in cells tagged ``ch04-sampler``; ``course_utils.sampling`` holds the
same code for the exercises, the tests and later chapters. One definition: each function on the page
must be the package's function statement for statement (the same syntax tree once docstrings, type
annotations and the ``S.`` prefix of the page's calls into the package are set aside). Behaviour
against ``generate`` is tested on the package (tests/test_sampling.py) and on the page itself (the
chapter's own exactness checks, executed in CI).
"""
from __future__ import annotations

import ast
import inspect
import textwrap
from pathlib import Path

import nbformat
import pytest

from course_utils import sampling

CHAPTER = Path(__file__).resolve().parents[1] / "chapters" / "04_sampling.ipynb"
ON_THE_PAGE = ["next_token_logits", "apply_temperature", "top_k_filter", "top_p_filter",
               "apply_repetition_penalty", "ban_repeated_ngrams", "process_logits", "decode",
               "greedy_decode", "sample_decode", "beam_candidates", "beam_search"]


class _Normalise(ast.NodeTransformer):
    """Drop what does not change what the code does: docstrings, annotations, ``S.``-qualified names."""

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
                and isinstance(body[0].value.value, str):
            body = body[1:]
        node.body = body
        node.returns = None
        for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs,
                    node.args.vararg, node.args.kwarg]:
            if arg is not None:
                arg.annotation = None
        self.generic_visit(node)
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        if node.value is None:
            return node
        return ast.copy_location(ast.Assign(targets=[node.target], value=node.value), node)

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        if isinstance(node.value, ast.Name) and node.value.id == "S":  # `S.cache_kwarg` on the page
            return ast.copy_location(ast.Name(id=node.attr, ctx=node.ctx), node)
        self.generic_visit(node)
        return node


def _dump(function: ast.FunctionDef) -> str:
    return ast.dump(_Normalise().visit(function), include_attributes=False)


def _page_functions() -> dict[str, ast.FunctionDef]:
    nb = nbformat.read(CHAPTER, as_version=4)
    found: dict[str, ast.FunctionDef] = {}
    for cell in nb.cells:
        if "ch04-sampler" in cell.metadata.get("tags", []):
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.FunctionDef):
                    assert node.name not in found, f"chapter 4 defines {node.name} twice"
                    found[node.name] = node
    return found


PAGE = _page_functions()


def test_the_page_writes_the_whole_sampler() -> None:
    assert sorted(PAGE) == sorted(ON_THE_PAGE), "cells tagged ch04-sampler must define exactly these"
    nb = nbformat.read(CHAPTER, as_version=4)
    assert not any("inspect.getsource" in c.source for c in nb.cells), "code is written, not printed"


@pytest.mark.parametrize("name", ON_THE_PAGE)
def test_page_function_is_the_package_function(name: str) -> None:
    package = ast.parse(textwrap.dedent(inspect.getsource(getattr(sampling, name)))).body[0]
    assert isinstance(package, ast.FunctionDef)
    assert _dump(PAGE[name]) == _dump(package), (
        f"chapter 4's {name} and course_utils.sampling.{name} differ: change both (one definition)")


def test_the_comparison_sees_a_changed_line() -> None:
    """The normalisation must not hide a real difference (a test that cannot fail checks nothing)."""
    changed = ast.parse(ast.unparse(PAGE["top_p_filter"]).replace("1 - top_p", "1 - top_p / 2")).body[0]
    package = ast.parse(textwrap.dedent(inspect.getsource(sampling.top_p_filter))).body[0]
    assert isinstance(changed, ast.FunctionDef) and isinstance(package, ast.FunctionDef)
    assert _dump(changed) != _dump(package)
