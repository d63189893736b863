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
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from . import _plain
from ._compare import describe, type_name
from ._limits import run_limited
from .core import _SUBMITTED, Case, _is_student_frame, _student_line, get_checker

_COURSE_ROOT = os.path.realpath(Path(__file__).resolve().parents[1]) + os.sep
MAX_CALLS = 30


def _profiled(calls: set[str], fn: Callable[[], Any]) -> Any:
    """Run ``fn``, noting every course_utils function that the *student's* code calls directly."""
    def hook(frame, event, arg):
        if event != "call" or len(calls) >= MAX_CALLS:
            return
        code = frame.f_code
        if not os.path.realpath(code.co_filename).startswith(_COURSE_ROOT):
            return
        caller = frame.f_back
        if caller is not None and _is_student_frame(caller.f_code.co_filename):
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
            "message": message[:2000], "where": _student_line(exc) or ""}


def serve(name: str, inputs: str, out: str) -> None:
    """Call what ``check.<name>(...)`` was given on the cases in ``inputs``; write ``out``.json/.safetensors."""
    encoder = _plain._Encoder()
    document: dict[str, Any] = {"exercise": name}
    try:
        if name not in _SUBMITTED:
            document["status"] = "missing"
        else:
            _serve(name, _SUBMITTED[name], inputs, document, encoder)
    except BaseException as exc:  # noqa: BLE001 - report, never raise into the notebook
        document["status"] = "driver-error"
        document["message"] = f"{type(exc).__name__}: {exc}"[:500]
        document["trace"] = traceback.format_exc()[-2000:]
    _plain.save(Path(out), document, encoder.tensors)


def _serve(name: str, obj: Any, inputs: str, document: dict[str, Any], encoder: _plain._Encoder) -> None:
    checker = get_checker(name)
    document["submitted"] = {"type": type_name(obj), "describe": describe(obj), "callable": callable(obj),
                             "name": str(getattr(obj, "__name__", ""))[:100]}
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
        outcome = run_limited(lambda: checker._seeded(lambda: checker.call(obj, given)),  # noqa: B023 - run at once, in this iteration
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
        run_limited(lambda: _profiled(calls, lambda: checker._seeded(lambda: checker.call(obj, first))),
                    10 * checker.timeout)
        document["calls"] = sorted(calls)
