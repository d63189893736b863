"""Chapter 9's LoRA, written in the chapter's cell ``ch09-lora``, against peft's LoRA on random
shapes: the same A and B, the same targets; outputs and gradients equal to <= 1e-6; the merged
model computes the same outputs; B = 0 at the start leaves the pretrained function unchanged."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from _page_code import run_tagged_cell
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import BertConfig, BertModel

CHAPTER = Path(__file__).resolve().parent.parent / "chapters" / "09_finetuning.ipynb"
TOL = 1e-6


@pytest.fixture(scope="module")
def ch() -> dict:
    return run_tagged_cell(CHAPTER, "ch09-lora", {"math": math, "torch": torch, "nn": nn})


def _encoder(hidden: int, heads: int, layers: int, seed: int) -> BertModel:
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=100, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=2 * hidden, max_position_embeddings=32)
    return BertModel(cfg).eval()


def _pair(ch: dict, enc: BertModel, targets: tuple[str, ...], r: int, alpha: float):
    ours = ch["add_lora"](copy.deepcopy(enc), targets=targets, r=r, alpha=alpha)
    theirs = get_peft_model(copy.deepcopy(enc), LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets),
                                                           lora_dropout=0.0))
    theirs_params = {n.replace("base_model.model.", "").replace(".default.weight", ""): p
                     for n, p in theirs.named_parameters() if ".lora_" in n}
    ours_params = {n: p for n, p in ours.named_parameters() if ".lora_" in n}
    assert set(ours_params) == set(theirs_params)            # the same layers adapted
    with torch.no_grad():
        for name, p in ours_params.items():
            if name.endswith("lora_B"):
                p.normal_(0.0, 0.1)                          # a non-zero update, so that it is tested
            theirs_params[name].copy_(p)
    return ours, theirs, ours_params, theirs_params


SHAPES = [(16, 2, 1, 1, 1.0, ("query", "value")), (32, 4, 2, 4, 16.0, ("query", "key", "value")),
          (24, 3, 3, 8, 8.0, ("key",)), (48, 6, 2, 2, 32.0, ("query", "key", "value"))]


@pytest.mark.parametrize("hidden, heads, layers, r, alpha, targets", SHAPES)
def test_outputs_and_gradients_equal_peft(ch, hidden, heads, layers, r, alpha, targets):
    enc = _encoder(hidden, heads, layers, seed=r)
    ours, theirs, ours_params, theirs_params = _pair(ch, enc, targets, r, alpha)
    ids = torch.randint(0, 100, (3, 7))
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 5:] = 0
    out = {}
    for name, model in (("ours", ours), ("theirs", theirs)):
        h = model(input_ids=ids, attention_mask=mask).last_hidden_state
        (h * torch.linspace(-1, 1, h.shape[-1])).sum().backward()
        out[name] = h.detach()
    assert (out["ours"] - out["theirs"]).abs().max() <= TOL
    for name, p in ours_params.items():
        assert p.grad is not None and p.grad.abs().max() > 0
        assert (p.grad - theirs_params[name].grad).abs().max() <= TOL, name
    trainable = sum(p.numel() for p in ours.parameters() if p.requires_grad)
    assert trainable == sum(p.numel() for p in ours_params.values())
    assert trainable == sum(p.numel() for p in theirs.parameters() if p.requires_grad)


@pytest.mark.parametrize("hidden, heads, layers, r, alpha, targets", SHAPES[:2])
def test_merge_keeps_the_function_and_removes_the_adapters(ch, hidden, heads, layers, r, alpha, targets):
    enc = _encoder(hidden, heads, layers, seed=0)
    ours, theirs, _, _ = _pair(ch, enc, targets, r, alpha)
    ids = torch.randint(0, 100, (2, 9))
    with torch.no_grad():
        before = ours(input_ids=ids).last_hidden_state
        merged = ch["merge_lora"](ours)
        after = merged(input_ids=ids).last_hidden_state
        library = theirs.merge_and_unload()(input_ids=ids).last_hidden_state
    assert not any(isinstance(m, ch["LoRALinear"]) for m in merged.modules())
    assert (before - after).abs().max() <= 1e-5
    assert (after - library).abs().max() <= 1e-5


def test_b_starts_at_zero_so_the_model_starts_as_pretrained(ch):
    enc = _encoder(32, 4, 2, seed=3)
    adapted = ch["add_lora"](copy.deepcopy(enc), r=4, alpha=8)
    ids = torch.randint(0, 100, (2, 6))
    with torch.no_grad():
        assert torch.equal(adapted(input_ids=ids).last_hidden_state, enc(input_ids=ids).last_hidden_state)
    layer = next(m for m in adapted.modules() if isinstance(m, ch["LoRALinear"]))
    assert layer.scaling == 2.0 and torch.count_nonzero(layer.lora_B) == 0 and layer.lora_A.abs().sum() > 0
    assert all(not p.requires_grad for n, p in adapted.named_parameters() if ".lora_" not in n)
