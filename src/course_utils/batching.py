"""Batches from token ids: packing into fixed blocks, dynamic padding, and what padding costs.

* :func:`token_ids`: a corpus's token ids, computed once per process;
* :func:`pack_ids` / :func:`pack`: concatenate (tokenised) texts and cut them into blocks, with
  no padding at all;
* :func:`pad_batch`: pad a batch to its own longest sequence (right for training, left for
  batched generation);
* :func:`padding_waste`: how many of the positions a batching recipe (:data:`RECIPES`) computes
  are padding.

The corpora themselves come from :mod:`course_utils.data`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch


class _Memo:
    """Token ids already computed in this process (see :func:`token_ids`), a few corpora at most.
    An object, not a module-level dict: the zoo's cache key hashes the tables its training code
    reads (``zoo.code_that_trains``), and this one's contents change as the process runs."""

    def __init__(self) -> None:
        self.ids: dict[tuple[Any, ...], list[list[int]]] = {}


_TOKENIZED = _Memo()


def token_ids(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """The ids of each text, without special tokens (``tokenizer(texts)["input_ids"]``), computed
    once per process for the same tokenizer (class, name, size) and the same texts.

    A zoo model's training tokenizes its corpus for the blocks, the unigram baseline and the
    probes: once instead of two or three times (about ten seconds each for the books on one
    thread). The lists are shared: read them, don't change them.
    """
    texts = list(texts)
    key = (type(tokenizer).__name__, getattr(tokenizer, "name_or_path", ""), len(tokenizer),
           len(texts), hash(tuple(texts)))
    ids = _TOKENIZED.ids.get(key)
    if ids is None:
        if len(_TOKENIZED.ids) >= 4:   # bounded: a corpus's ids are ~100 MB of Python lists
            _TOKENIZED.ids.clear()
        ids = _TOKENIZED.ids[key] = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    return ids


def pack_ids(sequences: Iterable[Sequence[int]], block_size: int, sep_id: int | None = None,
             drop_last: bool = True) -> torch.Tensor:
    """Concatenate token-id sequences (``sep_id`` after each, if given) and cut into blocks.

    Returns a ``LongTensor`` of shape ``(n_blocks, block_size)``. With ``drop_last`` the
    incomplete tail is dropped (no padding at all); otherwise it is kept only if complete.
    Example: ``pack_ids([[1, 2, 3], [4, 5]], 3, sep_id=0)`` -> ``[[1, 2, 3], [0, 4, 5]]``
    (the final separator is the dropped tail).
    """
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    flat: list[int] = []
    for seq in sequences:
        flat.extend(int(t) for t in seq)
        if sep_id is not None:
            flat.append(sep_id)
    n = len(flat) // block_size
    if n == 0 and not drop_last and flat:
        raise ValueError(f"Only {len(flat)} tokens: fewer than one block of {block_size}.")
    return torch.tensor(flat[: n * block_size], dtype=torch.long).view(n, block_size)  # (N, T)


def pack(texts: Iterable[str], tokenizer: Any, block_size: int, *, add_separator: bool = True) -> torch.Tensor:
    """Tokenise ``texts`` and pack them into ``(n_blocks, block_size)`` blocks of token ids.

    The separator is the tokenizer's EOS token (GPT-2's ``<|endoftext|>``) or, failing that,
    its SEP token. Special tokens such as BERT's [CLS] are not added per text.
    """
    texts = list(texts)
    if texts and not isinstance(texts[0], str):
        raise TypeError(f"pack expects an iterable of str, got {type(texts[0]).__name__}")
    sep = None
    if add_separator:
        sep = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
    ids = token_ids(tokenizer, texts) if texts else []
    return pack_ids(ids, block_size, sep)


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int, *, multiple_of: int | None = None,
              max_length: int | None = None, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic padding: pad a batch only to its own longest sequence.

    Returns ``(input_ids, attention_mask)``, both ``(B, T)`` LongTensors, where ``T`` is the
    longest length (rounded up to ``multiple_of``; sequences longer than ``max_length`` are
    truncated). ``side`` is ``"right"`` (BERT, training) or ``"left"`` (batched generation).
    """
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    if len(sequences) == 0:
        raise ValueError("pad_batch needs at least one sequence")
    seqs = [list(s)[:max_length] if max_length else list(s) for s in sequences]
    T = max(len(s) for s in seqs)
    if multiple_of:
        T = -(-T // multiple_of) * multiple_of
        if max_length:
            T = min(T, max_length)
    ids = torch.full((len(seqs), T), pad_id, dtype=torch.long)       # (B, T)
    mask = torch.zeros((len(seqs), T), dtype=torch.long)              # (B, T)
    for b, s in enumerate(seqs):
        if not s:
            continue
        if side == "right":
            ids[b, : len(s)] = torch.tensor(s)
            mask[b, : len(s)] = 1
        else:
            ids[b, T - len(s):] = torch.tensor(s)
            mask[b, T - len(s):] = 1
    return ids, mask


@dataclass(frozen=True)
class PaddingReport:
    """How many of the positions a batching recipe computes are padding."""

    recipe: str
    real_tokens: int
    total_positions: int
    n_batches: int

    @property
    def padding(self) -> int:
        return self.total_positions - self.real_tokens

    @property
    def waste(self) -> float:
        """Fraction of positions that are padding."""
        return self.padding / self.total_positions if self.total_positions else 0.0

    def __str__(self) -> str:
        return (f"{self.recipe}: {self.real_tokens:,} tokens in {self.total_positions:,} positions "
                f"({self.n_batches} batches) -> {self.waste:.1%} padding")


RECIPES = ("max_length", "dynamic", "sorted", "packed")


def padding_waste(lengths: Sequence[int], batch_size: int, recipe: str = "dynamic", *,
                  max_length: int | None = None) -> PaddingReport:
    """The padding waste of batching sequences of the given ``lengths``.

    Recipes: ``"max_length"`` pads every sequence to ``max_length`` (default: the longest);
    ``"dynamic"`` pads each batch (in the given order) to its own longest; ``"sorted"`` sorts by
    length first, then pads dynamically (length bucketing); ``"packed"`` concatenates everything
    into blocks of ``max_length`` and pads only the last block. Lengths above ``max_length`` are
    truncated to it.
    """
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    lengths = [int(n) for n in lengths]
    if any(n < 0 for n in lengths):
        raise ValueError("lengths must be non-negative")
    if not lengths:
        return PaddingReport(recipe, 0, 0, 0)
    cap = max_length or max(lengths)
    lengths = [min(n, cap) for n in lengths]
    real = sum(lengths)
    if recipe == "packed":
        blocks = -(-real // cap)
        return PaddingReport(recipe, real, blocks * cap, -(-blocks // batch_size))
    if recipe == "sorted":
        lengths = sorted(lengths)
    batches = [lengths[i:i + batch_size] for i in range(0, len(lengths), batch_size)]
    if recipe == "max_length":
        total = sum(len(b) * cap for b in batches)
    else:
        total = sum(len(b) * max(b) for b in batches)
    return PaddingReport(recipe, real, total, len(batches))
