"""Checkers of Chapter 6 (Efficient attention and inference), handed out in
``chapters/06_exercises.ipynb``.

* ``check.sink_window_attention(fn)``: ``fn(q, k, v, window, sinks, block_size) -> out`` is
  tiled (flash-style) attention with a causal sliding window plus attention sinks (the first
  ``sinks`` positions stay visible, as in StreamingLLM), queries the last T of the S key
  positions, key blocks that no query of a block may see skipped. The reference is plain softmax
  attention with the (T, S) mask, held to ``F.scaled_dot_product_attention`` with the same boolean
  mask in ``tests/test_exercise_references.py``. Cases with a KV cache fill the keys out of
  everyone's reach with NaN, so a loop that does not skip returns NaN.
* ``check.kv_cache_bytes(fn)``: ``fn(config, batch_size, max_len, dtype) -> int``, the bytes of
  the KV cache of a real model's config (grouped-query heads, an explicit ``head_dim``, layers
  with a sliding window). The reference is the library: a ``StaticCache`` filled by the model
  itself, built and run on the meta device, and its tensors' bytes added up.
* ``check.combine_partial_attention(fn)``: ``fn(outs, lses) -> (out, lse)`` merges attention
  computed over disjoint chunks of keys (split-KV / flash-decoding) from each chunk's
  normalised output and log-sum-exp. Tested against ``F.scaled_dot_product_attention`` over
  all the keys (``tests/test_exercise_references.py``).
* ``check.gqa_attention(fn)``: ``fn(q, k, v) -> out``, grouped-query attention over a cache of
  fewer key/value heads, without repeating them; checked against PyTorch's own
  ``F.scaled_dot_product_attention(..., enable_gqa=True)``.
"""
from __future__ import annotations

import functools
import math
import warnings
from typing import Any

import torch

from ..efficient import BlockState, block_state, merge_blocks
from .core import Case, Checker, Mistake, draw, pick, register

_NEG_INF = float("-inf")


# --------------------------------------------------------------------------- window + sinks, tiled
# q (B, nh, T, hs); k, v (B, nh, S, hs), S >= T: query r sits at position p = r + S - T and may see
# key j iff j <= p and (j > p - window or j < sinks): a causal sliding window of `window` keys
# (itself included) plus the first `sinks` positions (StreamingLLM's attention sinks). Tiles of
# `block_size` queries x `block_size` keys; a key block that no query of the block may see is
# skipped. To see the skipping from outside, the cases with a KV cache fill with NaN the keys and
# values that no query may see and that lie at least a block away from every key some query may
# see: a loop that visits such a block returns NaN (0 x NaN = NaN in p @ v), one that skips it
# cannot touch them, however it aligns its blocks.

def _sink_window_allowed(T: int, S: int, window: int, sinks: int, *, offset: bool = True,
                         slack: int = 0, causal_sinks: bool = True) -> torch.Tensor:
    """Boolean (T, S): True where query r may see key j (``slack=1``: one key too many in the window;
    ``offset=False``: queries at positions 0..T-1; ``causal_sinks=False``: every query sees the sinks)."""
    p = torch.arange(T)[:, None] + (S - T if offset else 0)           # (T, 1) absolute positions
    j = torch.arange(S)[None, :]                                        # (1, S)
    in_window = (j <= p) & (j > p - window - slack)
    sink = (j < sinks) & ((j <= p) if causal_sinks else True)
    return in_window | sink


def _dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor,
                     extra: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(hs) + extra, masked by ``allowed`` (T, S)) v, the (T, S) scores in
    full. Keys that no query may see are set to 0 first (they hold NaN in some cases)."""
    seen = allowed.any(dim=0)[:, None]                                  # (S, 1)
    k, v = torch.where(seen, k, 0.0), torch.where(seen, v, 0.0)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))            # (B, nh, T, S)
    if extra is not None:
        scores = scores + extra
    return scores.masked_fill(~allowed, _NEG_INF).softmax(dim=-1) @ v


def sink_window_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int,
                                    sinks: int, block_size: int) -> torch.Tensor:
    """Plain softmax attention with the (T, S) mask of the window and the sinks (every query sees
    itself, so no row is empty); ``tests/test_exercise_references.py`` holds it to
    ``F.scaled_dot_product_attention`` with the same boolean mask."""
    return _dense_attention(q, k, v, _sink_window_allowed(q.size(-2), k.size(-2), window, sinks))


def nan_far_keys(k: torch.Tensor, v: torch.Tensor, T: int, window: int, sinks: int,
                 block_size: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """k and v with NaN at the keys that no query may see and that lie at least ``block_size``
    positions from every key some query may see; also how many keys were filled."""
    S = k.size(-2)
    seen = _sink_window_allowed(T, S, window, sinks).any(dim=0)        # (S,)
    pos = torch.arange(S)
    near = (pos[:, None] - pos[seen][None, :]).abs().lt(block_size).any(dim=1)
    far = ~near                                                         # (S,)
    return k.masked_fill(far[:, None], math.nan), v.masked_fill(far[:, None], math.nan), int(far.sum())


def _sink_cases() -> list[Case]:
    def qkv(T: int, S: int, hs: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return torch.randn(2, 2, T, hs), torch.randn(2, 2, S, hs), torch.randn(2, 2, S, hs)

    def cached(name: str, T: int, S: int, window: int, sinks: int, block: int) -> Case:
        q, k, v = qkv(T, S)
        k, v, n = nan_far_keys(k, v, T, window, sinks, block)
        return Case(f"{name} ({n} keys out of reach hold NaN)", (q, k, v, window, sinks, block))

    T, S = draw(1, 8), draw(24, 48)
    return [
        Case("T = S = 16, window 4, 2 sinks, block 4", (*qkv(16, 16), 4, 2, 4)),
        Case("T = S = 13, window 5, 3 sinks, block 4 (a last, shorter block)", (*qkv(13, 13), 5, 3, 4)),
        Case("no sinks: a plain sliding window, T = S = 10, window 3, block 2", (*qkv(10, 10), 3, 0, 2)),
        Case("window 1 (itself and the sinks), block 1", (*qkv(6, 6), 1, 2, 1)),
        cached("KV cache: T = 4 new queries, S = 40 keys, window 8, 4 sinks, block 4", 4, 40, 8, 4, 4),
        cached("KV cache: T = 8, S = 48, window 6, 2 sinks, block 3", 8, 48, 6, 2, 3),
        cached(f"a random KV cache: T = {T}, S = {S}, window 5, 1 sink, block 4", T, S, 5, 1, 4),
    ]


def _visited_blocks(i0: int, i1: int, S: int, offset: int, window: int, sinks: int, block_size: int,
                    skip: bool) -> list[tuple[int, int]]:
    """The key blocks (aligned to multiples of block_size) that query block [i0, i1) visits."""
    lo, hi = max(0, i0 + offset - window + 1), min(S, i1 + offset)
    blocks = [(j0, min(j0 + block_size, S)) for j0 in range(0, S, block_size)]
    if not skip:
        return blocks
    return [(j0, j1) for j0, j1 in blocks if j0 < min(sinks, hi) or (j0 < hi and j1 > lo)]


def _sink_tiled(q, k, v, window, sinks, block_size, *, skip=True, rescale=True):
    """A tiled loop over aligned key blocks, the mask built per tile from absolute positions."""
    T, S = q.size(-2), k.size(-2)
    out = torch.empty_like(q)
    for i0 in range(0, T, block_size):
        i1 = min(i0 + block_size, T)
        qi = q[..., i0:i1, :] / math.sqrt(q.size(-1))
        p = torch.arange(i0, i1)[:, None] + S - T
        state: BlockState | None = None
        m = l = acc = None
        for j0, j1 in _visited_blocks(i0, i1, S, S - T, window, sinks, block_size, skip):
            j = torch.arange(j0, j1)[None, :]
            ok = (j <= p) & ((j > p - window) | (j < sinks))
            s = (qi @ k[..., j0:j1, :].transpose(-2, -1)).masked_fill(~ok, _NEG_INF)
            if rescale:
                blk = block_state(s, v[..., j0:j1, :])
                state = blk if state is None else merge_blocks(state, blk)
                continue
            # the running sum and accumulator are *not* rescaled when the maximum grows
            m_new = s.amax(dim=-1, keepdim=True) if m is None else torch.maximum(m, s.amax(dim=-1, keepdim=True))
            e = torch.exp(s - torch.where(m_new == _NEG_INF, 0.0, m_new))
            l = e.sum(-1, keepdim=True) if l is None else l + e.sum(-1, keepdim=True)
            acc = e @ v[..., j0:j1, :] if acc is None else acc + e @ v[..., j0:j1, :]
            m = m_new
        if rescale:
            assert state is not None  # every query sees itself: at least one block
            out[..., i0:i1, :] = state.output()
        else:
            assert l is not None and acc is not None
            out[..., i0:i1, :] = acc / l
    return out


def _sink_variant(q, k, v, window, sinks, block_size, **mask):
    return _dense_attention(q, k, v, _sink_window_allowed(q.size(-2), k.size(-2), window, sinks, **mask))


def _sinks_twice(q, k, v, window, sinks, block_size):
    """A key that is both a sink and in the window counted twice (its weight doubled)."""
    T, S = q.size(-2), k.size(-2)
    both = _sink_window_allowed(T, S, window, 0) & (torch.arange(S) < sinks)[None, :]
    return _dense_attention(q, k, v, _sink_window_allowed(T, S, window, sinks),
                            extra=both.double().mul(math.log(2.0)).to(q.dtype))


sink_window_attention = register(Checker(
    "sink_window_attention", sink_window_attention_reference, _sink_cases,
    axes=("batch", "heads", "query", "head size"),
    mistakes=[
        Mistake(lambda q, k, v, w, n, b: _sink_variant(q, k, v, w, n, b, slack=1),
                "the window holds `window` keys, the query's own included: key j is in it when "
                "p - window < j <= p (with <= on the left it holds window + 1)."),
        Mistake(lambda q, k, v, w, n, b: _sink_variant(q, k, v, w, n, b, offset=False),
                "with a KV cache (T < S) the T queries are the *last* T positions: query r sits at "
                "position p = r + S - T, and both the window and the skipping start from there."),
        Mistake(lambda q, k, v, w, n, b: _sink_variant(q, k, v, w, 0, b),
                "the first `sinks` keys are visible to every query that comes after them, however "
                "far back they are: the window alone leaves them out."),
        Mistake(lambda q, k, v, w, n, b: _sink_variant(q, k, v, w, n, b, causal_sinks=False),
                "the sinks are keys like any other for a query that comes before them: causal "
                "attention never looks ahead, so key j < sinks is visible only if j <= p."),
        Mistake(_sinks_twice,
                "a sink that is also inside the window is one key, counted once: for an early query "
                "the window and the sinks overlap, and visiting their blocks separately counts "
                "those keys twice."),
        Mistake(lambda q, k, v, w, n, b: _sink_tiled(q, k, v, w, n, b, skip=False),
                "NaN: the loop visited key blocks that no query of the block may see (the check "
                "fills keys out of everyone's reach with NaN, and 0 x NaN = NaN in p @ v). Visit "
                "only the blocks that meet the sinks [0, sinks) or the window of the block's queries."),
        Mistake(lambda q, k, v, w, n, b: _sink_tiled(q, k, v, w, n, b, rescale=False),
                "when a new block raises the running maximum m, the running sum and accumulator "
                "computed under the old maximum must be multiplied by exp(m_old - m_new) "
                "(merge_blocks does this)."),
    ],
    atol=1e-5, rtol=1e-4, timeout=5.0,
    what="your sink_window_attention",
))


# --------------------------------------------------------------------------- KV cache of a real config
# config: a transformers config (LlamaConfig, MistralConfig, Qwen2Config, Gemma2Config ...);
# batch_size sequences of up to max_len tokens; dtype of the cache. Return the bytes the cache
# holds, as the library's StaticCache allocates it. A layer is windowed when
# config.layer_types[i] == "sliding_attention" or, without layer_types, whenever
# config.sliding_window is set; a windowed layer keeps min(max_len, sliding_window) positions.

@functools.lru_cache(maxsize=32)
def _static_cache_bytes(config_json: str, model_type: str, batch_size: int, max_len: int, dtype_name: str) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM, StaticCache
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    import json

    values = json.loads(config_json)
    values.pop("model_type", None)
    config = AutoConfig.for_model(model_type, **values)
    dtype = getattr(torch, dtype_name)
    cache = StaticCache(config=config, max_cache_len=max_len)
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        with torch.no_grad():  # one token fills every layer's cache tensors (lazily allocated)
            model(torch.zeros(batch_size, 1, dtype=torch.long), past_key_values=cache, use_cache=True)
    layers: list[Any] = list(cache.layers)  # StaticCache's layers: each holds .keys and .values
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in layers)


def kv_cache_bytes_reference(config: Any, batch_size: int, max_len: int, dtype: torch.dtype) -> int:
    """The bytes of ``StaticCache(config, max_cache_len=max_len)`` once the model (on the meta
    device: nothing is allocated) has run one step with ``batch_size`` sequences in ``dtype``."""
    return _static_cache_bytes(config.to_json_string(use_diff=True), config.model_type, batch_size, max_len,
                               str(dtype).removeprefix("torch."))


def _config(kind: str, **kw: Any) -> Any:
    from transformers import AutoConfig
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    return AutoConfig.for_model(kind, **kw)


def _kv_cases() -> list[Case]:
    llama3_8b = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                     num_attention_heads=32, num_key_value_heads=8)
    qwen25_7b = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                     num_attention_heads=28, num_key_value_heads=4)
    mistral_7b = dict(vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, sliding_window=4096)
    gemma2_2b = dict(vocab_size=256000, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26,
                     num_attention_heads=8, num_key_value_heads=4, head_dim=256, sliding_window=4096)
    return [
        Case("Llama-3-8B, 1 x 8192 tokens, bfloat16", (_config("llama", **llama3_8b), 1, 8192, torch.bfloat16)),
        Case("Qwen2.5-7B, 4 x 4096 tokens, float32", (_config("qwen2", **qwen25_7b), 4, 4096, torch.float32)),
        Case("Mistral-7B-v0.1 (window 4096), 2 x 8192 tokens, float16",
             (_config("mistral", **mistral_7b), 2, 8192, torch.float16)),
        Case("Mistral-7B-v0.1, 2 x 1000 tokens (inside the window)",
             (_config("mistral", **mistral_7b), 2, 1000, torch.float16)),
        Case("Gemma-2-2B (head_dim 256; every other layer windowed), 1 x 8192, bfloat16",
             (_config("gemma2", **gemma2_2b), 1, 8192, torch.bfloat16)),
        Case("a random GQA model and length", _random_kv_case()),
    ]


def _random_kv_case() -> tuple[Any, int, int, torch.dtype]:
    heads = pick((4, 8, 16))
    config = _config("llama", vocab_size=1000, hidden_size=heads * pick((32, 64)), intermediate_size=256,
                     num_hidden_layers=draw(1, 12), num_attention_heads=heads,
                     num_key_value_heads=pick([k for k in (1, 2, 4, heads) if heads % k == 0]))
    return config, draw(1, 4), draw(1, 5000), pick((torch.float32, torch.float16, torch.bfloat16))


def _kv_formula(config: Any, batch_size: int, max_len: int, dtype: torch.dtype, *, gqa: bool = True,
                own_head_dim: bool = True, window: bool = True, factor: int = 2, bytes_per: int | None = None,
                batch: bool = True) -> int:
    heads = config.num_key_value_heads if gqa else config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) if own_head_dim else None
    head_dim = head_dim or config.hidden_size // config.num_attention_heads
    size = bytes_per or torch.empty((), dtype=dtype).element_size()
    types = getattr(config, "layer_types", None)  # absent: every layer windowed iff sliding_window is set
    if types is None:
        sliding = getattr(config, "sliding_window", None) is not None
        types = ["sliding_attention" if sliding else "full_attention"] * config.num_hidden_layers
    total = 0
    for kind in types:
        length = max_len
        if window and kind == "sliding_attention" and getattr(config, "sliding_window", None):
            length = min(max_len, config.sliding_window)
        total += factor * (batch_size if batch else 1) * heads * length * head_dim * size
    return total


kv_cache_bytes = register(Checker(
    "kv_cache_bytes", kv_cache_bytes_reference, _kv_cases, timeout=5.0,
    mistakes=[
        Mistake(lambda *a: _kv_formula(*a, gqa=False),
                "only the key/value heads are cached: config.num_key_value_heads (8 for Llama-3-8B), "
                "not the 32 query heads."),
        Mistake(lambda *a: _kv_formula(*a, bytes_per=2),
                "read the element size from the dtype (`torch.empty((), dtype=dtype).element_size()`): "
                "float32 takes 4 bytes."),
        Mistake(lambda *a: _kv_formula(*a, factor=1),
                "the cache holds a key *and* a value vector per head, position and layer: the factor 2."),
        Mistake(lambda *a: _kv_formula(*a, batch=False),
                "every sequence of the batch has its own cache: multiply by batch_size."),
        Mistake(lambda *a: _kv_formula(*a, window=False),
                "a layer with a sliding window (config.layer_types[i] == 'sliding_attention') never keeps "
                "more than config.sliding_window positions: its cache holds min(max_len, sliding_window)."),
        Mistake(lambda *a: _kv_formula(*a, own_head_dim=False),
                "use config.head_dim when the config sets it: Gemma-2-2B's heads have 256 channels, not "
                "hidden_size / num_attention_heads = 288."),
    ],
    what="your kv_cache_bytes",
))


# --------------------------------------------------------------------------- split-KV: combine partials
# outs: (n, B, nh, T, hs), each chunk's attention output over its own keys (already normalised);
# lses: (n, B, nh, T), each chunk's log-sum-exp of its scaled scores (-inf where the chunk had no
# allowed key; then its output is 0). Return (out (B, nh, T, hs), lse (B, nh, T)) over all keys.

def combine_partial_attention_reference(outs: torch.Tensor, lses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """out = sum_i exp(lse_i - lse) out_i with lse = logsumexp_i lse_i; rows with no key: 0, -inf."""
    lse = torch.logsumexp(lses, dim=0)                                   # (B, nh, T)
    safe = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    weights = torch.exp(lses - safe)                                     # (n, B, nh, T); exp(-inf) = 0
    return (weights[..., None] * outs).sum(0), lse


def chunk_partials(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bounds: list[int],
                   mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(outs, lses) of attention over the key chunks ``k[..., bounds[i]:bounds[i+1], :]``."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))             # (B, nh, T, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, _NEG_INF)
    outs, lses = [], []
    for j0, j1 in zip(bounds[:-1], bounds[1:]):
        s = scores[..., j0:j1]
        lse = torch.logsumexp(s, dim=-1)                                 # (B, nh, T)
        w = torch.nan_to_num(torch.softmax(s, dim=-1), nan=0.0)          # a chunk with no key: 0
        outs.append(w @ v[..., j0:j1, :])
        lses.append(lse)
    return torch.stack(outs), torch.stack(lses)


def _combine_cases() -> list[Case]:
    def qkv(T: int, S: int, scale: float = 1.0) -> tuple[torch.Tensor, ...]:
        return torch.randn(2, 3, T, 8) * scale, torch.randn(2, 3, S, 8) * scale, torch.randn(2, 3, S, 8)

    q, k, v = qkv(4, 12)
    q2, k2, v2 = qkv(2, 20, scale=6.0)  # scores of order 100: exp() overflows float32
    q3, k3, v3 = qkv(6, 6)
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    return [
        Case("2 chunks of 6 keys", chunk_partials(q, k, v, [0, 6, 12])),
        Case("4 chunks of unequal sizes", chunk_partials(q, k, v, [0, 1, 5, 7, 12])),
        Case("large scores (lse near 100)", chunk_partials(q2, k2, v2, [0, 8, 20])),
        Case("causal: early queries see nothing in the last chunk", chunk_partials(q3, k3, v3, [0, 3, 6], causal)),
        Case("a single chunk", chunk_partials(q, k, v, [0, 12])),
    ]


def _combine_variant(outs, lses, *, mode="mean"):
    lse = torch.logsumexp(lses, dim=0)
    if mode == "mean":
        return outs.mean(0), lse
    if mode == "unstable":
        w = torch.exp(lses) / torch.exp(lses).sum(0)
        return (w[..., None] * outs).sum(0), lse
    if mode == "max_lse":
        out, _ = combine_partial_attention_reference(outs, lses)
        return out, lses.amax(0)
    if mode == "linear":
        w = lses / lses.sum(0)
        return (w[..., None] * outs).sum(0), lse
    raise ValueError(mode)


combine_partial_attention = register(Checker(
    "combine_partial_attention", combine_partial_attention_reference, _combine_cases,
    axes=(("batch", "heads", "query", "head size"), ("batch", "heads", "query")),
    mistakes=[
        Mistake(lambda o, l: _combine_variant(o, l, mode="mean"),
                "the chunks are not equally important: weight chunk i by exp(lse_i - lse), its share of "
                "the softmax's denominator."),
        Mistake(lambda o, l: _combine_variant(o, l, mode="linear"),
                "lse is a *log* of a sum: the weights are exp(lse_i - lse), not lse_i / sum(lse)."),
        Mistake(lambda o, l: _combine_variant(o, l, mode="unstable"),
                "exp(lse_i) overflows float32 once lse_i > 88: subtract the combined lse (or the max) "
                "before exponentiating, exp(lse_i - lse)."),
        Mistake(lambda o, l: _combine_variant(o, l, mode="max_lse"),
                "the combined lse is the log of the summed exponentials, `torch.logsumexp(lses, dim=0)`, "
                "not their maximum."),
    ],
    atol=1e-5, rtol=1e-4,
    what="your combine_partial_attention",
))


# --------------------------------------------------------------------------- GQA without copies
# q: (B, nh, T, hs), the queries of the T newest positions; k, v: (B, nkv, S, hs), the cache of a
# grouped-query layer (nh = g x nkv: query head h reads key/value head h // g). Every query sees
# every cached key (decoding). Return (B, nh, T, hs) without repeating k and v.

def gqa_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """PyTorch's own grouped-query attention: ``F.scaled_dot_product_attention(..., enable_gqa=True)``."""
    import torch.nn.functional as F

    return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)


def _gqa(q, k, v, *, interleaved=False, scale=True, dim=-1):
    B, nh, T, hs = q.shape
    nkv = k.size(1)
    g = nh // nkv
    if interleaved:  # head h reads kv head h % nkv: what k.repeat(1, g, 1, 1) gives
        qg = q.view(B, g, nkv, T, hs).transpose(1, 2)                      # (B, nkv, g, T, hs)
    else:
        qg = q.view(B, nkv, g, T, hs)                                      # (B, nkv, g, T, hs)
    scores = qg @ k.unsqueeze(2).transpose(-2, -1)                         # (B, nkv, g, T, S)
    if scale:
        scores = scores / math.sqrt(hs)
    out = scores.softmax(dim=dim) @ v.unsqueeze(2)                         # (B, nkv, g, T, hs)
    if interleaved:
        out = out.transpose(1, 2)
    return out.reshape(B, nh, T, hs)


def _gqa_cases() -> list[Case]:
    def qkv(B: int, nh: int, nkv: int, T: int, S: int, hs: int = 8) -> tuple[torch.Tensor, ...]:
        return torch.randn(B, nh, T, hs), torch.randn(B, nkv, S, hs), torch.randn(B, nkv, S, hs)

    return [
        Case("8 query heads on 2 key/value heads, one new token", qkv(2, 8, 2, 1, 10)),
        Case("multi-query: 4 heads share 1", qkv(1, 4, 1, 1, 7)),
        Case("6 heads on 3, 2 new tokens", qkv(2, 6, 3, 2, 9)),
        Case("multi-head (nkv = nh)", qkv(1, 3, 3, 1, 5)),
    ]


gqa_attention = register(Checker(
    "gqa_attention", gqa_attention_reference, _gqa_cases,
    axes=("batch", "heads", "query", "head size"), atol=1e-5, rtol=1e-4,
    mistakes=[
        Mistake(lambda q, k, v: _gqa(q, k, v, interleaved=True),
                "query head h belongs to key/value head h // g (consecutive heads share one: "
                "repeat_interleave), not h % nkv (what k.repeat(1, g, 1, 1) or a view as "
                "(B, g, nkv, ...) gives): view q as (B, nkv, g, T, hs)."),
        Mistake(lambda q, k, v: _gqa(q, k, v, scale=False),
                "divide the scores by sqrt(hs), the head size."),
        Mistake(lambda q, k, v: _gqa(q, k, v, dim=-2),
                "the softmax runs over the keys, the last axis of the (B, nkv, g, T, S) scores."),
    ],
    what="your gqa_attention",
))
