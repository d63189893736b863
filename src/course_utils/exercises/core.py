"""The exercise-checker framework: a checker tells a student *what* is wrong.

A student calls ``check.<name>(their_function)`` in a notebook. The checker calls the
function on several seeded inputs (random ones and edge cases), each on fresh copies, with
a time limit, and compares the result with the reference. It reports, in this order, the
first problem it finds: an exception (with the student's own line), a wrong type, a wrong
dtype or device, a wrong shape (with the axes named), NaN/inf, then the values (max
difference and where) -- plus a hint when the output equals a *known wrong variant* (a
``Mistake``). A pass prints one line. A check never raises and never hangs.

Writing a checker (in ``course_utils/exercises/chNN_<topic>.py``)::

    import math
    import torch
    from course_utils.exercises.core import Case, Checker, Mistake, register

    def _reference(q, k, v, mask=None):                      # the course's solution
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))   # (B, nh, T, T)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return scores.softmax(dim=-1)

    def _no_scale(q, k, v, mask=None):                       # a deliberately wrong variant
        return _reference(q * math.sqrt(q.size(-1)), k, v, mask)

    def _cases():                                            # built under a fixed seed
        causal = torch.ones(5, 5, dtype=torch.bool).tril()
        return [
            Case("random", (torch.randn(2, 4, 5, 8), torch.randn(2, 4, 5, 8), torch.randn(2, 4, 5, 8))),
            Case("sequence length 1", (torch.randn(2, 4, 1, 8),) * 3),
            Case("masked positions", (torch.randn(1, 2, 5, 8),) * 3, {"mask": causal}),
        ]

    attention_weights = register(Checker(
        "attention_weights", _reference, _cases,
        axes=("batch", "heads", "seq", "seq"),
        mistakes=[Mistake(_no_scale, "the scores must be divided by sqrt(d_k) (the head size) "
                                     "before the softmax.")],
    ))

and in the notebook: ``from course_utils.exercises import check`` then
``check.attention_weights(my_attention_weights)``. Chapter modules are imported lazily
the first time ``check.<name>`` is not found, so keep their top-level imports light
(torch only; import transformers inside functions).

Conventions and decisions:

* ``Checker(kind="function")`` (the default) receives the student's callable;
  ``kind="value"`` receives a value (a tensor the student computed); then ``reference``
  and every ``Mistake.fn`` take no arguments and return the expected/wrong value.
* ``call(obj, case)`` adapts how the student's object is called (e.g. instantiate a
  module class, load weights, run it). Everything inside ``call`` is under the time limit.
* Passing something that is not a function (e.g. ``check.f(f(x))``) is a *student*
  mistake: the check fails with a message saying what to pass; it does not raise.
  Only a misspelled checker name raises (``AttributeError`` with suggestions): that is
  an author's error in the given check cell.
* ``COURSE_EXERCISES_STRICT=1``: a failed check raises :class:`ExerciseFailed` after
  printing (CI sets it, so a wrong solution in the book breaks the build).
* ``COURSE_EXERCISES_GRADING=1`` (set by the grader in the student's kernel): a check does
  not judge anything; it hands the function (or value) to the grader, which calls it from
  its own process on inputs it made and compares the outputs there (see :mod:`.grade`).
  Nothing a notebook prints, writes or patches is a verdict.
* ``allowed=[fn, ...]``: course_utils functions a solution may call (the grader otherwise
  reports a solution that calls the reference, one of its helpers, or a course_utils
  function of the exercise's name, as not the student's own work).
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import linecache
import os
import pkgutil
import re
import sysconfig
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from ._compare import article, clone, compare, describe, same_input, type_name
from ._limits import Outcome, run_limited

STRICT_ENV = "COURSE_EXERCISES_STRICT"
GRADING_ENV = "COURSE_EXERCISES_GRADING"
#: Marks every font has (DejaVu covers them): emoji render as empty boxes on many sites.
PASS_MARK, FAIL_MARK = "✓", "✗"

__all__ = ["Case", "Checker", "CheckResult", "ExerciseFailed", "HandOverChecker", "Mistake", "check",
           "get_checker", "grading", "hand_over", "register", "registered_names", "submitted"]


class ExerciseFailed(AssertionError):
    """Raised by a failed check only in strict mode (``COURSE_EXERCISES_STRICT=1``)."""


@dataclass
class Case:
    """One input on which the student's function is compared with the reference.

    ``name`` appears in the failure message ("on case 'sequence length 1'"), so make it
    say what is special about the input.
    """

    name: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


@dataclass
class Mistake:
    """A deliberately wrong variant of the reference and the hint to give when the
    student's output equals it (same signature as the reference)."""

    fn: Callable[..., Any]
    hint: str


@dataclass
class CheckResult:
    """What a check found. Truthy when passed; ``message`` is the line that was printed."""

    exercise: str
    passed: bool
    message: str
    stage: str = "pass"  #: pass, exception, timeout, type, dtype, device, shape, nan, value, mutation, misuse, internal
    case: str | None = None
    hint: str | None = None
    seconds: float = 0.0
    _shown_in: Any = field(default=None, repr=False, compare=False)

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"CheckResult({self.exercise!r}, passed={self.passed}, stage={self.stage!r})"

    def _ipython_display_(self) -> None:
        # The check already printed its line; showing the returned object again in the
        # same cell would print it twice. Displayed later (``r`` in another cell) it prints.
        if self._shown_in is not None and self._shown_in == _execution_count():
            return
        print(self.message)

    def to_record(self) -> dict[str, Any]:
        return {"exercise": self.exercise, "passed": self.passed, "stage": self.stage,
                "case": self.case, "message": self.message, "seconds": round(self.seconds, 3)}


def _execution_count() -> int | None:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    return getattr(shell, "execution_count", None) if shell is not None else None


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


# --------------------------------------------------------------------------- tracebacks

def _library_roots() -> tuple[str, ...]:
    roots = {sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots.add(str(Path(__file__).resolve().parents[1]))  # course_utils itself
    return tuple(os.path.realpath(r) for r in roots)


_LIB_ROOTS = _library_roots()


def is_student_frame(filename: str) -> bool:
    if filename.startswith("<frozen"):
        return False
    if filename.startswith("<"):  # <ipython-input-..>, <string>, <stdin>
        return True
    return not os.path.realpath(filename).startswith(_LIB_ROOTS)


def student_line(exc: BaseException) -> str | None:
    """``line 3 of attention: scores = q @ k.T`` -- the deepest line of the student's code."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if is_student_frame(f.filename)]
    if not frames:
        return None
    frame = frames[-1]
    source = (frame.line or linecache.getline(frame.filename, frame.lineno or 0)).strip()
    if len(source) > 100:
        source = source[:97] + "..."
    return f"line {frame.lineno} of {frame.name}: `{source}`" if source else f"line {frame.lineno} of {frame.name}"


def _first_line(text: str, limit: int = 200) -> str:
    text = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- the checker

class Checker:
    """Compares a student's function (or value) with ``reference`` on ``cases()``.

    Parameters
    ----------
    name:       the name students call: ``check.<name>``; also the exercise id in grading.
    reference:  the correct function (``kind="function"``) or a zero-argument function
                returning the expected value (``kind="value"``).
    cases:      a zero-argument function returning a list of :class:`Case`; it runs under
                ``torch.manual_seed(seed)``, so random inputs are the same every time.
    mistakes:   known wrong variants with their hints (see :class:`Mistake`).
    axes:       names of the output's dimensions, used in shape messages.
    atol, rtol: tolerances for floating-point values (``torch.isclose``).
    timeout:    seconds the student's code may take per case.
    call:       ``call(obj, case) -> output``; default ``obj(*case.args, **case.kwargs)``.
    allow_mutation: if False (default) a function that changes its inputs in place fails.
    allowed:    course_utils functions a solution may call (see the module docstring).
    single_input: why the cases cannot depend on the seed (their input space is a single point);
                otherwise at least one case must be drawn from torch's generator, so that each
                grading run's inputs are new (``tests/test_checker_registry.py`` checks it).
    """

    def __init__(self, name: str, reference: Callable[..., Any], cases: Callable[[], Sequence[Case]] | None = None,
                 *, mistakes: Iterable[Mistake] = (), kind: str = "function", axes: Any = None,
                 atol: float = 1e-5, rtol: float = 1e-4, timeout: float = 2.0,
                 call: Callable[[Any, Case], Any] | None = None, allow_mutation: bool = False,
                 seed: int = 0, what: str | None = None, allowed: Iterable[Callable[..., Any]] = (),
                 single_input: str | None = None) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"checker name {name!r} must be a lower-case Python identifier")
        if kind not in {"function", "value"}:
            raise ValueError(f"kind must be 'function' or 'value', got {kind!r}")
        if kind == "function" and cases is None:
            raise ValueError(f"checker {name!r}: a function checker needs cases")
        self.name = name
        self.reference = reference
        self.cases = cases
        self.mistakes = list(mistakes)
        self.kind = kind
        self.axes = axes
        self.atol, self.rtol = atol, rtol
        self.timeout = timeout
        self.call = call or (lambda obj, case: obj(*case.args, **case.kwargs))
        self.allow_mutation = allow_mutation
        self.seed = seed
        self.what = what or ("your function" if kind == "function" else "your value")
        self.module = getattr(reference, "__module__", None)
        self.allowed = list(allowed)
        self.single_input = single_input

    def mistake(self, hint: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Decorator form of adding a :class:`Mistake`."""
        def add(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.mistakes.append(Mistake(fn, hint))
            return fn
        return add

    def __repr__(self) -> str:
        return f"<checker check.{self.name} ({self.kind}, {len(self.mistakes)} known mistakes)>"

    # -- running

    def __call__(self, submission: Any) -> CheckResult | None:
        if grading():
            hand_over(self.name, submission)
            return None
        start = time.perf_counter()
        try:
            result = self._run(submission)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - a bug in the checker must not crash the notebook
            result = self.fail("internal", f"the checker itself failed ({type(exc).__name__}: "
                                            f"{_first_line(str(exc))}); this is a bug in course_utils — "
                                            "please report it with this message.")
        result.seconds = time.perf_counter() - start
        result._shown_in = _execution_count()
        print(result.message)
        if _env_true(STRICT_ENV) and not result.passed:
            raise ExerciseFailed(result.message)
        return result

    def fail(self, stage: str, text: str, case: Case | None = None, hint: str | None = None) -> CheckResult:
        """A failed result of this check (the message names the check and the case)."""
        where = f" (case '{case.name}'{_describe_inputs(case)})" if case is not None else ""
        message = f"{FAIL_MARK} check.{self.name}{where}: {text}"
        if hint:
            message += f"\n   Hint: {hint}"
        return CheckResult(self.name, False, message, stage=stage, case=case.name if case else None, hint=hint)


    def seeded(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` under ``torch.manual_seed(self.seed)``, the caller's random state kept."""
        # fork_rng(devices=[]) restores the CPU generator afterwards without touching CUDA,
        # so a check neither depends on nor disturbs the notebook's random stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return fn()


    def _run(self, submission: Any) -> CheckResult:
        if self.kind == "value":
            return self._run_value(submission)
        misuse = self._misuse(submission)
        if misuse:
            return self.fail("misuse", misuse)
        cases = self.make_cases()
        for case in cases:
            expected = self.expected(case)
            given = _copy_case(case)
            outcome = run_limited(lambda: self.seeded(lambda: self.call(submission, given)),  # noqa: B023 - run at once
                                  self.timeout)
            ran = not (self.allow_mutation or outcome.error is not None or outcome.timed_out)
            mutated = self.mutated(case, given) if ran else None
            failed = self.judge_case(case, expected, outcome, mutated)
            if failed is not None:
                return failed
        return self.passed(cases)

    # -- the steps of a check, also used by the grader (which runs the student's side elsewhere)

    def make_cases(self, seed: int | None = None) -> list[Case]:
        """The cases, built under ``seed`` (default: the checker's own)."""
        if self.cases is None:
            raise ValueError(f"checker {self.name!r} has no cases (a value checker)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed if seed is None else seed)
            return list(self.cases())

    def expected(self, case: Case) -> Any:
        """The reference's output on a fresh copy of ``case``."""
        return self.seeded(lambda: self.call(self.reference, _copy_case(case)))

    def passed(self, cases: Sequence[Case]) -> CheckResult:
        return CheckResult(self.name, True, f"{PASS_MARK} check.{self.name} passed "
                                            f"({len(cases)} cases: {', '.join(c.name for c in cases)}).")

    def judge_case(self, case: Case, expected: Any, outcome: Outcome, mutated: str | None,
                   prepare: Callable[[Any], Any] | None = None) -> CheckResult | None:
        """The failure on ``case`` given what the student's code did (``outcome``), or None.

        ``prepare`` turns a mistake's output into the form ``outcome.value`` has (the grader
        compares plain data decoded from the student's kernel)."""
        if outcome.timed_out:
            return self.fail("timeout", f"{self.what} timed out after {self.timeout:g} s — an infinite "
                                        "loop (a `while` whose condition never changes)? The check stopped it."
                              + _printed(outcome), case)
        if outcome.error is not None:
            return self._exception(outcome, case)
        problem = compare(expected, outcome.value, axes=self.axes, atol=self.atol, rtol=self.rtol)
        if problem is not None:
            text = problem.message
            if mutated:
                text += f" (Also: {self.what} changed its input `{mutated}` in place.)"
            return self.fail(problem.stage, text + _printed(outcome), case,
                              self._hint(case, outcome.value, prepare))
        if mutated:
            return self.fail("mutation", f"{self.what} changed its input `{mutated}` in place — work on a "
                                          "copy or use out-of-place operations (`x = x + 1`, not `x += 1`; "
                                          "`masked_fill`, not `masked_fill_`).", case)
        return None

    def _run_value(self, submission: Any) -> CheckResult:
        if callable(submission) and not isinstance(submission, (torch.Tensor, torch.nn.Module)):
            return self.fail("misuse", "expected the value you computed, not a function "
                                        "— call your function and pass its result.")
        if submission is None:
            return self.fail("type", "the value is None — not done yet? Compute it in the cell above "
                                      "(and run that cell) before checking.")
        return self.judge_value(self.seeded(self.reference), submission)

    def judge_value(self, expected: Any, submission: Any,
                    prepare: Callable[[Any], Any] | None = None) -> CheckResult:
        """The verdict of a ``kind="value"`` check on ``submission`` (see :meth:`judge_case`)."""
        problem = compare(expected, submission, axes=self.axes, atol=self.atol, rtol=self.rtol)
        if problem is None:
            return CheckResult(self.name, True, f"{PASS_MARK} check.{self.name} passed.")
        hint = None
        for mistake in self.mistakes:
            try:
                wrong = self.seeded(mistake.fn)
                if prepare is not None:
                    wrong = prepare(wrong)
            except Exception:  # noqa: BLE001 - a variant that cannot run here says nothing
                continue
            if compare(wrong, submission, atol=self.atol, rtol=self.rtol) is None:
                hint = mistake.hint
                break
        return self.fail(problem.stage, problem.message, None, hint)

    def _misuse(self, submission: Any) -> str | None:
        if callable(submission):
            return None
        if submission is None:
            return ("expected your function, got None — pass the function itself "
                    f"(e.g. `check.{self.name}(my_function)`), and run the cell that defines it first.")
        return (f"expected your function, got {article(type_name(submission))} "
                f"({describe(submission)}) — pass the function itself, not the result of calling it.")

    def _exception(self, outcome: Outcome, case: Case) -> CheckResult:
        exc = outcome.error
        assert exc is not None
        where = outcome.where if outcome.where is not None else student_line(exc)
        if isinstance(exc, NotImplementedError):
            detail = _first_line(str(exc))
            return self.fail("exception", "not implemented yet — your function still raises NotImplementedError. "
                                           "Replace the `raise` line with your code."
                              + (f" ({detail})" if detail else ""), case)
        text = f"{self.what} raised {type(exc).__name__}: {_first_line(str(exc))}"
        if where:
            text += f"\n   at {where}"
        if isinstance(exc, SystemExit):
            text += "\n   (sys.exit/exit() inside a function stops it; use `return`.)"
        return self.fail("exception", text + _printed(outcome), case)

    def mutated(self, case: Case, given: Case) -> str | None:
        """The name of the first input that ``given`` (after the call) changed, or None."""
        names = _arg_names(self.reference, case)
        for i, (before, after) in enumerate(zip(case.args, given.args)):
            if not same_input(before, after):
                return names[i] if i < len(names) else f"argument {i + 1}"
        for key, before in case.kwargs.items():
            if not same_input(before, given.kwargs.get(key)):
                return key
        return None

    def _hint(self, case: Case, got: Any, prepare: Callable[[Any], Any] | None) -> str | None:
        # A checker subclass may override _diagnose(case, got) without ``prepare``.
        if prepare is not None and "prepare" in inspect.signature(self._diagnose).parameters:
            return self._diagnose(case, got, prepare=prepare)
        return self._diagnose(case, got)

    def _diagnose(self, case: Case, got: Any, prepare: Callable[[Any], Any] | None = None) -> str | None:
        """The hint of the first known mistake whose output equals the student's."""
        for mistake in self.mistakes:
            try:
                wrong = self.seeded(lambda: self.call(mistake.fn, _copy_case(case)))  # noqa: B023 - run at once
                if prepare is not None:
                    wrong = prepare(wrong)
            except Exception:  # noqa: BLE001 - a variant that cannot run on this case says nothing
                continue
            if compare(wrong, got, atol=self.atol, rtol=self.rtol) is None:
                return mistake.hint
        return None


def draw(low: int, high: int) -> int:
    """A whole number in ``[low, high]`` from torch's generator. Case functions run under the
    grading run's seed, so a case drawn with this is new in every run: a table of outputs for
    one run's inputs does not pass another."""
    if high < low:
        raise ValueError(f"draw({low}, {high}): high is below low")
    return int(torch.randint(low, high + 1, ()).item())


def pick(options: Sequence[Any]) -> Any:
    """One of ``options``, drawn like :func:`draw`."""
    return options[draw(0, len(options) - 1)]


WORDS = ("the", "attention", "head", "tokenizer", "embedding", "unbelievable", "café", "naïve", "Transformer",
         "layers", "déjà", "vu", "12", "3.5", "x", "Hello", "world", "it's", "positional", "résumé", "—",
         "snowflakes", "quickly", "GPU", "mask", "über", "jalapeño", "reads", "an", "encoder")


def random_text(words: int) -> str:
    """A sentence of ``words`` words (accents, numbers, punctuation) drawn like :func:`draw`."""
    out = []
    for _ in range(words):
        word = pick(WORDS)
        out.append(word + pick(("", "", "", ",", ".", "!", "?")))
    return " ".join(out)


def _copy_case(case: Case) -> Case:
    return Case(case.name, clone(tuple(case.args)), clone(dict(case.kwargs)))


def _arg_names(fn: Callable[..., Any], case: Case) -> list[str]:
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return []
    return params[: len(case.args)]


def _describe_inputs(case: Case) -> str:
    shapes = [tuple(a.shape) for a in case.args if isinstance(a, torch.Tensor)]
    if shapes and len(shapes) == len(case.args):
        text = ", ".join(str(s) for s in dict.fromkeys(shapes))
        return f", inputs of shape {text}" if len(text) < 60 else ""
    return ""


def _printed(outcome: Outcome) -> str:
    lines = [ln for ln in outcome.printed.splitlines() if ln.strip()]
    if not lines:
        return ""
    shown = "; ".join(ln[:80] for ln in lines[:3])
    more = f" (+{len(lines) - 3} more lines)" if len(lines) > 3 else ""
    return f"\n   Your function printed: {shown}{more}"


# --------------------------------------------------------------------------- the registry

_REGISTRY: dict[str, Any] = {}  #: Checker, or HandOverChecker in grading mode
#: Grading mode: what each ``check.<name>(...)`` was last given (the grader's driver reads it).
_SUBMITTED: dict[str, Any] = {}
#: Grading mode is decided once, when this module is first imported (the grader imports it in
#: the kernel before any cell runs), so a notebook cannot switch it off by changing the environment.
_GRADING_AT_IMPORT = _env_true(GRADING_ENV)


def grading() -> bool:
    """True in a kernel that is being graded (``COURSE_EXERCISES_GRADING=1``)."""
    return _GRADING_AT_IMPORT or _env_true(GRADING_ENV)


def hand_over(name: str, submission: Any) -> None:
    """Grading mode: keep ``submission`` for the grader's driver; judge nothing."""
    _SUBMITTED[name] = submission
    print(f"check.{name}: handed to the grader.")


def withdraw(name: str) -> None:
    """Grading mode: forget what ``check.<name>`` was given (nothing handed over any more)."""
    _SUBMITTED.pop(name, None)


def handed_over() -> dict[str, Any]:
    """What each ``check.<name>`` was last given in grading mode (a copy)."""
    return dict(_SUBMITTED)


def submitted(name: str) -> tuple[bool, Any]:
    """``(True, what check.<name> was last given)`` in grading mode, else ``(False, None)``."""
    if name in _SUBMITTED:
        return True, _SUBMITTED[name]
    return False, None


class HandOverChecker:
    """What ``check.<name>`` is in a kernel that is being graded: it hands the submission over.

    It holds no reference, no known mistakes, no cases and no way to compute an expected value:
    only what the grader's driver needs to call a function the way the checker does (``call``,
    ``timeout``, ``kind``). The grader compares outputs in its own process.
    """

    def __init__(self, checker: "Checker") -> None:
        self.name, self.kind, self.call = checker.name, checker.kind, checker.call
        self.timeout, self.seed, self.what = checker.timeout, checker.seed, checker.what
        self.allow_mutation, self.module = checker.allow_mutation, checker.module

    def __call__(self, submission: Any) -> None:
        hand_over(self.name, submission)

    def seeded(self, fn: Callable[[], Any]) -> Any:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return fn()

    def mistake(self, hint: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        return lambda fn: fn  # known mistakes stay with the grader

    def __repr__(self) -> str:
        return f"<check.{self.name}: hands your {'function' if self.kind == 'function' else 'value'} to the grader>"
_IMPORT_ERRORS: dict[str, str] = {}
_IMPORTED: set[str] = set()
_LOCK = threading.RLock()
_CHAPTER_MODULE = re.compile(r"ch\d+_\w+")


def register(checker: Checker) -> Any:
    """Make ``check.<checker.name>`` available; returns the checker.

    Names are global across chapters; registering a name twice from two different
    modules is an error (re-importing the same module replaces its checker). In a kernel
    that is being graded the registry (and the return value) is a :class:`HandOverChecker`:
    the checker's reference and known mistakes are not kept there.
    """
    with _LOCK:
        old = _REGISTRY.get(checker.name)
        if old is not None and old.module != checker.module:
            raise ValueError(f"check.{checker.name} is already registered by {old.module}; "
                             "choose another name")
        entry: Any = HandOverChecker(checker) if grading() else checker
        _REGISTRY[checker.name] = entry
    return entry


def _chapter_modules() -> list[str]:
    package = Path(__file__).parent
    return sorted(m.name for m in pkgutil.iter_modules([str(package)]) if _CHAPTER_MODULE.fullmatch(m.name))


def _import_chapter(module: str) -> None:
    if module in _IMPORTED:
        return
    _IMPORTED.add(module)
    try:
        importlib.import_module(f"{__package__}.{module}")
    except Exception as exc:  # noqa: BLE001 - one broken chapter must not hide the others' checkers
        _IMPORT_ERRORS[module] = f"{type(exc).__name__}: {_first_line(str(exc))}"


def load_all() -> None:
    """Import every chapter checker module (``chNN_*.py``) that is not imported yet."""
    with _LOCK:
        for module in _chapter_modules():
            _import_chapter(module)


def get_checker(name: str) -> Any:
    """The checker called ``name``, importing chapter modules until it is found."""
    with _LOCK:
        if name in _REGISTRY:
            return _REGISTRY[name]
        for module in _chapter_modules():
            _import_chapter(module)
            if name in _REGISTRY:
                return _REGISTRY[name]
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        text = f"there is no checker check.{name}"
        if close:
            text += f"; did you mean {', '.join('check.' + c for c in close)}?"
        else:
            text += f". Available: {', '.join(sorted(_REGISTRY)) or 'none'}."
        if _IMPORT_ERRORS:
            text += " (Checker modules that failed to import: " + "; ".join(
                f"{m}: {e}" for m, e in sorted(_IMPORT_ERRORS.items())) + ")"
        raise AttributeError(text)


def registered_names() -> list[str]:
    """Names of all checkers (imports every chapter module)."""
    load_all()
    return sorted(_REGISTRY)


def import_errors() -> dict[str, str]:
    """Chapter checker modules that failed to import, with the error."""
    load_all()
    return dict(_IMPORT_ERRORS)


class _CheckNamespace:
    """``check.<name>(submission)`` for every registered checker (tab-completes)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return get_checker(name)

    def __dir__(self) -> list[str]:
        return registered_names()

    def __repr__(self) -> str:
        return f"<course checks: {', '.join(registered_names())}>"


check = _CheckNamespace()
