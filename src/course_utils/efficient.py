"""Efficient attention and inference, introduced in Chapter 6 (Efficient attention).

What Chapter 6 builds and later code reuses:

* the online-softmax *block state* and the rule that merges two blocks
  (:class:`BlockState`, :func:`block_state`, :func:`merge_blocks`);
* :func:`tiled_attention`, a flash-style attention written in plain PyTorch: it walks over
  blocks of keys with an online softmax and never materialises the (T, S) score matrix;
* :func:`naive_attention` (Chapter 2's attention with the mask built for you) and
  :func:`sliding_window_mask`;
* :class:`GroupedQueryAttention` (multi-query / grouped-query attention) and :func:`repeat_kv`;
* counting helpers (:func:`kv_cache_bytes_per_token`, :func:`attention_param_count`) and
  measuring helpers (:func:`time_call`, :func:`peak_memory`, :func:`sdpa_kernels`,
  :func:`loglog_slope`).

Shapes: B batch, nh heads, T query time, S key time, hs head size, C = nh * hs channels.
Masks are boolean, True where attention is allowed (as in Chapter 2). With T != S the
queries are the *last* T positions of the S keys (a KV cache), so query t sits at
position t + S - T.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import torch
from torch import nn

from .attention import causal_mask, scaled_dot_product_attention
from .runtime import synchronize

__all__ = [
    "BlockState", "block_state", "merge_blocks", "finite_or_zero", "tiled_attention",
    "tile_mask", "check_tiled_args", "naive_attention",
    "sliding_window_mask", "GroupedQueryAttention", "repeat_kv", "kv_cache_bytes_per_token",
    "attention_param_count", "time_call", "peak_memory", "MemoryMeasurement", "sdpa_kernels",
    "loglog_slope",
]


# --------------------------------------------------------------------------- online softmax
class BlockState(NamedTuple):
    """What the online softmax keeps per query row after seeing some blocks of keys.

    m:   (..., T, 1)  the largest score seen so far (-inf if every key so far was masked)
    l:   (..., T, 1)  sum of exp(score - m) over the keys seen so far
    acc: (..., T, hv) sum of exp(score - m) * v over the keys seen so far (not yet divided by l)

    The attention output over the keys seen so far is ``acc / l``.
    """

    m: torch.Tensor
    l: torch.Tensor
    acc: torch.Tensor

    def output(self) -> torch.Tensor:
        """acc / l, with rows that saw no allowed key set to zero (Chapter 2's convention)."""
        tiny = torch.finfo(self.l.dtype).tiny
        return torch.where(self.l > 0, self.acc / self.l.clamp_min(tiny), 0.0)


def finite_or_zero(m: torch.Tensor) -> torch.Tensor:
    """m with -inf replaced by 0: what a row with no allowed key subtracts from its scores."""
    # exp(s - m) with m = -inf would be exp(nan); a row with no allowed key subtracts 0
    # instead, which gives exp(-inf - 0) = 0 for each of its (masked) scores.
    return torch.where(m == float("-inf"), torch.zeros_like(m), m)


def block_state(scores: torch.Tensor, v: torch.Tensor) -> BlockState:
    """The online-softmax state of one block: scores (..., T, Sb) already scaled and masked
    (masked entries are -inf), v (..., Sb, hv)."""
    m = scores.amax(dim=-1, keepdim=True)      # (..., T, 1)
    p = torch.exp(scores - finite_or_zero(m))  # (..., T, Sb), every entry in [0, 1]
    return BlockState(m, p.sum(dim=-1, keepdim=True), p @ v)


def merge_blocks(a: BlockState, b: BlockState) -> BlockState:
    """Merge the states of two disjoint blocks of keys into the state of their union.

    Each state is relative to its own maximum; both are rescaled to the common maximum
    m = max(m_a, m_b): exp(s - m_a) * exp(m_a - m) = exp(s - m). The merge is exact, and
    associative, so any split of the keys into blocks gives the same softmax.
    """
    m = torch.maximum(a.m, b.m)
    m0 = finite_or_zero(m)
    scale_a, scale_b = torch.exp(a.m - m0), torch.exp(b.m - m0)  # (..., T, 1), <= 1
    return BlockState(m, a.l * scale_a + b.l * scale_b,
                      a.acc * scale_a + b.acc * scale_b)


# --------------------------------------------------------------------------- masks
def _check_window(window: int | None) -> None:
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
        raise ValueError(f"window must be a positive int (keys per query, itself included) or None, got {window!r}")


def sliding_window_mask(
    T: int, S: int | None = None, window: int = 128, *, causal: bool = True,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean (T, S) mask of local attention: query t (at position t + S - T) sees the
    ``window`` most recent keys, itself included (``causal=True``, as in Mistral), or every
    key less than ``window`` positions away on either side (``causal=False``, as in Longformer).
    """
    _check_window(window)
    S = T if S is None else S
    pos_q = torch.arange(T, device=device)[:, None] + (S - T)  # (T, 1)
    pos_k = torch.arange(S, device=device)[None, :]  # (1, S)
    dist = pos_q - pos_k  # (T, S): how far back key s is from query t
    if causal:
        return (dist >= 0) & (dist < window)
    return dist.abs() < window


def _check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() < 2:
            raise ValueError(f"{name} must have shape (..., time, head_size); got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {t.dtype}")
    if q.size(-1) != k.size(-1):
        raise ValueError(f"q and k must share the head size (last dim): {tuple(q.shape)} vs {tuple(k.shape)}")
    if k.size(-2) != v.size(-2):
        raise ValueError(f"k and v must have the same number of keys (dim -2): {tuple(k.shape)} vs {tuple(v.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(f"q, k, v must share a dtype, got {q.dtype}, {k.dtype}, {v.dtype}")


def naive_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, *,
    causal: bool = False, window: int | None = None,
) -> torch.Tensor:
    """Chapter 2's attention (materialises the (..., T, S) scores), with the causal and
    sliding-window masks built from the flags and combined with ``mask``. Returns the output."""
    _check_qkv(q, k, v)
    _check_window(window)
    T, S = q.size(-2), k.size(-2)
    full = None
    if window is not None:
        full = sliding_window_mask(T, S, window, causal=causal, device=q.device)
    elif causal:
        full = causal_mask(T, S, device=q.device)
    if mask is not None:
        full = mask if full is None else mask & full
    return scaled_dot_product_attention(q, k, v, full)[0]


def check_tiled_args(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     mask: torch.Tensor | None, window: int | None, block_q: int,
                     block_k: int) -> torch.Tensor | None:
    """The checks of :func:`tiled_attention`'s arguments, with clear errors; returns
    ``mask`` broadcast (a view, no copy) to (..., T, S), or None."""
    _check_qkv(q, k, v)
    _check_window(window)
    for name, b in (("block_q", block_q), ("block_k", block_k)):
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ValueError(f"{name} must be a positive int, got {b!r}")
    if mask is None:
        return None
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be boolean (True = may attend), got {mask.dtype}")
    batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    shape = batch + (q.size(-2), k.size(-2))
    try:
        return torch.broadcast_to(mask, shape)
    except RuntimeError as err:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to "
                         f"{shape}") from err


def tile_mask(pos_q: torch.Tensor, pos_k: torch.Tensor, causal: bool,
              window: int | None) -> torch.Tensor | None:
    """The (Tb, Sb) tile of the causal / sliding-window mask, from positions alone."""
    if not causal and window is None:
        return None
    dist = pos_q[:, None] - pos_k[None, :]  # (Tb, Sb): how far back each key is
    ok = dist >= 0 if causal else torch.ones_like(dist, dtype=torch.bool)
    if window is not None:
        ok = ok & (dist < window) if causal else ok & (dist.abs() < window)
    return ok


# --------------------------------------------------------------------------- tiled attention
def tiled_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, *,
    causal: bool = False, window: int | None = None, block_q: int = 64, block_k: int = 64,
) -> torch.Tensor:
    """Flash-style attention: softmax(q kᵀ/√hs) v computed block by block with an online
    softmax, so that at most a (block_q, block_k) tile of scores exists at a time.

    q: (..., T, hs), k: (..., S, hs), v: (..., S, hv); ``mask``: bool, broadcastable to
    (..., T, S), True where allowed; ``causal`` / ``window``: masks computed from positions
    (no (T, S) tensor is built), and key blocks that they rule out entirely are skipped.
    float16 / bfloat16 inputs are accumulated in float32 (as FlashAttention does) and the
    output is cast back. Rows with no allowed key give zeros, as in Chapter 2.
    """
    # q (..., T, hs), k (..., S, hs), v (..., S, hv); mask: bool, True where allowed.
    # check_tiled_args (plumbing) gives clear errors and the mask as a (..., T, S) view.
    mask = check_tiled_args(q, k, v, mask, window, block_q, block_k)
    T, S, hs = q.size(-2), k.size(-2), q.size(-1)
    batch = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    # half precision is accumulated in float32, as FlashAttention does
    work = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    out = q.new_empty(batch + (T, v.size(-1)))  # (..., T, hv)
    offset = S - T  # query t sits at key position t + offset
    for i0 in range(0, T, block_q):
        i1 = min(i0 + block_q, T)
        qi = q[..., i0:i1, :].to(work) / math.sqrt(hs)  # (..., Tb, hs)
        # the keys any query of this block may see: skip whole blocks outside the band
        lo = max(0, i0 + offset - window + 1) if window is not None else 0
        if causal:
            hi = min(S, i1 + offset)
        elif window is not None:
            hi = min(S, i1 + offset + window - 1)
        else:
            hi = S
        state = None
        for j0 in range(lo, hi, block_k):
            j1 = min(j0 + block_k, hi)
            s = qi @ k[..., j0:j1, :].to(work).transpose(-2, -1)  # (..., Tb, Sb)
            ok = tile_mask(torch.arange(i0, i1, device=q.device) + offset,
                           torch.arange(j0, j1, device=q.device), causal, window)
            if mask is not None:
                tile = mask[..., i0:i1, j0:j1]
                ok = tile if ok is None else ok & tile
            if ok is not None:
                s = s.masked_fill(~ok, float("-inf"))
            blk = block_state(s, v[..., j0:j1, :].to(work))
            state = blk if state is None else merge_blocks(state, blk)
        if state is None:  # no key in range at all (e.g. S == 0): every row is masked
            out[..., i0:i1, :] = 0
        else:
            out[..., i0:i1, :] = state.output().to(out.dtype)
    return out


# --------------------------------------------------------------------------- MQA / GQA
def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """(B, n_kv, S, hs) -> (B, n_kv * n_rep, S, hs): each key/value head copied for the
    n_rep query heads of its group (head h of the result is head h // n_rep of x)."""
    if n_rep == 1:
        return x
    B, n_kv, S, hs = x.shape
    return x[:, :, None].expand(B, n_kv, n_rep, S, hs).reshape(B, n_kv * n_rep, S, hs)


class GroupedQueryAttention(nn.Module):
    """Causal self-attention where groups of query heads share one key/value head
    (Ainslie et al., 2023). n_kv_head == n_head is ordinary multi-head attention,
    n_kv_head == 1 is multi-query attention (Shazeer, 2019).

    The heads of a group are handled by broadcasting, not by copying k and v: q is viewed
    as (B, n_kv, group, T, hs) and k, v as (B, n_kv, 1, S, hs).
    """

    def __init__(self, n_embd: int, n_head: int, n_kv_head: int, bias: bool = True) -> None:
        super().__init__()
        if n_embd % n_head != 0:
            raise ValueError(f"n_embd ({n_embd}) must be divisible by "
                             f"n_head ({n_head})")
        if n_kv_head < 1 or n_head % n_kv_head != 0:
            raise ValueError(f"n_head ({n_head}) must be a multiple of "
                             f"n_kv_head ({n_kv_head})")
        self.n_head, self.n_kv_head, self.hs = n_head, n_kv_head, n_embd // n_head
        self.c_q = nn.Linear(n_embd, n_embd, bias=bias)
        self.c_kv = nn.Linear(n_embd, 2 * n_kv_head * self.hs, bias=bias)  # n_kv heads
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Projections: q (B, nh, T, hs), k and v (B, n_kv, T, hs)."""
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.hs)
        q = q.transpose(1, 2)  # (B, nh, T, hs)
        k, v = self.c_kv(x).split(self.n_kv_head * self.hs, dim=2)
        k = k.view(B, T, self.n_kv_head, self.hs).transpose(1, 2)  # (B, n_kv, T, hs)
        v = v.view(B, T, self.n_kv_head, self.hs).transpose(1, 2)  # (B, n_kv, T, hs)
        return q, k, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x)
        g = self.n_head // self.n_kv_head
        q = q.view(B, self.n_kv_head, g, T, self.hs)  # (B, n_kv, g, T, hs)
        mask = causal_mask(T, device=x.device)        # (T, T)
        # k and v as (B, n_kv, 1, T, hs): each broadcasts over its group, nothing copied
        y, _ = scaled_dot_product_attention(q, k[:, :, None], v[:, :, None], mask)
        y = y.reshape(B, self.n_head, T, self.hs)     # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)        # (B, T, C)
        return self.c_proj(y)


def attention_param_count(n_embd: int, n_head: int, n_kv_head: int, bias: bool = True) -> int:
    """Parameters of one attention layer (q, k, v and output projections) with n_kv_head
    key/value heads: 2·C² for q and the output, 2·C·(n_kv·hs) for k and v, plus biases."""
    hs = n_embd // n_head
    kv = n_kv_head * hs
    weights = 2 * n_embd * n_embd + 2 * n_embd * kv
    return weights + ((2 * n_embd + 2 * kv) if bias else 0)


def kv_cache_bytes_per_token(n_layer: int, n_kv_head: int, head_size: int, dtype: torch.dtype = torch.float16) -> int:
    """Bytes one token adds to a KV cache: a key and a value vector per layer and per
    key/value head, 2 · n_layer · n_kv_head · head_size elements."""
    return 2 * n_layer * n_kv_head * head_size * torch.empty((), dtype=dtype).element_size()


# --------------------------------------------------------------------------- measuring
def time_call(fn: Callable[[], object], device: torch.device | str = "cpu", repeats: int = 3, warmup: int = 1) -> float:
    """Seconds one call of ``fn()`` takes: the best of ``repeats`` timed calls after
    ``warmup`` untimed ones, with the device synchronised around each (GPU kernels run
    asynchronously). The best, not the mean, because other processes only ever add time."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    synchronize(device)
    best = math.inf
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best


@dataclass(frozen=True)
class MemoryMeasurement:
    """Peak bytes allocated by a call above what was allocated before it, and how it was measured."""

    bytes: int
    method: str

    @property
    def mib(self) -> float:
        return self.bytes / 2**20


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence C-level stderr (the profiler prints start/stop lines there)."""
    try:
        fd = os.dup(2)
    except OSError:  # no real stderr (some embedded interpreters): nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)


def _cpu_peak_bytes(fn: Callable[[], object]) -> int:
    # The CPU allocator reports every allocation and free, with its running total, to the
    # profiler when profile_memory=True; the peak of that total during fn is the answer.
    # It sees everything torch allocates (kernel scratch space included); the CPU allocator
    # does not cache, so allocated == in use.
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        with _quiet_stderr():
            prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    mem = sorted((e for e in events if e.get("name") == "[memory]" and "Total Allocated" in e.get("args", {})
                  and str(e["args"].get("Device Type", 0)) in ("0", "cpu", "CPU")),
                 key=lambda e: e.get("ts", 0))
    if not mem:
        return 0
    before = mem[0]["args"]["Total Allocated"] - mem[0]["args"]["Bytes"]
    return max(0, max(e["args"]["Total Allocated"] for e in mem) - before)


def peak_memory(fn: Callable[[], object], device: torch.device | str = "cpu") -> MemoryMeasurement:
    """Peak memory that ``fn()`` allocates on ``device`` beyond what was allocated before.

    CUDA: ``torch.cuda.max_memory_allocated`` (the caching allocator's peak of memory in use
    by tensors). CPU: the CPU allocator's running total as recorded by ``torch.profiler``
    with ``profile_memory=True`` (every allocation torch makes, kernel scratch included).
    Other devices are not supported: run the measurement on the CPU there.
    """
    device = torch.device(device)
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return MemoryMeasurement(torch.cuda.max_memory_allocated(device) - base,
                                 "torch.cuda.max_memory_allocated (CUDA caching allocator)")
    if device.type == "cpu":
        return MemoryMeasurement(_cpu_peak_bytes(fn),
                                 "CPU allocator total, recorded by torch.profiler(profile_memory=True)")
    raise NotImplementedError(f"peak_memory measures CUDA and CPU only, not {device.type!r}: measure on 'cpu' instead.")


_SDPA_KERNELS = {
    "_scaled_dot_product_flash_attention_for_cpu": "flash attention (fused CPU kernel)",
    "_scaled_dot_product_flash_attention": "FlashAttention-2 (fused CUDA kernel)",
    "_scaled_dot_product_efficient_attention": "memory-efficient attention (fused xFormers/CUTLASS kernel)",
    "_scaled_dot_product_cudnn_attention": "cuDNN attention (fused kernel)",
    "_scaled_dot_product_fused_attention_overrideable": "a device backend's fused kernel",
    "_efficient_attention_forward": "memory-efficient attention (fused xFormers/CUTLASS kernel)",
    "_flash_attention_forward": "FlashAttention-2 (fused CUDA kernel)",
}


def sdpa_kernels(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: Any) -> tuple[str, list[str]]:
    """Which implementation ``torch.nn.functional.scaled_dot_product_attention`` picks for
    these inputs: (description, the aten operators it called). The call is traced with a
    TorchDispatchMode, which sees the operator SDPA dispatched to (its kernel choice is
    made above that level, so tracing does not change it). No fused operator means the
    unfused "math" path, which materialises the scores like Chapter 2's code."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Record(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: list[str] = []

        def __torch_dispatch__(self, func: torch._ops.OpOverload, types: Sequence[type],
                               args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None) -> Any:
            self.ops.append(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    with torch.no_grad(), _Record() as rec:
        torch.nn.functional.scaled_dot_product_attention(q, k, v, **kwargs)
    fused = [_SDPA_KERNELS[op] for op in rec.ops if op in _SDPA_KERNELS]
    return (fused[0] if fused else "math (unfused: materialises the scores)"), rec.ops


def loglog_slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Slope of the least-squares line through (log x, log y): the exponent p in y ∝ x^p."""
    import numpy as np

    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError(f"need two equally long sequences of at least 2 points, got {len(xs)} and {len(ys)}")
    x, y = np.log(np.asarray(xs, dtype=float)), np.log(np.asarray(ys, dtype=float))
    return float(np.polyfit(x, y, 1)[0])
