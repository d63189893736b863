"""Checkers of Chapter 8 (A modern decoder from scratch), handed out in ``chapters/08_exercises.ipynb``.

* ``check.qwen3_attention(fn)``: ``fn(x, q_w, k_w, v_w, o_w, q_norm, k_norm, n_kv_head, theta)``
  is Qwen3's causal grouped-query attention: an RMSNorm (eps 1e-6, gain of size hs) on each
  head's queries and keys *before* RoPE. The reference is the library's own ``Qwen3Attention``
  with these weights on a random configuration.
* ``check.dequantize_q5_0(fn)``: ``fn(raw) -> float32 (n·32,)`` decodes GGUF's Q5_0 blocks (22
  bytes: float16 scale, 4 bytes of fifth bits, 16 bytes of nibbles); the reference is the
  ``gguf`` package's ``gguf.quants.dequantize``.
* ``check.rmsnorm_backward(fn)``: ``fn(x, weight, grad_out, eps) -> (grad_x, grad_weight)``, the
  gradients of ``weight * x / sqrt(mean(x²) + eps)``; the reference is autograd.
"""
from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

import torch

from .core import Case, Checker, Mistake, register

if TYPE_CHECKING:
    from transformers import Qwen3Config

# --------------------------------------------------------------------------- Qwen3's attention
_QWEN3_EPS = 1e-6


def _qwen3_config(C: int, nh: int, nkv: int, hs: int, theta: float) -> Qwen3Config:
    from transformers import Qwen3Config
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    values: dict[str, Any] = dict(vocab_size=16, hidden_size=C, intermediate_size=2 * C, num_hidden_layers=1,
                                  num_attention_heads=nh, num_key_value_heads=nkv, head_dim=hs,
                                  rope_theta=theta,
                                  rms_norm_eps=_QWEN3_EPS, max_position_embeddings=256)
    cfg = Qwen3Config(**values)  # rope_theta: read by the config's rope-parameter standardisation
    cfg._attn_implementation = "eager"
    return cfg


def qwen3_attention_reference(x: torch.Tensor, q_w: torch.Tensor, k_w: torch.Tensor, v_w: torch.Tensor,
                              o_w: torch.Tensor, q_norm: torch.Tensor, k_norm: torch.Tensor, n_kv_head: int,
                              theta: float) -> torch.Tensor:
    """``transformers``' ``Qwen3Attention`` with these weights (causal, positions 0..T-1)."""
    from transformers.models.qwen3.modeling_qwen3 import Qwen3Attention, Qwen3RotaryEmbedding

    B, T, C = x.shape
    hs = q_norm.numel()
    cfg = _qwen3_config(C, q_w.size(0) // hs, n_kv_head, hs, theta)
    layer = Qwen3Attention(cfg, layer_idx=0).eval()
    with torch.no_grad():
        for module, w in ((layer.q_proj, q_w), (layer.k_proj, k_w), (layer.v_proj, v_w), (layer.o_proj, o_w),
                          (layer.q_norm, q_norm), (layer.k_norm, k_norm)):
            module.weight.copy_(w)
        cos, sin = Qwen3RotaryEmbedding(cfg)(x, torch.arange(T)[None])
        mask = torch.full((T, T), torch.finfo(x.dtype).min).triu(1)[None, None]    # (1, 1, T, T)
        out = layer(x, position_embeddings=(cos, sin), attention_mask=mask)
    return out[0]


def _rope(x, theta):  # (B, h, T, hs), channel pairs (i, i + hs/2) as in transformers
    hs, T = x.size(-1), x.size(-2)
    inv = 1.0 / theta ** (torch.arange(0, hs, 2, dtype=torch.float32) / hs)
    ang = torch.arange(T, dtype=torch.float32)[:, None] * inv[None]
    cos, sin = ang.cos(), ang.sin()
    x1, x2 = x[..., : hs // 2], x[..., hs // 2:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def _rms(x, g):
    return g * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + _QWEN3_EPS))


def _qwen3_variant(x, q_w, k_w, v_w, o_w, q_norm, k_norm, n_kv_head, theta, *, norm=True,
                   norm_after_rope=False, tile=False, causal=True):
    B, T, _ = x.shape
    hs = q_norm.numel()
    nh = q_w.size(0) // hs
    q = (x @ q_w.T).view(B, T, nh, hs).transpose(1, 2)
    k = (x @ k_w.T).view(B, T, n_kv_head, hs).transpose(1, 2)
    v = (x @ v_w.T).view(B, T, n_kv_head, hs).transpose(1, 2)
    if norm and not norm_after_rope:
        q, k = _rms(q, q_norm), _rms(k, k_norm)
    q, k = _rope(q, theta), _rope(k, theta)
    if norm and norm_after_rope:
        q, k = _rms(q, q_norm), _rms(k, k_norm)
    g = nh // n_kv_head
    k, v = (k.repeat(1, g, 1, 1), v.repeat(1, g, 1, 1)) if tile else (
        k.repeat_interleave(g, 1), v.repeat_interleave(g, 1))
    att = q @ k.transpose(-2, -1) / math.sqrt(hs)
    if causal:
        att = att.masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf"))
    y = (att.softmax(-1) @ v).transpose(1, 2).reshape(B, T, nh * hs)
    return y @ o_w.T


def _qwen3_cases() -> list[Case]:
    def weights(C: int, nh: int, nkv: int, hs: int, B: int, T: int, theta: float) -> tuple:
        s = C ** -0.5
        return (torch.randn(B, T, C), torch.randn(nh * hs, C) * s, torch.randn(nkv * hs, C) * s,
                torch.randn(nkv * hs, C) * s, torch.randn(C, nh * hs) * (nh * hs) ** -0.5,
                1 + 0.3 * torch.randn(hs), 1 + 0.3 * torch.randn(hs), nkv, theta)

    return [
        Case("C = 32, 4 query heads, 2 key/value heads, hs = 8", weights(32, 4, 2, 8, 2, 7, 10000.0)),
        Case("head size 16 with nh * hs != C (as Qwen3: 16 x 128 > 1024)", weights(24, 4, 1, 16, 1, 9, 1e6)),
        Case("6 query heads, 3 key/value heads", weights(48, 6, 3, 8, 2, 5, 10000.0)),
        Case("one token", weights(32, 4, 2, 8, 3, 1, 10000.0)),
    ]


qwen3_attention = register(Checker(
    "qwen3_attention", qwen3_attention_reference, _qwen3_cases,
    axes=("batch", "position", "channel"),
    mistakes=[
        Mistake(functools.partial(_qwen3_variant, norm=False),
                "this is Llama's attention: Qwen3 normalises each head's queries and keys with an RMSNorm "
                "(gain q_norm / k_norm, eps 1e-6) before RoPE."),
        Mistake(functools.partial(_qwen3_variant, norm_after_rope=True),
                "the RMSNorm comes before RoPE: normalise q and k per head, then rotate them (the gain is "
                "per channel, so the order matters)."),
        Mistake(functools.partial(_qwen3_variant, tile=True),
                "query head h reads key/value head h // (nh // nkv): repeat each key/value head "
                "consecutively (repeat_interleave), not the whole set of heads (repeat)."),
        Mistake(functools.partial(_qwen3_variant, causal=False),
                "no causal mask: position t must not see keys after t."),
    ],
    atol=1e-4, rtol=1e-4, timeout=5.0,
    what="your qwen3_attention",
))


# --------------------------------------------------------------------------- Q5_0
def dequantize_q5_0_reference(raw: torch.Tensor) -> torch.Tensor:
    """``gguf.quants.dequantize`` of Q5_0 blocks, as a flat float32 tensor."""
    import numpy as np
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize

    blocks = np.ascontiguousarray(raw.numpy()).reshape(-1, 22)
    return torch.from_numpy(np.ascontiguousarray(dequantize(blocks, GGMLQuantizationType.Q5_0),
                                                 dtype=np.float32)).reshape(-1)


def _q5_parts(raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    blocks = raw.view(-1, 22)
    d = blocks[:, :2].contiguous().view(torch.float16).float()                   # (n, 1)
    qh = blocks[:, 2:6].reshape(-1).clone().view(torch.int32)[:, None]           # (n, 1) fifth bits
    lo = torch.cat([blocks[:, 6:] & 0x0F, blocks[:, 6:] >> 4], dim=1).to(torch.int32)  # (n, 32)
    return d, qh, lo


def _q5_variant(raw: torch.Tensor, *, high: bool = True, reverse_bits: bool = False, offset: int = 16,
                interleave: bool = False) -> torch.Tensor:
    d, qh, lo = _q5_parts(raw)
    if interleave:  # low nibble = element 2j, high nibble = element 2j + 1
        qs = raw.view(-1, 22)[:, 6:]
        lo = torch.stack([qs & 0x0F, qs >> 4], dim=2).reshape(-1, 32).to(torch.int32)
    j = torch.arange(32, dtype=torch.int32)
    bit = (qh >> (31 - j if reverse_bits else j)) & 1                             # (n, 32)
    q = lo | (bit << 4) if high else lo
    return (d * (q - offset).float()).reshape(-1)


def _q5_cases() -> list[Case]:
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    def raw(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(quantize(x.numpy(), GGMLQuantizationType.Q5_0).reshape(-1).copy())

    spiky = torch.randn(4, 64) * 0.02
    spiky[:, 3] = 1.0
    return [
        Case("random weights, 8 blocks", (raw(torch.randn(2, 128) * 0.05),)),
        Case("one block", (raw(torch.randn(1, 32)),)),
        Case("blocks with one large weight each", (raw(spiky),)),
        Case("an all-zero block", (raw(torch.cat([torch.zeros(1, 32), torch.randn(1, 32)], 1)),)),
        Case("values across all 32 levels", (raw(torch.linspace(-1, 1, 64)[None]),)),
    ]


dequantize_q5_0 = register(Checker(
    "dequantize_q5_0", dequantize_q5_0_reference, _q5_cases,
    axes=("weight",),
    mistakes=[
        Mistake(functools.partial(_q5_variant, high=False),
                "the fifth bit is missing: bit j of the 32-bit qh (bytes 2-5, little-endian) is the high bit "
                "of element j; q = nibble | (bit << 4), then subtract 16."),
        Mistake(functools.partial(_q5_variant, reverse_bits=True),
                "the fifth bits run the other way: element j takes bit j of qh, counted from the least "
                "significant bit."),
        Mistake(functools.partial(_q5_variant, offset=8),
                "the offset of a 5-bit level is 16 (levels 0..31 map to -16..15), not Q4_0's 8."),
        Mistake(functools.partial(_q5_variant, interleave=True),
                "the nibbles are not neighbours: byte j holds element j (low nibble) and element j + 16 "
                "(high nibble), as in Q4_0."),
    ],
    atol=0.0, rtol=0.0, timeout=5.0,
    what="your dequantize_q5_0",
))


# --------------------------------------------------------------------------- RMSNorm's backward pass
def rmsnorm_backward_reference(x: torch.Tensor, weight: torch.Tensor, grad_out: torch.Tensor,
                               eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Autograd's gradients of ``weight * x / sqrt(mean(x**2, -1) + eps)``."""
    x, weight = x.detach().clone().requires_grad_(True), weight.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        y = weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        gx, gw = torch.autograd.grad(y, (x, weight), grad_out)
    return gx.detach(), gw.detach()


def _rms_backward_variant(x, weight, grad_out, eps, *, through_rms=True, over_c=True, sum_w=True):
    r = torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    wg = weight * grad_out
    gx = wg / r
    if through_rms:
        gx = gx - x * (wg * x).sum(-1, keepdim=True) / ((x.size(-1) if over_c else 1) * r ** 3)
    gw = grad_out * x / r
    gw = gw.reshape(-1, x.size(-1)).sum(0) if sum_w else gw.reshape(-1, x.size(-1))[0]
    return gx, gw


def _rms_cases() -> list[Case]:
    return [
        Case("(B, T, C) = (2, 3, 8)", (torch.randn(2, 3, 8), 1 + 0.3 * torch.randn(8), torch.randn(2, 3, 8), 1e-5)),
        Case("one row", (torch.randn(1, 16), torch.randn(16), torch.randn(1, 16), 1e-6)),
        Case("large eps (matters)", (torch.randn(4, 6) * 0.1, torch.randn(6), torch.randn(4, 6), 0.1)),
        Case("(B, T, C) = (3, 5, 32)", (torch.randn(3, 5, 32), torch.randn(32), torch.randn(3, 5, 32), 1e-5)),
    ]


rmsnorm_backward = register(Checker(
    "rmsnorm_backward", rmsnorm_backward_reference, _rms_cases,
    mistakes=[
        Mistake(functools.partial(_rms_backward_variant, through_rms=False),
                "grad_x is missing the path through the RMS itself: r depends on every x_i, which adds "
                "- x * sum(w * g * x) / (C * r**3) to w * g / r."),
        Mistake(functools.partial(_rms_backward_variant, over_c=False),
                "d r / d x_i = x_i / (C r): the mean brings a 1/C into the second term."),
        Mistake(functools.partial(_rms_backward_variant, sum_w=False),
                "grad_weight sums g * x / r over every position (batch and time), not just the first row."),
    ],
    atol=1e-5, rtol=1e-4, timeout=5.0,
    what="your rmsnorm_backward",
))
