"""Chapter 2's cells that re-create package code (tagged ``ch02-package``) and course_utils agree.

The chapter writes split_heads/merge_heads, MultiHeadAttention, FeedForward, EncoderLayer, Encoder
and sinusoidal_positions on the page for the reader; course_utils.attention and .positions hold
the same code for later chapters. This test executes the definitions of the tagged cells (not
their demonstrations, which need the real model) and compares them with the package on the same
weights and inputs: parameter names, every hidden state and every attention map.
"""
from __future__ import annotations

import ast
import math
import sys
import types
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_utils import attention, positions

CHAPTER = Path(__file__).resolve().parent.parent / "chapters" / "02_attention_from_scratch.ipynb"
TAG = "ch02-package"
DEFINED = {"split_heads", "merge_heads", "MultiHeadAttention", "FeedForward", "EncoderLayer", "Encoder",
           "sinusoidal_positions"}


@pytest.fixture(scope="module")
def ch() -> dict:
    nb = nbformat.read(CHAPTER, as_version=4)
    cells = [c for c in nb.cells if TAG in c.metadata.get("tags", [])]
    module = types.ModuleType("ch02_cells")  # a module, as a notebook's __main__ is
    sys.modules[module.__name__] = module
    namespace = module.__dict__
    # what the chapter's earlier cells import
    namespace.update({"math": math, "torch": torch, "nn": nn, "F": F, "EncoderConfig": attention.EncoderConfig,
                      "scaled_dot_product_attention": attention.scaled_dot_product_attention})
    for i, cell in enumerate(cells):
        tree = ast.parse(cell.source)
        tree.body = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef))]
        exec(compile(tree, f"{CHAPTER.name}[{TAG} {i}]", "exec"), namespace)
    missing = DEFINED - {k for k, v in namespace.items() if getattr(v, "__module__", None) == module.__name__}
    assert not missing, f"cells tagged {TAG} must define {sorted(missing)}"
    return namespace


def test_heads_and_positions(ch):
    x = torch.randn(2, 7, 48)                                                   # (B, T, C)
    h = ch["split_heads"](x, 4)
    torch.testing.assert_close(h, attention.split_heads(x, 4), rtol=0, atol=0)
    torch.testing.assert_close(ch["merge_heads"](h), attention.merge_heads(h), rtol=0, atol=0)
    for T, C in [(1, 2), (50, 16), (128, 128)]:
        torch.testing.assert_close(ch["sinusoidal_positions"](T, C), positions.sinusoidal_positions(T, C))


def _same_weights(ours: nn.Module, package: nn.Module) -> None:
    assert list(ours.state_dict()) == list(package.state_dict()), "parameter names differ from the package's"
    ours.load_state_dict(package.state_dict())


def test_multi_head_attention_self_and_cross(ch):
    torch.manual_seed(0)
    package = attention.MultiHeadAttention(48, 4).eval()
    ours = ch["MultiHeadAttention"](48, 4).eval()
    _same_weights(ours, package)
    x, context = torch.randn(2, 5, 48), torch.randn(2, 9, 48)                  # (B, T, C), (B, S, C)
    mask = torch.rand(2, 1, 5, 9) > 0.3                                         # (B, 1, T, S)
    for kwargs in [dict(), dict(mask=mask[..., :5]), dict(mask=mask, context=context)]:
        (a, wa), (b, wb) = ours(x, **kwargs), package(x, **kwargs)
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(wa, wb)


@pytest.mark.parametrize("pre_ln", [False, True], ids=["post-LN", "pre-LN"])
def test_encoder_equals_the_package(ch, pre_ln):
    config = attention.EncoderConfig(vocab_size=60, max_positions=16, d_model=48, n_heads=4, n_layers=3, d_ff=96,
                                     dropout=0.0, layer_norm_eps=1e-5, pre_ln=pre_ln)
    torch.manual_seed(1)
    package = attention.Encoder(config).eval()
    for p in package.parameters():  # away from the initial values (LayerNorm 1 and 0), so every weight counts
        nn.init.normal_(p, std=0.3)
    ours = ch["Encoder"](config).eval()
    _same_weights(ours, package)
    ids = torch.randint(0, 60, (3, 11))
    att = torch.ones_like(ids)
    att[1, 8:], att[2, 4:] = 0, 0                                               # padding
    segments = (torch.arange(11) >= 6).long().expand(3, 11)
    a = ours(ids, att, segments)
    b = package(ids, att, segments)
    torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state)
    assert len(a.hidden_states) == len(b.hidden_states) == config.n_layers + 1
    for x, y in zip(a.hidden_states, b.hidden_states):
        torch.testing.assert_close(x, y)
    for x, y in zip(a.attentions, b.attentions):
        torch.testing.assert_close(x, y)
    # the layers and the feed-forward on their own, in training mode too (dropout 0: deterministic)
    layer_ours, layer_package = ch["EncoderLayer"](48, 4, 96, 0.0, 1e-5, pre_ln), package.layers[0]
    _same_weights(layer_ours, layer_package)
    x = torch.randn(3, 11, 48)
    torch.testing.assert_close(layer_ours(x)[0], layer_package(x)[0])
    torch.testing.assert_close(layer_ours.ffn(x), layer_package.ffn(x))


def test_a_changed_cell_fails_the_comparison(ch):
    # The comparison can fail: the chapter's Encoder with its LayerNorm moved gives other states.
    config = attention.EncoderConfig(vocab_size=60, max_positions=16, d_model=48, n_heads=4, n_layers=2, d_ff=96,
                                     dropout=0.0, layer_norm_eps=1e-5)
    package = attention.Encoder(config).eval()
    ours = ch["Encoder"](config).eval()
    _same_weights(ours, package)
    for layer in ours.layers:
        layer.pre_ln = True
    ids = torch.randint(0, 60, (2, 8))
    with pytest.raises(AssertionError):
        torch.testing.assert_close(ours(ids).last_hidden_state, package(ids).last_hidden_state)
