"""``gpt2-course``'s training and validation blocks: packed token ids, inputs and shifted targets."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .. import batching as _batching
from .. import corpus as _corpus
from .. import data as _data
from .specs import ZooSpec

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

#: How many validation blocks score ``gpt2-course`` (evenly spaced through the held-out documents).
PROSE_VAL_BLOCKS = 128


def gpt2_blocks(texts: list[str], tok: PreTrainedTokenizerBase, s: ZooSpec) -> torch.Tensor:
    """``texts`` packed into blocks of ``s.block_size + 1`` ids (N, T+1): inputs and shifted targets."""
    return _batching.pack(texts, tok, s.block_size + 1)


def prose_blocks(tok: PreTrainedTokenizerBase, s: ZooSpec, split: str,
                 books: _data.Corpus | None = None) -> torch.Tensor:
    """``gpt2-course``'s packed blocks (N, T+1) of a split of :func:`course_utils.corpus.load_books`
    (``"validation"``: :data:`PROSE_VAL_BLOCKS` of them, evenly spaced through the split)."""
    books = books if books is not None else _corpus.load_books()
    blocks = gpt2_blocks(books[split], tok, s)
    if split == "validation":
        blocks = blocks[torch.linspace(0, len(blocks) - 1, PROSE_VAL_BLOCKS).long()]
    return blocks
