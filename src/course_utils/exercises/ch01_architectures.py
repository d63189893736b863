"""Checkers of Chapter 1 (Architectures: encoders, decoders, encoder-decoders).

* ``check.count_parameters(fn)``: ``fn(model: nn.Module) -> int`` returns the number of
  parameters of ``model``: every number in every parameter tensor, trainable or frozen,
  each tensor counted once even when two modules share it (GPT-2 ties its output layer to
  its token embedding), and no buffers (a causal mask, BatchNorm's running statistics are
  state, not parameters). For GPT-2 small this gives 124,439,808.

It is also the worked example of the checker framework (:mod:`.core`): the reference,
the deliberately wrong variants with their hints, and seeded cases built to tell those
variants apart (each mistake is wrong on at least one case that comes before the cases
where it might coincide with another).
"""
from __future__ import annotations

import torch
from torch import nn

from .core import Case, Checker, Mistake, register


def count_parameters_reference(model: nn.Module) -> int:
    """The course's solution: ``parameters()`` yields each (possibly shared) tensor once."""
    return sum(p.numel() for p in model.parameters())


class TinyTiedLM(nn.Module):
    """A GPT-style toy: token embedding, LayerNorm, output layer tied to the embedding."""

    def __init__(self, vocab: int = 11, d_model: int = 6) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, d_model)     # (V, C): 66 numbers
        self.ln_f = nn.LayerNorm(d_model)          # 2 x C: 12 numbers
        self.lm_head = nn.Linear(d_model, vocab, bias=False)
        self.lm_head.weight = self.wte.weight      # tied: the same tensor, counted once


class TinyMaskedBlock(nn.Module):
    """A layer with buffers: a causal mask and BatchNorm's running statistics."""

    def __init__(self, d_model: int = 4, max_len: int = 5) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)    # 20 numbers
        self.norm = nn.BatchNorm1d(d_model)        # 8 numbers + 3 buffers (4 + 4 + 1)
        self.register_buffer("causal_mask", torch.ones(max_len, max_len).tril())  # 25, not a parameter


def _frozen_model() -> nn.Module:
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))  # 20 + 12
    for p in model[0].parameters():
        p.requires_grad_(False)  # frozen, still parameters
    return model


def _cases() -> list[Case]:
    return [
        Case("one Linear(3, 4)", (nn.Linear(3, 4),)),
        Case("nested submodules", (nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.ReLU(), nn.Linear(3, 2))),)),
        Case("tied embedding and output weights", (TinyTiedLM(),)),
        Case("a module with buffers", (TinyMaskedBlock(),)),
        Case("partly frozen", (_frozen_model(),)),
        Case("no parameters at all", (nn.ReLU(),)),
    ]


# --- the classic mistakes, each a function with the student's signature -------------------

def _count_tensors(model):
    return len(list(model.parameters()))


def _not_recursive(model):
    return sum(p.numel() for p in model.parameters(recurse=False))


def _every_module(model):
    return sum(p.numel() for m in model.modules() for p in m.parameters())


def _tied_twice(model):
    return sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))


def _with_buffers(model):
    return sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())


def _trainable_only(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


count_parameters = register(Checker(
    "count_parameters", count_parameters_reference, _cases,
    mistakes=[
        Mistake(_count_tensors, "you counted parameter *tensors*; count the numbers in them: "
                                "`p.numel()` for each tensor."),
        Mistake(_not_recursive, "only the module's own parameters were counted: `parameters()` must "
                                "recurse into the submodules (the default, `recurse=True`)."),
        Mistake(_every_module, "`model.modules()` visits the model and every submodule, and "
                               "`m.parameters()` already recurses — each parameter is counted once per "
                               "ancestor. Call `model.parameters()` once."),
        Mistake(_tied_twice, "the tied weight was counted twice: `state_dict()` and "
                             "`named_parameters(remove_duplicate=False)` list a shared tensor under each of "
                             "its names (`wte.weight` and `lm_head.weight`); `model.parameters()` yields it once."),
        Mistake(_with_buffers, "buffers were counted: the causal mask and BatchNorm's running statistics "
                               "are state, not parameters. `state_dict()` contains them; "
                               "`model.parameters()` does not."),
        Mistake(_trainable_only, "frozen parameters (`requires_grad=False`) are parameters too: do not "
                                 "filter on `p.requires_grad` unless asked for the *trainable* count."),
    ],
))


# --- check.gpt2_parameter_count: the parameter count of GPT-2 from its hyper-parameters -------
#
# ``fn(n_layer, n_embd, vocab_size, n_positions) -> int``: the exact number of parameters of
# ``GPT2LMHeadModel`` with that config (tied output layer, biases and LayerNorms included).

def gpt2_parameter_count_reference(n_layer: int, n_embd: int, vocab_size: int, n_positions: int) -> int:
    """wte + wpe + n_layer blocks of (12 C^2 + 13 C) + the final LayerNorm; lm_head is tied."""
    C = n_embd
    return vocab_size * C + n_positions * C + n_layer * (12 * C * C + 13 * C) + 2 * C


def _formula_cases() -> list[Case]:
    return [
        Case("GPT-2 small (12 layers, C=768)", (12, 768, 50257, 1024)),
        Case("GPT-2 medium (24 layers, C=1024)", (24, 1024, 50257, 1024)),
        Case("a toy (2 layers, C=8, 11 tokens, 5 positions)", (2, 8, 11, 5)),
        Case("no blocks at all", (0, 4, 7, 3)),
    ]


def _untied_head(L, C, V, P):
    return gpt2_parameter_count_reference(L, C, V, P) + V * C


def _no_biases(L, C, V, P):
    return V * C + P * C + L * (12 * C * C + 4 * C) + 2 * C


def _no_layernorms(L, C, V, P):
    return V * C + P * C + L * (12 * C * C + 9 * C)


def _no_positions(L, C, V, P):
    return gpt2_parameter_count_reference(L, C, V, P) - P * C


def _mlp_not_widened(L, C, V, P):
    return V * C + P * C + L * (6 * C * C + 10 * C) + 2 * C


gpt2_parameter_count = register(Checker(
    "gpt2_parameter_count", gpt2_parameter_count_reference, _formula_cases,
    mistakes=[
        Mistake(_untied_head, "you counted `lm_head` as a separate V x C matrix: in GPT-2 it *is* the token "
                              "embedding `wte` (weight tying), so it adds nothing."),
        Mistake(_no_biases, "the biases are missing: c_attn (3C), attention c_proj (C), c_fc (4C) and "
                            "mlp c_proj (C) each have one."),
        Mistake(_no_layernorms, "the LayerNorms are missing: ln_1 and ln_2 in every block and ln_f at the end, "
                                "each with a weight and a bias of size C."),
        Mistake(_no_positions, "the learned position embedding `wpe` (n_positions x C) is missing."),
        Mistake(_mlp_not_widened, "the MLP widens to 4C: c_fc is C x 4C and its c_proj is 4C x C, "
                                  "8 C^2 weights per block."),
    ],
))
