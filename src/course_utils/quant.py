"""GGUF's block formats from scratch (Chapter 8): Q8_0, Q4_0 and Q4_1, both directions.

Every format cuts a row of weights into blocks of 32 values and stores, per block, a float16
scale ``d`` (and for Q4_1 a float16 minimum ``m``) followed by the 32 integers ``q``:

* Q8_0 (34 bytes = 8.5 bits/weight): x ≈ d · q, q an int8, d = max|x| / 127;
* Q4_0 (18 bytes = 4.5 bits/weight): x ≈ d · (q − 8), q a 4-bit nibble, d = (the signed x of
  largest magnitude) / −8;
* Q4_1 (20 bytes = 5 bits/weight): x ≈ d · q + m, q a nibble, m = min x, d = (max x − min x) / 15.

Nibbles are packed two to a byte: byte j holds element j in its low four bits and element
j + 16 in its high four bits. Chapter 8 writes these functions in its cells (tagged
``ch08-quant``); ``tests/test_quant.py`` runs them and checks them, and this module, bit for bit
against the ``gguf`` package's reference implementation (``gguf.quants``), on random data and on
SmolLM2's shipped tensors.
"""
from __future__ import annotations

import torch

BLOCK = 32
#: bytes per block of 32 weights
BLOCK_BYTES = {"Q8_0": 2 + 32, "Q4_0": 2 + 16, "Q4_1": 2 + 2 + 16}


def _fp16(two_bytes: torch.Tensor) -> torch.Tensor:
    """(n, 2) uint8, little-endian float16 -> (n, 1) float32."""
    return two_bytes.contiguous().view(torch.float16).float()


def _unpack_nibbles(qs: torch.Tensor) -> torch.Tensor:
    """(n, 16) uint8 -> (n, 32): low nibbles are elements 0..15, high nibbles 16..31."""
    return torch.cat([qs & 0x0F, qs >> 4], dim=1)


def _pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """(n, 32) integers in 0..15 -> (n, 16) uint8."""
    q = q.to(torch.uint8)
    return q[:, :16] | (q[:, 16:] << 4)


def dequantize_q8_0(raw: torch.Tensor) -> torch.Tensor:
    """Q8_0 bytes (n·34,) -> float32 (n·32,)."""
    blocks = raw.view(-1, BLOCK_BYTES["Q8_0"])                 # (n, 34)
    d = _fp16(blocks[:, :2])                                   # (n, 1)
    q = blocks[:, 2:].contiguous().view(torch.int8).float()    # (n, 32)
    return (q * d).reshape(-1)


def dequantize_q4_0(raw: torch.Tensor) -> torch.Tensor:
    """Q4_0 bytes (n·18,) -> float32 (n·32,)."""
    blocks = raw.view(-1, BLOCK_BYTES["Q4_0"])                 # (n, 18)
    d = _fp16(blocks[:, :2])                                   # (n, 1)
    q = _unpack_nibbles(blocks[:, 2:]).float() - 8             # (n, 32), in -8..7
    return (d * q).reshape(-1)


def dequantize_q4_1(raw: torch.Tensor) -> torch.Tensor:
    """Q4_1 bytes (n·20,) -> float32 (n·32,)."""
    blocks = raw.view(-1, BLOCK_BYTES["Q4_1"])                 # (n, 20)
    d, m = _fp16(blocks[:, 0:2]), _fp16(blocks[:, 2:4])        # (n, 1) scale and minimum
    q = _unpack_nibbles(blocks[:, 4:]).float()                 # (n, 32), in 0..15
    return (d * q + m).reshape(-1)


def _blocks(x: torch.Tensor) -> torch.Tensor:
    if x.numel() % BLOCK:
        raise ValueError(f"GGUF block formats need a multiple of {BLOCK} values, got {x.numel()}")
    return x.detach().float().reshape(-1, BLOCK)               # (n, 32)


def _safe_inverse(d: torch.Tensor) -> torch.Tensor:
    return torch.where(d == 0, torch.zeros_like(d), 1 / d)    # an all-zero block stores q = 0


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    """C's roundf (ties away from zero), computed as ggml does it."""
    a = x.abs()
    return torch.sign(x) * (a.floor() + (2 * (a - a.floor())).floor())


def quantize_q8_0(x: torch.Tensor) -> torch.Tensor:
    """float -> Q8_0 bytes: d = max|x| / 127, q = round(x / d)."""
    b = _blocks(x)
    d = b.abs().amax(dim=1, keepdim=True) / 127                # (n, 1)
    q = _round_half_away(b * _safe_inverse(d)).to(torch.int8)  # (n, 32)
    return torch.cat([d.half().view(torch.uint8), q.view(torch.uint8)], dim=1).reshape(-1)


def quantize_q4_0(x: torch.Tensor) -> torch.Tensor:
    """float -> Q4_0 bytes: d = (signed value of largest magnitude) / −8, q = trunc(x / d + 8.5)."""
    b = _blocks(x)
    biggest = b.gather(1, b.abs().argmax(dim=1, keepdim=True))  # (n, 1), keeps its sign
    d = biggest / -8
    q = torch.trunc(b * _safe_inverse(d) + 8.5).clamp(0, 15)    # (n, 32)
    return torch.cat([d.half().view(torch.uint8), _pack_nibbles(q)], dim=1).reshape(-1)


def quantize_q4_1(x: torch.Tensor) -> torch.Tensor:
    """float -> Q4_1 bytes: m = min x, d = (max x − m) / 15, q = trunc((x − m) / d + 0.5)."""
    b = _blocks(x)
    lo, hi = b.amin(dim=1, keepdim=True), b.amax(dim=1, keepdim=True)  # (n, 1)
    d = (hi - lo) / 15
    q = torch.trunc((b - lo) * _safe_inverse(d) + 0.5).clamp(0, 15)    # (n, 32)
    packed = [d.half().view(torch.uint8), lo.half().view(torch.uint8), _pack_nibbles(q)]
    return torch.cat(packed, dim=1).reshape(-1)


QUANTIZE = {"Q8_0": quantize_q8_0, "Q4_0": quantize_q4_0, "Q4_1": quantize_q4_1}
DEQUANTIZE = {"Q8_0": dequantize_q8_0, "Q4_0": dequantize_q4_0, "Q4_1": dequantize_q4_1}


def round_trip(w: torch.Tensor, fmt: str) -> torch.Tensor:
    """``w`` as the format stores it: quantized, then dequantized to float32 (same shape)."""
    if fmt not in QUANTIZE:
        raise ValueError(f"unknown format {fmt!r}; known: {', '.join(QUANTIZE)}")
    return DEQUANTIZE[fmt](QUANTIZE[fmt](w)).reshape(w.shape)
