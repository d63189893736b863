"""Chapter 1's cost of attention: the chapter's own FLOP formula (cell tagged ``ch01-flops``)
against PyTorch's FLOP counter on real architectures, the crossover lengths it implies, the
output layer's share, and the chapter's crossing-length estimate (cell tagged
``ch01-crossover``) on power laws whose crossing is known exactly."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from _page_code import run_tagged_cell
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = ROOT / "chapters" / "01_architectures.ipynb"


def _chapter_cell(tag: str) -> dict:
    """Execute the chapter's cell tagged ``tag`` and return its namespace."""
    return run_tagged_cell(CHAPTER, tag)


@pytest.fixture(scope="module")
def flops():
    return _chapter_cell("ch01-flops")["gpt2_forward_flops"]


@pytest.fixture(scope="module")
def crossing_length():
    return _chapter_cell("ch01-crossover")["crossing_length"]


def _counted(config_kwargs: dict, T: int) -> int:
    from transformers import GPT2Config, GPT2LMHeadModel

    with torch.device("meta"):
        model = GPT2LMHeadModel(GPT2Config(**config_kwargs))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, T, dtype=torch.long, device="meta"))
    return counter.get_total_flops()


@pytest.mark.parametrize("config, T", [
    (dict(n_embd=768, n_layer=12, n_head=12, vocab_size=50257, n_positions=1024), 1024),  # GPT-2 small
    (dict(n_embd=768, n_layer=12, n_head=12, vocab_size=50257, n_positions=1024), 7),
    (dict(n_embd=64, n_layer=3, n_head=4, vocab_size=101, n_positions=64), 33),           # a toy
])
def test_formula_equals_torch_flop_counter(flops, config, T):
    ours = flops(T, config["n_embd"], config["n_layer"], config["vocab_size"])
    assert sum(ours.values()) == _counted(config, T)


def test_gpt2_small_terms(flops):
    f = flops(1024, 768, 12, 50257)
    assert f == {"linear maps": 173_946_175_488, "attention": 38_654_705_664, "output layer": 79_047_426_048}
    assert f["output layer"] / sum(f.values()) == pytest.approx(0.2710, abs=1e-4)  # "not free"


def test_attention_overtakes_linear_maps_at_6d(flops):
    d = 768
    at = {T: flops(T, d, 1, 1) for T in (6 * d - 1, 6 * d, 6 * d + 1)}
    assert at[6 * d]["attention"] == at[6 * d]["linear maps"]
    assert at[6 * d - 1]["attention"] < at[6 * d - 1]["linear maps"]
    assert at[6 * d + 1]["attention"] > at[6 * d + 1]["linear maps"]


def test_crossing_interpolated_exactly_for_power_laws(crossing_length):
    T = np.array([64, 128, 256, 512, 1024, 2048, 4096])
    attention, linear = 3e-6 * T**2.0, 5e-3 * T**1.0        # cross at T = 5e-3 / 3e-6 = 1666.7
    cross, how = crossing_length(T, attention, linear)
    assert how == "interpolated"
    assert cross == pytest.approx(5e-3 / 3e-6, rel=1e-9)


def test_crossing_extrapolated_when_no_length_crosses(crossing_length):
    T = np.array([64, 128, 256, 512])
    attention, linear = 1e-6 * T**2.0, 1e-2 * T**1.0        # cross at T = 10,000, beyond the lengths
    cross, how = crossing_length(T, attention, linear)
    assert how == "extrapolated"
    assert cross == pytest.approx(1e4, rel=1e-6)


def test_crossing_picks_the_first_upward_crossing(crossing_length):
    T = np.array([100, 200, 400, 800])
    cross, how = crossing_length(T, [1.0, 4.0, 9.0, 20.0], [2.0, 2.0, 10.0, 10.0])
    assert how == "interpolated" and 100 < cross < 200
