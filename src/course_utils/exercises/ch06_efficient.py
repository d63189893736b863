"""Checkers of Chapter 6 (Efficient attention and inference).

* ``check.merge_softmax_blocks(fn)``: ``fn(a, b) -> (m, l, acc)`` merges the online-softmax
  states of two blocks of keys, each a tuple ``(m, l, acc)`` as in
  :class:`course_utils.efficient.BlockState`.
* ``check.causal_tiled_attention(fn)``: ``fn(q, k, v, block_size) -> out`` is causal attention
  computed tile by tile, the causal mask built inside the loop from absolute positions
  (queries are the last T of the S key positions).
* ``check.kv_cache_gib(value)``: the KV-cache size of a grouped-query model, in GiB.
"""
from __future__ import annotations

import math

import torch

from ..efficient import BlockState, block_state, merge_blocks, naive_attention
from .core import Case, Checker, Mistake, register

_NEG_INF = float("-inf")


# --------------------------------------------------------------------------- merge of two blocks
def _merge_reference(a, b):  # noqa: ANN001, ANN202 - the student's signature
    return tuple(merge_blocks(BlockState(*a), BlockState(*b)))


def _state(scores: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(block_state(scores, v))


def _merge_cases() -> list[Case]:
    T, Sb, hv = 4, 5, 3  # each state: m and l (T, 1), acc (T, hv)
    v1, v2 = torch.randn(Sb, hv), torch.randn(Sb, hv)
    half_masked = torch.randn(T, Sb)
    half_masked[:2] = _NEG_INF  # rows 0 and 1 saw no allowed key in this block
    both_masked = torch.randn(T, Sb)
    both_masked[0] = _NEG_INF
    both_masked_2 = torch.randn(T, Sb)
    both_masked_2[0] = _NEG_INF
    return [
        Case("two random blocks", (_state(torch.randn(T, Sb), v1), _state(torch.randn(T, Sb), v2))),
        Case("very different maxima (scores near +60 and -60)",
             (_state(torch.randn(T, Sb) + 60.0, v1), _state(torch.randn(T, Sb) - 60.0, v2))),
        Case("the second block is larger", (_state(torch.randn(T, Sb) - 3.0, v1), _state(torch.randn(T, Sb) + 3.0, v2))),
        Case("some rows fully masked in one block (m = -inf, l = 0)", (_state(half_masked, v1), _state(torch.randn(T, Sb), v2))),
        Case("a row fully masked in both blocks", (_state(both_masked, v1), _state(both_masked_2, v2))),
    ]


def _merge_no_rescale(a, b):  # noqa: ANN001, ANN202
    m = torch.maximum(a[0], b[0])
    return m, a[1] + b[1], a[2] + b[2]


def _merge_rescale_l_only(a, b):  # noqa: ANN001, ANN202
    m, l, _ = _merge_reference(a, b)
    return m, l, a[2] + b[2]


def _merge_wrong_sign(a, b):  # noqa: ANN001, ANN202
    m = torch.maximum(a[0], b[0])
    sa, sb = torch.exp(m - a[0]), torch.exp(m - b[0])
    return m, a[1] * sa + b[1] * sb, a[2] * sa + b[2] * sb


def _merge_unguarded(a, b):  # noqa: ANN001, ANN202
    m = torch.maximum(a[0], b[0])
    sa, sb = torch.exp(a[0] - m), torch.exp(b[0] - m)  # -inf - (-inf) = NaN on fully masked rows
    return m, a[1] * sa + b[1] * sb, a[2] * sa + b[2] * sb


def _merge_normalised(a, b):  # noqa: ANN001, ANN202
    m, l, acc = _merge_reference(a, b)
    return m, l, torch.where(l > 0, acc / l.clamp_min(1e-30), 0.0)


merge_softmax_blocks = register(Checker(
    "merge_softmax_blocks", _merge_reference, _merge_cases,
    axes=(("query", "1"), ("query", "1"), ("query", "head size")),
    mistakes=[
        Mistake(_merge_no_rescale, "both states must be rescaled to the common maximum m before adding: "
                                   "l = l_a·exp(m_a − m) + l_b·exp(m_b − m), and the same factors for acc."),
        Mistake(_merge_rescale_l_only, "l is rescaled correctly, but acc must be multiplied by the same factors "
                                       "exp(m_a − m) and exp(m_b − m) — it is a sum of exp(s − m_old)·v too."),
        Mistake(_merge_wrong_sign, "the factors are exp(m_a − m) and exp(m_b − m) (each ≤ 1), not exp(m − m_a): "
                                   "exp(s − m_a)·exp(m_a − m) = exp(s − m)."),
        Mistake(_merge_unguarded, "a row whose keys were all masked has m = −inf, and −inf − (−inf) is NaN: "
                                  "subtract 0 instead of m where m is −inf, e.g. "
                                  "`m_safe = torch.where(m == float('-inf'), 0.0, m)`."),
        Mistake(_merge_normalised, "return acc unnormalised (the weighted sum of v before dividing by l): "
                                   "the division by l happens once, after the last block."),
    ],
    atol=1e-5, rtol=1e-4,
    what="your merge_softmax_blocks",
))


# --------------------------------------------------------------------------- causal mask in a tiled loop
def _causal_tiled_reference(q, k, v, block_size):  # noqa: ANN001, ANN202
    return naive_attention(q, k, v, causal=True)


def _tiled_cases() -> list[Case]:
    def qkv(T: int, S: int, hs: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return torch.randn(2, 3, T, hs), torch.randn(2, 3, S, hs), torch.randn(2, 3, S, hs)

    return [
        Case("T = 8, block 4 (blocks divide T)", (*qkv(8, 8), 4)),
        Case("T = 10, block 4 (a last, shorter block)", (*qkv(10, 10), 4)),
        Case("block 1 (one key at a time)", (*qkv(5, 5), 1)),
        Case("block larger than T", (*qkv(6, 6), 16)),
        Case("T = 3 new queries, S = 9 keys (with a KV cache)", (*qkv(3, 9), 4)),
    ]


def _tiled(q, k, v, block_size, allowed):  # noqa: ANN001, ANN202
    """A tiled loop whose mask is ``allowed(qpos, kpos) -> bool (Tb, Sb)``; no block skipping."""
    T, S = q.size(-2), k.size(-2)
    out = torch.empty_like(q)
    for i0 in range(0, T, block_size):
        i1 = min(i0 + block_size, T)
        qi = q[..., i0:i1, :] / math.sqrt(q.size(-1))
        state = None
        for j0 in range(0, S, block_size):
            j1 = min(j0 + block_size, S)
            s = qi @ k[..., j0:j1, :].transpose(-2, -1)
            ok = allowed(torch.arange(i0, i1), torch.arange(j0, j1), T, S)
            if ok is not None:
                s = s.masked_fill(~ok, _NEG_INF)
            blk = block_state(s, v[..., j0:j1, :])
            state = blk if state is None else merge_blocks(state, blk)
        out[..., i0:i1, :] = state.output()
    return out


def _no_mask(q, k, v, block_size):  # noqa: ANN001, ANN202
    return _tiled(q, k, v, block_size, lambda qi, kj, T, S: None)


def _local_indices(q, k, v, block_size):  # noqa: ANN001, ANN202
    return _tiled(q, k, v, block_size, lambda qi, kj, T, S: (qi - qi[0])[:, None] >= (kj - kj[0])[None, :])


def _strict(q, k, v, block_size):  # noqa: ANN001, ANN202
    return _tiled(q, k, v, block_size, lambda qi, kj, T, S: (qi + S - T)[:, None] > kj[None, :])


def _top_left(q, k, v, block_size):  # noqa: ANN001, ANN202
    return _tiled(q, k, v, block_size, lambda qi, kj, T, S: qi[:, None] >= kj[None, :])


def _transposed(q, k, v, block_size):  # noqa: ANN001, ANN202
    return _tiled(q, k, v, block_size, lambda qi, kj, T, S: (qi + S - T)[:, None] <= kj[None, :])


causal_tiled_attention = register(Checker(
    "causal_tiled_attention", _causal_tiled_reference, _tiled_cases,
    axes=("batch", "heads", "query", "head size"),
    mistakes=[
        Mistake(_no_mask, "the output equals attention with no mask: every tile that straddles the diagonal "
                          "needs its part of the causal mask (scores of later keys set to -inf)."),
        Mistake(_local_indices, "the mask compares positions *inside* the tile (0..block-1); compare absolute "
                                "positions: query i0 + r may see key j0 + c only if j0 + c <= i0 + r (+ S − T)."),
        Mistake(_strict, "a query must see its own key too: allow key position <= query position, not <."),
        Mistake(_top_left, "with a KV cache (T < S) the T queries are the *last* T positions: query r sits at "
                           "position r + S − T (PyTorch's is_causal=True aligns them top-left instead)."),
        Mistake(_transposed, "the mask is transposed: a query may see keys at positions up to its own, "
                             "not from its own onwards."),
    ],
    atol=1e-5, rtol=1e-4, timeout=5.0,
    what="your causal_tiled_attention",
))


# --------------------------------------------------------------------------- KV cache size
#: The exercise's model: a grouped-query decoder of the size of today's 70B-parameter models.
KV_EXERCISE = dict(n_layer=80, n_head=64, n_kv_head=8, head_size=128, bytes_per_value=2, context=4096, batch=1)


def _gib(n_kv_head: int, factor: int = 2, bytes_per_value: int = 2) -> float:
    e = KV_EXERCISE
    return factor * e["n_layer"] * n_kv_head * e["head_size"] * bytes_per_value * e["context"] * e["batch"] / 2**30


kv_cache_gib = register(Checker(
    "kv_cache_gib", lambda: _gib(KV_EXERCISE["n_kv_head"]), kind="value",
    mistakes=[
        Mistake(lambda: _gib(KV_EXERCISE["n_kv_head"], factor=1), "the cache holds a key *and* a value vector: "
                                                                  "count both (the factor 2)."),
        Mistake(lambda: _gib(KV_EXERCISE["n_head"]), "with grouped-query attention only the n_kv_head = 8 key/value "
                                                     "heads are cached, not all 64 query heads."),
        Mistake(lambda: _gib(KV_EXERCISE["n_kv_head"], bytes_per_value=4), "float16/bfloat16 values take 2 bytes, "
                                                                           "not 4."),
        Mistake(lambda: _gib(KV_EXERCISE["n_kv_head"]) * 2**30 / 1e9, "the answer is asked in GiB (2**30 bytes), "
                                                                      "not GB (10**9 bytes)."),
    ],
    atol=1e-3, rtol=1e-3,
    what="your value",
))
