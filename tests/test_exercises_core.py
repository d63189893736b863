"""The checker framework (course_utils.exercises.core) and the worked example, check.count_parameters.

Every message a student can see is asserted: the order of the stages (exception, type,
dtype/device, shape, NaN, value), the hints of the known mistakes, and the bad inputs a
student can pass (a function that raises, hangs, returns None / a list / a numpy array /
the wrong dtype / a tensor on another device, or mutates its input).
"""
from __future__ import annotations

import math
import sys
import time

import numpy as np
import pytest
import torch

from course_utils.exercises import Case, Checker, CheckResult, ExerciseFailed, Mistake, check, core
from course_utils.exercises import ch01_architectures as ch01

# --------------------------------------------------------------------------- a test checker
# Attention weights, the example of core's docstring: (B, nh, T, hs) x 2 -> (B, nh, T, T).


def _attn(q, k, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, nh, T, T)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1)


def _no_scale(q, k, mask=None):
    return _attn(q * math.sqrt(q.size(-1)), k, mask)


def _wrong_axis(q, k, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-2)


def _mask_after_softmax(q, k, mask=None):
    weights = (q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))).softmax(dim=-1)
    return weights.masked_fill(~mask, 0.0) if mask is not None else weights


def _cases():
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    return [
        Case("random", (torch.randn(2, 4, 5, 8), torch.randn(2, 4, 5, 8))),
        Case("sequence length 1", (torch.randn(2, 4, 1, 8), torch.randn(2, 4, 1, 8))),
        Case("batch of 1", (torch.randn(1, 4, 5, 8), torch.randn(1, 4, 5, 8))),
        Case("masked positions", (torch.randn(2, 4, 5, 8), torch.randn(2, 4, 5, 8)), {"mask": causal}),
    ]


NO_SCALE = "divide the scores by sqrt(d_k) before the softmax."
WRONG_AXIS = "the softmax must run over the keys (dim=-1)."
MASK_AFTER = "apply the mask to the scores before the softmax, with -inf."

attn = Checker("test_attention", _attn, _cases, axes=("batch", "heads", "seq", "seq"), timeout=0.5,
               mistakes=[Mistake(_no_scale, NO_SCALE), Mistake(_wrong_axis, WRONG_AXIS),
                         Mistake(_mask_after_softmax, MASK_AFTER)])


def run(checker, fn) -> CheckResult:
    result = checker(fn)
    assert isinstance(result, CheckResult)
    return result


# --------------------------------------------------------------------------- passing


def test_reference_passes_with_one_line(capsys):
    result = run(attn, _attn)
    assert result.passed and bool(result) and result.stage == "pass"
    out = capsys.readouterr().out
    assert out == ("✓ check.test_attention passed (4 cases: random, sequence length 1, batch of 1, "
                   "masked positions).\n")


def test_known_mistakes_fail_with_their_hint():
    for wrong, hint, case in [(_no_scale, NO_SCALE, "random"), (_wrong_axis, WRONG_AXIS, "random"),
                              (_mask_after_softmax, MASK_AFTER, "masked positions")]:
        result = run(attn, wrong)
        assert not result.passed
        assert (result.stage, result.hint, result.case) == ("value", hint, case)
        assert result.message.startswith(f"✗ check.test_attention (case '{case}', inputs of shape (2, 4, 5, 8)): "
                                          "values differ from the reference: max |difference| ")
        assert result.message.endswith(f"\n   Hint: {hint}")


def test_value_message_names_the_place_and_values():
    def off_at_one_place(q, k, mask=None):
        out = _attn(q, k, mask).clone()
        out[1, 2, 3, 4] += 0.25
        return out

    result = run(attn, off_at_one_place)
    assert result.stage == "value" and result.hint is None
    assert "max |difference| 0.25 at [1, 2, 3, 4]" in result.message
    assert "1 of 200 values differ." in result.message


# --------------------------------------------------------------------------- stage by stage


def test_exception_names_the_students_own_line():
    def broken(q, k, mask=None):
        scores = q @ k  # forgot the transpose
        return scores

    result = run(attn, broken)
    assert result.stage == "exception"
    first, second = result.message.splitlines()
    assert first.startswith("✗ check.test_attention (case 'random', inputs of shape (2, 4, 5, 8)): "
                            "your function raised RuntimeError: ")
    line = broken.__code__.co_firstlineno + 1  # the file's (in a notebook: the cell's) line number
    assert second == f"   at line {line} of broken: `scores = q @ k  # forgot the transpose`"


def test_stub_says_not_implemented_with_its_hint():
    def stub(q, k, mask=None):
        raise NotImplementedError("Hint: scores = q @ k.transpose(-2, -1)")

    result = run(attn, stub)
    assert result.stage == "exception"
    assert result.message == ("✗ check.test_attention (case 'random', inputs of shape (2, 4, 5, 8)): not implemented "
                              "yet — your function still raises NotImplementedError. Replace the `raise` line with "
                              "your code. (Hint: scores = q @ k.transpose(-2, -1))")


@pytest.mark.parametrize("body", ["loop", "sleep", "swallow"])
def test_a_hanging_function_is_stopped(body):
    def hangs(q, k, mask=None):
        if body == "loop":
            while True:
                pass
        elif body == "sleep":
            time.sleep(60)
        else:  # a bare except that swallows every interruption
            while True:
                try:
                    time.sleep(60)
                except:  # noqa: E722 - the point: a student's bare except that swallows the interrupt
                    pass

    start = time.perf_counter()
    result = run(attn, hangs)
    assert time.perf_counter() - start < 5
    assert result.stage == "timeout"
    assert "your function timed out after 0.5 s" in result.message


def test_after_a_timeout_the_alarm_is_off():
    run(attn, lambda q, k, mask=None: time.sleep(60))
    time.sleep(0.3)  # a stray alarm would raise here
    assert run(attn, _attn).passed


@pytest.mark.parametrize("returned, stage, text", [
    (None, "type", "your function returned None — did you forget the `return` statement?"),
    ([1.0, 2.0], "type", "expected a torch.Tensor, got a list — build one tensor (torch.stack / torch.cat) "
                         "instead of a Python list."),
    (np.zeros((2, 4, 5, 5)), "type", "expected a torch.Tensor, got a numpy.ndarray — keep the computation in torch "
                                     "(or wrap the result with torch.from_numpy)."),
    (torch.zeros(2, 4, 5, 5, dtype=torch.float64), "dtype",
     "wrong dtype: expected torch.float32, got torch.float64 — a Python float, np.float64 or `.double()` made it "
     "double precision? Keep the input's dtype."),
    (torch.zeros(2, 4, 5, 5, device="meta"), "device",
     "wrong device: expected the output on cpu (where the inputs are), got meta — keep the computation on the "
     "input's device (x.device)."),
    (torch.zeros(2, 5, 4, 5), "shape", "wrong shape: expected (batch, heads, seq, seq) = (2, 4, 5, 5), got "
                                       "(2, 5, 4, 5) — did you transpose the wrong axes?"),
    (torch.zeros(2, 5, 5), "shape", "wrong shape: expected (batch, heads, seq, seq) = (2, 4, 5, 5), got (2, 5, 5) "
                                    "— the `heads` axis (dim 1) is missing — did you sum, index or squeeze it away?"),
    (torch.zeros(2, 4, 1, 5, 5), "shape", "wrong shape: expected (batch, heads, seq, seq) = (2, 4, 5, 5), got "
                                          "(2, 4, 1, 5, 5) — there is an extra axis of size 1 at dim 2 — squeeze it "
                                          "(or drop keepdim=True)."),
    (torch.zeros(2, 4, 5, 7), "shape", "wrong shape: expected (batch, heads, seq, seq) = (2, 4, 5, 5), got "
                                       "(2, 4, 5, 7) — the `seq` axis (dim 3) has size 7 instead of 5."),
])
def test_wrong_outputs_are_named(returned, stage, text):
    result = run(attn, lambda q, k, mask=None: returned)
    assert result.stage == stage
    assert result.message == f"✗ check.test_attention (case 'random', inputs of shape (2, 4, 5, 8)): {text}"


def test_nan_is_located():
    def nan_at(q, k, mask=None):
        out = _attn(q, k, mask).clone()
        out[0, 1, 2, 3] = float("nan")
        out[1, 0, 0, 0] = float("inf")
        return out

    result = run(attn, nan_at)
    assert result.stage == "nan"
    assert "NaN at [0, 1, 2, 3] (2 non-finite values in all) where the expected value is finite" in result.message


def test_mutating_the_input_is_caught():
    def in_place(q, k, mask=None):
        q /= math.sqrt(q.size(-1))  # changes the caller's tensor
        return (q @ k.transpose(-2, -1)).softmax(dim=-1)

    result = run(attn, in_place)
    assert result.stage == "mutation"
    assert "your function changed its input `q` in place" in result.message


def test_inputs_are_fresh_copies_each_time():
    seen = []
    run(attn, lambda q, k, mask=None: seen.append(q) or _attn(q, k, mask))
    assert len(seen) == 4 and len({id(t) for t in seen}) == 4


def test_prints_are_captured_and_summarised(capsys):
    def noisy(q, k, mask=None):
        print("q is", tuple(q.shape))
        return _attn(q, k, mask) + 1

    result = run(attn, noisy)
    assert result.message.splitlines()[1] == "   Your function printed: q is (2, 4, 5, 8)"
    assert "q is" not in capsys.readouterr().out.splitlines()[0]


def test_system_exit_and_global_state():
    result = run(attn, lambda q, k, mask=None: sys.exit(1))
    assert result.stage == "exception" and "raised SystemExit: 1" in result.message

    def flips_globals(q, k, mask=None):
        torch.set_default_dtype(torch.float64)
        torch.set_grad_enabled(False)
        return _attn(q, k, mask)

    assert run(attn, flips_globals).passed
    assert torch.get_default_dtype() == torch.float32 and torch.is_grad_enabled()


@pytest.mark.parametrize("thing, text", [
    (None, "expected your function, got None — pass the function itself (e.g. `check.test_attention(my_function)`), "
           "and run the cell that defines it first."),
    (torch.zeros(3), "expected your function, got a torch.Tensor (tensor of shape (3,)) — pass the function itself, "
                     "not the result of calling it."),
    ("attention", "expected your function, got a str ('attention') — pass the function itself, not the result of "
                  "calling it."),
])
def test_passing_something_else_than_a_function(thing, text):
    result = run(attn, thing)
    assert result.stage == "misuse"
    assert result.message == f"✗ check.test_attention: {text}"


def test_odd_return_values_never_crash_the_checker():
    class Weird:
        def __repr__(self):
            raise RuntimeError("no repr")

        def __eq__(self, other):
            raise RuntimeError("no eq")

    for returned in (Weird(), (x for x in range(3)), {"a": 1}, "text", 3.5, True):
        result = run(attn, lambda q, k, mask=None, r=returned: r)
        assert result.stage == "type", result.message
    weird = run(core.get_checker("count_parameters"), lambda m: Weird())
    assert weird.message.endswith("expected an int, got a Weird.")


def test_wrong_number_of_arguments_is_an_exception_not_a_crash():
    result = run(attn, lambda q: q)
    assert result.stage == "exception" and "TypeError" in result.message


# --------------------------------------------------------------------------- robustness & env


def test_a_broken_checker_reports_instead_of_raising():
    bad = Checker("test_broken", lambda x: 1 / 0, lambda: [Case("one", (1,))])
    result = run(bad, lambda x: x)
    assert result.stage == "internal"
    assert "the checker itself failed (ZeroDivisionError: division by zero)" in result.message


def test_strict_mode_raises_after_printing(monkeypatch, capsys):
    monkeypatch.setenv(core.STRICT_ENV, "1")
    with pytest.raises(ExerciseFailed, match="values differ"):
        attn(_no_scale)
    assert capsys.readouterr().out.startswith("✗ check.test_attention")
    assert attn(_attn).passed  # a pass does not raise


def test_grading_mode_only_hands_the_function_over(monkeypatch, capsys):
    # In a graded kernel a check judges nothing: the grader calls the function from outside.
    monkeypatch.setenv(core.GRADING_ENV, "1")
    for name in core.handed_over():
        core.withdraw(name)
    assert attn(_no_scale) is None
    assert capsys.readouterr().out == "check.test_attention: handed to the grader.\n"
    attn(_attn)  # the last call counts
    assert core.handed_over() == {"test_attention": _attn} and core.submitted("test_attention") == (True, _attn)
    core.withdraw("test_attention")
    assert core.handed_over() == {} and core.submitted("test_attention") == (False, None)


def test_marks_render_without_an_emoji_font():
    # ✓ (U+2713) and ✗ (U+2717) are in DejaVu Sans; emoji render as empty boxes on many sites.
    assert (core.PASS_MARK, core.FAIL_MARK) == ("\u2713", "\u2717")


def test_deterministic_and_leaves_the_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = attn(_no_scale).message
    second = attn(_no_scale).message
    assert torch.equal(torch.rand(3), expected)  # the notebook's random stream is untouched
    assert first == second


def test_repr_and_display(capsys):
    result = attn(_attn)
    capsys.readouterr()
    assert repr(result) == "CheckResult('test_attention', passed=True, stage='pass')"
    result._shown_in = -1  # displayed in another cell: show the line again
    result._ipython_display_()
    assert capsys.readouterr().out.startswith("✓ check.test_attention passed")


def test_value_checkers():
    def expected():
        return torch.arange(6.0).reshape(2, 3).softmax(dim=-1)

    value = Checker("test_probs", expected, kind="value", axes=("rows", "cols"),
                    mistakes=[Mistake(lambda: torch.arange(6.0).reshape(2, 3).softmax(dim=0), WRONG_AXIS)])
    assert value(expected()).passed
    wrong = value(torch.arange(6.0).reshape(2, 3).softmax(dim=0))
    assert (wrong.stage, wrong.hint) == ("value", WRONG_AXIS)
    assert value(None).message == ("✗ check.test_probs: the value is None — not done yet? Compute it in the cell "
                                   "above (and run that cell) before checking.")
    assert value(expected).stage == "misuse"
    assert value(torch.zeros(3, 2)).message.startswith("✗ check.test_probs: wrong shape: expected (rows, cols) = "
                                                       "(2, 3), got (3, 2)")


# --------------------------------------------------------------------------- registry


def test_registry_finds_chapter_checkers_and_suggests_names():
    assert check.count_parameters is ch01.count_parameters
    assert "count_parameters" in dir(check)
    with pytest.raises(AttributeError, match=r"no checker check.count_paramters; did you mean check.count_parameters"):
        check.count_paramters  # noqa: B018 - the attribute access is what raises


def test_a_broken_chapter_module_does_not_hide_the_others(monkeypatch):
    monkeypatch.setattr(core, "_REGISTRY", {})
    monkeypatch.setattr(core, "_IMPORTED", set())
    monkeypatch.setattr(core, "_IMPORT_ERRORS", {})
    monkeypatch.setattr(core, "_chapter_modules", lambda: ["ch00_missing", "ch01_architectures"])
    monkeypatch.delitem(sys.modules, "course_utils.exercises.ch01_architectures")
    assert check.count_parameters.name == "count_parameters"
    assert "ch00_missing" in core._IMPORT_ERRORS
    with pytest.raises(AttributeError, match=r"failed to import: ch00_missing: ModuleNotFoundError"):
        check.nothing_like_this  # noqa: B018 - the attribute access is what raises


def test_duplicate_names_across_modules_are_refused():
    other = Checker("count_parameters", lambda m: 0, lambda: [])
    other.module = "somewhere_else"
    with pytest.raises(ValueError, match="already registered"):
        core.register(other)


def test_bad_checker_definitions_are_refused():
    with pytest.raises(ValueError, match="lower-case Python identifier"):
        Checker("Count Params", lambda m: 0, lambda: [])
    with pytest.raises(ValueError, match="needs cases"):
        Checker("no_cases", lambda m: 0)


# --------------------------------------------------------------------------- check.count_parameters


def test_count_parameters_reference_passes_and_gpt2_count():
    assert check.count_parameters(ch01.count_parameters_reference).passed
    assert ch01.count_parameters_reference(ch01.TinyTiedLM()) == 11 * 6 + 2 * 6  # the tied matrix once


@pytest.mark.parametrize("wrong, case, hint_start", [
    (ch01._count_tensors, "one Linear(3, 4)", "you counted parameter *tensors*"),
    (ch01._not_recursive, "nested submodules", "only the module's own parameters"),
    (ch01._every_module, "nested submodules", "`model.modules()` visits the model"),
    (ch01._tied_twice, "tied embedding and output weights", "the tied weight was counted twice"),
    (lambda m: sum(t.numel() for t in m.state_dict().values()), "tied embedding and output weights",
     "the tied weight was counted twice"),
    (ch01._with_buffers, "a module with buffers", "buffers were counted"),
    (ch01._trainable_only, "partly frozen", "frozen parameters (`requires_grad=False`) are parameters too"),
])
def test_count_parameters_mistakes(wrong, case, hint_start):
    result = check.count_parameters(wrong)
    assert (result.passed, result.stage, result.case) == (False, "value", case)
    assert result.hint.startswith(hint_start)


def test_count_parameters_messages():
    result = check.count_parameters(ch01._tied_twice)
    assert result.message.splitlines()[0] == ("✗ check.count_parameters (case 'tied embedding and output weights'): "
                                              "expected 78, got 144 (66 too many).")
    as_tensor = check.count_parameters(lambda m: torch.tensor(sum(p.numel() for p in m.parameters())))
    assert as_tensor.message.endswith("expected a Python int, got a one-element tensor — use `.item()`.")
    as_float = check.count_parameters(lambda m: float(sum(p.numel() for p in m.parameters())))
    assert as_float.message.endswith("expected an int, got the float 16.0 — use integer arithmetic (or int(...)).")
    assert check.count_parameters(lambda m: np.int64(sum(p.numel() for p in m.parameters()))).passed

    def zero_grads(model):  # mutates the model it was given
        for p in model.parameters():
            p.data.zero_()
        return sum(p.numel() for p in model.parameters())

    assert check.count_parameters(zero_grads).stage == "mutation"


# --------------------------------------------------------------------------- every registered checker


# Every registered checker's reference passing, fast and deterministically: tests/test_checker_registry.py.


def test_no_chapter_module_fails_to_import():
    assert core.import_errors() == {}


def test_without_signals_a_thread_keeps_the_notebook_responsive():
    """Off the main thread (or on Windows) there is no SIGALRM: the check still returns in time."""
    import threading

    results = {}
    worker = threading.Thread(target=lambda: results.update(r=attn(lambda q, k, mask=None: time.sleep(3))))
    start = time.perf_counter()
    worker.start()
    worker.join(10)
    assert time.perf_counter() - start < 2.5
    assert results["r"].stage == "timeout"
    assert run(attn, _attn).passed
