"""What the benchmarks measure a machine and a curve with: the peak FLOP/s that MFU divides by,
a one-line description of the machine, and a curve's extrapolated time to a target loss.

Imported by the benchmark scripts from their own folder (``from _kit import ...``); the tests
reach it through pytest's ``pythonpath``.
"""
from __future__ import annotations

import math
import os
import platform
import time
from typing import Sequence

import torch

#: Dense peak FLOP/s of common accelerators (vendor data sheets; bf16 tensor cores, fp32).
_GPU_PEAKS = {"H200": (989e12, 67e12), "H100": (989e12, 67e12), "A100": (312e12, 19.5e12),
              "L4": (121e12, 30e12), "A10": (125e12, 31e12), "T4": (65e12, 8.1e12),
              "V100": (125e12, 15.7e12), "L40": (181e12, 90e12), "RTX 4090": (165e12, 82e12)}


def peak_flops(device: torch.device, bf16: bool, *, seconds: float = 1.0) -> tuple[float, str]:
    """(peak FLOP/s, how it was obtained): the denominator of MFU, one per precision.

    CUDA: the GPU's data-sheet number (dense). CPU: no data sheet is known for an arbitrary
    (virtual) CPU, so the best rate of a 1024 x 1024 matrix product in that precision, measured
    on the current thread count, stands in: an achievable peak (the theoretical one is higher).
    """
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, (half, single) in _GPU_PEAKS.items():
            if key in name:
                return (half if bf16 else single), f"{name} data sheet, {'bf16' if bf16 else 'fp32'} dense"
        return math.nan, f"{name}: peak unknown"
    dtype = torch.bfloat16 if bf16 else torch.float32
    n = 1024
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t0))
    kind = str(dtype).removeprefix("torch.")
    return best, f"best {n}x{n} {kind} matmul measured on {torch.get_num_threads()} CPU thread(s)"


def machine_description() -> str:
    """One line: CPU model and cores, or the GPU, plus torch's version."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    desc = f"{cpu}, {os.cpu_count()} CPU cores ({torch.get_num_threads()} torch threads)"
    if torch.cuda.is_available():
        desc = f"{torch.cuda.get_device_name(0)}; " + desc
    return f"{desc}; torch {torch.__version__}"


def extrapolate_time_to_target(seconds: Sequence[float], losses: Sequence[float], target: float, *,
                               last: int = 8, draws: int = 4000,
                               seed: int = 0) -> tuple[float, tuple[float, float]] | None:
    """An *estimate* of when a loss curve that stopped above ``target`` would reach it: a straight
    line fitted to the loss against log-time over the ``last`` points of the curve, solved for
    ``target``, with a 90 % interval from ``draws`` samples of the fit's parameters (their
    covariance from ``numpy.polyfit``). Returns ``(estimate, (low, high))`` in seconds, or ``None``
    where the fitted loss does not fall with time (no crossing to extrapolate to).

    A log-time line is the kindest usual shape for a slow curve (a power law in time flattens
    faster): where the real curve bends towards a plateau, the true time is longer.
    """
    import numpy as np

    t = np.asarray(seconds, dtype=float)[-last:]
    y = np.asarray(losses, dtype=float)[-last:]
    keep = t > 0
    t, y = t[keep], y[keep]
    if len(t) < 3:
        raise ValueError(f"need at least 3 points with positive times to fit, got {len(t)}")
    (slope, intercept), cov = np.polyfit(np.log(t), y, 1, cov=True)
    if slope >= 0:
        return None
    estimate = float(np.exp((target - intercept) / slope))
    rng = np.random.default_rng(seed)
    a, b = rng.multivariate_normal([slope, intercept], cov, size=draws).T
    falling = a < 0
    if falling.mean() < 0.95:  # the fit cannot say that the curve falls at all
        return estimate, (estimate, math.inf)
    times = np.exp((target - b[falling]) / a[falling])
    low, high = np.quantile(times, [0.05, 0.95])
    return estimate, (float(max(low, t[-1])), float(high))

