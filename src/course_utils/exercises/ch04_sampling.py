"""Checkers of Chapter 4 (Sampling and decoding), handed out in ``chapters/04_exercises.ipynb``.

Three truncation rules the chapter does not build, each checked against the ``transformers``
warper that implements it (the reference *is* the library's warper, called on the same scores):

* ``check.min_p_filter``   -- min-p: drop tokens less likely than ``min_p`` times the top
  token's probability (``MinPLogitsWarper``);
* ``check.typical_filter`` -- locally typical sampling: keep the tokens whose surprisal is
  closest to the entropy, up to a mass (``TypicalLogitsWarper``);
* ``check.eta_filter``     -- eta sampling: an entropy-dependent probability floor
  (``EtaLogitsWarper``).

And one head score beside the chapter's prefix matching:

* ``check.previous_token_scores`` -- each head's mean attention from position t to t - 1, over
  (L, B, nh, T, T) attention maps (the first half of the induction circuit).

The known wrong variants are the classic errors: an unscaled threshold, removed tokens set to 0
instead of -inf, probabilities returned instead of scores, the surprisal sorted the wrong way,
the crossing token dropped, the entropy's sign, a previous-token score started at position 0.
Top-level imports stay light (torch only).
"""
from __future__ import annotations

import math
from typing import cast

import torch

from .core import Case, Checker, Mistake, register

NEG_INF = float("-inf")


def _ids(scores: torch.Tensor) -> torch.LongTensor:
    return cast(torch.LongTensor, torch.zeros(scores.shape[0], 1, dtype=torch.long))  # the warpers ignore input_ids


# =========================================================================== 1. min-p
# logits: (B, V); min_p in (0, 1]. Return (B, V): the scores, -inf for every token whose
# probability is below min_p x (the most likely token's probability). Keep at least one token.

def min_p_filter_reference(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """``MinPLogitsWarper(min_p)`` (``min_tokens_to_keep=1``)."""
    from transformers import MinPLogitsWarper

    return MinPLogitsWarper(min_p)(_ids(logits), logits.clone())


def _min_p(logits, min_p, *, scaled=True, on_logits=False, fill=NEG_INF, probs_out=False, strict=True):
    probs = logits.softmax(-1)
    if on_logits:
        remove = logits < logits.amax(-1, keepdim=True) + math.log(min_p) if scaled else logits < min_p
    else:
        threshold = min_p * probs.amax(-1, keepdim=True) if scaled else torch.full_like(probs[..., :1], min_p)
        remove = probs < threshold if strict else probs <= threshold
    remove = remove & (probs < probs.amax(-1, keepdim=True))  # the top token stays
    out = logits.masked_fill(remove, fill)
    return out.softmax(-1) if probs_out else out


def _min_p_cases() -> list[Case]:
    flat = torch.zeros(1, 6)
    flat[0, 0] = 0.5
    return [
        Case("random scores, min_p = 0.1", (torch.randn(3, 50) * 2, 0.1)),
        Case("a peaked row and a flat row, min_p = 0.05",
             (torch.stack([torch.randn(40) * 4, torch.randn(40) * 0.3]), 0.05)),
        Case("a token exactly at the threshold (0.2 = 0.5 x 0.4)", (torch.tensor([[4.0, 3.0, 2.0, 1.0]]).log(), 0.5)),
        Case("min_p = 1 keeps only the top token(s)", (flat, 1.0)),
        Case("large vocabulary, min_p = 0.02", (torch.randn(2, 2000) * 3, 0.02)),
    ]


min_p_filter = register(Checker(
    "min_p_filter", min_p_filter_reference, _min_p_cases,
    axes=("batch", "vocab"),
    mistakes=[
        Mistake(lambda l, p: _min_p(l, p, scaled=False),
                "the threshold scales with the top token: remove a token when its probability is below "
                "min_p x max(probs), not below min_p itself — that is what makes min-p adapt to how sure "
                "the model is."),
        Mistake(lambda l, p: _min_p(l, p, on_logits=True, scaled=False),
                "compare *probabilities* (softmax of the scores), not the raw scores, with the threshold."),
        Mistake(lambda l, p: _min_p(l, p, strict=False),
                "a token exactly at the threshold stays: remove `probs < threshold`, not `<=`."),
        Mistake(lambda l, p: _min_p(l, p, fill=0.0),
                "a removed token's score must be -inf (probability exactly 0 after the softmax), not 0."),
        Mistake(lambda l, p: _min_p(l, p, probs_out=True),
                "return the filtered scores (logits), not probabilities: the softmax comes when sampling."),
    ],
    what="your min_p_filter",
))


# =========================================================================== 2. typical sampling
# logits: (B, V); mass in (0, 1]. Return (B, V): the scores, -inf outside the "typical set":
# sort the tokens by |surprisal - entropy| (surprisal = -log p, entropy = sum -p log p), ascending,
# keep the shortest prefix whose probability reaches `mass` (the crossing token included), and at
# least one token.

def typical_filter_reference(logits: torch.Tensor, mass: float) -> torch.Tensor:
    """``TypicalLogitsWarper(mass)`` (``min_tokens_to_keep=1``)."""
    from transformers import TypicalLogitsWarper

    return TypicalLogitsWarper(mass)(_ids(logits), logits.clone())


def _typical(logits, mass, *, key="typical", crossing=True, fill=NEG_INF, bits=False):
    logp = logits.log_softmax(-1)
    p = logp.exp()
    ent = -(p * logp).nansum(-1, keepdim=True)
    if key == "typical":
        dist = (-logp - ent).abs()
        if bits:
            dist = (-logp / math.log(2) - ent / math.log(2)).abs()
    elif key == "prob":
        dist = -p
    else:  # descending distance: the least typical first
        dist = -(-logp - ent).abs()
    order = torch.sort(dist, dim=-1, stable=True).indices
    sorted_p = p.gather(-1, order)
    cum = sorted_p.cumsum(-1)
    remove_sorted = (cum - sorted_p >= mass) if crossing else (cum > mass)
    remove_sorted[..., 0] = False
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, fill)


def _typical_cases() -> list[Case]:
    bimodal = torch.tensor([[3.0, 2.9, 0.0, -0.5, -1.0, -1.2, -2.0, -4.0]])
    return [
        Case("random scores, mass = 0.9", (torch.randn(3, 60) * 2, 0.9)),
        Case("a peaked distribution, mass = 0.5", (torch.randn(2, 40) * 5, 0.5)),
        Case("a small vocabulary, mass = 0.6", (bimodal, 0.6)),
        Case("large vocabulary, mass = 0.95", (torch.randn(1, 2000) * 2, 0.95)),
    ]


typical_filter = register(Checker(
    "typical_filter", typical_filter_reference, _typical_cases,
    axes=("batch", "vocab"), atol=1e-6,
    mistakes=[
        Mistake(lambda l, m: _typical(l, m, key="prob"),
                "that is top-p: typical sampling orders the tokens by how close their surprisal -log p is "
                "to the entropy, |-log p - H|, smallest first — not by probability."),
        Mistake(lambda l, m: _typical(l, m, key="far"),
                "sort by |-log p - H| in *ascending* order: the most typical tokens (surprisal closest to "
                "the entropy) come first."),
        Mistake(lambda l, m: _typical(l, m, crossing=False),
                "the token that makes the running mass cross `mass` belongs to the set: remove a token only "
                "if the mass *before* it already reaches `mass`."),
        Mistake(lambda l, m: _typical(l, m, fill=0.0),
                "a removed token's score must be -inf, not 0."),
    ],
    what="your typical_filter",
))


# =========================================================================== 3. eta sampling
# logits: (B, V); epsilon > 0. Return (B, V): the scores, -inf for every token whose probability
# is below eta = min(epsilon, sqrt(epsilon) * exp(-H)), H the entropy (nats) of that row.

def eta_filter_reference(logits: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``EtaLogitsWarper(epsilon)`` (``min_tokens_to_keep=1``)."""
    from transformers import EtaLogitsWarper

    return EtaLogitsWarper(epsilon)(_ids(logits), logits.clone())


def _eta(logits, epsilon, *, sign=-1.0, use_min=True, root=True, fill=NEG_INF):
    probs = logits.softmax(-1)
    ent = -(probs * logits.log_softmax(-1)).nansum(-1, keepdim=True)
    entropic = (math.sqrt(epsilon) if root else epsilon) * torch.exp(sign * ent)
    eta = torch.minimum(torch.full_like(ent, epsilon), entropic) if use_min else entropic
    # The most likely token can never fall below eta (exp(-H) <= max p), so no row empties.
    return logits.masked_fill(probs < eta, fill)


def _eta_cases() -> list[Case]:
    return [
        Case("a high-entropy row (eta follows the entropy), eps = 3e-4", (torch.randn(2, 1000) * 0.8, 3e-4)),
        Case("a low-entropy row (eta = epsilon), eps = 0.02", (torch.randn(2, 50) * 4, 0.02)),
        Case("a very peaked row: only the top token is above eta", (torch.tensor([[12.0, 0.0, -1.0, -2.0]]), 0.1)),
        Case("mixed rows, eps = 1e-3", (torch.cat([torch.randn(1, 500) * 0.5, torch.randn(1, 500) * 5]), 1e-3)),
    ]


eta_filter = register(Checker(
    "eta_filter", eta_filter_reference, _eta_cases,
    axes=("batch", "vocab"),
    mistakes=[
        Mistake(lambda l, e: _eta(l, e, use_min=False),
                "eta is the *smaller* of epsilon and sqrt(epsilon) x exp(-H): `torch.minimum(...)`, so a "
                "confident row is never cut harder than epsilon."),
        Mistake(lambda l, e: _eta(l, e, root=False),
                "the entropy term is sqrt(epsilon) x exp(-H), with the square root."),
        Mistake(lambda l, e: _eta(l, e, use_min=False, root=False, sign=0.0),
                "that is epsilon sampling (a fixed floor epsilon; exp(+H) instead of exp(-H) gives the same): "
                "eta sampling *lowers* the floor on flat, high-entropy rows: eta = min(epsilon, "
                "sqrt(epsilon) x exp(-H))."),
        Mistake(lambda l, e: _eta(l, e, fill=0.0),
                "a removed token's score must be -inf, not 0."),
    ],
    what="your eta_filter",
))


# =========================================================================== 4. previous-token heads
# attn: (L, B, nh, T, T), every head's attention probabilities (rows sum to 1, causal). Return
# (L, nh): for each head, the mean attention that position t pays to position t - 1, over the
# sequences and over t = 1 ... T-1 (position 0 has no previous token).

def previous_token_scores_reference(attn: torch.Tensor) -> torch.Tensor:
    """attn[..., t, t - 1] for t = 1 ... T-1, averaged over the sequences and positions: (L, nh)."""
    return _previous(attn)


def _previous(attn, *, start=1, offset=-1, axes=(1, 3), diag=False):
    """The reference written out, with one switch per known mistake."""
    T = attn.shape[-1]
    if diag:  # torch.diagonal(offset=-1): the same entries, read another way
        return torch.diagonal(attn, offset=offset, dim1=-2, dim2=-1).mean(dim=(1, 3))
    t = torch.arange(start, T) if offset < 0 else torch.arange(0, T - 1)
    return attn[..., t, t + offset].mean(dim=axes)                 # (L, nh)


def _causal_attention(L: int, B: int, nh: int, T: int, sharp: float = 1.0) -> torch.Tensor:
    scores = torch.randn(L, B, nh, T, T) * sharp
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    return scores.masked_fill(mask, float("-inf")).softmax(-1)


def _previous_cases() -> list[Case]:
    L, B, nh, T = 3, 2, 4, 12
    perfect = _causal_attention(L, B, nh, T)
    t = torch.arange(1, T)
    perfect[1, :, 2] = 0.0
    perfect[1, :, 2, 0, 0] = 1.0
    perfect[1, :, 2, t, t - 1] = 1.0                              # layer 1, head 2: a previous-token head
    return [
        Case("random causal attention, 3 layers x 4 heads", (_causal_attention(L, B, nh, T),)),
        Case("one perfect previous-token head (layer 1, head 2)", (perfect,)),
        Case("sharp heads, more sequences than heads", (_causal_attention(2, 5, 3, 20, sharp=4.0),)),
        Case("two positions only", (_causal_attention(1, 3, 2, 2),)),
    ]


previous_token_scores = register(Checker(
    "previous_token_scores", previous_token_scores_reference, _previous_cases,
    axes=("layer", "head"), atol=1e-6,
    mistakes=[
        Mistake(lambda a: _previous(a, start=0),
                "start at position 1: position 0 has no previous token, and attn[..., 0, -1] wraps "
                "around to the *last* position (a zero above the diagonal, which lowers every score)."),
        Mistake(lambda a: _previous(a, offset=+1),
                "the previous token is t - 1 (below the diagonal); attn[..., t, t + 1] is the next "
                "token, which causal attention never sees (all zeros)."),
        Mistake(lambda a: _previous(a, axes=(0, 3)),
                "average over the sequences (dimension 1) and the positions, keeping the layer "
                "(dimension 0) and the head (dimension 2): the result is (L, nh)."),
    ],
    what="your previous_token_scores",
))
