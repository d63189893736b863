"""Checkers of Chapter 7 (Encoder–decoders, modern positions and the model families).

Each reference is the library's own code, or held to it by a test:

* ``check.mha_cross_attention(fn)``: ``fn(x, memory, key_padding_mask, params, n_heads)`` ->
  ``(out, weights)``: cross-attention with the weights of a ``torch.nn.MultiheadAttention``
  (``in_proj_weight`` (3C, C) ...), ``key_padding_mask`` (B, S) True where the source is padding,
  the weights averaged over the heads. The reference *is* ``nn.MultiheadAttention``.
* ``check.decoder_layer_step(fn)``: ``fn(x_t, memory, src_mask, params, n_heads, cache)`` ->
  ``(y_t, cache)``: one step of a BART decoder layer with a cache (self-attention keys and values
  that grow, cross-attention keys and values of the memory computed once). The reference runs
  ``transformers``' ``BartDecoderLayer`` over the whole prefix at every step; the cache's tensors
  are compared with the layer's own projections.
* ``check.rope_permute(fn)``: ``fn(w, n_heads)``: the rows of a query/key projection written for
  interleaved RoPE (pairs 2i, 2i + 1, Meta's original Llama code) reordered for the half-split
  RoPE of ``transformers`` (pairs i, i + hs/2): the ``permute`` of the library's Llama conversion
  script, written out here (the script is not in the wheel). ``tests/test_ch07_checkers.py`` holds
  it to the library: its GPT-J (interleaved) and Llama (half-split) rotary code give equal scores.
* ``check.t5_position_bias(fn)``: ``fn(bias_table, query_length, key_length, bidirectional=True,
  max_distance=128)`` against ``T5Attention.compute_bias`` (queries are the last T of S positions).
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
import torch.nn.functional as F

# Unlike other chapters' checkers, these references *are* transformers' code, imported here rather
# than inside the functions: the import costs about a second of CPU once, and it belongs to loading
# this module (which happens only when a Chapter 7 check is asked for), not to the first check's
# time limit. Chapter 7's notebook has imported transformers long before its exercises.
from transformers import BartConfig, T5Config
from transformers.models.bart.modeling_bart import BartDecoderLayer
from transformers.models.t5.modeling_t5 import T5Attention

from .core import Case, Checker, Mistake, draw, register


# --------------------------------------------------------------------------- 1. cross-attention, MHA's layout
def _mha_params(C: int) -> dict[str, torch.Tensor]:
    """Weights with the names and shapes of ``nn.MultiheadAttention(C, nh)``'s state dict."""
    return {"in_proj_weight": torch.randn(3 * C, C) / math.sqrt(C), "in_proj_bias": 0.1 * torch.randn(3 * C),
            "out_proj.weight": torch.randn(C, C) / math.sqrt(C), "out_proj.bias": 0.1 * torch.randn(C)}


def mha_cross_attention_reference(x: torch.Tensor, memory: torch.Tensor, key_padding_mask: torch.Tensor | None,
                                  params: dict[str, torch.Tensor],
                                  n_heads: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``nn.MultiheadAttention`` itself: queries from ``x``, keys and values from ``memory``."""
    C = x.size(-1)
    mha = torch.nn.MultiheadAttention(C, n_heads, batch_first=True, dtype=x.dtype)
    mha.load_state_dict(params)
    with torch.no_grad():
        return mha(x, memory, memory, key_padding_mask=key_padding_mask, need_weights=True,
                   average_attn_weights=True)


def _mha_variant(x, memory, key_padding_mask, params, n_heads, *, mask="right", scale=True,
                 average=True, transpose=False, order=(0, 1, 2)):
    B, T, C = x.shape
    hs = C // n_heads
    w, b = params["in_proj_weight"].chunk(3), params["in_proj_bias"].chunk(3)
    w, b = [w[i] for i in order], [b[i] for i in order]

    def proj(inp, i):
        out = inp @ w[i] + b[i] if transpose else F.linear(inp, w[i], b[i])
        return out.view(inp.size(0), inp.size(1), n_heads, hs).transpose(1, 2)   # (B, nh, *, hs)

    q, k, v = proj(x, 0), proj(memory, 1), proj(memory, 2)
    scores = q @ k.transpose(-2, -1) / (math.sqrt(hs) if scale else 1.0)           # (B, nh, T, S)
    if mask == "right":
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    elif mask == "inverted":
        scores = scores.masked_fill(~key_padding_mask[:, None, None, :], float("-inf"))
    weights = scores.softmax(-1)
    out = F.linear((weights @ v).transpose(1, 2).reshape(B, T, C), params["out_proj.weight"],
                   params["out_proj.bias"])
    return out, (weights.mean(1) if average else weights)


def _mha_cases() -> list[Case]:
    C, nh = 16, 4
    params = _mha_params(C)
    right = torch.tensor([[False] * 5 + [True] * 2, [False] * 3 + [True] * 4])     # padding at the end
    left = torch.tensor([[True] * 2 + [False] * 5, [True] * 4 + [False] * 3])      # padding at the start
    n = draw(2, 9)
    drawn = torch.arange(n)[None, :] >= torch.randint(1, n + 1, (3,))[:, None]      # >= 1 real token each
    return [
        Case("B = 2, T = 3 targets over S = 7 sources, padding at the end",
             (torch.randn(2, 3, C), torch.randn(2, 7, C), right, params, nh)),
        Case("padding at the start (left-padded sources)",
             (torch.randn(2, 4, C), torch.randn(2, 7, C), left, params, nh)),
        Case("no padding, one head", (torch.randn(2, 5, C), torch.randn(2, 6, C),
                                      torch.zeros(2, 6, dtype=torch.bool), params, 1)),
        Case(f"random lengths of {n} sources, 8 heads, C = 32",
             (torch.randn(3, draw(1, 6), 32), torch.randn(3, n, 32), drawn, _mha_params(32), 8)),
    ]


mha_cross_attention = register(Checker(
    "mha_cross_attention", mha_cross_attention_reference, _mha_cases,
    axes=("batch", "target", "source"), atol=1e-5, rtol=1e-4,
    mistakes=[
        Mistake(lambda *a: _mha_variant(*a, mask="inverted"),
                "key_padding_mask is True where the source is *padding* (the positions to ignore), the "
                "opposite of the chapter's attention mask (1 for real tokens): mask where it is True."),
        Mistake(lambda *a: _mha_variant(*a, mask="none"),
                "the padded source positions got attention weight: set their scores to −inf before the "
                "softmax (`masked_fill(key_padding_mask[:, None, None, :], float('-inf'))`)."),
        Mistake(lambda *a: _mha_variant(*a, scale=False),
                "divide the scores by sqrt(hs), the head size C // n_heads, before the softmax."),
        Mistake(lambda *a: _mha_variant(*a, average=False),
                "return the weights averaged over the heads, (B, T, S), as nn.MultiheadAttention does by "
                "default (`average_attn_weights=True`)."),
        Mistake(lambda *a: _mha_variant(*a, transpose=True),
                "the rows of in_proj_weight are output features, as in nn.Linear: compute "
                "`F.linear(x, W_q, b_q)` (x @ W_q.T + b_q), not x @ W_q."),
        Mistake(lambda *a: _mha_variant(*a, order=(1, 0, 2)),
                "in_proj_weight stacks the query, key and value projections in that order: "
                "`W_q, W_k, W_v = in_proj_weight.chunk(3)`."),
    ],
    what="your mha_cross_attention",
))


# --------------------------------------------------------------------------- 2. a decoder layer's step with a cache
CACHE_KEYS = ("self_k", "self_v", "cross_k", "cross_v")


def random_bart_layer_params(C: int = 16, d_ff: int = 32) -> dict[str, torch.Tensor]:
    """Weights with the names and shapes of a ``BartDecoderLayer``'s state dict."""
    p: dict[str, torch.Tensor] = {}
    for attn in ("self_attn", "encoder_attn"):
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            p[f"{attn}.{proj}.weight"] = torch.randn(C, C) / math.sqrt(C)
            p[f"{attn}.{proj}.bias"] = 0.1 * torch.randn(C)
    p["fc1.weight"], p["fc1.bias"] = torch.randn(d_ff, C) / math.sqrt(C), 0.1 * torch.randn(d_ff)
    p["fc2.weight"], p["fc2.bias"] = torch.randn(C, d_ff) / math.sqrt(d_ff), 0.1 * torch.randn(C)
    for ln in ("self_attn_layer_norm", "encoder_attn_layer_norm", "final_layer_norm"):
        p[f"{ln}.weight"], p[f"{ln}.bias"] = 1 + 0.1 * torch.randn(C), 0.1 * torch.randn(C)
    return p


def _library_layer(params: dict[str, torch.Tensor], n_heads: int) -> BartDecoderLayer:
    C, d_ff = params["fc1.weight"].size(1), params["fc1.weight"].size(0)
    config = BartConfig(d_model=C, decoder_attention_heads=n_heads, decoder_ffn_dim=d_ff, dropout=0.0,
                        attention_dropout=0.0, activation_dropout=0.0, activation_function="gelu")
    config._attn_implementation = "eager"
    layer = BartDecoderLayer(config, layer_idx=0).eval()
    layer.load_state_dict(params)
    return layer


def _heads(t: torch.Tensor, n_heads: int) -> torch.Tensor:
    B, T, C = t.shape
    return t.view(B, T, n_heads, C // n_heads).transpose(1, 2)                      # (B, nh, T, hs)


def decoder_layer_step_reference(x_t: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor,
                                 params: dict[str, torch.Tensor], n_heads: int,
                                 cache: dict[str, torch.Tensor] | None = None,
                                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The library's ``BartDecoderLayer`` over the whole prefix (no cache), its last position; the
    cache holds the layer's own key and value projections (and, privately, the inputs so far)."""
    inputs = x_t if cache is None else torch.cat([cache["_inputs"], x_t], dim=1)    # (B, t, C)
    layer, t = _library_layer(params, n_heads), inputs.size(1)
    neg = torch.finfo(x_t.dtype).min
    causal = torch.zeros(t, t, dtype=x_t.dtype).masked_fill(
        torch.ones(t, t, dtype=torch.bool).triu(1), neg)[None, None]                # (1, 1, t, t)
    source = torch.zeros(src_mask.size(0), 1, t, src_mask.size(1), dtype=x_t.dtype).masked_fill(
        ~src_mask.bool()[:, None, None, :], neg)                                     # (B, 1, t, S)
    with torch.no_grad():
        out = layer(inputs, attention_mask=causal, encoder_hidden_states=memory, encoder_attention_mask=source)
        out = out[0] if isinstance(out, tuple) else out
        new = {"self_k": _heads(layer.self_attn.k_proj(inputs), n_heads),
               "self_v": _heads(layer.self_attn.v_proj(inputs), n_heads),
               "cross_k": _heads(layer.encoder_attn.k_proj(memory), n_heads),
               "cross_v": _heads(layer.encoder_attn.v_proj(memory), n_heads), "_inputs": inputs}
    return out[:, -1:], new


def _ln(x, params, name):
    return F.layer_norm(x, x.shape[-1:], params[f"{name}.weight"], params[f"{name}.bias"], eps=1e-5)


def _attend(q, k, v, mask=None, scale=True):
    scores = q @ k.transpose(-2, -1) / (math.sqrt(q.size(-1)) if scale else 1.0)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(-1) @ v


def _step_variant(x_t, memory, src_mask, params, n_heads, cache=None, *, src_masked=True, pre_ln=False,
                  cross_weights="encoder_attn", scale=True, keep_past=True):
    """One decoder step written out, with one switch per known mistake (the unswitched version equals
    the reference: ``tests/test_ch07_checkers.py``)."""
    B = x_t.size(0)

    def lin(t, name):
        return F.linear(t, params[f"{name}.weight"], params[f"{name}.bias"])

    def merge(t):
        return t.transpose(1, 2).reshape(B, t.size(2), -1)

    def sub(x, fn, ln):                                                    # a residual sub-layer
        return x + fn(_ln(x, params, ln)) if pre_ln else _ln(x + fn(x), params, ln)

    new = dict(cache) if cache is not None else {}
    if cache is None:
        new["cross_k"] = _heads(lin(memory, f"{cross_weights}.k_proj"), n_heads)
        new["cross_v"] = _heads(lin(memory, f"{cross_weights}.v_proj"), n_heads)
    cross_mask = src_mask.bool()[:, None, None, :] if src_masked else None

    def self_attn(h):
        k, v = _heads(lin(h, "self_attn.k_proj"), n_heads), _heads(lin(h, "self_attn.v_proj"), n_heads)
        if cache is not None and keep_past:
            k, v = torch.cat([cache["self_k"], k], dim=2), torch.cat([cache["self_v"], v], dim=2)
        new["self_k"], new["self_v"] = k, v
        return lin(merge(_attend(_heads(lin(h, "self_attn.q_proj"), n_heads), k, v, scale=scale)),
                   "self_attn.out_proj")

    def cross_attn(h):
        q = _heads(lin(h, f"{cross_weights}.q_proj"), n_heads)
        out = _attend(q, new["cross_k"], new["cross_v"], cross_mask, scale=scale)
        return lin(merge(out), f"{cross_weights}.out_proj")

    x = sub(x_t, self_attn, "self_attn_layer_norm")
    x = sub(x, cross_attn, "encoder_attn_layer_norm")
    x = sub(x, lambda h: lin(F.gelu(lin(h, "fc1")), "fc2"), "final_layer_norm")
    return x, new


def _step_call(fn: Callable[..., Any], case: Case) -> Any:
    """Feed the target one position at a time, handing back the cache the function returned; the
    output is every step's y and the last cache's four tensors."""
    x, memory, src_mask, params, n_heads = case.args
    cache, ys = None, []
    for t in range(x.size(1)):
        got = fn(x[:, t:t + 1], memory, src_mask, params, n_heads, cache)
        if not (isinstance(got, tuple) and len(got) == 2):
            return got                           # compared as it is: the check says what it expected
        y, cache = got
        ys.append(y)
    shapes = {tuple(y.shape) for y in ys if isinstance(y, torch.Tensor)}
    y_all = torch.cat(ys, dim=1) if len(shapes) == 1 and all(isinstance(y, torch.Tensor) for y in ys) else tuple(ys)
    kept = tuple(cache.get(k) for k in CACHE_KEYS) if isinstance(cache, dict) else (cache,)
    return (y_all, *kept)


def _step_cases() -> list[Case]:
    params = random_bart_layer_params()
    src_mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    n = draw(2, 8)
    drawn = (torch.arange(n)[None, :] < torch.randint(1, n + 1, (2,))[:, None]).long()
    return [
        Case("B = 2, 5 target steps, 6 sources (the second with 2 padding)",
             (torch.randn(2, 5, 16), torch.randn(2, 6, 16), src_mask, params, 4)),
        Case("one step (no cache yet)", (torch.randn(2, 1, 16), torch.randn(2, 6, 16), src_mask, params, 2)),
        Case(f"random: {n} sources, random padding, 8 heads, C = 32",
             (torch.randn(2, draw(2, 6), 32), torch.randn(2, n, 32), drawn, random_bart_layer_params(32, 64), 8)),
    ]


decoder_layer_step = register(Checker(
    "decoder_layer_step", decoder_layer_step_reference, _step_cases,
    axes=None, atol=1e-5, rtol=1e-4, call=_step_call,
    mistakes=[
        Mistake(lambda *a, **k: _step_variant(*a, **k, src_masked=False),
                "the cross-attention gave weight to the padded source positions: mask them with src_mask "
                "(1 for real tokens) in the cross-attention, at every step."),
        Mistake(lambda *a, **k: _step_variant(*a, **k, keep_past=False),
                "each step's self-attention must see every earlier target position: append the new key and "
                "value to the cached ones (`torch.cat([cache['self_k'], k], dim=2)`) and attend over all."),
        Mistake(lambda *a, **k: _step_variant(*a, **k, cross_weights="self_attn"),
                "the cross-attention has its own weights, `encoder_attn.*` (queries from the decoder, keys and "
                "values from the memory); the `self_attn.*` weights are the causal self-attention's."),
        Mistake(lambda *a, **k: _step_variant(*a, **k, pre_ln=True),
                "BART's layer is post-LN: `x = LN(x + sublayer(x))` for each of its three sub-layers."),
        Mistake(lambda *a, **k: _step_variant(*a, **k, scale=False),
                "divide the scores by sqrt(hs), the head size C // n_heads, in both attentions."),
    ],
    what="your decoder_layer_step",
))


# --------------------------------------------------------------------------- 3. RoPE: Meta's layout to the library's
def rope_permute_reference(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """The permutation of ``transformers``' Llama conversion script (``permute``): within each head,
    row 2i goes to row i and row 2i + 1 to row i + hs/2."""
    out_features, C = w.shape
    return w.view(n_heads, out_features // n_heads // 2, 2, C).transpose(1, 2).reshape(out_features, C)


def _rope_inverse(w, n_heads):
    out_features, C = w.shape
    return w.view(n_heads, 2, out_features // n_heads // 2, C).transpose(1, 2).reshape(out_features, C)


def _rope_whole(w, n_heads):
    return rope_permute_reference(w, 1)


def _rope_columns(w, n_heads):
    return rope_permute_reference(w.T.contiguous(), n_heads).T


def _rope_cases() -> list[Case]:
    nh = draw(2, 6)
    return [
        Case("4 heads of 8, C = 32 (a query projection)", (torch.randn(32, 32), 4)),
        Case("2 key/value heads of 8, C = 32 (grouped-query: fewer rows than columns)", (torch.randn(16, 32), 2)),
        Case("one head of 4", (torch.randn(4, 6), 1)),
        Case(f"{nh} heads of 6, C = 10", (torch.randn(6 * nh, 10), nh)),
    ]


rope_permute = register(Checker(
    "rope_permute", rope_permute_reference, _rope_cases,
    axes=("row", "column"), atol=0, rtol=0,
    mistakes=[
        Mistake(lambda w, n: w.clone(), "the rows are unchanged: within each head, interleaved RoPE rotates rows "
                                        "(2i, 2i + 1) together, the library's RoPE rows (i, i + hs/2)."),
        Mistake(_rope_inverse, "that is the inverse permutation (the library's layout back to Meta's): row 2i "
                               "must *become* row i, and row 2i + 1 row i + hs/2."),
        Mistake(_rope_whole, "permute within each head, not across the whole matrix: view the rows as "
                             "(n_heads, hs/2, 2, C) before you reorder."),
        Mistake(_rope_columns, "permute the rows (the output features, one per head channel), not the columns: "
                               "the columns are the model's input channels, which RoPE does not touch."),
    ],
    what="your rope_permute",
))


# --------------------------------------------------------------------------- T5 buckets
def _t5_reference(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
    return T5Attention._relative_position_bucket(relative_position, bidirectional=bidirectional,
                                                 num_buckets=num_buckets, max_distance=max_distance)


# --------------------------------------------------------------------------- T5's position bias
def _bias_reference(bias_table, query_length, key_length, bidirectional=True, max_distance=128,
                    *, aligned=True):
    num_buckets, n_heads = bias_table.shape
    config = T5Config(d_model=8 * n_heads, d_kv=8, num_heads=n_heads, relative_attention_num_buckets=num_buckets,
                      relative_attention_max_distance=max_distance, is_decoder=not bidirectional)
    attention = T5Attention(config, has_relative_attention_bias=True, layer_idx=0)  # layer_idx: no warning
    with torch.no_grad():
        attention.relative_attention_bias.weight.copy_(bias_table)
        past = key_length - query_length if aligned else 0   # a cache holds the first S - T positions
        return attention.compute_bias(query_length, key_length, past_seen_tokens=past)


def _bias_top_left(bias_table, query_length, key_length, bidirectional=True, max_distance=128):
    return _bias_reference(bias_table, query_length, key_length, bidirectional, max_distance, aligned=False)


def _bias_from(relative: torch.Tensor, bias_table: torch.Tensor, bidirectional: bool,
               max_distance: int) -> torch.Tensor:
    buckets = _t5_reference(relative, bidirectional, bias_table.size(0), max_distance)
    return bias_table[buckets].permute(2, 0, 1)[None]


def _positions(query_length: int, key_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.arange(key_length - query_length, key_length)[:, None], torch.arange(key_length)[None, :]


def _bias_sign(bias_table, query_length, key_length, bidirectional=True, max_distance=128):
    q, k = _positions(query_length, key_length)
    return _bias_from(q - k, bias_table, bidirectional, max_distance)


def _bias_always_bidirectional(bias_table, query_length, key_length, bidirectional=True, max_distance=128):
    q, k = _positions(query_length, key_length)
    return _bias_from(k - q, bias_table, True, max_distance)


def _bias_transposed(bias_table, query_length, key_length, bidirectional=True, max_distance=128):
    return _bias_reference(bias_table, query_length, key_length, bidirectional, max_distance).transpose(-2, -1)


def _bias_cases() -> list[Case]:
    return [
        # T < S first: there a transposed result and a flipped sign differ (on T = S they coincide)
        Case("encoder, 4 queries over 9 keys, 32 buckets, 4 heads", (torch.randn(32, 4), 4, 9)),
        Case("encoder: T = S = 10, 32 buckets, 4 heads", (torch.randn(32, 4), 10, 10)),
        Case("encoder: T = S = 40, 8 buckets, max_distance 20", (torch.randn(8, 3), 40, 40), {"max_distance": 20}),
        Case("decoder: T = S = 12, 16 buckets", (torch.randn(16, 2), 12, 12), {"bidirectional": False}),
        Case("decoder with a cache: 3 new queries, 50 keys", (torch.randn(32, 4), 3, 50), {"bidirectional": False}),
    ]


t5_position_bias = register(Checker(
    "t5_position_bias", _bias_reference, _bias_cases,
    axes=("batch", "heads", "query", "key"),
    mistakes=[
        Mistake(_bias_sign, "the relative position is key position − query position (memory − context in T5's "
                            "code), not the other way round; with T = S that is the same as transposing the "
                            "(T, S) matrix: rows are queries, columns keys."),
        Mistake(_bias_transposed, "the result is transposed: rows are queries, columns keys, (1, n_heads, "
                                  "T, S); check which axes you are transposing or permuting."),
        Mistake(_bias_always_bidirectional, "pass `bidirectional` on to the buckets: a decoder puts every key after "
                                            "the query into bucket 0."),
        Mistake(_bias_top_left, "with a cache (T < S) the T queries are the *last* T positions: query i sits at "
                                "position S − T + i (T5's compute_bias gets past_seen_tokens = S − T)."),
    ],
    atol=0, rtol=0,
    what="your t5_position_bias",
))


