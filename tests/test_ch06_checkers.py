"""Chapter 6's checkers: a correct answer passes, and each known mistake gets its own hint."""
from __future__ import annotations

import math

import pytest
import torch

from course_utils.efficient import block_state, merge_blocks, tiled_attention
from course_utils.exercises import check
from course_utils.exercises import ch06_efficient as ch06


@pytest.fixture(autouse=True)
def _not_strict(monkeypatch):
    monkeypatch.delenv("COURSE_EXERCISES_STRICT", raising=False)
    monkeypatch.delenv("COURSE_EXERCISES_RECORD", raising=False)


# --------------------------------------------------------------------------- merge_softmax_blocks
def student_merge(a, b):
    (m1, l1, o1), (m2, l2, o2) = a, b
    m = torch.maximum(m1, m2)
    m_safe = torch.where(m == float("-inf"), 0.0, m)
    s1, s2 = torch.exp(m1 - m_safe), torch.exp(m2 - m_safe)
    return m, l1 * s1 + l2 * s2, o1 * s1 + o2 * s2


def test_merge_correct_passes(capsys):
    result = check.merge_softmax_blocks(student_merge)
    assert result.passed, result.message
    assert "passed (5 cases" in capsys.readouterr().out


def test_merge_reference_itself_passes():
    assert check.merge_softmax_blocks(ch06._merge_reference).passed


@pytest.mark.parametrize("wrong,fragment", [
    (ch06._merge_no_rescale, "rescaled to the common maximum"),
    (ch06._merge_rescale_l_only, "acc must be multiplied by the same factors"),
    (ch06._merge_wrong_sign, "not exp(m − m_a)"),
    (ch06._merge_unguarded, "−inf − (−inf) is NaN"),
    (ch06._merge_normalised, "return acc unnormalised"),
])
def test_merge_mistakes_get_their_hint(wrong, fragment):
    result = check.merge_softmax_blocks(wrong)
    assert not result.passed
    assert result.hint is not None and fragment in result.hint, result.message


def test_merge_survives_broken_submissions():
    assert check.merge_softmax_blocks(lambda a, b: a).stage in {"value", "shape"}
    r = check.merge_softmax_blocks(lambda a, b: 1 / 0)
    assert r.stage == "exception" and "ZeroDivisionError" in r.message
    r = check.merge_softmax_blocks(lambda a, b: (a[0], a[1]))
    assert r.stage == "type" and "expected 3 items" in r.message
    r = check.merge_softmax_blocks(student_merge(*ch06._merge_cases()[0].args))
    assert r.stage == "misuse"


def test_merge_unguarded_fails_on_the_masked_case():
    r = check.merge_softmax_blocks(ch06._merge_unguarded)
    assert r.case == "a row fully masked in both blocks"  # with one block masked, m is finite


# --------------------------------------------------------------------------- causal_tiled_attention
def student_tiled(q, k, v, block_size):
    T, S = q.size(-2), k.size(-2)
    out = torch.empty_like(q)
    for i0 in range(0, T, block_size):
        i1 = min(i0 + block_size, T)
        qi = q[..., i0:i1, :] / math.sqrt(q.size(-1))
        state = None
        for j0 in range(0, min(S, i1 + S - T), block_size):  # skip tiles entirely in the future
            j1 = min(j0 + block_size, S)
            s = qi @ k[..., j0:j1, :].transpose(-2, -1)
            ok = (torch.arange(i0, i1)[:, None] + S - T) >= torch.arange(j0, j1)[None, :]
            blk = block_state(s.masked_fill(~ok, float("-inf")), v[..., j0:j1, :])
            state = blk if state is None else merge_blocks(state, blk)
        out[..., i0:i1, :] = state.output()
    return out


def test_tiled_correct_passes():
    assert check.causal_tiled_attention(student_tiled).passed
    assert check.causal_tiled_attention(
        lambda q, k, v, block_size: tiled_attention(q, k, v, causal=True, block_q=block_size, block_k=block_size)).passed


@pytest.mark.parametrize("wrong,fragment", [
    (ch06._no_mask, "attention with no mask"),
    (ch06._local_indices, "compare absolute positions"),
    (ch06._strict, "its own key too"),
    (ch06._top_left, "the *last* T positions"),
    (ch06._transposed, "the mask is transposed"),
])
def test_tiled_mistakes_get_their_hint(wrong, fragment):
    result = check.causal_tiled_attention(wrong)
    assert not result.passed
    assert result.hint is not None and fragment in result.hint, result.message


def test_tiled_survives_loops_and_shapes():
    def forever(q, k, v, block_size):
        while True:
            pass

    r = check.causal_tiled_attention(forever)
    assert r.stage == "timeout"
    r = check.causal_tiled_attention(lambda q, k, v, block_size: q[..., 0, :])
    assert r.stage == "shape"
    r = check.causal_tiled_attention(lambda q, k, v, block_size: (q * float("nan")))
    assert r.stage == "nan"

    def in_place(q, k, v, block_size):
        q.mul_(1.0 / math.sqrt(q.size(-1)) * math.sqrt(q.size(-1)) + 1.0)
        return student_tiled(q, k, v, block_size)

    assert not check.causal_tiled_attention(in_place).passed


# --------------------------------------------------------------------------- kv_cache_gib
def test_kv_cache_value_and_mistakes():
    e = ch06.KV_EXERCISE
    right = 2 * e["n_layer"] * e["n_kv_head"] * e["head_size"] * 2 * e["context"] / 2**30
    assert right == pytest.approx(1.25)  # 80 layers, 8 kv heads of 128, fp16, 4096 tokens
    assert check.kv_cache_gib(right).passed
    assert "not all 64 query heads" in check.kv_cache_gib(right * 8).hint
    assert "factor 2" in check.kv_cache_gib(right / 2).hint
    assert "2 bytes" in check.kv_cache_gib(right * 2).hint
    assert "GiB" in check.kv_cache_gib(right * 2**30 / 1e9).hint
    assert check.kv_cache_gib(lambda: right).stage == "misuse"
