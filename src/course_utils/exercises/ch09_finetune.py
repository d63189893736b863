"""Checkers of Chapter 9 (Fine-tuning a pretrained encoder), handed out in
``chapters/09_exercises.ipynb``.

* ``check.lora_ffn(fn)``: ``fn(x, w1, b1, w2, b2, adapters, alpha) -> (B, T, C)``: BERT's
  feed-forward block (``intermediate.dense``, exact GELU, ``output.dense``; no residual, no
  LayerNorm) with a LoRA adapter ``(A, B)`` on each of its two linear layers, of any rank. The
  reference builds the block from ``nn.Linear`` layers and adapts it with ``peft``'s LoRA (the same
  A and B copied in), so the check is against the library.
* ``check.merge_lora_conv1d(fn)``: ``fn(weight, A, B, alpha) -> (C_in, C_out)``: an adapter merged
  into a GPT-2 ``Conv1D`` (``transformers.pytorch_utils.Conv1D``, weight stored (C_in, C_out),
  y = x W + b), checked against ``peft``'s LoRA on a ``Conv1D`` (``fan_in_fan_out=True``) and its
  ``merge_and_unload``.
* ``check.expected_calibration_error(fn)``: ``fn(probs, labels, n_bins=10) -> float``: the expected
  calibration error of fixed predictions (equal-width confidence bins, right-closed, weighted by
  the share of predictions in each bin; Guo et al., 2017).
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F

from .core import Case, Checker, Mistake, draw, register


def _peft_lora(layers: dict[str, tuple[torch.Tensor, torch.Tensor]],
               adapters: dict[str, tuple[torch.Tensor, torch.Tensor]], alpha: int, *,
               use_rslora: bool = False) -> Any:
    """A module holding ``nn.Linear`` layers named as ``layers`` (weight, bias), adapted by peft's
    LoRA on each of them, with the given ``(A, B)`` copied into the adapters. One rank per layer."""
    from peft import LoraConfig, get_peft_model

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for name, (w, b) in layers.items():
                lin = torch.nn.Linear(w.shape[1], w.shape[0])
                with torch.no_grad():
                    lin.weight.copy_(w)
                    lin.bias.copy_(b)
                self.add_module(name, lin)

    ranks = {name: int(a.shape[0]) for name, (a, _) in adapters.items()}
    first = next(iter(ranks.values()))
    config = LoraConfig(r=first, lora_alpha=alpha, target_modules=list(adapters), lora_dropout=0.0,
                        rank_pattern=ranks, alpha_pattern={name: alpha for name in adapters},
                        use_rslora=use_rslora)
    with warnings.catch_warnings():  # peft 0.21 reads a transformers attribute that 5.x renamed
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = get_peft_model(Block(), config)
    inner: Any = model.base_model.model
    with torch.no_grad():
        for name, (a, b) in adapters.items():
            layer: Any = inner.get_submodule(name)   # peft's LoRA Linear, holding lora_A and lora_B
            layer.lora_A["default"].weight.copy_(a)
            layer.lora_B["default"].weight.copy_(b)
    return model


# =========================================================================== 1. LoRA on the feed-forward block
# x (B, T, C); w1 (F, C), b1 (F,): intermediate.dense; w2 (C, F), b2 (C,): output.dense;
# adapters: {"intermediate": (A1 (r, C), B1 (F, r)), "output": (A2 (r, F), B2 (C, r))}; alpha.
# Each adapted layer computes x W^T + b + (alpha / r) x A^T B^T, r = A.shape[0]; between them the
# exact (erf) GELU. Returns (B, T, C).

def lora_ffn_reference(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
                       adapters: dict[str, tuple[torch.Tensor, torch.Tensor]], alpha: int) -> torch.Tensor:
    """BERT's feed-forward block with LoRA on both layers, computed by peft."""
    block = _peft_lora({"intermediate": (w1, b1), "output": (w2, b2)}, adapters, alpha)
    inner = block.base_model.model
    with torch.no_grad():
        return inner.output(F.gelu(inner.intermediate(x)))


def _ffn(x, w1, b1, w2, b2, adapters, alpha, *, scale=lambda alpha, r: alpha / r, only_first=False,
         approximate="none"):
    def layer(name, h, w, b):
        a, bb = adapters[name]
        out = h @ w.T + b
        if only_first and name == "output":
            return out
        return out + scale(alpha, a.shape[0]) * (h @ a.T @ bb.T)

    return layer("output", F.gelu(layer("intermediate", x, w1, b1), approximate=approximate), w2, b2)


def _ffn_cases() -> list[Case]:
    def case(name, B, T, C, Fd, r1, r2, alpha):
        adapters = {"intermediate": (torch.randn(r1, C) / C ** 0.5, torch.randn(Fd, r1) * 0.1),
                    "output": (torch.randn(r2, Fd) / Fd ** 0.5, torch.randn(C, r2) * 0.1)}
        args = (torch.randn(B, T, C), torch.randn(Fd, C) / C ** 0.5, torch.randn(Fd) * 0.1,
                torch.randn(C, Fd) / Fd ** 0.5, torch.randn(C) * 0.1, adapters, alpha)
        return Case(name, args)

    return [case("rank 4, alpha 8", 2, 5, 16, 64, 4, 4, 8),
            case("rank 2 and rank 6, alpha 16", 3, 4, 12, 48, 2, 6, 16),
            case("rank 1, alpha 1, one token", 1, 1, 8, 32, 1, 1, 1)]


lora_ffn = register(Checker(
    "lora_ffn", lora_ffn_reference, _ffn_cases, axes=("batch", "seq", "channels"), atol=1e-5, rtol=1e-4,
    mistakes=[
        Mistake(lambda *a: _ffn(*a, scale=lambda alpha, r: alpha),
                "the update is scaled by alpha / r, not alpha: with r = A.shape[0], the scaling keeps "
                "the update's size comparable when you change the rank."),
        Mistake(lambda *a: _ffn(*a, scale=lambda alpha, r: 1.0),
                "the low-rank update x A^T B^T is multiplied by alpha / r (peft's `scaling`)."),
        Mistake(lambda *a: _ffn(*a, scale=lambda alpha, r: alpha / math.sqrt(r)),
                "alpha / sqrt(r) is rank-stabilised LoRA (peft's use_rslora=True); plain LoRA scales by "
                "alpha / r."),
        Mistake(lambda *a: _ffn(*a, only_first=True),
                "both linear layers of the block are adapted: output.dense needs its own A and B too."),
        Mistake(lambda *a: _ffn(*a, approximate="tanh"),
                "BERT's feed-forward GELU is the exact one (erf), F.gelu's default; the tanh approximation "
                "is GPT-2's."),
    ],
    what="your lora_ffn",
))


# =========================================================================== 2. merging into GPT-2's Conv1D
# weight (C_in, C_out): transformers' Conv1D layout (y = x W + b, GPT-2's c_attn, c_proj, c_fc);
# A (r, C_in), B (C_out, r) as peft stores them; alpha. The merged weight, still (C_in, C_out), is
# W + (alpha / r) (B A)^T = W + (alpha / r) A^T B^T.

def _peft_conv1d(weight: torch.Tensor, A: torch.Tensor, B: torch.Tensor, alpha: int) -> Any:
    """A module holding one ``transformers`` ``Conv1D`` with ``weight``, adapted by peft's LoRA
    (``fan_in_fan_out=True``, which peft needs for Conv1D) with ``A`` and ``B`` copied in."""
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = Conv1D(weight.shape[1], weight.shape[0])  # Conv1D(nf=C_out, nx=C_in)
            with torch.no_grad():
                self.layer.weight.copy_(weight)
                self.layer.bias.zero_()

    config = LoraConfig(r=int(A.shape[0]), lora_alpha=alpha, target_modules=["layer"], lora_dropout=0.0,
                        fan_in_fan_out=True)
    with warnings.catch_warnings():  # peft 0.21 reads a transformers attribute that 5.x renamed
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = get_peft_model(Block(), config)
    inner: Any = model.base_model.model
    layer: Any = inner.layer                    # peft's LoRA Linear wrapping the Conv1D
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(A)
        layer.lora_B["default"].weight.copy_(B)
    return model


def merge_lora_conv1d_reference(weight: torch.Tensor, A: torch.Tensor, B: torch.Tensor, alpha: int) -> torch.Tensor:
    """The weight of a ``Conv1D`` adapted by peft's LoRA after ``merge_and_unload`` (C_in, C_out)."""
    if weight.shape != (A.shape[1], B.shape[0]) or A.shape[0] != B.shape[1]:
        raise ValueError(f"weight {tuple(weight.shape)} must be (C_in, C_out) with A (r, C_in) = "
                         f"{tuple(A.shape)} and B (C_out, r) = {tuple(B.shape)}")
    merged: Any = _peft_conv1d(weight, A, B, alpha).merge_and_unload().layer
    return merged.weight.detach().clone()


def _merge_conv1d(weight, A, B, alpha, *, scale=lambda alpha, r: alpha / r, transpose=True,
                  linear_layout=False):
    update = scale(alpha, A.shape[0]) * (B @ A)                   # (C_out, C_in), nn.Linear's layout
    if linear_layout:                                              # the result in nn.Linear's layout
        return weight.T + update
    return weight + (update.T if transpose else update)


def _merge_conv1d_cases() -> list[Case]:
    def case(name, c_in, c_out, r, alpha):
        return Case(name, (torch.randn(c_in, c_out), torch.randn(r, c_in) / c_in ** 0.5,
                           torch.randn(c_out, r), alpha))

    c_in, c_out = draw(2, 24), draw(2, 24)
    return [case("square 12 x 12 (GPT-2's c_proj is square), rank 4, alpha 8", 12, 12, 4, 8),
            case("c_attn-like 16 -> 48 (3 x 16), rank 8, alpha 16", 16, 48, 8, 16),
            case("rank 1, alpha 4, 10 -> 6", 10, 6, 1, 4),
            case(f"a random layer {c_in} -> {c_out}, rank 2, alpha 6", c_in, c_out, 2, 6)]


merge_lora_conv1d = register(Checker(
    "merge_lora_conv1d", merge_lora_conv1d_reference, _merge_conv1d_cases,
    axes=("in_features", "out_features"), atol=1e-5, rtol=1e-5,
    mistakes=[
        Mistake(lambda *a: _merge_conv1d(*a, transpose=False),
                "B A is the update in nn.Linear's (C_out, C_in) layout; a Conv1D stores its weight "
                "transposed, (C_in, C_out), so add (B A)^T = A^T B^T. (On a square layer both have "
                "the right shape, only the values are wrong.)"),
        Mistake(lambda *a: _merge_conv1d(*a, linear_layout=True),
                "the merged weight stays in the Conv1D's (C_in, C_out) layout, the layout of `weight`: "
                "transpose the update, not the pretrained weight."),
        Mistake(lambda *a: _merge_conv1d(*a, scale=lambda alpha, r: 1.0),
                "the merged update is scaled like the forward pass's, by alpha / r (peft's `scaling`)."),
        Mistake(lambda *a: _merge_conv1d(*a, scale=lambda alpha, r: alpha),
                "the scaling is alpha / r with r = A.shape[0], not alpha."),
        Mistake(lambda *a: _merge_conv1d(*a, scale=lambda alpha, r: r / alpha),
                "the scaling is alpha / r, not r / alpha."),
    ],
    what="your merge_lora_conv1d",
))


# =========================================================================== 3. expected calibration error
# probs (N, K): predicted class probabilities; labels (N,). Confidence = max probability, prediction
# = its class. Bins: (0, 1/n], (1/n, 2/n], ..., ((n-1)/n, 1]. ECE = sum over bins of
# (share of predictions in the bin) x |accuracy in the bin - mean confidence in the bin|.

def expected_calibration_error_reference(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 10) -> float:
    """The expected calibration error, as a Python float."""
    return _ece(probs, labels, n_bins)


def _ece(probs, labels, n_bins=10, *, confidence_of_class_1=False, unweighted=False, left_closed=False,
         squared=False):
    probs = probs.double()
    confidence, prediction = probs.max(dim=-1)
    if confidence_of_class_1:
        confidence, prediction = probs[:, 1], (probs[:, 1] > 0.5).long()
    correct = (prediction == labels).double()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    gaps = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence >= lo) & (confidence < hi) if left_closed else (confidence > lo) & (confidence <= hi)
        if inside.any():
            gap = (correct[inside].mean() - confidence[inside].mean()).abs()
            gap = gap ** 2 if squared else gap
            gaps.append((inside.double().mean(), gap))
    if unweighted:
        return float(sum(g for _, g in gaps) / len(gaps))
    return float(sum(w * g for w, g in gaps))


def _ece_cases() -> list[Case]:
    def binary(n):
        z = torch.randn(n)
        p1 = torch.sigmoid(3 * z)                                # an over-confident model:
        probs = torch.stack([1 - p1, p1], dim=1)
        labels = (torch.rand(n) < torch.sigmoid(z)).long()       # the truth is less certain
        return probs, labels

    probs, labels = binary(200)
    edge_probs = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.3, 0.7], [0.7, 0.3], [0.4, 0.6], [0.45, 0.55]] * 5)
    edge_labels = torch.tensor([1, 1, 0, 0, 1, 1] * 5)
    three = F.softmax(torch.randn(150, 3) * 2, dim=-1)
    return [Case("200 binary predictions, 10 bins", (probs, labels)),
            Case("confidences exactly 1.0 and on bin edges, 5 bins", (edge_probs, edge_labels), {"n_bins": 5}),
            Case("3 classes, 15 bins", (three, torch.randint(0, 3, (150,))), {"n_bins": 15})]


expected_calibration_error = register(Checker(
    "expected_calibration_error", expected_calibration_error_reference, _ece_cases, atol=1e-6, rtol=1e-5,
    mistakes=[
        Mistake(lambda *a, **k: _ece(*a, **k, unweighted=True),
                "weight each bin by the share of predictions that fall in it (|B_m| / n): a plain mean "
                "over the bins lets a bin with one prediction count as much as a full one."),
        Mistake(lambda *a, **k: _ece(*a, **k, confidence_of_class_1=True),
                "the confidence is the probability of the *predicted* class (the largest), not of class 1."),
        Mistake(lambda *a, **k: _ece(*a, **k, left_closed=True),
                "the bins are right-closed, (lo, hi]: a confidence of exactly 1.0 belongs to the last bin "
                "(with [lo, hi) it falls in no bin)."),
        Mistake(lambda *a, **k: _ece(*a, **k, squared=True),
                "the gap in each bin is |accuracy - confidence|, not its square."),
    ],
    what="your expected_calibration_error",
))
