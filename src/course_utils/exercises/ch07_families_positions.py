"""Checkers of Chapter 7 (Encoder–decoders, modern positions and the model families).

Each reference is the library's own code, not the course's:

* ``check.t5_bucket(fn)``: ``fn(relative_position, bidirectional=True, num_buckets=32,
  max_distance=128)`` against ``transformers``' ``T5Attention._relative_position_bucket``.
* ``check.t5_position_bias(fn)``: ``fn(bias_table, query_length, key_length, bidirectional=True,
  max_distance=128)`` against ``T5Attention.compute_bias`` (queries are the last T of S positions).
* ``check.llama3_inv_freq(fn)``: ``fn(head_dim, base, factor, low_freq_factor, high_freq_factor,
  original_max_position)`` against ``transformers``' ``rope_type="llama3"`` initialisation
  (``ROPE_INIT_FUNCTIONS["llama3"]``), the RoPE rescaling of Llama 3.1.
* ``check.mixtral_active_params(value)``: the parameters one token uses in Mixtral-8x7B, counted on
  ``MixtralForCausalLM`` built on the meta device from the published configuration.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import torch

# Unlike other chapters' checkers, these references *are* transformers' code, imported here rather
# than inside the functions: the import costs about a second of CPU once, and it belongs to loading
# this module (which happens only when a Chapter 7 check is asked for), not to the first check's
# time limit. Chapter 7's notebook has imported transformers long before its exercises.
from transformers import LlamaConfig, T5Config
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.t5.modeling_t5 import T5Attention

from .core import Case, Checker, Mistake, draw, pick, register


# --------------------------------------------------------------------------- T5 buckets
def _t5_reference(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
    return T5Attention._relative_position_bucket(relative_position, bidirectional=bidirectional,
                                                 num_buckets=num_buckets, max_distance=max_distance)


def _t5_variant(relative_position, bidirectional=True, num_buckets=32, max_distance=128, *,
                halve=True, rounding=False, cap=True, abs_in_decoder=False):
    """The reference written out, with one switch per known mistake."""
    bucket = torch.zeros_like(relative_position)
    if bidirectional:
        if halve:
            num_buckets //= 2
        bucket = bucket + (relative_position > 0).long() * num_buckets
        distance = relative_position.abs()
    else:
        distance = relative_position.abs() if abs_in_decoder else (-relative_position).clamp(min=0)
    exact = num_buckets // 2
    scaled = torch.log(distance.float().clamp(min=1) / exact) / math.log(max_distance / exact) * (num_buckets - exact)
    large = exact + (scaled.round() if rounding else scaled).long()
    if cap:
        large = large.clamp(max=num_buckets - 1)
    return bucket + torch.where(distance < exact, distance, large)


def _t5_sign_flipped(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
    return _t5_reference(-relative_position, bidirectional, num_buckets, max_distance)


def _t5_no_halving(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
    return _t5_variant(relative_position, bidirectional, num_buckets, max_distance, halve=False)


def _t5_rounding(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
    return _t5_variant(relative_position, bidirectional, num_buckets, max_distance, rounding=True)


def _t5_no_cap(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
    return _t5_variant(relative_position, bidirectional, num_buckets, max_distance, cap=False)


def _t5_abs_in_decoder(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
    return _t5_variant(relative_position, bidirectional, num_buckets, max_distance, abs_in_decoder=True)


def _t5_cases() -> list[Case]:
    offsets = torch.arange(-300, 301)
    grid = torch.arange(12)[None, :] - torch.arange(12)[:, None]        # key - query, (T, S)
    return [
        Case("encoder (bidirectional), offsets -300..300", (offsets,)),
        Case("decoder (bidirectional=False), offsets -300..300", (offsets,), {"bidirectional": False}),
        Case("a 12 x 12 grid of key - query positions", (grid,)),
        Case("8 buckets, max_distance 20", (offsets,), {"num_buckets": 8, "max_distance": 20}),
        Case("decoder, 16 buckets, max_distance 64", (offsets,),
             {"bidirectional": False, "num_buckets": 16, "max_distance": 64}),
        Case("random offsets, buckets and distance", (torch.randint(-500, 501, (draw(5, 40),)),),
             {"bidirectional": bool(draw(0, 1)), "num_buckets": pick((8, 16, 32, 64)), "max_distance": draw(20, 300)}),
    ]


t5_bucket = register(Checker(
    "t5_bucket", _t5_reference, _t5_cases,
    axes=("offset",),
    mistakes=[
        Mistake(_t5_sign_flipped, "relative_position is key position − query position: keys *after* the query "
                                  "(positive values) get the upper half of the buckets in an encoder, and a "
                                  "decoder keeps the keys at or before the query (relative_position <= 0)."),
        Mistake(_t5_no_halving, "with bidirectional=True, first halve num_buckets (num_buckets //= 2): one half for "
                                "keys before the query, one for keys after; the rest of the rule uses the half."),
        Mistake(_t5_abs_in_decoder, "for a decoder (bidirectional=False) the distance is max(−relative_position, 0): "
                                    "keys after the query all fall into bucket 0, not into buckets by |offset|."),
        Mistake(_t5_rounding, "the logarithmic bucket is truncated towards zero (`.long()`, as the library's "
                              "`.to(torch.long)`), not rounded."),
        Mistake(_t5_no_cap, "distances beyond max_distance must share the last bucket: cap the logarithmic bucket "
                            "at num_buckets − 1 (of the buckets left after halving)."),
    ],
    atol=0, rtol=0,
    what="your t5_bucket",
))


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


def _bias_from(relative: torch.Tensor, bias_table, bidirectional, max_distance):
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


# --------------------------------------------------------------------------- Llama 3.1 RoPE scaling
def _llama3_reference(head_dim, base, factor, low_freq_factor, high_freq_factor, original_max_position):
    config = LlamaConfig(hidden_size=head_dim * 4, num_attention_heads=4, head_dim=head_dim,
                         max_position_embeddings=int(original_max_position * factor),
                         rope_parameters={"rope_type": "llama3", "rope_theta": float(base), "factor": float(factor),
                                          "low_freq_factor": float(low_freq_factor),
                                          "high_freq_factor": float(high_freq_factor),
                                          "original_max_position_embeddings": int(original_max_position)})
    inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](config, None)
    return inv_freq


def _llama3_variant(head_dim, base, factor, low_freq_factor, high_freq_factor, original_max_position, *,
                    mode="right"):
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim)
    if mode == "all":
        return inv_freq / factor
    if mode == "swapped":
        low_freq_factor, high_freq_factor = high_freq_factor, low_freq_factor
    wavelen = 1.0 / inv_freq if mode == "no_2pi" else 2 * math.pi / inv_freq
    low_wavelen, high_wavelen = original_max_position / low_freq_factor, original_max_position / high_freq_factor
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    if mode == "hard":
        return scaled
    s = (original_max_position / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    middle = (1 - s) * scaled / factor + s * scaled
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return torch.where(medium, middle, scaled)


def _llama3_all(*args):
    return _llama3_variant(*args, mode="all")


def _llama3_hard(*args):
    return _llama3_variant(*args, mode="hard")


def _llama3_swapped(*args):
    return _llama3_variant(*args, mode="swapped")


def _llama3_no_2pi(*args):
    return _llama3_variant(*args, mode="no_2pi")


def _llama3_cases() -> list[Case]:
    return [
        Case("Llama 3.1 8B: head 128, base 500000, factor 8, low 1, high 4, original 8192",
             (128, 500000.0, 8.0, 1.0, 4.0, 8192)),
        Case("Llama 3.2: factor 32", (64, 500000.0, 32.0, 1.0, 4.0, 8192)),
        Case("head 64, base 10000, factor 4, original 2048", (64, 10000.0, 4.0, 1.0, 4.0, 2048)),
        Case("low 2, high 8, original 1024", (96, 10000.0, 2.0, 2.0, 8.0, 1024)),
        Case("random head, base, factors and length", (pick((32, 64, 96, 128)), pick((10000.0, 500000.0)),
                                                      float(draw(2, 16)), 1.0, float(draw(2, 8)),
                                                      pick((1024, 2048, 4096, 8192)))),
    ]


llama3_inv_freq = register(Checker(
    "llama3_inv_freq", _llama3_reference, _llama3_cases,
    axes=("frequency",),
    mistakes=[
        Mistake(_llama3_all, "every frequency was divided by factor (plain position interpolation); Llama 3.1 "
                             "leaves the fast pairs (wavelength < original / high_freq_factor) unchanged."),
        Mistake(_llama3_hard, "the middle band (original / high_freq_factor <= wavelength <= original / "
                              "low_freq_factor) must interpolate: (1 − s)·θ/factor + s·θ with "
                              "s = (original / wavelength − low_freq_factor) / (high_freq_factor − low_freq_factor)."),
        Mistake(_llama3_swapped, "low_freq_factor and high_freq_factor are swapped: the long-wavelength threshold "
                                 "is original / low_freq_factor (the larger one), the short one "
                                 "original / high_freq_factor."),
        Mistake(_llama3_no_2pi, "the wavelength of a pair is 2π / θ (the positions it takes to turn a full circle), "
                                "not 1 / θ."),
    ],
    atol=1e-7, rtol=1e-5,
    what="your llama3_inv_freq",
))


# --------------------------------------------------------------------------- Mixtral active parameters
@lru_cache(maxsize=1)  # a meta build of Mixtral takes a moment; the counts never change
def _mixtral_counts() -> dict[str, int]:
    from ..families import build_on_meta

    model: Any = build_on_meta("mistralai/Mixtral-8x7B-v0.1")  # a transformers model: submodules by name
    cfg = model.config
    experts = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    router = sum(p.numel() for n, p in model.named_parameters() if ".mlp.gate." in n)
    embeddings = model.model.embed_tokens.weight.numel() + model.lm_head.weight.numel()
    total = sum(p.numel() for p in model.parameters())
    k, n = cfg.num_experts_per_tok, cfg.num_local_experts
    return {"total": total, "experts": experts, "router": router, "embeddings": embeddings,
            "active": total - experts + experts * k // n, "one": total - experts + experts // n}


mixtral_active_params = register(Checker(
    "mixtral_active_params", lambda: _mixtral_counts()["active"], kind="value",
    mistakes=[
        Mistake(lambda: _mixtral_counts()["total"], "that is every parameter, all 8 experts included; a token passes "
                                                   "through only the 2 experts its router picks in each layer."),
        Mistake(lambda: _mixtral_counts()["one"], "each token uses the top *2* experts per layer "
                                                 "(num_experts_per_tok = 2), not one."),
        Mistake(lambda: _mixtral_counts()["active"] - _mixtral_counts()["embeddings"],
                "include the embedding table and the output layer: every token is looked up in the first "
                "and scored by the second."),
        Mistake(lambda: _mixtral_counts()["active"] - _mixtral_counts()["router"],
                "include the routers (mlp.gate): every token's hidden state goes through them to choose its experts."),
    ],
    atol=0, rtol=0,
    what="your value",
))
