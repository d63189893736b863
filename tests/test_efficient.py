"""course_utils.efficient (Chapter 6): tiled attention equals naive attention, GQA equals SDPA
with repeated heads, and the counting and measuring helpers give known values."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from course_utils.attention import causal_mask, scaled_dot_product_attention
from course_utils.efficient import (
    BlockState,
    GroupedQueryAttention,
    attention_param_count,
    block_state,
    kv_cache_bytes_per_token,
    loglog_slope,
    merge_blocks,
    naive_attention,
    peak_memory,
    repeat_kv,
    sdpa_kernels,
    sliding_window_mask,
    tiled_attention,
    time_call,
)
from course_utils.gpt import CausalSelfAttention, GPTConfig
from course_utils.modelinfo import count_parameters

# dtype -> tolerance of tiled vs. naive in the same dtype (naive is computed in float64 and cast,
# so the only error is the low-precision rounding of the inputs' products and of the output)
TOL = {torch.float64: dict(atol=1e-12, rtol=1e-10), torch.float32: dict(atol=2e-6, rtol=1e-5),
       torch.bfloat16: dict(atol=2e-2, rtol=2e-2), torch.float16: dict(atol=2e-3, rtol=2e-3)}


def _qkv(T, S, hs=8, hv=None, batch=(2, 3), dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    hv = hv or hs
    return (torch.randn(*batch, T, hs, generator=g, dtype=torch.float64).to(dtype),
            torch.randn(*batch, S, hs, generator=g, dtype=torch.float64).to(dtype),
            torch.randn(*batch, S, hv, generator=g, dtype=torch.float64).to(dtype))


def _reference(q, k, v, mask=None, causal=False, window=None):
    """Naive attention in float64, cast back: the ground truth for every dtype."""
    return naive_attention(q.double(), k.double(), v.double(), mask, causal=causal, window=window).to(q.dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("T,S", [(1, 1), (16, 16), (13, 13), (5, 23), (23, 5), (29, 21)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("blocks", [(1, 2), (4, 7), (16, 16), (64, 64)])  # (block_q, block_k)
def test_tiled_equals_naive(dtype, T, S, causal, blocks):
    q, k, v = _qkv(T, S, dtype=dtype)
    got = tiled_attention(q, k, v, causal=causal, block_q=blocks[0], block_k=blocks[1])
    assert got.dtype == dtype and got.shape == (2, 3, T, 8)
    torch.testing.assert_close(got, _reference(q, k, v, causal=causal), **TOL[dtype])
    if dtype in (torch.float32, torch.float64):  # and against naive attention in the same dtype
        torch.testing.assert_close(got, naive_attention(q, k, v, causal=causal), **TOL[dtype])


@pytest.mark.parametrize("window", [1, 3, 8])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("T,S", [(20, 20), (6, 20), (20, 6)])
def test_tiled_sliding_window_equals_naive(window, causal, T, S):
    q, k, v = _qkv(T, S, dtype=torch.float64)
    want = naive_attention(q, k, v, causal=causal, window=window)
    mask = sliding_window_mask(T, S, window, causal=causal)
    torch.testing.assert_close(want, scaled_dot_product_attention(q, k, v, mask)[0])
    for bq, bk in [(1, 1), (3, 5), (32, 32)]:
        got = tiled_attention(q, k, v, causal=causal, window=window, block_q=bq, block_k=bk)
        torch.testing.assert_close(got, want, **TOL[torch.float64])


@pytest.mark.parametrize("mask_shape", [(13, 17), (3, 13, 17), (2, 1, 1, 17), (2, 3, 13, 17)])
def test_tiled_with_explicit_mask_and_causal(mask_shape):
    q, k, v = _qkv(13, 17, hv=5)
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(*mask_shape, generator=g) > 0.4
    mask[..., 0] = False  # some rows lose their first key, and some rows end up fully masked
    for causal in (False, True):
        got = tiled_attention(q, k, v, mask, causal=causal, block_q=4, block_k=6)
        assert got.shape == (2, 3, 13, 5)
        torch.testing.assert_close(got, _reference(q, k, v, mask, causal=causal), **TOL[torch.float32])


def test_fully_masked_rows_give_zeros_like_chapter_2():
    q, k, v = _qkv(4, 6)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[1] = False
    got = tiled_attention(q, k, v, mask, block_q=2, block_k=4)
    assert torch.isfinite(got).all()
    assert got[..., 1, :].abs().max() == 0
    torch.testing.assert_close(got, scaled_dot_product_attention(q, k, v, mask)[0])
    # more queries than keys with a causal mask: the first T - S queries see no key at all
    q, k, v = _qkv(9, 4)
    got = tiled_attention(q, k, v, causal=True, block_q=2, block_k=3)
    assert got[..., :5, :].abs().max() == 0
    torch.testing.assert_close(got, scaled_dot_product_attention(q, k, v, causal_mask(9, 4))[0])


def test_tiled_matches_pytorch_sdpa():
    q, k, v = _qkv(50, 50, hs=16)
    for causal in (False, True):
        torch.testing.assert_close(tiled_attention(q, k, v, causal=causal, block_q=16, block_k=8),
                                   F.scaled_dot_product_attention(q, k, v, is_causal=causal), atol=2e-6, rtol=1e-5)


def test_tiled_broadcasts_batch_dims():
    q = torch.randn(2, 4, 10, 8)
    k, v = torch.randn(2, 1, 12, 8), torch.randn(2, 1, 12, 8)  # one key/value head shared by 4 query heads
    got = tiled_attention(q, k, v, causal=True, block_q=3, block_k=5)
    torch.testing.assert_close(got, naive_attention(q, k, v, causal=True))


def test_tiled_keeps_grad_and_device():
    q, k, v = (t.requires_grad_() for t in _qkv(9, 9))
    out = tiled_attention(q, k, v, causal=True, block_q=4, block_k=4)
    out.sum().backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()
    q2, k2, v2 = (t.detach().clone().requires_grad_() for t in (q, k, v))
    naive_attention(q2, k2, v2, causal=True).sum().backward()
    torch.testing.assert_close(q.grad, q2.grad, atol=1e-5, rtol=1e-4)


def test_tiled_bad_inputs_have_clear_messages():
    q, k, v = _qkv(4, 4)
    with pytest.raises(ValueError, match="head size"):
        tiled_attention(q, k[..., :3], v)
    with pytest.raises(ValueError, match="same number of keys"):
        tiled_attention(q, k, v[..., :2, :])
    with pytest.raises(ValueError, match="block_q must be a positive int"):
        tiled_attention(q, k, v, block_q=0)
    with pytest.raises(TypeError, match="boolean"):
        tiled_attention(q, k, v, torch.ones(4, 4))
    with pytest.raises(ValueError, match="does not broadcast"):
        tiled_attention(q, k, v, torch.ones(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="window must be a positive int"):
        tiled_attention(q, k, v, causal=True, window=0)
    with pytest.raises(TypeError, match="share a dtype"):
        tiled_attention(q, k.double(), v)
    with pytest.raises(TypeError, match="floating-point"):
        tiled_attention(q.long(), k.long(), v.long())


def test_online_softmax_merge_is_exact_for_any_split():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(3, 20, generator=g, dtype=torch.float64) * 5
    v = torch.randn(20, 4, generator=g, dtype=torch.float64)
    want = torch.softmax(scores, -1) @ v
    for cut in (1, 7, 19):
        a, b = block_state(scores[:, :cut], v[:cut]), block_state(scores[:, cut:], v[cut:])
        torch.testing.assert_close(merge_blocks(a, b).output(), want)
        torch.testing.assert_close(merge_blocks(b, a).output(), want)  # order does not matter
    whole = block_state(scores, v)
    merged = merge_blocks(block_state(scores[:, :5], v[:5]), block_state(scores[:, 5:], v[5:]))
    for x, y in zip(whole, merged):
        torch.testing.assert_close(x, y)


def test_merge_with_fully_masked_block_has_no_nan():
    s = torch.full((2, 3), float("-inf"))
    masked = block_state(s, torch.randn(3, 4))
    assert masked.m.isinf().all() and (masked.l == 0).all() and (masked.acc == 0).all()
    other = block_state(torch.randn(2, 3), torch.randn(3, 4))
    merged = merge_blocks(masked, other)
    for x, y in zip(merged, other):
        torch.testing.assert_close(x, y)
    both = merge_blocks(masked, masked)
    assert torch.isfinite(both.output()).all() and (both.output() == 0).all()
    assert isinstance(both, BlockState)


def test_sliding_window_mask_values():
    m = sliding_window_mask(5, window=2)
    assert m.tolist() == [[True, False, False, False, False], [True, True, False, False, False],
                          [False, True, True, False, False], [False, False, True, True, False],
                          [False, False, False, True, True]]
    assert sliding_window_mask(3, 5, window=2).tolist() == [[False, True, True, False, False],
                                                            [False, False, True, True, False],
                                                            [False, False, False, True, True]]
    assert sliding_window_mask(4, window=2, causal=False).sum().item() == 10  # |i - j| <= 1
    assert torch.equal(sliding_window_mask(6, window=6), causal_mask(6))  # a window as long as T is causal
    with pytest.raises(ValueError, match="window"):
        sliding_window_mask(4, window=0)


@pytest.mark.parametrize("n_head,n_kv_head", [(4, 4), (4, 2), (4, 1), (6, 3)])
def test_gqa_equals_sdpa_with_repeated_heads(n_head, n_kv_head):
    torch.manual_seed(0)
    C = 8 * n_head
    layer = GroupedQueryAttention(C, n_head, n_kv_head).eval()
    x = torch.randn(2, 11, C)
    q, k, v = layer.qkv(x)
    assert q.shape == (2, n_head, 11, 8) and k.shape == v.shape == (2, n_kv_head, 11, 8)
    g = n_head // n_kv_head
    ref = F.scaled_dot_product_attention(q, repeat_kv(k, g), repeat_kv(v, g), is_causal=True)  # (B, nh, T, hs)
    ref = layer.c_proj(ref.transpose(1, 2).reshape(2, 11, C))
    torch.testing.assert_close(layer(x), ref, atol=1e-5, rtol=1e-4)
    # PyTorch's own grouped-query path (enable_gqa) agrees as well
    gqa = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    torch.testing.assert_close(layer.c_proj(gqa.transpose(1, 2).reshape(2, 11, C)), ref, atol=1e-5, rtol=1e-4)
    assert sum(p.numel() for p in layer.parameters()) == attention_param_count(C, n_head, n_kv_head)


def test_repeat_kv_order_matches_grouping():
    x = torch.arange(2 * 3 * 4).float().view(1, 2, 3, 4)  # 2 kv heads
    r = repeat_kv(x, 3)
    assert r.shape == (1, 6, 3, 4)
    for h in range(6):
        assert torch.equal(r[0, h], x[0, h // 3])


def test_gqa_bad_config():
    with pytest.raises(ValueError, match="multiple of n_kv_head"):
        GroupedQueryAttention(64, 8, 3)
    with pytest.raises(ValueError, match="divisible by n_head"):
        GroupedQueryAttention(60, 8, 8)


def test_counts_for_gpt2_small():
    # GPT-2 small: 12 layers, 12 heads of size 64; a fp16 cache holds 2*12*12*64 values of 2 bytes per token
    assert kv_cache_bytes_per_token(12, 12, 64, torch.float16) == 36_864
    assert kv_cache_bytes_per_token(12, 12, 64, torch.float32) == 73_728
    assert kv_cache_bytes_per_token(12, 1, 64, torch.float16) == 3_072  # multi-query: 12x less


def test_attention_param_count_counts_the_modules():
    # the formula against the parameters of the modules it describes (on the meta device: no memory)
    with torch.device("meta"):
        gpt2_small_attention = CausalSelfAttention(GPTConfig())  # c_attn 768x2304 + c_proj 768x768, biases
        assert attention_param_count(768, 12, 12) == count_parameters(gpt2_small_attention)
        for n_kv_head, bias in [(12, True), (4, True), (1, True), (1, False)]:
            gqa = GroupedQueryAttention(768, 12, n_kv_head, bias=bias)
            assert attention_param_count(768, 12, n_kv_head, bias=bias) == count_parameters(gqa), (n_kv_head, bias)


def test_loglog_slope():
    xs = [64, 128, 256, 512]
    assert loglog_slope(xs, [3 * x**2 for x in xs]) == pytest.approx(2.0)
    assert loglog_slope(xs, [x for x in xs]) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        loglog_slope([1], [1])


def test_peak_memory_on_cpu_sees_the_scores():
    q = torch.randn(1, 2, 256, 16)
    scores_bytes = 2 * 256 * 256 * 4
    naive = peak_memory(lambda: naive_attention(q, q, q), "cpu")
    tiled = peak_memory(lambda: tiled_attention(q, q, q, block_q=32, block_k=32), "cpu")
    assert "profiler" in naive.method
    # naive holds at least the scores and the weights at once; tiled never holds one (T, S) matrix
    assert naive.bytes >= 2 * scores_bytes
    assert tiled.bytes < scores_bytes
    assert peak_memory(lambda: None, "cpu").bytes == 0
    with pytest.raises(NotImplementedError, match="cpu"):
        peak_memory(lambda: None, "meta")


def test_time_call_is_the_best_of_the_timed_calls(monkeypatch):
    # A clock that we control: call i of fn takes durations[i] seconds; the warm-up call is not timed.
    import course_utils.efficient as eff

    durations, now, calls = [9.0, 0.5, 0.2, 0.4], [0.0], []

    def fn():
        now[0] += durations[len(calls)]
        calls.append(len(calls))

    monkeypatch.setattr(eff.time, "perf_counter", lambda: now[0])
    assert time_call(fn, "cpu", repeats=3, warmup=1) == pytest.approx(0.2)  # the best, not the mean 0.37
    assert len(calls) == 4


def test_sdpa_kernel_on_cpu():
    q = torch.randn(1, 2, 32, 16)
    name, ops = sdpa_kernels(q, q, q, is_causal=True)
    assert name == "flash attention (fused CPU kernel)"
    assert "_scaled_dot_product_flash_attention_for_cpu" in ops


def test_benchmark_script_prints_ratios(capsys):
    """benchmarks/attention_scaling.py runs on the CPU and prints one row per length with ratios."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "attention_scaling.py"
    spec = importlib.util.spec_from_file_location("attention_scaling", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--device", "cpu", "--lengths", "64", "128", "--repeats", "1", "--block", "32"]) == 0
    out = capsys.readouterr().out
    assert "PyTorch SDPA picked: flash attention (fused CPU kernel)" in out
    rows = [line for line in out.splitlines() if line.strip().startswith(("64 |", "128 |"))]
    assert len(rows) == 2 and all(line.count("x") >= 4 for line in rows), out
    assert "naive  time" in out and "memory 2.00" in out  # naive memory is exactly quadratic
