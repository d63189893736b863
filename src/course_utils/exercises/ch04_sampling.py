"""Checkers of Chapter 4 (Sampling and decoding).

* ``check.temperature_top_k`` -- temperature, then top-k filtering of next-token scores;
* ``check.top_p_filter``      -- nucleus (top-p) filtering;
* ``check.beam_search_step``  -- one beam-search expansion over all beams.

The references are :mod:`course_utils.sampling`'s functions, which equal ``transformers``'
``TemperatureLogitsWarper`` / ``TopKLogitsWarper`` / ``TopPLogitsWarper`` and beam search
exactly (tested in ``tests/test_sampling.py``). The known wrong variants are the classic
errors: temperature multiplied in, removed tokens set to 0 instead of -inf, probabilities
returned instead of scores, exactly k tokens when several tie with the k-th, the token that
crosses the top-p threshold dropped, the mass counted from the wrong end, per-beam instead
of global top-k, beam and token indices swapped. Top-level imports stay light (torch only).
"""
from __future__ import annotations

import torch

from .. import sampling as _s
from .core import Case, Checker, Mistake, register

NEG_INF = float("-inf")

# =========================================================================== 1. temperature + top-k
# logits: (B, V) next-token scores; temperature > 0; top_k >= 1.
# Return (B, V): the scores divided by the temperature, with every token that is not among the
# top_k highest set to -inf (a token tied with the k-th highest score is kept).


def temperature_top_k_reference(logits: torch.Tensor, temperature: float, top_k: int) -> torch.Tensor:
    """``TemperatureLogitsWarper`` then ``TopKLogitsWarper``, from scratch."""
    return _s.top_k_filter(_s.apply_temperature(logits, temperature), top_k)


def _tk_multiply(logits, temperature, top_k):
    return _s.top_k_filter(logits * temperature, top_k)


def _tk_zero_fill(logits, temperature, top_k):
    scaled = logits / temperature
    kth = torch.topk(scaled, min(top_k, scaled.size(-1)), dim=-1).values[..., -1:]
    return scaled.masked_fill(scaled < kth, 0.0)


def _tk_probs(logits, temperature, top_k):
    return temperature_top_k_reference(logits, temperature, top_k).softmax(dim=-1)


def _tk_exactly_k(logits, temperature, top_k):
    scaled = logits / temperature
    idx = torch.topk(scaled, min(top_k, scaled.size(-1)), dim=-1).indices
    keep = torch.zeros_like(scaled, dtype=torch.bool).scatter(-1, idx, True)
    return scaled.masked_fill(~keep, NEG_INF)


def _tk_off_by_one(logits, temperature, top_k):
    scaled = logits / temperature
    kth = torch.topk(scaled, min(top_k, scaled.size(-1)), dim=-1).values[..., -1:]
    return scaled.masked_fill(scaled <= kth, NEG_INF)  # drops the k-th itself: keeps k - 1


def _tk_no_temperature(logits, temperature, top_k):
    return _s.top_k_filter(logits, top_k)


def _tk_cases() -> list[Case]:
    ties = torch.tensor([[3.0, 1.0, 2.0, 2.0, 0.5, -1.0], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]])
    return [
        Case("random scores, T=0.7, k=5", (torch.randn(3, 40), 0.7, 5)),
        Case("T=2.0, k=1", (torch.randn(2, 30), 2.0, 1)),
        Case("two tokens tied with the k-th, k=2", (ties, 1.0, 2)),
        Case("k larger than the vocabulary", (torch.randn(2, 8), 1.5, 20)),
        Case("one row, large vocabulary, T=0.3, k=50", (3 * torch.randn(1, 1000), 0.3, 50)),
    ]


temperature_top_k = register(Checker(
    "temperature_top_k", temperature_top_k_reference, _tk_cases,
    axes=("batch", "vocab"),
    mistakes=[
        Mistake(_tk_multiply, "divide the scores by the temperature (T < 1 sharpens, T > 1 flattens); "
                              "you multiplied."),
        Mistake(_tk_no_temperature, "the temperature was not applied: divide the scores by it."),
        Mistake(_tk_zero_fill, "a removed token's score must be -inf (probability exactly 0 after the "
                               "softmax); a score of 0 still leaves it a probability."),
        Mistake(_tk_probs, "return the filtered *scores* (logits), not probabilities: the softmax comes "
                           "later, when sampling."),
        Mistake(_tk_exactly_k, "tokens tied with the k-th highest score must be kept too: compare each "
                               "score with the k-th value (`scores < kth_value` -> -inf) instead of keeping "
                               "exactly the k indices that `topk` returned."),
        Mistake(_tk_off_by_one, "you removed the k-th token too (`<=`): remove only scores strictly below "
                                "the k-th highest (`<`)."),
    ],
))


# =========================================================================== 2. top-p (nucleus)
# logits: (B, V); top_p in (0, 1]. Return (B, V): the scores, with -inf for every token outside
# the nucleus -- the smallest set of most likely tokens whose total probability reaches top_p.
# The token that makes the mass cross top_p is *in* the nucleus; the most likely token always is.


def top_p_reference(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """``TopPLogitsWarper(top_p)`` (``min_tokens_to_keep=1``), from scratch."""
    return _s.top_p_filter(logits, top_p)


def _tp_variant(logits, top_p, *, drop_crossing=False, ascending=False, keep_one=True, fill=NEG_INF,
                unsort=True, probs_out=False):
    probs = logits.softmax(dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=not ascending)
    cum = sorted_probs.cumsum(dim=-1)
    remove = cum > top_p if drop_crossing else (cum - sorted_probs) >= top_p
    if keep_one:
        remove[..., 0] = False
    if unsort:
        remove = remove.scatter(-1, order, remove)
        out = logits.masked_fill(remove, fill)
    else:
        out = logits.gather(-1, order).masked_fill(remove, fill)
    return out.softmax(dim=-1) if probs_out else out


def _tp_cases() -> list[Case]:
    peaked = torch.tensor([[4.0, 2.0, 1.0, 0.5, 0.0, -1.0, -2.0, -3.0]])
    return [
        Case("random scores, p=0.9", (torch.randn(3, 50), 0.9)),
        Case("a peaked distribution, p=0.5", (peaked, 0.5)),
        Case("the top token alone exceeds p=0.3", (torch.tensor([[5.0, 1.0, 0.0, -1.0]]), 0.3)),
        Case("scores in shuffled order, p=0.75", (torch.randn(2, 12)[:, torch.randperm(12)] * 2, 0.75)),
        Case("p=1.0 keeps every token", (torch.randn(2, 10), 1.0)),
        Case("large vocabulary, p=0.95", (2 * torch.randn(1, 1000), 0.95)),
    ]


top_p_filter = register(Checker(
    "top_p_filter", top_p_reference, _tp_cases,
    axes=("batch", "vocab"),
    mistakes=[
        Mistake(lambda l, p: _tp_variant(l, p, drop_crossing=True),
                "the token whose probability makes the running total cross top_p belongs to the nucleus: "
                "remove a token only if the mass of the tokens *before* it (cumsum minus its own "
                "probability) already reaches top_p. With `cumsum > top_p` you dropped the crossing token "
                "(and when the top token alone exceeds top_p, the whole row)."),
        Mistake(lambda l, p: _tp_variant(l, p, ascending=True),
                "sort the probabilities in *descending* order: the nucleus is made of the most likely "
                "tokens."),
        Mistake(lambda l, p: _tp_variant(l, p, fill=0.0),
                "a removed token's score must be -inf (probability 0 after the softmax), not 0."),
        Mistake(lambda l, p: _tp_variant(l, p, unsort=False),
                "you returned the scores in sorted order: scatter the mask back to vocabulary order "
                "(`mask.scatter(-1, sorted_indices, mask)`) before filtering the original scores."),
        Mistake(lambda l, p: _tp_variant(l, p, probs_out=True),
                "return the filtered scores (logits), not probabilities."),
    ],
))


# =========================================================================== 3. one beam-search step
# beam_scores: (nb,) summed log-probabilities of the running beams; log_probs: (nb, V) each beam's
# next-token log-probabilities; k: how many continuations to keep. Return (scores, beam_idx,
# token_ids), each of shape (k,), best first: the k best continuations over *all* beams, where a
# continuation's score is its beam's score plus the token's log-probability.


def beam_search_step_reference(beam_scores: torch.Tensor, log_probs: torch.Tensor, k: int):
    """The top-k (beam, token) continuations, as ``generate``'s beam search selects them."""
    return _s.beam_candidates(beam_scores, log_probs, k)


def _bs_no_history(beam_scores, log_probs, k):
    return _s.beam_candidates(torch.zeros_like(beam_scores), log_probs, k)


def _bs_per_beam(beam_scores, log_probs, k):
    total = log_probs + beam_scores[:, None]  # (nb, V)
    best, tok = total.max(dim=-1)  # the best token of each beam only
    order = best.argsort(descending=True)[:k]
    return best[order], order, tok[order]


def _bs_swapped(beam_scores, log_probs, k):
    scores, beam, tok = _s.beam_candidates(beam_scores, log_probs, k)
    V = log_probs.size(-1)
    flat = beam * V + tok
    return scores, flat % V, flat // V


def _bs_wrong_divisor(beam_scores, log_probs, k):
    nb = log_probs.size(0)
    total = (log_probs + beam_scores[:, None]).reshape(-1)
    scores, flat = torch.topk(total, k)
    return scores, flat // nb, flat % nb


def _bs_product(beam_scores, log_probs, k):
    V = log_probs.size(-1)
    scores, flat = torch.topk((log_probs * beam_scores[:, None]).reshape(-1), k)
    return scores, flat // V, flat % V


def _bs_cases() -> list[Case]:
    def lp(nb, V, scale=2.0):
        return torch.log_softmax(scale * torch.randn(nb, V), dim=-1)

    first_step = torch.tensor([0.0, -1e9, -1e9])
    return [
        Case("3 beams, V=20, keep 3", (torch.tensor([-1.0, -1.5, -4.0]), lp(3, 20), 3)),
        Case("the first step (copies of one beam at -1e9), keep 6", (first_step, lp(3, 50), 6)),
        Case("one beam dominates, keep 4", (torch.tensor([-0.1, -9.0]), lp(2, 30, 0.5), 4)),
        Case("5 beams, V=1000, keep 10", (-5 * torch.rand(5).sort(descending=True).values, lp(5, 1000), 10)),
    ]


beam_search_step = register(Checker(
    "beam_search_step", beam_search_step_reference, _bs_cases,
    axes=(("candidate",), ("candidate",), ("candidate",)),
    mistakes=[
        Mistake(_bs_no_history, "a continuation's score is its *beam's* score plus the token's "
                                "log-probability: add beam_scores[:, None] before choosing."),
        Mistake(_bs_per_beam, "choose the best continuations over *all* beams at once (flatten the "
                              "(beams, vocab) scores and take the top k), not the best token of each beam: "
                              "one strong beam may supply several of the k."),
        Mistake(_bs_swapped, "with the scores flattened as (beam, token) -> beam * V + token, the beam "
                             "is `flat // V` and the token `flat % V`; you swapped them."),
        Mistake(_bs_wrong_divisor, "divide the flat index by the vocabulary size V (log_probs.size(-1)), "
                                   "not by the number of beams."),
        Mistake(_bs_product, "log-probabilities add up along a sequence (probabilities multiply): "
                             "use beam_scores[:, None] + log_probs, not a product."),
    ],
))
