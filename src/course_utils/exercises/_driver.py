"""The grader's hand inside a student's kernel: call the handed-in function on the grader's
inputs and write back what it returned, as plain data.

Runs in the student's (untrusted) kernel, so nothing here decides a grade: it only reports
what happened -- the outputs, exceptions, time-outs, prints, the inputs after the call (to
see in-place changes) and, from one more traced run of the first case, which course_utils
functions the student's own code called. The
grader (:mod:`._grade_worker`) reads that as plain data (:mod:`._plain`) and judges it in
its own process. A student who patches this module only changes what their own function
appears to return, which is no different from writing that function.
"""
from __future__ import annotations

import copy
import functools
import os
import sys
import traceback
import types
from pathlib import Path
from typing import Any, Callable

import torch

from . import _plain
from ._compare import describe, type_name
from ._limits import run_limited
from .core import Case, get_checker, is_student_frame, student_line, submitted

_COURSE_ROOT = os.path.realpath(Path(__file__).resolve().parents[1]) + os.sep
MAX_CALLS = 30
MAX_REACHED = 3000  #: objects looked at from a submission before giving up


def course_name(obj: Any) -> str | None:
    """``module.qualname`` of a function, class or module that is course_utils' own, else None."""
    if isinstance(obj, types.ModuleType):
        name = getattr(obj, "__name__", "")
        return name if name.split(".")[0] == "course_utils" else None
    code = getattr(obj, "__code__", None) if isinstance(obj, types.FunctionType) else None
    if code is not None:
        if not os.path.realpath(code.co_filename).startswith(_COURSE_ROOT):
            return None
        return f"{obj.__module__}.{obj.__qualname__}"
    if isinstance(obj, type):
        module = getattr(obj, "__module__", "") or ""
        return f"{module}.{obj.__qualname__}" if module.split(".")[0] == "course_utils" else None
    return None


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names) | set(code.co_freevars)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


# Complexity allowed (C901): one branch per way an object reaches other code (bound method, partial,
# closure, defaults, globals, __wrapped__, attributes, a class's methods), listed in the docstring.
def reached(obj: Any) -> list[str]:  # noqa: C901
    """course_utils functions, classes and modules that ``obj`` *is*, or reaches: through a
    bound method, ``functools.partial``, a closure, default arguments, the globals its code
    names (and their attributes of those names), ``__wrapped__``, an object's attributes, a
    class's methods. The first entry is ``obj`` itself when ``obj`` is course code."""
    found: list[str] = []
    seen: set[int] = set()
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack and len(seen) < MAX_REACHED:
        item, depth = stack.pop()
        if id(item) in seen or depth > 12 or item is None or isinstance(item, (str, bytes, int, float, bool)):
            continue
        seen.add(id(item))
        name = course_name(item)
        if name is not None:
            found.append(name)
            continue
        more: list[Any] = []
        if isinstance(item, types.ModuleType):
            continue  # a module that is not course_utils': not looked into (its attributes named in code are)
        if isinstance(item, functools.partial):
            more += [item.func, *item.args, *item.keywords.values()]
        elif isinstance(item, types.MethodType):
            more += [item.__func__, item.__self__]
        elif isinstance(item, types.FunctionType):
            code = item.__code__
            names = _code_names(code)
            more += [c.cell_contents for c in (item.__closure__ or ()) if _has_contents(c)]
            more += list(item.__defaults__ or ()) + list((item.__kwdefaults__ or {}).values())
            for key in names:
                value = item.__globals__.get(key)
                if value is None:
                    continue
                more.append(value)
                if isinstance(value, types.ModuleType) or isinstance(value, type):
                    more += [getattr(value, attr, None) for attr in names if attr in getattr(value, "__dict__", {})]
            wrapped = item.__dict__.get("__wrapped__")
            if wrapped is not None:
                more.append(wrapped)
        elif isinstance(item, type):
            more += [v for v in vars(item).values() if isinstance(v, (types.FunctionType, staticmethod,
                                                                      classmethod, property))]
            more += [b for b in item.__mro__[1:] if b is not object]
        elif isinstance(item, (staticmethod, classmethod)):
            more.append(item.__func__)
        elif isinstance(item, property):
            more += [item.fget, item.fset]
        elif isinstance(item, (list, tuple, set, frozenset)):
            more += list(item)[:200]
        elif isinstance(item, dict):
            more += list(item.values())[:200]
        elif isinstance(item, torch.Tensor):
            continue
        else:
            more.append(type(item))
            attrs = getattr(item, "__dict__", None)
            if isinstance(attrs, dict):
                more += list(attrs.values())[:200]
        stack.extend((m, depth + 1) for m in more)
    return list(dict.fromkeys(found))


def _has_contents(cell: Any) -> bool:
    try:
        _ = cell.cell_contents
    except ValueError:  # an empty cell (a name not bound yet)
        return False
    return True


def _profiled(calls: set[str], fn: Callable[[], Any]) -> Any:
    """Run ``fn``, noting every course_utils function that the *student's* code calls directly."""
    def hook(frame: types.FrameType, event: str, arg: object) -> None:
        if event != "call" or len(calls) >= MAX_CALLS:
            return
        code = frame.f_code
        if not os.path.realpath(code.co_filename).startswith(_COURSE_ROOT):
            return
        caller = frame.f_back
        if caller is not None and is_student_frame(caller.f_code.co_filename):
            module = frame.f_globals.get("__name__", "?")
            calls.add(f"{module}.{getattr(code, 'co_qualname', code.co_name)}")

    previous = sys.getprofile()
    sys.setprofile(hook)
    try:
        return fn()
    finally:
        sys.setprofile(previous)


def _copyable(case: Any) -> bool:
    try:
        copy.deepcopy(case)
    except Exception:  # noqa: BLE001 - whatever deepcopy raises, the answer is "not copyable"
        return False
    return True


def _error(exc: BaseException) -> dict[str, Any]:
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - a student's exception with a broken __str__
        message = ""
    return {"type": type(exc).__name__, "builtin": type(exc).__module__ == "builtins",
            "message": message[:2000], "where": student_line(exc) or ""}


def serve(name: str, inputs: str, out: str, token: str = "") -> None:
    """Call what ``check.<name>(...)`` was given on the cases in ``inputs``; write ``out``.json/.safetensors.

    ``token`` is this submission's secret, written back so that the grader can tell its own
    kernel's answer from any other file."""
    encoder = _plain.Encoder()
    document: dict[str, Any] = {"exercise": name, "token": token}
    try:
        given, obj = submitted(name)
        if not given:
            document["status"] = "missing"
        else:
            _serve(name, obj, inputs, document, encoder)
    except BaseException as exc:  # noqa: BLE001 - report, never raise into the notebook
        document["status"] = "driver-error"
        document["message"] = f"{type(exc).__name__}: {exc}"[:500]
        document["trace"] = traceback.format_exc()[-2000:]
    _plain.save(Path(out), document, encoder.tensors)


def _serve(name: str, obj: Any, inputs: str, document: dict[str, Any], encoder: _plain.Encoder) -> None:
    checker = get_checker(name)
    document["submitted"] = {"type": type_name(obj), "describe": describe(obj), "callable": callable(obj),
                             "name": str(getattr(obj, "__name__", ""))[:100], "course": course_name(obj)}
    if callable(obj) and not isinstance(obj, (torch.Tensor, torch.nn.Module)) or checker.kind == "function":
        document["reached"] = reached(obj)[:MAX_CALLS]
    if checker.kind == "value":
        document["status"] = "ok"
        document["value"] = encoder.top(obj)
        return
    if not callable(obj):
        document["status"] = "misuse"
        return
    cases = torch.load(inputs, weights_only=False)  # the grader's own file: trusted here
    results = []
    for case_name, args, kwargs in cases:
        given = Case(case_name, args, kwargs)
        outcome = run_limited(lambda: checker.seeded(lambda: checker.call(obj, given)),  # noqa: B023 - run at once, in this iteration
                              checker.timeout)
        entry: dict[str, Any] = {"timed_out": outcome.timed_out, "seconds": outcome.seconds,
                                 "printed": outcome.printed[-4000:]}
        if outcome.error is not None:
            entry["error"] = _error(outcome.error)
        elif not outcome.timed_out:
            entry["value"] = encoder.top(outcome.value)
            entry["after"] = encoder.top((tuple(given.args), dict(given.kwargs)), inputs=True)
        results.append(entry)
    document["status"] = "ok"
    document["cases"] = results
    if cases and all("value" in entry for entry in results):
        # Which course_utils functions does the function call? One more run of the first case,
        # traced, outside the timed runs (tracing slows Python-heavy code several times over).
        calls: set[str] = set()
        name, args, kwargs = copy.deepcopy(cases[0]) if _copyable(cases[0]) else cases[0]
        first = Case(name, args, kwargs)
        run_limited(lambda: _profiled(calls, lambda: checker.seeded(lambda: checker.call(obj, first))),
                    10 * checker.timeout)
        document["calls"] = sorted(calls)
