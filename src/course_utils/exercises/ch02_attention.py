"""Checkers of Chapter 2 (Attention from scratch).

* ``check.sdp_attention(fn)``: ``fn(q, k, v, mask=None) -> (out, weights)``, scaled
  dot-product attention. q (..., T, hs), k and v (..., S, hs); ``mask`` bool, broadcastable
  to (..., T, S), True where attention is allowed; a query whose keys are all masked gets
  zero weights and a zero output (not NaN).
* ``check.causal_mask(fn)``: ``fn(T) -> (T, T)`` bool, True where query t may see key s (s <= t).
* ``check.split_heads(fn)``: ``fn(x, n_heads)``, (B, T, C) -> (B, nh, T, hs); head h owns the
  channels h*hs ... (h+1)*hs - 1.  ``check.merge_heads(fn)``: the inverse, (B, nh, T, hs) -> (B, T, C).
* ``check.layer_norm(fn)``: ``fn(x, weight, bias, eps=1e-5)`` over the last axis.
* ``check.bert_encoder_layer(fn)``: ``fn(x, params, n_heads, mask=None, eps=1e-12)`` -> (B, T, C):
  one post-LN BERT layer from the weights ``params`` of a Hugging Face ``BertLayer`` (its
  ``state_dict()``: ``attention.self.query.weight`` ... ``output.LayerNorm.bias``;
  ``nn.Linear`` weights stored (out, in)); ``mask`` bool (B, 1, 1, T), True for real tokens.

Every reference is the course's solution; each ``Mistake`` is a classic error (a missing
1/sqrt(d), the softmax over the wrong axis, the mask applied after the softmax, an
off-by-one causal mask, heads made by a bare ``view``, LayerNorm without eps or with the
unbiased variance, pre-LN where BERT is post-LN ...). Top-level imports: torch only.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .core import Case, Checker, Mistake, register

# =========================================================================== 1. attention


def _attention(q, k, v, mask=None, *, scale="sqrt", dim=-1, mask_after=False, fill=float("-inf"),
               keep_nan=False, invert=False):
    hs = q.size(-1)
    scores = q @ k.transpose(-2, -1)  # (..., T, S)
    if scale == "sqrt":
        scores = scores / math.sqrt(hs)
    elif scale == "d":
        scores = scores / hs
    if mask is not None and invert:
        mask = ~mask
    if mask is not None and not mask_after:
        scores = scores.masked_fill(~mask, fill)
    weights = torch.softmax(scores, dim=dim)
    if mask is not None and mask_after:
        weights = weights.masked_fill(~mask, 0.0)
    elif mask is not None and not keep_nan:
        weights = torch.nan_to_num(weights, nan=0.0)  # a fully masked row: zeros, not NaN
    return weights @ v, weights


def sdp_attention_reference(q, k, v, mask=None):
    """softmax(q kᵀ / √hs) v with a boolean mask (True = may attend); returns (out, weights)."""
    return _attention(q, k, v, mask)


def _attention_cases() -> list[Case]:
    q, k, v = (torch.randn(2, 3, 5, 8) for _ in range(3))  # (B, nh, T, hs)
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    # B=1, T=4: the first sequence has padding at its last key, its first query sees nothing
    pad = torch.tensor([True, True, True, False])
    rows = torch.ones(4, 4, dtype=torch.bool)
    rows[0] = False
    mq, mk, mv = (torch.randn(1, 2, 4, 6) for _ in range(3))
    return [
        Case("random, no mask", (q, k, v)),
        Case("keys longer than queries", (torch.randn(2, 3, 2, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 8))),
        Case("large head size 64", tuple(torch.randn(1, 2, 6, 64) * 2 for _ in range(3))),
        Case("causal mask", (q, k, v), {"mask": causal}),
        Case("padding mask (B, 1, 1, S)", (mq, mk, mv), {"mask": pad.view(1, 1, 1, 4)}),
        Case("a query with every key masked", (mq, mk, mv), {"mask": rows}),
    ]


sdp_attention = register(Checker(
    "sdp_attention", sdp_attention_reference, _attention_cases,
    axes=(("batch", "heads", "query", "head_size"), ("batch", "heads", "query", "key")),
    mistakes=[
        Mistake(lambda q, k, v, mask=None: _attention(q, k, v, mask, scale=None),
                "divide the scores by sqrt(hs) (the head size, `q.size(-1)`) before the softmax: "
                "without it they grow with hs and the softmax saturates."),
        Mistake(lambda q, k, v, mask=None: _attention(q, k, v, mask, scale="d"),
                "the scale is 1/sqrt(hs), not 1/hs: `math.sqrt(q.size(-1))`."),
        Mistake(lambda q, k, v, mask=None: _attention(q, k, v, mask, dim=-2),
                "the softmax runs over the wrong axis: each *query's row* of scores (over the keys, "
                "`dim=-1`) must sum to 1."),
        Mistake(lambda q, k, v, mask=None: _attention(q, k, v, mask, mask_after=True),
                "the mask must act *before* the softmax (`scores.masked_fill(~mask, float('-inf'))`): "
                "zeroing weights after it leaves rows that no longer sum to 1."),
        Mistake(lambda q, k, v, mask=None: _attention(q, k, v, mask, invert=True),
                "the mask is inverted: True means 'may attend', so fill the scores where the mask is "
                "False (`masked_fill(~mask, ...)`)."),
        Mistake(lambda q, k, v, mask=None: _attention(q, k, v, mask, keep_nan=True),
                "a query whose keys are all masked gives a softmax of all -inf = NaN: replace those "
                "rows by zeros (`torch.nan_to_num(weights, nan=0.0)`)."),
        Mistake(lambda q, k, v, mask=None: _attention(q, k, v, mask, fill=torch.finfo(q.dtype).min),
                "a query whose keys are all masked got uniform weights (filling with a large negative "
                "number instead of -inf makes them all equal); such a row must get zero weights."),
    ],
))


# =========================================================================== 2. causal mask

def causal_mask_reference(T: int) -> torch.Tensor:
    """(T, T) bool, True where query t may see key s, i.e. s <= t (itself and the past)."""
    return torch.ones(T, T, dtype=torch.bool).tril()


causal_mask = register(Checker(
    "causal_mask", causal_mask_reference,
    lambda: [Case("T = 4", (4,)), Case("T = 1", (1,)), Case("T = 7", (7,))],
    axes=("query", "key"),
    mistakes=[
        Mistake(lambda T: torch.ones(T, T, dtype=torch.bool).tril(-1),
                "off by one: the diagonal must be True — a token attends to itself (`tril()`, not `tril(-1)`)."),
        Mistake(lambda T: torch.ones(T, T, dtype=torch.bool).tril(1),
                "off by one: each query also sees the next token; keep s <= t (`tril()`, not `tril(1)`)."),
        Mistake(lambda T: torch.ones(T, T, dtype=torch.bool).triu(),
                "this lets each query see the *future*: rows are queries, columns keys; "
                "keep the lower triangle (`tril`)."),
        Mistake(lambda T: torch.ones(T, T, dtype=torch.bool).triu(1),
                "the mask is inverted: it marks the positions to *hide*; the course's convention is "
                "True = may attend (the past and the token itself): return its negation, `tril()`."),
    ],
))


# =========================================================================== 3. split / merge heads

def split_heads_reference(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, T, C) -> (B, nh, T, hs)."""
    B, T, C = x.shape
    return x.view(B, T, n_heads, C // n_heads).transpose(1, 2)  # (B, nh, T, hs)


def merge_heads_reference(x: torch.Tensor) -> torch.Tensor:
    """(B, nh, T, hs) -> (B, T, C)."""
    B, nh, T, hs = x.shape
    return x.transpose(1, 2).reshape(B, T, nh * hs)  # (B, T, C)


def _split_cases() -> list[Case]:
    return [
        Case("B=2, T=5, C=12, 3 heads", (torch.randn(2, 5, 12), 3)),
        Case("one head", (torch.randn(2, 4, 6), 1)),
        Case("T=1", (torch.randn(3, 1, 8), 4)),
    ]


split_heads = register(Checker(
    "split_heads", split_heads_reference, _split_cases,
    axes=("batch", "heads", "seq", "head_size"),
    mistakes=[
        Mistake(lambda x, nh: x.reshape(x.size(0), nh, x.size(1), x.size(2) // nh),
                "a bare `view`/`reshape` to (B, nh, T, hs) mixes tokens into heads: first view as "
                "(B, T, nh, hs), then `.transpose(1, 2)`."),
        Mistake(lambda x, nh: x.view(x.size(0), x.size(1), x.size(2) // nh, nh).permute(0, 3, 1, 2),
                "head h must own the *contiguous* channels h*hs ... (h+1)*hs-1: view as (B, T, nh, hs) "
                "(heads before head size), not (B, T, hs, nh)."),
    ],
))


def _merge_cases() -> list[Case]:
    return [
        Case("B=2, 3 heads, T=5, hs=4", (torch.randn(2, 3, 5, 4),)),
        Case("one head", (torch.randn(2, 1, 4, 6),)),
        Case("T=1", (torch.randn(3, 4, 1, 2),)),
    ]


merge_heads = register(Checker(
    "merge_heads", merge_heads_reference, _merge_cases,
    axes=("batch", "seq", "channels"),
    mistakes=[
        Mistake(lambda x: x.reshape(x.size(0), x.size(2), x.size(1) * x.size(3)),
                "a bare `reshape` to (B, T, C) mixes the heads' tokens: `.transpose(1, 2)` to "
                "(B, T, nh, hs) first, then reshape."),
        Mistake(lambda x: x.permute(0, 2, 3, 1).reshape(x.size(0), x.size(2), -1),
                "the channels must be head by head (all of head 0, then head 1 ...): transpose to "
                "(B, T, nh, hs), not (B, T, hs, nh)."),
    ],
))


# =========================================================================== 4. LayerNorm

def _layer_norm(x, weight, bias, eps=1e-5, *, use_eps=True, unbiased=False, eps_outside=False, dim=-1):
    mean = x.mean(dim, keepdim=True)
    var = x.var(dim, keepdim=True, unbiased=unbiased)
    if eps_outside:
        xhat = (x - mean) / (var.sqrt() + eps)
    else:
        xhat = (x - mean) / torch.sqrt(var + (eps if use_eps else 0.0))
    return xhat * weight + bias


def layer_norm_reference(x, weight, bias, eps=1e-5):
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis (biased variance)."""
    return _layer_norm(x, weight, bias, eps)


def _layer_norm_cases() -> list[Case]:
    C = 6
    w, b = torch.randn(C), torch.randn(C)
    constant = torch.randn(2, 3, C)
    constant[0, 1] = 0.5  # one position whose channels are all equal: variance 0
    return [
        Case("random (B, T, C)", (torch.randn(2, 3, C) * 2 + 1, w, b)),
        Case("small activations, eps=1e-3", (torch.randn(3, C) * 0.02, w, b), {"eps": 1e-3}),
        Case("a constant position", (constant, w, b)),
        Case("square input (C, C)", (torch.randn(C, C), w, b)),
    ]


layer_norm = register(Checker(
    "layer_norm", layer_norm_reference, _layer_norm_cases,
    mistakes=[
        Mistake(lambda x, w, b, eps=1e-5: _layer_norm(x, w, b, eps, unbiased=True),
                "use the *biased* variance (divide by C, not C-1): `x.var(-1, unbiased=False, keepdim=True)` "
                "— `torch.var`'s default is the unbiased one."),
        Mistake(lambda x, w, b, eps=1e-5: _layer_norm(x, w, b, eps, use_eps=False),
                "add eps to the variance before the square root: without it a (nearly) constant "
                "position divides by (almost) zero."),
        Mistake(lambda x, w, b, eps=1e-5: _layer_norm(x, w, b, eps, eps_outside=True),
                "eps goes *inside* the square root: `sqrt(var + eps)`, not `sqrt(var) + eps`."),
        Mistake(lambda x, w, b, eps=1e-5: _layer_norm(x, w, b, eps, dim=0),
                "normalise over the last axis (each position's C channels, `dim=-1`), not over the batch."),
    ],
))


# =========================================================================== 5. a BERT encoder layer

def _linear(x, params, name, transpose=False):
    w = params[f"{name}.weight"]
    return x @ (w if transpose else w.t()) + params[f"{name}.bias"]


def _encoder_layer(x, params, n_heads, mask=None, eps=1e-12, *, pre_ln=False, scale=True, softmax_dim=-1,
                   bare_view=False, use_eps=True, tanh_gelu=False, transpose_qkv=False,
                   attn_residual=True):
    B, T, C = x.shape
    hs = C // n_heads

    def ln(h, name):
        return _layer_norm(h, params[f"{name}.weight"], params[f"{name}.bias"], eps, use_eps=use_eps)

    def heads(h):
        if bare_view:
            return h.reshape(B, n_heads, T, hs)
        return h.view(B, T, n_heads, hs).transpose(1, 2)  # (B, nh, T, hs)

    def attention(h):
        q, k, v = (heads(_linear(h, params, f"attention.self.{n}", transpose_qkv)) for n in ("query", "key", "value"))
        scores = q @ k.transpose(-2, -1)  # (B, nh, T, T)
        if scale:
            scores = scores / math.sqrt(hs)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        w = torch.softmax(scores, dim=softmax_dim)
        out = (w @ v).transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return _linear(out, params, "attention.output.dense")

    def ffn(h):
        a = _linear(h, params, "intermediate.dense")
        a = F.gelu(a, approximate="tanh" if tanh_gelu else "none")
        return _linear(a, params, "output.dense")

    if pre_ln:
        x = x + attention(ln(x, "attention.output.LayerNorm"))
        return x + ffn(ln(x, "output.LayerNorm"))
    a = attention(x)
    h = ln(x + a if attn_residual else a, "attention.output.LayerNorm")
    return ln(h + ffn(h), "output.LayerNorm")


def bert_encoder_layer_reference(x, params, n_heads, mask=None, eps=1e-12):
    """One post-LN BERT layer: h = LN(x + Attn(x)); return LN(h + FFN(h)). Exact GELU."""
    return _encoder_layer(x, params, n_heads, mask, eps)


def random_bert_layer_params(C: int = 16, d_ff: int = 32, scale: float = 0.3) -> dict[str, torch.Tensor]:
    """Weights with the names and shapes of a Hugging Face ``BertLayer``'s state dict."""
    p: dict[str, torch.Tensor] = {}
    for name, (n_out, n_in) in {"attention.self.query": (C, C), "attention.self.key": (C, C),
                                "attention.self.value": (C, C), "attention.output.dense": (C, C),
                                "intermediate.dense": (d_ff, C), "output.dense": (C, d_ff)}.items():
        p[f"{name}.weight"] = torch.randn(n_out, n_in) * scale
        p[f"{name}.bias"] = torch.randn(n_out) * 0.1
    for name in ("attention.output.LayerNorm", "output.LayerNorm"):
        p[f"{name}.weight"] = 1 + 0.1 * torch.randn(C)
        p[f"{name}.bias"] = 0.1 * torch.randn(C)
    return p


def _layer_cases() -> list[Case]:
    params = random_bert_layer_params()
    tiny = {k: (v * 1e-3 if k.endswith("dense.weight") or ".self." in k or "LayerNorm.bias" in k
                or k.endswith("dense.bias") else v) for k, v in params.items()}
    pad = torch.tensor([[True, True, True, True, True], [True, True, True, False, False]]).view(2, 1, 1, 5)
    return [
        Case("B=2, T=5, C=16, 4 heads", (torch.randn(2, 5, 16), params, 4)),
        Case("T=1", (torch.randn(3, 1, 16), params, 2)),
        Case("padding mask", (torch.randn(2, 5, 16), params, 4), {"mask": pad}),
        Case("tiny activations, eps=1e-5", (torch.randn(2, 3, 16) * 1e-3, tiny, 4), {"eps": 1e-5}),
    ]


bert_encoder_layer = register(Checker(
    "bert_encoder_layer", bert_encoder_layer_reference, _layer_cases,
    axes=("batch", "seq", "channels"), atol=1e-4, rtol=1e-4,
    mistakes=[
        Mistake(lambda *a, **k: _encoder_layer(*a, **k, pre_ln=True),
                "that is a *pre-LN* layer; BERT is post-LN: `h = LN(x + attn(x))`, then `LN(h + ffn(h))`."),
        Mistake(lambda *a, **k: _encoder_layer(*a, **k, attn_residual=False),
                "the attention sub-layer lost its residual connection: LN(x + attn(x)), not LN(attn(x))."),
        Mistake(lambda *a, **k: _encoder_layer(*a, **k, scale=False),
                "divide the attention scores by sqrt(hs) (the head size, C // n_heads), not by nothing."),
        Mistake(lambda *a, **k: _encoder_layer(*a, **k, softmax_dim=-2),
                "the softmax runs over the wrong axis: over the keys (`dim=-1`)."),
        Mistake(lambda *a, **k: _encoder_layer(*a, **k, bare_view=True),
                "split the heads with `.view(B, T, nh, hs).transpose(1, 2)`; a bare view to "
                "(B, nh, T, hs) mixes tokens into heads."),
        Mistake(lambda *a, **k: _encoder_layer(*a, **k, use_eps=False),
                "LayerNorm needs its eps inside the square root (`sqrt(var + eps)`, with the `eps` argument)."),
        Mistake(lambda *a, **k: _encoder_layer(*a, **k, tanh_gelu=True),
                "BERT's \"gelu\" is the exact (erf) GELU: `F.gelu(a)`, not the tanh approximation."),
        Mistake(lambda *a, **k: _encoder_layer(*a, **k, transpose_qkv=True),
                "`nn.Linear` stores its weight as (out, in): compute `x @ W.T + b` (or `F.linear(x, W, b)`), "
                "not `x @ W`."),
    ],
))
