"""Position encodings: sinusoids (Chapter 2), rotary embeddings and ALiBi (Chapter 7).

Chapter 7 writes :func:`apply_rope`, :func:`alibi_slopes` and :func:`alibi_bias` in its cells
and checks them against transformers (Llama's rotary embedding, Bloom's ALiBi); these are the
same functions for later code to import (``tests/test_ch07_positions.py`` runs the chapter's
cells and compares them with this module). Shapes: B batch, nh heads, T query positions,
S key positions, hs head size, C channels.
"""
from __future__ import annotations

import math

import torch


def sinusoidal_positions(T: int, C: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(T, C) fixed encodings of Vaswani et al.: even channels sin, odd channels cos (Chapter 2);
    made on ``device`` (default: the CPU), so that a model adds them where its activations are."""
    if C % 2:
        raise ValueError(f"sinusoidal encodings need an even number of channels, got C={C}")
    p = torch.arange(T, dtype=torch.float32, device=device)[:, None]         # (T, 1)
    two_i = torch.arange(0, C, 2, dtype=torch.float32, device=device)[None]  # (1, C/2)
    angle = p / 10000 ** (two_i / C)                            # (T, C/2)
    pe = torch.zeros(T, C, device=device)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)
    return pe


def apply_rope(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate each pair of channels (i, i + hs/2) of ``x`` (..., T, hs) by ``positions`` (T,) × θ_i.

    θ_i = base^(−2i/hs). Channels are paired half against half, as in Hugging Face's Llama (the
    original RoPE pairs neighbours 2i, 2i+1; checkpoints are converted by permuting the rows of
    the query and key weights, so both give the same attention).
    """
    hs = x.size(-1)
    if hs % 2:
        raise ValueError(f"RoPE rotates pairs of channels: the head size must be even, got {hs}")
    inv_freq = 1.0 / base ** (torch.arange(0, hs, 2, dtype=torch.float32, device=x.device) / hs)  # (hs/2,)
    angle = positions.to(x.device, torch.float32)[:, None] * inv_freq[None, :]                  # (T, hs/2)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2 = x[..., : hs // 2], x[..., hs // 2:]                                                 # (..., T, hs/2)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)                        # (..., T, hs)


def alibi_slopes(n_heads: int, device: torch.device | str | None = None) -> torch.Tensor:
    """(nh,) ALiBi slopes: 2^(−8/n), 2^(−16/n), … for n a power of two; otherwise the paper's rule
    (the slopes of the nearest lower power of two, then every other slope of the next one)."""
    if n_heads < 1:
        raise ValueError(f"n_heads must be >= 1, got {n_heads}")

    def geometric(n: int) -> list[float]:
        return [2 ** (-8 * (i + 1) / n) for i in range(n)]

    closest = 2 ** math.floor(math.log2(n_heads))
    slopes = geometric(closest)
    if closest < n_heads:
        slopes += geometric(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(slopes, device=device)


def alibi_bias(n_heads: int, T: int, S: int | None = None,
               device: torch.device | str | None = None) -> torch.Tensor:
    """(nh, T, S) ALiBi bias −m_h·(i − j) for query i and key j; queries are the last T of S positions
    (made on ``device``, default the CPU)."""
    S = T if S is None else S
    q_pos = torch.arange(S - T, S, device=device)[:, None]   # (T, 1)
    k_pos = torch.arange(S, device=device)[None, :]          # (1, S)
    return alibi_slopes(n_heads, device)[:, None, None] * (k_pos - q_pos)  # (nh, T, S); <= 0 where causal
