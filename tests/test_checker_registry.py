"""Every registered checker, whatever its chapter: its reference passes, each of its known mistakes
is recognised with *its* hint, and it survives the garbage suite — a submission that is None, a
list, or a function whose output has the wrong dtype, shape or device, holds NaN, raises, or
never returns. "Survives" means: the check returns (it never raises or hangs), it fails, and the
failure is the student's (not stage "internal", which would be a bug in the checker).

A new checker is covered by registering it; nothing here names a chapter.
"""
from __future__ import annotations

import math
import numbers
import time
from typing import Any, Callable

import pytest
import torch

from course_utils.exercises import get_checker, registered_names
from course_utils.exercises._compare import compare
from course_utils.exercises.core import STRICT_ENV, Case, Checker

NAMES = registered_names()
MISTAKES = [(name, i) for name in NAMES for i in range(len(get_checker(name).mistakes))]


@pytest.fixture(autouse=True)
def _lenient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STRICT_ENV, raising=False)  # a failed check must return, not raise


def test_every_chapter_registers_checkers():
    from course_utils.exercises.core import import_errors

    assert import_errors() == {}
    modules = {get_checker(name).module for name in NAMES}
    for chapter in ("ch01", "ch02", "ch03", "ch04", "ch05", "ch06", "ch07", "ch08", "ch09"):
        handed_out = [n for n in NAMES if chapter in (get_checker(n).module or "")]
        assert len(handed_out) >= 3, (chapter, handed_out, modules)


def _submit(checker: Checker, fn: Callable[..., Any]) -> Any:
    """What a student passes for a known function: the function, or its value for a value checker."""
    return fn() if checker.kind == "value" else fn


@pytest.mark.parametrize("name", NAMES)
def test_reference_passes_fast_and_deterministically(name: str):
    checker = get_checker(name)
    result = checker(_submit(checker, checker.reference))  # the first call may import a library
    assert result.passed, result.message
    assert result.message.startswith(f"✓ check.{name} passed")
    cpu = time.process_time()
    again = checker(_submit(checker, checker.reference))
    cpu = time.process_time() - cpu
    assert again.message == result.message
    assert cpu <= 1.0, f"check.{name} used {cpu:.2f} s of CPU once warm"


@pytest.mark.parametrize("name, index", MISTAKES, ids=[f"{n}-{i}" for n, i in MISTAKES])
def test_each_mistake_gets_its_hint(name: str, index: int):
    checker = get_checker(name)
    mistake = checker.mistakes[index]
    result = checker(_submit(checker, mistake.fn))
    assert not result.passed, f"the mistake passes: {mistake.hint}"
    assert result.hint == mistake.hint, result.message


# --------------------------------------------------------------------------- the garbage suite
# Output garbage is made from the reference's own output (as the checker compares it), changed in
# one way at every leaf: so the failure can only come from that change.

def _wrong_dtype(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        if x.dtype == torch.bool:
            return x.long()
        return x.double() if x.dtype != torch.float64 and x.is_floating_point() else x.float()
    if isinstance(x, bool):
        return int(x)
    if isinstance(x, numbers.Integral):
        return float(x) + 0.5
    if isinstance(x, numbers.Real):
        return str(x)
    if isinstance(x, str):
        return x.encode()
    return x


def _wrong_shape(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.unsqueeze(0)
    if isinstance(x, (numbers.Number, str)):
        return [x]
    return x


def _wrong_device(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to("meta")
    if isinstance(x, numbers.Number) and not isinstance(x, bool):
        return torch.tensor(x, device="meta")
    return x


def _nan(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        y = (x.detach().double() if not x.is_floating_point() else x.detach()).contiguous().clone()
        if y.numel():
            y.view(-1)[0] = math.nan
        return y
    if isinstance(x, numbers.Real) and not isinstance(x, bool):
        return math.nan
    if isinstance(x, str):
        return "nan"
    return x


def _leaves(x: Any, fn: Callable[[Any], Any]) -> Any:
    if isinstance(x, tuple):
        return tuple(_leaves(v, fn) for v in x)
    if isinstance(x, list) and not all(isinstance(v, str) for v in x):
        return [_leaves(v, fn) for v in x]
    if isinstance(x, list):  # a list of tokens: change the first one only
        return [fn(x[0]), *x[1:]] if x else x
    if isinstance(x, dict):
        return {k: _leaves(v, fn) for k, v in x.items()}
    return fn(x)


OUTPUT_GARBAGE = {"wrong dtype": _wrong_dtype, "wrong shape": _wrong_shape,
                  "wrong device (meta)": _wrong_device, "NaN": _nan}


def _raises(*args: Any, **kwargs: Any) -> Any:
    raise ValueError("a bug in the student's code")


def _hangs(*args: Any, **kwargs: Any) -> Any:
    while True:
        pass


@pytest.mark.parametrize("garbage", ["None", "a list", *OUTPUT_GARBAGE, "raises", "hangs"])
@pytest.mark.parametrize("name", NAMES)
def test_survives_garbage(name: str, garbage: str, monkeypatch: pytest.MonkeyPatch):
    checker = get_checker(name)
    monkeypatch.setattr(checker, "timeout", 0.3)  # the hanging function is stopped quickly
    if garbage == "None":
        submission: Any = None
    elif garbage == "a list":
        submission = [1, 2, 3]
    elif garbage == "raises":
        submission = _raises
    elif garbage == "hangs":
        submission = _hangs
    elif checker.kind == "value":
        submission = _leaves(checker.reference(), OUTPUT_GARBAGE[garbage])
        if compare(checker.reference(), submission) is None:
            pytest.skip(f"{garbage} does not apply to this value")
    else:
        transform = OUTPUT_GARBAGE[garbage]
        original_call = checker.call

        def garbage_fn(*args: Any, **kwargs: Any) -> Any:  # a stand-in, recognised by the call below
            raise AssertionError("called through the patched call only")

        def call(obj: Any, case: Case) -> Any:
            if obj is garbage_fn:
                return _leaves(original_call(checker.reference, case), transform)
            return original_call(obj, case)

        monkeypatch.setattr(checker, "call", call)
        probe = checker.seeded(lambda: list(checker.cases()))[0]
        expected = checker.seeded(lambda: original_call(checker.reference, probe))
        if compare(expected, _leaves(expected, transform), atol=checker.atol, rtol=checker.rtol) is None:
            pytest.skip(f"{garbage} does not change this checker's output")
        submission = garbage_fn
    start = time.perf_counter()
    result = checker(submission)  # must not raise
    elapsed = time.perf_counter() - start
    assert not result.passed, result.message
    assert result.stage != "internal", result.message
    assert result.message.startswith(f"✗ check.{name}")
    assert elapsed < 60, elapsed
    if garbage == "hangs" and checker.kind == "function":
        assert result.stage == "timeout", result.message
    if garbage == "raises" and checker.kind == "function":
        assert result.stage == "exception" and "ValueError" in result.message, result.message


# --------------------------------------------------------------------------- every case from the seed

def _fingerprint(obj: Any) -> Any:
    """The inputs of a case as comparable plain values (tensors, modules and configs by content)."""
    import re as _re

    if isinstance(obj, torch.Tensor):
        values = obj.detach().cpu().flatten().tolist()[:4096]  # NaN as a string: nan != nan
        return ("tensor", str(obj.dtype), tuple(obj.shape), [v if v == v else "nan" for v in values])
    if isinstance(obj, torch.nn.Module):
        return ("module", repr(obj), [(k, _fingerprint(v)) for k, v in obj.state_dict().items()])
    if isinstance(obj, (list, tuple)):
        return tuple(_fingerprint(x) for x in obj)
    if isinstance(obj, dict):
        return tuple((str(k), _fingerprint(v)) for k, v in obj.items())
    if hasattr(obj, "to_dict"):  # a transformers config
        return ("config", _fingerprint(obj.to_dict()))
    return _re.sub(r" at 0x[0-9a-f]+", "", repr(obj))


def _inputs(checker: Checker, seed: int) -> Any:
    return [(_fingerprint(c.args), _fingerprint(c.kwargs)) for c in checker.make_cases(seed)]


@pytest.mark.parametrize("name", NAMES)
def test_every_case_set_comes_from_the_seed(name: str):
    """A grading run's inputs are new for every seed, so a table of outputs keyed by the inputs
    of one run does not pass another. A checker whose input space is a single point says why
    (``Checker(single_input="...")``); a value checker has no inputs at all."""
    checker = get_checker(name)
    if checker.kind == "value":
        return
    if checker.single_input:
        assert len(checker.single_input) > 20, f"check.{name}: say why its inputs cannot vary"
        return
    assert _inputs(checker, 1) != _inputs(checker, 2), (
        f"check.{name}: seeds 1 and 2 give the same inputs; draw at least one case from torch's generator "
        "(the cases run under the grader's seed), or say why with single_input=")
    assert _inputs(checker, 3) == _inputs(checker, 3), f"check.{name}: the same seed must give the same inputs"
