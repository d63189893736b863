"""The zoo's cache: the key of a model (a hash of its spec and of the code that trains it) and the
checksums that tell a complete, undamaged model folder from a damaged one.

The folder itself is stored by the course's one atomic store,
:func:`course_utils.assets.store_atomically` (a file lock, a temporary sibling, ``os.replace``).
"""
from __future__ import annotations

import hashlib
import inspect
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .. import data as _data
from ..assets import cache_dir
from .recipes import recipe_for
from .specs import spec

MANIFEST = "manifest.json"


def key(name: str, **overrides: Any) -> str:
    """The cache key: a hash of the spec and of the source of the code that trains it
    (:func:`training_code`)."""
    return code_key({"name": name, **asdict(spec(name, **overrides))}, training_code(name, **overrides))


def code_key(settings: Any, code: dict[str, str]) -> str:
    """The key of every cache of trained weights (the zoo's models, Chapter 5's seed runs): 16 hex
    digits of a hash of ``settings`` (as sorted JSON) and of ``code``
    (:func:`code_that_trains`'s texts), so that a change to either trains again."""
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for part in code.values():
        h.update(part.encode())
    return h.hexdigest()[:16]


def training_code(name: str, **overrides: Any) -> dict[str, str]:
    """The code that makes the weights of zoo model ``name`` (:func:`code_that_trains` from its
    recipe's ``build`` and ``fit``), and nothing else: editing a probe, the card, a batching
    helper the training does not call or a corpus generator it does not use does not retrain
    the models."""
    s = spec(name, **overrides)
    recipe = type(recipe_for(s))
    roots: list[Any] = [getattr(recipe, method) for method in recipe.TRAINING_METHODS]
    # Where the spec mixes in no in-context documents, their generator makes no part of the weights.
    skip: tuple[Any, ...] = () if s.incontext_fraction > 0 else (_data.generate_incontext, _data.mix)
    return code_that_trains(roots, skip=skip)


# Complexity allowed (C901): one walk over the code graph, one branch per kind of thing reached (function or
# class, its names, module attributes, tables) and the stable text of each value, all feeding the cache key.
def code_that_trains(roots: list[Any], *, skip: tuple[Any, ...] = ()) -> dict[str, str]:  # noqa: C901
    """``{qualified name: source or value}`` of ``roots`` and of everything of course_utils they
    use, transitively: the functions and classes they name (directly or as ``module.name``, e.g.
    ``_mlm.mask_tokens``) and the tables (lists, dicts, ...) they read, in name order. The text
    is the same in every process (no memory addresses, sets sorted), so it can be hashed."""
    import ast
    import sys
    import textwrap
    import types

    package = __name__.split(".")[0]  # course_utils
    found: dict[str, str] = {}
    todo: list[tuple[str, Any]] = [("", r) for r in roots]
    skipped = {id(inspect.unwrap(x)) for x in skip}
    seen: set[int] = set()

    def is_code(obj: Any) -> bool:
        return isinstance(obj, (types.FunctionType, type)) or (callable(obj) and hasattr(obj, "__wrapped__"))

    def stable(x: Any) -> str:  # repr, with functions by name and sets in order; queues their code
        if is_code(x):
            todo.append(("", x))
            return f"<{getattr(x, '__module__', '')}.{getattr(x, '__qualname__', type(x).__name__)}>"
        if isinstance(x, dict):
            return "{" + ", ".join(f"{stable(k)}: {stable(v)}" for k, v in x.items()) + "}"
        if isinstance(x, (list, tuple)):
            return type(x).__name__ + "(" + ", ".join(stable(v) for v in x) + ")"
        if isinstance(x, (set, frozenset)):
            return "{" + ", ".join(sorted(stable(v) for v in x)) + "}"
        text = repr(x)
        return type(x).__qualname__ if " at 0x" in text else text

    while todo:
        label, obj = todo.pop()
        if is_code(obj):
            obj = inspect.unwrap(obj)
            qualname = f"{obj.__module__}.{obj.__qualname__}"
            if obj.__module__.split(".")[0] != package or id(obj) in skipped or id(obj) in seen:
                continue
            seen.add(id(obj))
            try:
                source = textwrap.dedent(inspect.getsource(obj))
            except (OSError, TypeError):  # no source file
                source = qualname
            try:
                tree: ast.AST | None = ast.parse(source)
            except SyntaxError:  # a lambda in the middle of a line: its line is its text
                tree = None
            # lambdas share one name: each under its own text
            found[f"{qualname}:{source.strip()}" if "<lambda>" in qualname else qualname] = source
            # module dunders (__file__: where this checkout is) are no part of the training
            namespace = sys.modules[obj.__module__].__dict__
            for node in ast.walk(tree) if tree is not None else ():
                if isinstance(node, ast.Name) and node.id in namespace and not node.id.startswith("__"):
                    todo.append((f"{obj.__module__}.{node.id}", namespace[node.id]))
                elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                      and isinstance(namespace.get(node.value.id), types.ModuleType)):
                    module = namespace[node.value.id]
                    if hasattr(module, node.attr):
                        todo.append((f"{module.__name__}.{node.attr}", getattr(module, node.attr)))
        elif (isinstance(obj, (list, tuple, dict, set, frozenset, str, int, float))
              and label.split(".")[0] == package and label not in found):
            found[label] = stable(obj)  # a table (or a constant): its values make the corpus
    return dict(sorted(found.items()))


def zoo_dir() -> Path:
    """Where trained models live: ``cache_dir() / "zoo"`` (``COURSE_CACHE`` moves it)."""
    path = cache_dir() / "zoo"
    path.mkdir(parents=True, exist_ok=True)
    return path


def model_dir(name: str, k: str) -> Path:
    """The folder of model ``name`` under cache key ``k`` (present or not)."""
    return zoo_dir() / f"{name}-{k}"


def sha256(file: Path) -> str:
    h = hashlib.sha256()
    with open(file, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(folder: Path) -> str | None:
    """None if ``folder`` is a complete, undamaged model; else what is wrong, in words."""
    if not folder.exists():
        return "not trained yet"
    manifest = folder / MANIFEST
    try:
        expected = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return f"{MANIFEST} is missing or unreadable"
    for fname, digest in expected.items():
        f = folder / fname
        if not f.is_file():
            return f"{fname} is missing"
        if sha256(f) != digest:
            return f"{fname} does not match its checksum"
    return None


def write_manifest(folder: Path) -> None:
    """Checksums of every file of ``folder``, written last: the manifest marks a complete model."""
    manifest = {f.name: sha256(f) for f in sorted(folder.iterdir()) if f.is_file()}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
