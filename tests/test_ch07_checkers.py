"""Chapter 7's checkers: a correct answer passes, each known mistake gets its own hint, and broken
submissions get a clear message. The references are transformers' own code."""
from __future__ import annotations

import math

import pytest
import torch

from course_utils.exercises import ch07_families_positions as ch07
from course_utils.exercises import check


def student_bucket(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
    ret = 0
    n = -relative_position
    if bidirectional:
        num_buckets //= 2
        ret = ret + (n < 0).long() * num_buckets
        n = n.abs()
    else:
        n = torch.maximum(n, torch.zeros_like(n))
    max_exact = num_buckets // 2
    val_if_large = max_exact + (torch.log(n.float() / max_exact + 1e-12) / math.log(max_distance / max_exact)
                                * (num_buckets - max_exact)).long()
    val_if_large = torch.minimum(val_if_large, torch.full_like(val_if_large, num_buckets - 1))
    return ret + torch.where(n < max_exact, n, val_if_large)


def student_llama3(head_dim, base, factor, low_freq_factor, high_freq_factor, original_max_position):
    freqs = 1.0 / base ** (torch.arange(0, head_dim, 2).float() / head_dim)
    out = []
    for f in freqs.tolist():
        wavelen = 2 * math.pi / f
        if wavelen < original_max_position / high_freq_factor:
            out.append(f)
        elif wavelen > original_max_position / low_freq_factor:
            out.append(f / factor)
        else:
            s = (original_max_position / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            out.append((1 - s) * f / factor + s * f)
    return torch.tensor(out)


def test_t5_bucket_correct_passes(capsys):
    result = check.t5_bucket(student_bucket)
    assert result.passed, result.message
    assert "passed (6 cases" in capsys.readouterr().out


def test_t5_bucket_broken_submissions():
    assert check.t5_bucket(lambda rp, *a, **k: rp.float()).stage == "dtype"
    assert check.t5_bucket(lambda rp, *a, **k: rp[:1]).stage == "shape"
    r = check.t5_bucket(lambda rp, *a, **k: 1 / 0)
    assert r.stage == "exception" and "ZeroDivisionError" in r.message
    assert check.t5_bucket(student_bucket(torch.arange(3))).stage == "misuse"


def test_llama3_reference_is_the_library_and_differs_from_plain_rope():
    want = ch07._llama3_reference(128, 500000.0, 8.0, 1.0, 4.0, 8192)
    plain = 1.0 / 500000.0 ** (torch.arange(0, 128, 2).float() / 128)
    assert want.shape == (64,)
    torch.testing.assert_close(want[:10], plain[:10])            # fast pairs untouched
    torch.testing.assert_close(want[-5:], plain[-5:] / 8)        # slow pairs divided by the factor


def test_mixtral_active():
    counts = ch07._mixtral_counts()
    assert counts["total"] == 46_702_792_704
    assert counts["active"] == 12_879_925_248                    # "12.9B active" (Jiang et al., 2024)
    assert check.mixtral_active_params(counts["active"]).passed
    for key, fragment in (("total", "all 8 experts"), ("one", "top *2*")):
        r = check.mixtral_active_params(counts[key])
        assert not r.passed and fragment in r.hint
    r = check.mixtral_active_params(counts["active"] - counts["router"])
    assert "routers" in r.hint
    r = check.mixtral_active_params(counts["active"] - counts["embeddings"])
    assert "embedding table" in r.hint
    assert check.mixtral_active_params(None).stage == "type"
    assert check.mixtral_active_params(float(counts["active"])).stage in {"type", "value"}


def student_position_bias(bias_table, query_length, key_length, bidirectional=True, max_distance=128):
    q_pos = torch.arange(key_length - query_length, key_length)[:, None]
    k_pos = torch.arange(key_length)[None, :]
    buckets = student_bucket(k_pos - q_pos, bidirectional, bias_table.size(0), max_distance)
    return bias_table[buckets].permute(2, 0, 1)[None]


def test_position_bias_wrong_layout_is_a_shape_error():
    def permuted(table, T, S, *a, **k):
        return student_position_bias(table, T, S, *a, **k)[0].permute(1, 2, 0)

    r = check.t5_position_bias(permuted)
    assert r.stage == "shape"


# --------------------------------------------------------------------------- every checker: the right
# answer passes, each known mistake gets its own hint
MISTAKES = [
    ("t5_bucket", ch07._t5_sign_flipped, "key position − query position"),
    ("t5_bucket", ch07._t5_no_halving, "first halve num_buckets"),
    ("t5_bucket", ch07._t5_abs_in_decoder, "max(−relative_position, 0)"),
    ("t5_bucket", ch07._t5_rounding, "truncated towards zero"),
    ("t5_bucket", ch07._t5_no_cap, "cap the logarithmic bucket"),
    ("llama3_inv_freq", ch07._llama3_all, "plain position interpolation"),
    ("llama3_inv_freq", ch07._llama3_hard, "must interpolate"),
    ("llama3_inv_freq", ch07._llama3_swapped, "swapped"),
    ("llama3_inv_freq", ch07._llama3_no_2pi, "2π / θ"),
    ("t5_position_bias", ch07._bias_transposed, "transposing"),
    ("t5_position_bias", ch07._bias_sign, "key position − query position"),
    ("t5_position_bias", ch07._bias_always_bidirectional, "pass `bidirectional` on"),
    ("t5_position_bias", ch07._bias_top_left, "the *last* T positions"),
]


@pytest.mark.parametrize("name, right", [("llama3_inv_freq", student_llama3),
                                         ("t5_position_bias", student_position_bias)])
def test_the_right_answer_passes(name, right):
    result = getattr(check, name)(right)
    assert result.passed, result.message


@pytest.mark.parametrize("name, wrong, fragment", MISTAKES, ids=[f"{n}-{w.__name__}" for n, w, _ in MISTAKES])
def test_each_mistake_gets_its_hint(name, wrong, fragment):
    result = getattr(check, name)(wrong)
    assert not result.passed
    assert result.hint is not None and fragment in result.hint, result.message
