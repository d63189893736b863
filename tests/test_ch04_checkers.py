"""Chapter 4's checkers: the references equal the library's warpers, correct student solutions
pass, each classic mistake fails with the hint that names it, and bad submissions are handled."""
from __future__ import annotations

import pytest
import torch

from course_utils.exercises import check
from course_utils.exercises import ch04_sampling as ch04


# ----------------------------------------------------------------------------- student solutions
def _student_temperature_top_k(logits, temperature, top_k):
    logits = logits / temperature
    kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1, None]
    return torch.where(logits < kth, torch.full_like(logits, float("-inf")), logits)


def _student_top_p(logits, top_p):
    probs = torch.softmax(logits, dim=-1)
    p_sorted, idx = torch.sort(probs, descending=True)
    before = torch.cumsum(p_sorted, dim=-1) - p_sorted
    drop_sorted = before >= top_p
    drop = torch.zeros_like(drop_sorted)
    drop.scatter_(1, idx, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def _student_beam_step(beam_scores, log_probs, k):
    nb, V = log_probs.shape
    total = beam_scores.unsqueeze(1) + log_probs
    values, flat = total.view(-1).topk(k)
    return values, torch.div(flat, V, rounding_mode="floor"), flat % V


def test_references_pass_and_student_solutions_pass():
    assert check.temperature_top_k(ch04.temperature_top_k_reference).passed
    assert check.temperature_top_k(_student_temperature_top_k).passed
    assert check.top_p_filter(ch04.top_p_reference).passed
    assert check.top_p_filter(_student_top_p).passed
    assert check.beam_search_step(ch04.beam_search_step_reference).passed
    assert check.beam_search_step(_student_beam_step).passed


# ----------------------------------------------------------------------------- references == library
def test_temperature_top_k_reference_equals_library_warpers():
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper

    torch.manual_seed(0)
    for case in ch04._tk_cases():
        logits, t, k = case.args
        ids = torch.zeros(logits.shape[0], 1, dtype=torch.long)
        expected = TopKLogitsWarper(k)(ids, TemperatureLogitsWarper(float(t))(ids, logits))
        assert torch.equal(ch04.temperature_top_k_reference(logits, t, k), expected), case.name


def test_top_p_reference_equals_library_warper():
    from transformers import TopPLogitsWarper

    torch.manual_seed(0)
    for case in ch04._tp_cases():
        logits, p = case.args
        ids = torch.zeros(logits.shape[0], 1, dtype=torch.long)
        assert torch.equal(ch04.top_p_reference(logits, p), TopPLogitsWarper(p)(ids, logits)), case.name


def test_known_values():
    # Ties with the k-th score are kept: k=2 keeps 3.0 and both 2.0s.
    row = torch.tensor([[3.0, 1.0, 2.0, 2.0]])
    kept = torch.isfinite(ch04.temperature_top_k_reference(row, 1.0, 2))
    assert kept.tolist() == [[True, False, True, True]]
    # Probabilities 0.5, 0.3, 0.2: p=0.6 keeps the first two (0.3 crosses 0.6), not just the first.
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    assert torch.isfinite(ch04.top_p_reference(logits, 0.6)).tolist() == [[True, True, False]]
    # Beam step: beam 1 is far behind, so both kept continuations come from beam 0.
    scores, beams, tokens = ch04.beam_search_step_reference(
        torch.tensor([0.0, -5.0]), torch.log(torch.tensor([[0.6, 0.4], [0.9, 0.1]])), 2)
    assert beams.tolist() == [0, 0] and tokens.tolist() == [0, 1]
    torch.testing.assert_close(scores, torch.log(torch.tensor([0.6, 0.4])))


# ----------------------------------------------------------------------------- mistakes are diagnosed
@pytest.mark.parametrize("checker", [ch04.temperature_top_k, ch04.top_p_filter, ch04.beam_search_step],
                         ids=lambda c: c.name)
def test_every_known_mistake_fails_with_its_own_hint(checker):
    assert checker.mistakes
    for mistake in checker.mistakes:
        result = getattr(check, checker.name)(mistake.fn)
        assert not result.passed
        assert result.hint == mistake.hint, (result.message, mistake.hint)


def test_drop_crossing_token_message_names_the_off_by_one():
    def top_p_without_crossing(logits, top_p):
        probs, idx = logits.softmax(-1).sort(descending=True)
        drop = probs.cumsum(-1) > top_p
        drop[:, 0] = False
        return logits.masked_fill(drop.scatter(1, idx, drop), float("-inf"))

    result = check.top_p_filter(top_p_without_crossing)
    assert not result.passed and "cross" in result.hint


# ----------------------------------------------------------------------------- robustness
def test_bad_submissions_fail_cleanly():
    def boom(*args):
        raise RuntimeError("oops")

    def loops(*args):
        while True:
            pass

    def nan_out(logits, *args):
        return torch.full_like(logits, float("nan"))

    assert check.top_p_filter(boom).stage == "exception"
    assert check.temperature_top_k(nan_out).stage == "nan"
    assert check.beam_search_step(lambda s, lp, k: None).stage == "type"
    assert check.temperature_top_k(torch.zeros(3)).stage == "misuse"
    assert check.top_p_filter(lambda l, p: l.double()).stage == "dtype"
    assert check.top_p_filter(lambda l, p: l[0]).stage == "shape"
    assert check.temperature_top_k(lambda l, t, k: l.div_(t)).passed is False  # in-place on the input
    result = check.beam_search_step(loops)
    assert result.stage == "timeout" and not result.passed
