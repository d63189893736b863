"""Chapter 5's checkers: a correct answer passes, and each known mistake gets its own hint."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_utils.exercises import check
from course_utils.exercises import ch05_mlm as ch05


@pytest.fixture(autouse=True)
def _not_strict(monkeypatch):
    monkeypatch.delenv("COURSE_EXERCISES_STRICT", raising=False)
    monkeypatch.delenv("COURSE_EXERCISES_RECORD", raising=False)


# --------------------------------------------------------------------------- mask_tokens_80_10_10
def student_mask(input_ids, u, random_ids, special, mask_token_id, p=0.15):
    """Written differently from the reference (masked_fill, in stages), same result."""
    selected = (u < p) & ~special
    labels = input_ids.masked_fill(~selected, -100)
    inputs = input_ids.clone()
    inputs[selected & (u < 0.8 * p)] = mask_token_id
    swap = selected & (u >= 0.8 * p) & (u < 0.9 * p)
    inputs[swap] = random_ids[swap]
    return inputs, labels


def test_mask_correct_passes(capsys):
    result = check.mask_tokens_80_10_10(student_mask)
    assert result.passed, result.message
    assert "passed (3 cases" in capsys.readouterr().out


def test_mask_reference_matches_known_values():
    ids = torch.tensor([[101, 2000, 2001, 2002, 2003, 102, 0]])
    special = torch.tensor([[True, False, False, False, False, True, True]])
    u = torch.tensor([[0.0, 0.01, 0.125, 0.14, 0.9, 0.0, 0.0]])
    rnd = torch.full_like(ids, 7)
    inputs, labels = ch05._mask_reference(ids, u, rnd, special, 103)
    assert inputs.tolist() == [[101, 103, 7, 2002, 2003, 102, 0]]  # mask, random, kept, unselected
    assert labels.tolist() == [[-100, 2000, 2001, 2002, -100, -100, -100]]


@pytest.mark.parametrize("wrong,fragment", [
    (ch05._mask_labels_everywhere, "labels must be -100 at the positions that were *not* selected"),
    (ch05._mask_labels_zero, "not 0, for the positions that are not predicted"),
    (ch05._mask_special_too, "special tokens"),
    (ch05._mask_all_mask, "not every selected position becomes [MASK]"),
    (ch05._mask_labels_after, "the labels are the *original* ids"),
    (ch05._mask_swapped, "the random token goes where 0.8·p <= u < 0.9·p"),
])
def test_mask_mistakes_get_their_hint(wrong, fragment):
    result = check.mask_tokens_80_10_10(wrong)
    assert not result.passed
    assert result.hint is not None and fragment in result.hint, result.message


def test_mask_survives_broken_submissions():
    r = check.mask_tokens_80_10_10(lambda *a, **k: 1 / 0)
    assert r.stage == "exception" and "ZeroDivisionError" in r.message
    assert check.mask_tokens_80_10_10(lambda *a, **k: None).stage == "type"
    r = check.mask_tokens_80_10_10(lambda ids, *a, **k: (ids.float(), ids))
    assert r.stage == "dtype"
    r = check.mask_tokens_80_10_10(lambda ids, *a, **k: (ids[:, :-1], ids))
    assert r.stage == "shape"
    assert check.mask_tokens_80_10_10(torch.zeros(3)).stage == "misuse"


def test_mask_in_place_change_is_reported():
    def in_place(input_ids, u, random_ids, special, mask_token_id, p=0.15):
        inputs, labels = ch05._mask_reference(input_ids.clone(), u, random_ids, special, mask_token_id, p)
        input_ids.copy_(inputs)
        return inputs, labels

    r = check.mask_tokens_80_10_10(in_place)
    assert r.stage == "mutation" and "input_ids" in r.message


# --------------------------------------------------------------------------- sparse_mlm_loss
def student_sparse(hidden, labels, head):
    rows = (labels != -100).nonzero(as_tuple=True)
    return F.cross_entropy(head(hidden[rows]), labels[rows])


def test_sparse_correct_passes():
    result = check.sparse_mlm_loss(student_sparse)
    assert result.passed, result.message


def test_sparse_reference_equals_the_library_loss():
    from course_utils.mlm import sparse_mlm_loss

    hidden, labels, w, b = ch05._sparse_cases()[0].args
    head = torch.nn.Linear(w.size(1), w.size(0))
    with torch.no_grad():
        head.weight.copy_(w), head.bias.copy_(b)
    dense = F.cross_entropy(head(hidden).flatten(0, 1), labels.flatten())  # ignore_index=-100
    torch.testing.assert_close(ch05._sparse_reference(hidden, labels, head), dense)
    torch.testing.assert_close(sparse_mlm_loss(hidden, labels, head), dense)


@pytest.mark.parametrize("wrong,fragment", [
    (ch05._sparse_dense, "the head was applied at every position"),
    (ch05._sparse_mean_over_all, "average over the masked tokens only"),
    (ch05._sparse_sum, "not the sum"),
    (ch05._sparse_no_log_softmax, "applies log-softmax"),
])
def test_sparse_mistakes_get_their_hint(wrong, fragment):
    result = check.sparse_mlm_loss(wrong)
    assert not result.passed
    assert result.hint is not None and fragment in result.hint, result.message


def test_sparse_survives_broken_submissions():
    assert check.sparse_mlm_loss(lambda h, l, head: 3.0).stage == "type"
    assert check.sparse_mlm_loss(lambda h, l, head: head(h).sum() * float("nan")).stage == "nan"
    r = check.sparse_mlm_loss(lambda h, l, head: head(h[l]))  # indexing with the labels: an error
    assert r.stage in {"exception", "shape", "value"}

    def forever(hidden, labels, head):
        while True:
            pass

    assert check.sparse_mlm_loss(forever).stage == "timeout"
