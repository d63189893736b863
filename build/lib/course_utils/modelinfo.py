"""Counting and grouping a model's parameters (Chapter 1; reused by Chapter 3).

Parameters are counted once even when shared (GPT-2 and BART tie the output projection
to the token embedding), exactly as ``sum(p.numel() for p in model.parameters())`` does.
"""
from __future__ import annotations

import re
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    import pandas as pd

#: Component of a parameter, decided from its name (first matching rule wins).
#: The names are those of the Hugging Face checkpoints of BERT, GPT-2 and BART.
COMPONENT_RULES: list[tuple[str, str]] = [
    (r"(layernorm|layer_norm|ln_\d|ln_f|LayerNorm)", "norms"),
    (r"(embed|wte|wpe|shared)", "embeddings"),
    (r"(attn|attention|self_attn|encoder_attn)", "attention"),
    (r"(mlp|intermediate|output\.dense|fc1|fc2|c_fc)", "MLP"),
    (r"(pooler|lm_head|cls\.|classifier|qa_outputs|final_logits_bias)", "heads"),
]

#: The components in the order tables and plots list them.
COMPONENTS = ["embeddings", "attention", "MLP", "norms", "heads", "other"]


def component_of(name: str) -> str:
    """The component (embeddings, attention, MLP, norms, heads or other) of a parameter name."""
    for pattern, component in COMPONENT_RULES:
        if re.search(pattern, name):
            return component
    return "other"


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters, each shared tensor counted once: the course's one parameter count
    (``GPT.num_parameters``, the families table, the zoo's cards and the Chapter 1 checker call it)."""
    return sum(p.numel() for p in model.parameters())


def parameter_breakdown(model: torch.nn.Module) -> pd.Series:
    """Parameters per component, each shared tensor counted once; sums to :func:`count_parameters`."""
    import pandas as pd

    totals: dict[str, int] = {}
    for name, p in model.named_parameters():  # named_parameters() skips tied duplicates
        comp = component_of(name)
        totals[comp] = totals.get(comp, 0) + p.numel()
    return pd.Series({k: totals[k] for k in COMPONENTS if k in totals}, name="parameters", dtype="int64")


def tied_parameters(model: torch.nn.Module) -> list[list[str]]:
    """Groups of parameter names that are the same tensor (e.g. GPT-2's lm_head and wte)."""
    groups: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(name)
    return [names for names in groups.values() if len(names) > 1]
