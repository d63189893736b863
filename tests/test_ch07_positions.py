"""RoPE and ALiBi: the chapter's cells equal ``course_utils.positions`` and transformers' references
(Llama's rotary embedding, BLOOM's ALiBi), and have the properties the chapter claims."""
from __future__ import annotations

import math

import pytest
import torch
from _ch07_cells import chapter_namespace
from transformers import LlamaConfig
from transformers.models.bloom.modeling_bloom import build_alibi_tensor
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from course_utils import positions
from course_utils.attention import causal_mask


@pytest.fixture(scope="module")
def ch():
    return chapter_namespace("ch07-rope", "ch07-alibi", "ch07-tinylm")


@pytest.mark.parametrize("hs,theta,start", [(64, 10000.0, 0), (128, 500000.0, 8100), (32, 1e6, 40000)])
def test_rope_equals_llama(ch, hs, theta, start):
    cfg = LlamaConfig(hidden_size=hs * 4, num_attention_heads=4, rope_theta=theta, max_position_embeddings=65536)
    rotary = LlamaRotaryEmbedding(cfg)
    q, k = torch.randn(2, 2, 4, 17, hs).unbind(0)
    pos = torch.arange(start, start + 17)
    cos, sin = rotary(q, pos[None].expand(2, -1))
    q_lib, k_lib = apply_rotary_pos_emb(q, k, cos, sin)
    for fn in (ch["apply_rope"], positions.apply_rope):
        assert (fn(q, pos, theta) - q_lib).abs().max().item() <= 1e-5
        assert (fn(k, pos, theta) - k_lib).abs().max().item() <= 1e-5


def test_chapter_rope_is_the_package_rope(ch):
    x = torch.randn(3, 2, 9, 16, dtype=torch.float64)
    pos = torch.arange(100, 109)
    torch.testing.assert_close(ch["apply_rope"](x, pos), positions.apply_rope(x, pos), rtol=0, atol=0)


def test_rope_scores_depend_on_offset_only(ch):
    q, k = torch.randn(2, 64)
    scores = {}
    for m in (0, 7, 300, 5000):
        for off in (0, 1, 13):
            qm = ch["apply_rope"](q[None], torch.tensor([m + off]))
            kn = ch["apply_rope"](k[None], torch.tensor([m]))
            scores.setdefault(off, []).append((qm @ kn.T).item())
    for off, vals in scores.items():
        assert max(vals) - min(vals) < 1e-3 * max(1.0, abs(vals[0])), (off, vals)
    assert abs(scores[0][0] - scores[13][0]) > 1e-3  # but it does depend on the offset
    torch.testing.assert_close(ch["apply_rope"](q[None], torch.tensor([0])), q[None])  # position 0: no rotation


def test_rope_rejects_odd_head_size():
    with pytest.raises(ValueError, match="even"):
        positions.apply_rope(torch.randn(2, 5, 7), torch.arange(5))


@pytest.mark.parametrize("n", [1, 2, 4, 6, 8, 12, 16, 24, 32, 112])
def test_alibi_equals_bloom(ch, n):
    T = 19
    lib = build_alibi_tensor(torch.ones(1, T), n, torch.float32)[:, 0]      # (nh, S)
    for slopes, bias in ((ch["alibi_slopes"](n), ch["alibi_bias"](n, T)),
                         (positions.alibi_slopes(n), positions.alibi_bias(n, T))):
        torch.testing.assert_close(slopes, lib[:, 1], atol=1e-7, rtol=1e-6)
        # BLOOM's m*j differs from -m*(i - j) by a constant per query row, which the softmax ignores
        diff = bias - lib[:, None, :]
        torch.testing.assert_close(diff, diff[..., :1].expand_as(diff), atol=1e-5, rtol=0)
        scores = torch.randn(n, T, T)
        allowed = causal_mask(T)
        p = torch.softmax((scores + bias).masked_fill(~allowed, float("-inf")), -1)
        p_lib = torch.softmax((scores + lib[:, None]).masked_fill(~allowed, float("-inf")), -1)
        torch.testing.assert_close(p, p_lib, atol=1e-6, rtol=0)


def test_alibi_values_and_cache_alignment(ch):
    torch.testing.assert_close(ch["alibi_slopes"](8), torch.tensor([2.0 ** -k for k in range(1, 9)]))
    full = ch["alibi_bias"](4, 10)
    torch.testing.assert_close(ch["alibi_bias"](4, 3, 10), full[:, -3:])      # queries are the last T of S
    assert full[2, 5, 2].item() == pytest.approx(-3 * 2.0 ** -6)
    assert (full.diagonal(dim1=1, dim2=2) == 0).all()
    with pytest.raises(ValueError):
        positions.alibi_slopes(0)


def test_sinusoids_match_chapter_2_formula():
    pe = positions.sinusoidal_positions(50, 16)
    p, i = 7, 3
    assert pe[p, 2 * i].item() == pytest.approx(math.sin(p / 10000 ** (2 * i / 16)), abs=1e-6)
    assert pe[p, 2 * i + 1].item() == pytest.approx(math.cos(p / 10000 ** (2 * i / 16)), abs=1e-6)
    with pytest.raises(ValueError):
        positions.sinusoidal_positions(4, 5)


@pytest.mark.parametrize("scheme", ["none", "learned", "sinusoidal", "RoPE", "ALiBi"])
def test_tiny_lm_is_causal_for_every_scheme(ch, scheme):
    torch.manual_seed(0)
    model = ch["TinyLM"](11, scheme, C=16, n_head=2, n_layer=1, max_T=12).eval()
    x = torch.randint(0, 11, (2, 12))
    y = x.clone()
    y[:, 8] = (y[:, 8] + 1) % 11
    with torch.no_grad():
        a, b = model(x), model(y)
    assert a.shape == (2, 12, 11)
    torch.testing.assert_close(a[:, :8], b[:, :8])                 # changing token 8 leaves 0..7 alone
    assert (a[:, 8:] - b[:, 8:]).abs().max() > 0
    if scheme == "none":  # without positions, a causal model still tells order only through the prefix
        perm = torch.tensor([1, 0] + list(range(2, 12)))
        with torch.no_grad():
            c = model(x[:, perm])
        torch.testing.assert_close(c[:, 2:], a[:, 2:], atol=1e-5, rtol=1e-5)
