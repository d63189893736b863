"""Run Chapter 7's tagged cells in a namespace, so tests check the code the reader reads."""
from __future__ import annotations

import itertools
import math
import sys
import types
from pathlib import Path

import nbformat
import torch
import torch.nn.functional as F
from torch import nn

from course_utils.attention import causal_mask, merge_heads, padding_mask, scaled_dot_product_attention, split_heads
from course_utils.positions import sinusoidal_positions

_COUNTER = itertools.count()
CHAPTER = Path(__file__).resolve().parent.parent / "chapters" / "07_encoder_decoders_positions_families.ipynb"


def chapter_namespace(*tags: str) -> dict:
    """Execute the cells carrying ``tags`` (in this order) with the chapter's imports; return the names."""
    nb = nbformat.read(CHAPTER, as_version=4)
    # A real module, so that @dataclass (which looks its module up in sys.modules) works in the cells.
    module = types.ModuleType(f"ch07_cells_{next(_COUNTER)}")
    sys.modules[module.__name__] = module
    namespace = module.__dict__
    namespace.update({"math": math, "torch": torch, "nn": nn, "F": F, "causal_mask": causal_mask,
                 "merge_heads": merge_heads, "padding_mask": padding_mask, "split_heads": split_heads,
                 "scaled_dot_product_attention": scaled_dot_product_attention,
                 "sinusoidal_positions": sinusoidal_positions})
    for tag in tags:
        sources = [c.source for c in nb.cells if tag in c.metadata.get("tags", [])]
        assert len(sources) == 1, f"chapter 7 must have exactly one cell tagged {tag}"
        exec(compile(sources[0], f"{CHAPTER.name}[{tag}]", "exec"), namespace)
    return namespace
