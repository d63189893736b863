"""One definition, checked: a chapter writes the code a reader came to learn in its cells, and
``course_utils`` holds the same code for exercises, tests and later chapters. These helpers compare
a cell's definition with the package's statement for statement: the same syntax tree once
docstrings, type annotations and a module prefix on the page's calls into the package (``S.`` in
``S.cache_kwarg(model)``) are set aside. Formatting and comments may differ; nothing else may.
"""
from __future__ import annotations

import ast
import inspect
import textwrap
from pathlib import Path
from typing import Any

import nbformat

Definition = ast.FunctionDef | ast.ClassDef


class _Normalise(ast.NodeTransformer):
    def __init__(self, aliases: tuple[str, ...]) -> None:
        self.aliases = aliases

    def _drop_docstring(self, node: Any) -> None:
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        self._drop_docstring(node)
        node.returns = None
        for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs,
                    node.args.vararg, node.args.kwarg]:
            if arg is not None:
                arg.annotation = None
        self.generic_visit(node)
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        self._drop_docstring(node)
        self.generic_visit(node)
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        if node.value is None:  # a bare annotation (a dataclass field without default) stays
            node.annotation = ast.Name(id="_", ctx=ast.Load())
            return node
        return ast.copy_location(ast.Assign(targets=[node.target], value=node.value), node)

    def visit_Attribute(self, node: ast.Attribute) -> ast.AST:
        if isinstance(node.value, ast.Name) and node.value.id in self.aliases:
            return ast.copy_location(ast.Name(id=node.attr, ctx=node.ctx), node)
        self.generic_visit(node)
        return node


def normalised(node: Definition, aliases: tuple[str, ...] = ()) -> str:
    """The node's syntax tree without docstrings, annotations and ``alias.`` prefixes, as text."""
    copy = ast.parse(ast.unparse(node)).body[0]  # leave the caller's tree alone
    return ast.dump(_Normalise(aliases).visit(copy), include_attributes=False)


def page_definitions(chapter: Path, tag: str) -> dict[str, Definition]:
    """Every top-level function and class defined in the chapter's cells tagged ``tag``."""
    nb = nbformat.read(chapter, as_version=4)
    found: dict[str, Definition] = {}
    for cell in nb.cells:
        if tag in cell.metadata.get("tags", []):
            for node in ast.parse(cell.source).body:
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                    assert node.name not in found, f"{chapter.name} defines {node.name} twice"
                    found[node.name] = node
    return found


def package_definition(obj: Any) -> Definition:
    node = ast.parse(textwrap.dedent(inspect.getsource(obj))).body[0]
    assert isinstance(node, (ast.FunctionDef, ast.ClassDef)), obj
    return node


def same_code(page: Definition, obj: Any, aliases: tuple[str, ...] = ()) -> bool:
    """Is the page's definition the package object's, statement for statement?"""
    return normalised(page, aliases) == normalised(package_definition(obj), aliases)


def edited(page: Definition, old: str, new: str) -> Definition:
    """The page's definition with ``old`` (which it must contain) replaced by ``new``: a changed
    line, for the test that the comparison sees one."""
    source = ast.unparse(page)
    assert old in source, f"{old!r} is not in {page.name}"
    node = ast.parse(source.replace(old, new)).body[0]
    assert isinstance(node, (ast.FunctionDef, ast.ClassDef)), node
    return node


def code_sources(chapter: Path) -> list[str]:
    """The source of every code cell of the chapter, in page order."""
    return [c.source for c in nbformat.read(chapter, as_version=4).cells if c.cell_type == "code"]


def names_imported_from(chapter: Path, package: str = "course_utils") -> set[str]:
    """Every name the chapter's code cells import ``from package...`` (the Colab ``!pip`` cell skipped)."""
    return {alias.name for src in code_sources(chapter) if "!pip" not in src
            for node in ast.walk(ast.parse(src)) if isinstance(node, ast.ImportFrom)
            and (node.module or "").startswith(package) for alias in node.names}


def run_tagged_cell(chapter: Path, tag: str, namespace: dict[str, Any] | None = None) -> dict[str, Any]:
    """Execute the one cell of ``chapter`` tagged ``tag`` in ``namespace`` (the names the chapter's
    earlier cells would have defined) and return that namespace: the tests call the page's own code."""
    nb = nbformat.read(chapter, as_version=4)
    sources = [c.source for c in nb.cells if tag in c.metadata.get("tags", [])]
    assert len(sources) == 1, f"{chapter.name} must have exactly one cell tagged {tag}"
    namespace = {} if namespace is None else namespace
    exec(compile(sources[0], f"{chapter.name}[{tag}]", "exec"), namespace)
    return namespace
