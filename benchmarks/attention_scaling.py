"""Naive vs. PyTorch SDPA vs. the course's tiled (flash-style) attention, side by side.

For a grid of sequence lengths T (causal self-attention, batch 1), every method runs in the
same process on the same inputs; the script prints each one's time and peak memory and the
ratios naive/SDPA and naive/tiled, then the log-log slopes (time and memory ∝ T^slope).

    python benchmarks/attention_scaling.py            # grid sized to the device (CUDA > CPU)
    python benchmarks/attention_scaling.py --quick    # a small grid (CPU: a few seconds)
    python benchmarks/attention_scaling.py --device cpu --lengths 256 512 1024

Time: best of --repeats calls after one warm-up, the device synchronised around each call.
Peak memory above what was allocated before the call: on CUDA torch.cuda.max_memory_allocated,
on CPU the CPU allocator's running total recorded by torch.profiler (profile_memory=True).
Chapter 6 explains the numbers; course_utils.efficient holds the measured functions.
"""
from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

try:
    import course_utils  # noqa: F401
except ImportError:  # run from a checkout where the package is not installed: use its src/
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
from course_utils import get_device
from course_utils.efficient import loglog_slope, naive_attention, peak_memory, sdpa_kernels, tiled_attention, time_call

#: torch >= 2.5 has torch.OutOfMemoryError; older versions only the CUDA one
_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

GRIDS = {  # (device type, quick) -> sequence lengths
    ("cpu", True): [256, 512, 1024],
    ("cpu", False): [256, 512, 1024, 2048],
    ("cuda", True): [1024, 2048, 4096],
    ("cuda", False): [1024, 2048, 4096, 8192, 16384],
}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a small grid (seconds on a CPU)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: the best available)")
    p.add_argument("--lengths", type=int, nargs="+", default=None,
                   help="sequence lengths (default: sized to the device)")
    p.add_argument("--heads", type=int, default=None, help="heads (default: 8 on CUDA, 4 on CPU)")
    p.add_argument("--head-size", type=int, default=64)
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                   help="default: bfloat16 on CUDA (the fused kernels need 16-bit), float32 on CPU")
    p.add_argument("--block", type=int, default=None,
                   help="tile size of the tiled version (default: 256 CUDA, 128 CPU)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice; 1 gives stable timings on a busy machine)")
    args = p.parse_args(argv)
    if any(t < 1 for t in args.lengths or []):
        p.error("--lengths must be positive")
    return args


def measure(fn, device: torch.device, repeats: int) -> tuple[float | None, int | None]:
    """(seconds, peak bytes) of fn(), or (None, None) if the device ran out of memory."""
    try:
        seconds = time_call(fn, device, repeats=repeats, warmup=1)
        peak = peak_memory(fn, device).bytes
        return seconds, peak
    except _OOM:
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return None, None


def fmt_ms(s: float | None) -> str:
    return "OOM" if s is None else f"{s * 1e3:.2f}"


def fmt_mib(b: int | None) -> str:
    return "OOM" if b is None else f"{b / 2**20:.1f}"


def ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b <= 0 else f"{a / b:.1f}x"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = get_device(args.device)
    if device.type not in ("cuda", "cpu"):
        print(f"Device {device} is not measured by this script (memory is measured on CUDA and CPU); "
              "pass --device cpu.", file=sys.stderr)
        return 2
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    lengths = args.lengths or GRIDS[(device.type, args.quick)]
    nh = args.heads or (8 if cuda else 4)
    hs = args.head_size
    dtype = DTYPES[args.dtype] if args.dtype else (torch.bfloat16 if cuda else torch.float32)
    block = args.block or (256 if cuda else 128)
    threads = torch.get_num_threads()
    name = torch.cuda.get_device_name(device) if cuda else \
        f"CPU ({platform.processor() or platform.machine()}, {threads} thread{'s' if threads != 1 else ''})"
    print(f"Device: {name}; torch {torch.__version__}")
    print(f"Causal self-attention, batch 1, {nh} heads of size {hs}, {str(dtype).replace('torch.', '')}; "
          f"tiled blocks {block}x{block}; time = best of {args.repeats}")
    print("Memory: " + ("torch.cuda.max_memory_allocated" if cuda else
                        "CPU allocator total recorded by torch.profiler(profile_memory=True)")
          + ", peak above what was allocated before the call")
    torch.manual_seed(0)
    q0 = torch.randn(1, nh, lengths[0], hs, device=device, dtype=dtype)
    kernel, _ = sdpa_kernels(q0, q0, q0, is_causal=True)
    print(f"PyTorch SDPA picked: {kernel}\n")

    header = (f"{'T':>6} | {'naive ms':>9} {'SDPA ms':>9} {'tiled ms':>9} | {'naive MiB':>10} {'SDPA MiB':>9} "
              f"{'tiled MiB':>9} | {'time naive/SDPA':>15} {'naive/tiled':>11} | "
              f"{'mem naive/SDPA':>14} {'naive/tiled':>11}")
    print(header)
    print("-" * len(header))
    rows = []
    with torch.no_grad():
        for T in lengths:
            q, k, v = (torch.randn(1, nh, T, hs, device=device, dtype=dtype) for _ in range(3))
            # q, k, v bound as defaults: each lambda runs before the `del` below, which frees them
            tn, mn = measure(lambda q=q, k=k, v=v: naive_attention(q, k, v, causal=True), device, args.repeats)
            ts, ms = measure(lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                             device, args.repeats)
            tt, mt = measure(lambda q=q, k=k, v=v: tiled_attention(q, k, v, causal=True, block_q=block,
                                                                   block_k=block),
                             device, args.repeats)
            rows.append((T, tn, ts, tt, mn, ms, mt))
            print(f"{T:>6} | {fmt_ms(tn):>9} {fmt_ms(ts):>9} {fmt_ms(tt):>9} | {fmt_mib(mn):>10} {fmt_mib(ms):>9} "
                  f"{fmt_mib(mt):>9} | {ratio(tn, ts):>15} {ratio(tn, tt):>11} | "
                  f"{ratio(mn, ms):>14} {ratio(mn, mt):>11}",
                  flush=True)
            del q, k, v

    print("\nLog-log slopes over the grid (cost ∝ T^slope; 2 = quadratic, 1 = linear):")
    for label, t_i, m_i in (("naive", 1, 4), ("SDPA", 2, 5), ("tiled", 3, 6)):
        ok = [r for r in rows if r[t_i] is not None and r[m_i]]
        if len(ok) >= 2:
            ts_ = loglog_slope([r[0] for r in ok], [r[t_i] for r in ok])
            ms_ = loglog_slope([r[0] for r in ok], [r[m_i] for r in ok])
            print(f"  {label:<6} time {ts_:.2f}   memory {ms_:.2f}")
        else:
            print(f"  {label:<6} (fewer than two measured lengths)")
    bytes_el = torch.empty((), dtype=dtype).element_size()
    T = lengths[-1]
    print(f"\nFor scale: one (T, T) score matrix per head at T={T} is {nh * T * T * bytes_el / 2**20:,.0f} MiB "
          f"for {nh} heads; q, k, v and the output together are {4 * nh * T * hs * bytes_el / 2**20:,.1f} MiB.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
