"""GGUF's Q8_0, Q4_0 and Q4_1, both directions, from Chapter 8's cells and ``course_utils.quant``:
bit for bit equal to the ``gguf`` package's reference (random data with awkward blocks, and
SmolLM2's shipped tensors); the held-out prose loader."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize
from test_llama import chapter_namespace

from course_utils import quant
from course_utils.prose import heldout_prose

FORMATS = ["Q8_0", "Q4_0", "Q4_1"]


@pytest.fixture(scope="module")
def cells() -> dict:
    return chapter_namespace("ch08-dequant", "ch08-quant")


def _awkward() -> torch.Tensor:
    """Random rows plus the blocks that break careless code: all zero, constant, one spike,
    ties of magnitude with opposite signs, values exactly halfway between levels."""
    x = torch.randn(12, 96, generator=torch.Generator().manual_seed(0)) * 0.05
    x[0, :32] = 0.0
    x[1, :32] = 0.3
    x[2, :32], x[2, 5] = 0.0, -2.0
    x[3, :32] = torch.tensor([1.0, -1.0] * 16)
    x[4, :32] = torch.arange(32) * 0.5 - 8.0
    x[5] *= 1e4
    return x


def _source(cells: dict, kind: str, fmt: str):
    name = f"{kind}_{fmt.lower()}"
    return cells[name], getattr(quant, name)


@pytest.mark.parametrize("fmt", FORMATS)
def test_quantize_equals_gguf_bytes(cells, fmt):
    x = _awkward()
    ref = gguf_quantize(x.numpy(), GGMLQuantizationType[fmt]).reshape(-1)
    for fn in _source(cells, "quantize", fmt):
        assert np.array_equal(fn(x).numpy(), ref), fn.__module__


@pytest.mark.parametrize("fmt", FORMATS)
def test_dequantize_is_bit_equal_to_gguf(cells, fmt):
    raw = gguf_quantize(_awkward().numpy(), GGMLQuantizationType[fmt])
    ref = gguf_dequantize(raw, GGMLQuantizationType[fmt]).reshape(-1).astype(np.float32)
    for fn in _source(cells, "dequantize", fmt):
        ours = fn(torch.from_numpy(raw.reshape(-1).copy())).numpy()
        assert np.array_equal(ours.view(np.int32), ref.view(np.int32)), fn.__module__


def test_real_tensors_bit_equal(cells):
    """The file's own blocks: the Q8_0 embedding and a few Q4_1 matrices."""
    from course_utils.assets import smollm2_gguf

    tensors = GGUFReader(smollm2_gguf()).tensors
    kinds = {t.tensor_type.name for t in tensors}
    assert {"Q4_1", "Q8_0"} <= kinds
    chosen = [t for t in tensors if t.tensor_type.name == "Q8_0"]
    chosen += [t for t in tensors if t.tensor_type.name == "Q4_1"][:6]
    for t in chosen:
        ref = gguf_dequantize(t.data, t.tensor_type).reshape(-1).astype(np.float32)
        raw = torch.from_numpy(np.array(t.data)).reshape(-1)  # a writable copy
        for fn in _source(cells, "dequantize", t.tensor_type.name):
            assert np.array_equal(fn(raw).numpy().view(np.int32), ref.view(np.int32)), (t.name, fn.__module__)


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_error_is_bounded(fmt):
    w = torch.randn(64, 128, generator=torch.Generator().manual_seed(1))
    back = quant.round_trip(w, fmt)
    blocks, err = w.reshape(-1, 32), (back - w).reshape(-1, 32).abs().amax(1)
    span = blocks.amax(1) - blocks.amin(1)
    # half a level, plus the float16 rounding of the stored constants (2^-11 relative, times up to
    # 127 or 15 levels); Q4_0 clips one side at level 15, so up to a whole level there
    bound = {"Q8_0": blocks.abs().amax(1) / 127 * (0.5 + 127 * 2**-11),
             "Q4_1": span / 15 * (0.5 + 15 * 2**-11) + blocks.abs().amax(1) * 2**-11,
             "Q4_0": blocks.abs().amax(1) / 8 * (1 + 8 * 2**-11)}[fmt]
    assert (err <= bound).all(), (err - bound).max()
    assert back.shape == w.shape and back.dtype == torch.float32


def test_quant_errors_are_clear():
    with pytest.raises(ValueError, match="multiple of 32"):
        quant.quantize_q4_1(torch.randn(10))
    with pytest.raises(ValueError, match="unknown format 'Q3_K'"):
        quant.round_trip(torch.randn(32), "Q3_K")


def test_heldout_prose_offline_is_real_and_pointable(tmp_path, monkeypatch):
    prose = heldout_prose(online=False)
    assert "State of the Union" in prose.source and len(prose.text) >= 40_000
    assert "Congress" in prose.text and prose.documents >= 1
    (tmp_path / "a.txt").write_text("First book.", encoding="utf-8")
    (tmp_path / "b.txt").write_text("Second book.", encoding="utf-8")
    small = heldout_prose(min_chars=5, path=tmp_path)
    assert small.text == "Second book." and small.documents == 1
    with pytest.raises(FileNotFoundError, match="missing.tgz is missing: give a folder"):
        heldout_prose(path=tmp_path / "missing.tgz")
    # The addresses are the ones corpus installs (one install): without it, its error says how.
    monkeypatch.setenv("COURSE_PROSE_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"datasets-sotu@0.2.3 .*scripts/install.sh"):
        heldout_prose(online=False)
