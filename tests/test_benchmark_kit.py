"""The benchmarks' own tools (benchmarks/_kit.py, on pytest's pythonpath): the peak FLOP/s that MFU
divides by, the machine's description, and a loss curve extrapolated to its target."""
import math

import pytest
import torch
from _kit import extrapolate_time_to_target, machine_description, peak_flops


def test_cpu_peak_is_measured_and_a_gpu_peak_comes_from_its_data_sheet(monkeypatch):
    peak, how = peak_flops(torch.device("cpu"), bf16=False, seconds=0.2)
    assert peak > 1e8 and "measured" in how and "float32" in how
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert peak_flops(torch.device("cuda"), bf16=True) == (989e12, "NVIDIA H100 80GB HBM3 data sheet, bf16 dense")
    assert peak_flops(torch.device("cuda"), bf16=False)[0] == 67e12
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some Future GPU")
    unknown, how = peak_flops(torch.device("cuda"), bf16=True)
    assert math.isnan(unknown) and how == "Some Future GPU: peak unknown"


def test_machine_description_names_cores_threads_and_torch():
    desc = machine_description()
    assert f"{torch.get_num_threads()} torch threads" in desc and desc.endswith(f"torch {torch.__version__}")


def test_extrapolation_finds_a_known_crossing():
    seconds = [60.0 * k for k in range(1, 11)]
    losses = [9.0 - 0.5 * math.log(t) for t in seconds]  # reaches 5.0 at t = e^8 = 2981 s
    estimate, (low, high) = extrapolate_time_to_target(seconds, losses, 5.0)
    assert estimate == pytest.approx(math.exp(8.0), rel=1e-6)
    assert low <= estimate <= high
    noisy = [v + 0.02 * (-1) ** k for k, v in enumerate(losses)]
    fit = extrapolate_time_to_target(seconds, noisy, 5.0)
    assert fit is not None and fit[1][0] < math.exp(8.0) < fit[1][1] and fit[1][1] / fit[1][0] > 1.2
    flat = extrapolate_time_to_target(seconds, [7.0 + 0.001 * k for k in range(10)], 5.0)
    assert flat is None  # a curve that does not fall has no crossing
    with pytest.raises(ValueError, match="at least 3 points"):
        extrapolate_time_to_target([1.0, 2.0], [7.0, 6.9], 5.0)
