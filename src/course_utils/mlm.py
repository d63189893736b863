"""Masked-language-model training (introduced in Chapter 5, "Training a BERT with MLM").

Chapter 5 writes the training code out in its cells (tagged ``ch05-loop``); this module holds the
same four functions for the rest of the course (the zoo trains ``bert-course`` with
:func:`train_mlm`), and ``tests/test_mlm.py`` runs the chapter's cells against them, so that the
page and the package cannot drift apart:

* :func:`pack_blocks` — concatenate tokenised passages and cut full blocks ``[CLS] ... [SEP]``;
* :func:`mask_tokens` — BERT's 80/10/10 rule;
* :func:`mlm_loss` — the encoder, then the MLM head only at the masked positions, optionally
  only over the vocabulary rows the corpus uses;
* :func:`train_mlm` — the loop: AdamW, warm-up and cosine decay, gradient clipping, optional
  bf16 autocast, a callback for evaluation (its time is not counted).

Around them: the seed's recipe with the ``Trainer`` (:func:`train_seed_recipe`, cached by
:func:`cached_seed_run`), the fixed validation set scored over all 30,522 ids
(:func:`make_validation_set`, :func:`evaluate`, :func:`unigram_loss`), the cost of padding
(:func:`measure_waste`), FLOPs and MFU (:func:`flops_per_token`, :func:`peak_flops`), fill-mask
probes, and quiet progress bars (:func:`show_progress`).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence, TypeVar

import torch
import torch.nn.functional as F

from .batching import PaddingReport, pack_ids, pad_batch, padding_waste, token_ids
from .runtime import progress_bar as progress_bar_
from .runtime import show_progress as show_progress  # re-exported: Chapter 5 calls mlm.show_progress()
from .runtime import synchronize
from .training import evaluation_mode, lr_at, param_groups

if TYPE_CHECKING:
    from transformers import BertForMaskedLM, TrainerControl, TrainerState, TrainingArguments

_T = TypeVar("_T")

#: The seed's model: hidden 128, 2 layers, 4 heads, intermediate 512, 128 positions, the
#: bert-base-uncased vocabulary (30,522 WordPieces).
SEED_CONFIG: dict[str, int] = dict(vocab_size=30522, hidden_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=512,
                                   max_position_embeddings=128)
MAX_LENGTH = 128
IGNORE = -100            #: label of positions that are not predicted (PyTorch's cross-entropy default)
UNUSED_LOGIT = -30.0     #: output bias (or logit) of ids a restricted-vocabulary run never predicts; the zoo's too
VAL_MAX_LENGTH = 64      #: validation passages are cut to 64 tokens: every model here knows those positions


# ---------------------------------------------------------------------------------------------
# Progress bars: for a person, not for a recorded run
# ---------------------------------------------------------------------------------------------

# One policy, the course's (:func:`course_utils.runtime.show_progress`); Chapter 5's cells call it
# through this module.


def progress_bar(iterable: Iterable[_T], *, desc: str, total: int | None = None,
                 enabled: bool = True) -> Iterable[_T]:
    """Chapter 5's spelling of :func:`course_utils.runtime.progress_bar`: a bar when ``enabled``
    (the caller asks :func:`show_progress`), the bare iterable otherwise."""
    if not enabled:
        return iterable
    return progress_bar_(iterable, desc=desc, total=total, disable=False)


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------

def build_model(seed: int = 0, **overrides: Any) -> BertForMaskedLM:
    """A freshly initialised ``BertForMaskedLM`` with :data:`SEED_CONFIG` (plus ``overrides``).

    The output projection is tied to the input embeddings (``tie_word_embeddings``, the
    library's default): one 30,522 x C matrix serves both.
    """
    from transformers import BertConfig, BertForMaskedLM

    cfg = BertConfig(**{**SEED_CONFIG, **overrides})
    torch.manual_seed(seed)
    return BertForMaskedLM(cfg)


# ---------------------------------------------------------------------------------------------
# The training code of the chapter (its cells tagged ch05-loop hold the same four functions)
# ---------------------------------------------------------------------------------------------

def pack_blocks(passages: Sequence[Sequence[int]], block_size: int, cls_id: int, sep_id: int,
                end_id: int | None = None) -> torch.Tensor:
    """Concatenate token-id passages with ``sep_id`` after each and cut the stream into full
    blocks ``cls_id ... end_id`` (``end_id`` defaults to ``sep_id``) of ``block_size`` ids.

    No position is padding; only the incomplete tail is dropped. Returns ``(N, T)``.
    (The zoo packs per-token annotations the same way, with other marker values.)
    """
    if block_size < 3:
        raise ValueError(f"block_size must be at least 3 ([CLS], a token, [SEP]), got {block_size}")
    end_id = sep_id if end_id is None else end_id
    body = pack_ids(passages, block_size - 2, sep_id)                               # (N, T-2)
    n = body.size(0)
    return torch.cat([torch.full((n, 1), cls_id), body, torch.full((n, 1), end_id)], dim=1)  # (N, T)


def mask_tokens(ids: torch.Tensor, *, mask_id: int, vocab_size: int, special_ids: Sequence[int],
                p: float = 0.15, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking rule: select ``p`` of the ordinary tokens; of those, 80 % become
    ``mask_id``, 10 % a random id, 10 % stay as they are.

    One uniform number ``u`` per position decides everything: selected where ``u < p``; [MASK]
    where ``u < 0.8 p``; random where ``0.8 p <= u < 0.9 p``. Returns ``(inputs, labels)``, both
    ``(B, T)``: ``labels`` is the original id at selected positions and :data:`IGNORE` elsewhere.
    ``special_ids`` ([CLS], [SEP], [PAD], ...) are never selected.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if ids.dtype != torch.long:
        raise TypeError(f"ids must be a LongTensor of token ids, got {ids.dtype}")
    u = torch.rand(ids.shape, generator=generator)                              # (B, T)
    random_ids = torch.randint(vocab_size, ids.shape, generator=generator)      # (B, T)
    selected = (u < p) & ~torch.isin(ids, torch.tensor(list(special_ids)))
    labels = ids.masked_fill(~selected, IGNORE)
    inputs = replace_selected(ids, selected, u, mask_id=mask_id, random_ids=random_ids,
                              mask_below=0.8 * p, random_below=0.9 * p)
    return inputs, labels


def replace_selected(ids: torch.Tensor, selected: torch.Tensor, r: torch.Tensor, *, mask_id: int,
                     random_ids: torch.Tensor | Callable[[int], torch.Tensor], mask_below: float = 0.8,
                     random_below: float = 0.9) -> torch.Tensor:
    """BERT's 80/10/10 step, the one copy of it: the ``selected`` positions of ``ids`` (B, T)
    become ``mask_id`` where ``r < mask_below``, a random id where ``mask_below <= r <
    random_below``, and stay as they are elsewhere (``r``: (B, T) uniform draws).

    The variant is explicit in ``random_ids``: a (B, T) tensor of candidates, one per position
    (:func:`mask_tokens` draws them from the whole vocabulary), or a function ``n -> (n,) ids``
    called once with the number of random positions (the zoo's whole-word masking draws them
    from the batch's own tokens, so a rare id is as rare as in the text).
    """
    inputs = ids.masked_fill(selected & (r < mask_below), mask_id)              # 80 %: [MASK]
    random_pos = selected & (r >= mask_below) & (r < random_below)              # 10 %: random
    if callable(random_ids):
        inputs[random_pos] = random_ids(int(random_pos.sum()))
    else:
        inputs = torch.where(random_pos, random_ids, inputs)
    return inputs                                                               # 10 %: unchanged


def mlm_loss(model: BertForMaskedLM, inputs: torch.Tensor, labels: torch.Tensor, *,
             attention_mask: torch.Tensor | None = None, sparse: bool = True,
             vocab: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy of a ``BertForMaskedLM`` at the positions where ``labels`` is not
    :data:`IGNORE`.

    ``sparse=True`` applies the head only at those positions (``sparse=False``: at every
    position, as ``BertForMaskedLM.forward`` does; same loss, more work). ``vocab``: the sorted
    ids the corpus uses; the logits are computed for those rows only, which equals the full
    softmax when every other id has a logit far below (:func:`train_mlm` sets their bias to
    :data:`UNUSED_LOGIT`).
    """
    hidden = model.bert(input_ids=inputs, attention_mask=attention_mask).last_hidden_state   # (B, T, C)
    if sparse:
        keep = labels != IGNORE                                                 # (B, T)
        hidden, labels = hidden[keep], labels[keep]                             # (M, C), (M,)
    head = model.cls.predictions
    h = head.transform(hidden)                                                  # (..., C)
    weight: torch.Tensor = head.decoder.weight                                  # (V, C) tied to the input embeddings
    bias: torch.Tensor = head.bias                                              # (V,)
    if vocab is not None:
        weight, bias = weight[vocab], bias[vocab]                               # (U, C), (U,)
        labels = torch.where(labels == IGNORE, labels, torch.searchsorted(vocab, labels))  # id -> row of vocab
    logits = h @ weight.T + bias                                                # (..., V) or (..., U)
    return F.cross_entropy(logits.flatten(0, -2).float(), labels.flatten())


def train_mlm(model: BertForMaskedLM, tokenizer: Any, blocks: torch.Tensor, *, steps: int, lr: float,
              batch_size: int = 32, warmup: int = 100, min_lr_ratio: float = 0.1,
              attention_mask: torch.Tensor | None = None, sparse: bool = True,
              vocab: torch.Tensor | None = None, masker: Callable | None = None, bf16: bool = False,
              weight_decay: float = 0.01, grad_clip: float = 1.0, seed: int = 0,
              callback: Callable[[int, float], bool] | None = None, every: int = 50,
              progress: bool = False) -> tuple[list[float], float]:
    """Train ``model`` (a ``BertForMaskedLM``) by masked-language modelling on ``blocks`` (N, T).

    Each step draws ``batch_size`` rows, masks them (``masker(rows, generator) -> (inputs,
    labels)``, default :func:`mask_tokens`), sets the learning rate (linear warm-up over
    ``warmup`` steps, cosine decay to ``min_lr_ratio * lr`` at ``steps``), takes one AdamW step on
    :func:`mlm_loss` with the gradient norm clipped to ``grad_clip``. Every ``every`` steps and at
    the end, ``callback(step, seconds)`` runs (eval mode, no gradients, its time not counted) and
    may return True to stop. Returns the loss of every step and the training seconds.
    """
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    if masker is None:
        def masker(rows: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            return mask_tokens(blocks[rows], mask_id=tokenizer.mask_token_id, vocab_size=len(tokenizer),
                               special_ids=tokenizer.all_special_ids, generator=gen)
    # ids the corpus never uses get a fixed, very low logit: the model stays a full-vocabulary one
    if vocab is not None:
        with torch.no_grad():
            unused = torch.ones_like(model.cls.predictions.bias, dtype=torch.bool)
            unused[vocab] = False
            model.cls.predictions.bias[unused] = UNUSED_LOGIT
        vocab = vocab.to(device)
    opt = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.95), eps=1e-8)
    losses, seconds = [], 0.0
    model.train()
    for step in progress_bar(range(steps), desc="training", enabled=progress):
        start = time.perf_counter()
        rows = torch.randint(len(blocks), (batch_size,), generator=gen)        # (B,)
        inputs, labels = masker(rows, gen)                                      # (B, T), (B, T)
        att = None if attention_mask is None else attention_mask[rows].to(device)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, lr=lr, warmup=warmup, steps=steps, min_ratio=min_lr_ratio)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = mlm_loss(model, inputs.to(device), labels.to(device), attention_mask=att,
                            sparse=sparse, vocab=vocab)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"loss became {losses[-1]} at step {step}; lower the learning rate")
        seconds += time.perf_counter() - start
        if callback is not None and ((every and (step + 1) % every == 0) or step + 1 == steps):
            model.eval()
            with torch.no_grad():
                stop = callback(step + 1, seconds)
            model.train()
            if stop:
                break
    model.eval()
    return losses, seconds


def sparse_mlm_loss(hidden: torch.Tensor, labels: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor],
                    reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of ``head`` applied only at the predicted positions (the reference of the
    chapter's second exercise). ``hidden``: ``(B, T, C)``; ``labels``: ``(B, T)``; ``head``:
    ``(N, C) -> (N, V)``."""
    selected = labels != IGNORE                          # (B, T)
    logits = head(hidden[selected])                      # (N, V), N = number of masked tokens
    return F.cross_entropy(logits.float(), labels[selected], reduction=reduction)


# ---------------------------------------------------------------------------------------------
# Data: the seed's padded lines, the packed blocks, and what padding costs
# ---------------------------------------------------------------------------------------------

@dataclass
class Blocks:
    """Training rows: ``input_ids`` and ``attention_mask``, both ``(N, T)``."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.size(0)

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())


def padded_lines(tokenizer: Any, texts: Sequence[str], max_length: int = MAX_LENGTH) -> Blocks:
    """The seed's data: every line tokenised and padded (or truncated) to ``max_length``."""
    enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length,
                    return_tensors="pt")
    return Blocks(enc["input_ids"], enc["attention_mask"])


def packed_blocks(tokenizer: Any, texts: Sequence[str], block_size: int = MAX_LENGTH) -> Blocks:
    """:func:`pack_blocks` of the non-empty ``texts`` (tokenised without special tokens)."""
    ids = token_ids(tokenizer, [t for t in texts if t.strip()])    # computed once a process
    blocks = pack_blocks(ids, block_size, tokenizer.cls_token_id, tokenizer.sep_token_id)   # (N, T)
    return Blocks(blocks, torch.ones_like(blocks))


@dataclass(frozen=True)
class Waste:
    """What the seed's ``padding="max_length"`` costs on a list of lines: the padding itself
    (:func:`course_utils.batching.padding_waste`'s ``"max_length"`` recipe, the one definition),
    plus what only lines of text have: empty lines and truncated tokens."""

    lines: int
    empty_lines: int           #: lines with no text at all
    truncated_tokens: int      #: tokens cut off lines longer than max_length
    truncated_lines: int
    padding: PaddingReport     #: real tokens (with [CLS]/[SEP], after truncation) in lines x max_length

    @property
    def real_tokens(self) -> int:
        return self.padding.real_tokens

    @property
    def positions(self) -> int:
        return self.padding.total_positions

    @property
    def padding_fraction(self) -> float:
        return self.padding.waste

    @property
    def empty_fraction(self) -> float:
        return self.empty_lines / self.lines

    @property
    def truncated_fraction(self) -> float:
        """Fraction of all tokens that truncation throws away."""
        return self.truncated_tokens / (self.real_tokens + self.truncated_tokens)


def measure_waste(tokenizer: Any, texts: Sequence[str], max_length: int = MAX_LENGTH) -> Waste:
    """Padding, empty lines and truncation of padding every line to ``max_length``."""
    lengths = [len(ids) for ids in tokenizer(list(texts), add_special_tokens=True, verbose=False)["input_ids"]]
    return Waste(lines=len(texts), empty_lines=sum(1 for t in texts if not t.strip()),
                 truncated_tokens=sum(max(0, n - max_length) for n in lengths),
                 truncated_lines=sum(1 for n in lengths if n > max_length),
                 padding=padding_waste(lengths, 1, "max_length", max_length=max_length))


# ---------------------------------------------------------------------------------------------
# The fixed validation set, scored over the full vocabulary
# ---------------------------------------------------------------------------------------------

@dataclass
class ValidationSet:
    """A fixed, pre-masked held-out set: the same tokens and the same masks for every model."""

    batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  #: (ids, attention, labels)
    n_texts: int
    n_masked: int


def make_validation_set(tokenizer: Any, texts: Sequence[str], *, max_texts: int = 400,
                        max_length: int = VAL_MAX_LENGTH, batch_size: int = 64,
                        seed: int = 1234, mask_only: bool = False) -> ValidationSet:
    """The first ``max_texts`` non-empty held-out texts, each ``[CLS] text [SEP]`` cut to
    ``max_length`` tokens, sorted by length, dynamically padded and masked once (:func:`mask_tokens`,
    seeded): every model is scored on the same tokens and masks. ``mask_only``: every selected
    position becomes [MASK] (a fill-in-the-blank probe) instead of BERT's 80/10/10."""
    texts = [t for t in texts if t.strip()][:max_texts]
    if not texts:
        raise ValueError("make_validation_set needs at least one non-empty text")
    ids = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
    ids.sort(key=len)
    gen = torch.Generator().manual_seed(seed)
    batches, n_masked = [], 0
    for i in range(0, len(ids), batch_size):
        x, att = pad_batch(ids[i:i + batch_size], tokenizer.pad_token_id)                # (B, T)
        inputs, labels = mask_tokens(x, mask_id=tokenizer.mask_token_id, vocab_size=len(tokenizer),
                                     special_ids=tokenizer.all_special_ids, generator=gen)
        if mask_only:
            inputs = x.masked_fill(labels != IGNORE, tokenizer.mask_token_id)
        batches.append((inputs, att, labels))
        n_masked += int((labels != IGNORE).sum())
    return ValidationSet(batches, len(texts), n_masked)


def prose_validation_set(tokenizer: Any, books: Any, max_length: int = VAL_MAX_LENGTH) -> ValidationSet:
    """Chapter 5's fixed validation set on real prose: 400 passages of at least 8 words spread
    evenly over the validation books and addresses (:func:`course_utils.corpus.spread`), cut to
    64 tokens, masked once (seed 1234). The zoo's ``bert-course`` is scored on it while it trains."""
    from .corpus import spread

    return make_validation_set(tokenizer, spread(books["validation"], 400, min_words=8), max_length=max_length)


def probe_set(tokenizer: Any, books: Any, max_length: int = VAL_MAX_LENGTH) -> ValidationSet:
    """Chapter 5's probes: 400 passages of the *test* books and addresses (never trained on, never
    used to choose anything), 15 % of their tokens replaced by [MASK] (seed 4321)."""
    from .corpus import spread

    return make_validation_set(tokenizer, spread(books["test"], 400, min_words=8), seed=4321,
                               mask_only=True, max_length=max_length)


def evaluate(model: BertForMaskedLM, val: ValidationSet) -> float:
    """Mean cross-entropy (nats) over every masked token of ``val``, with the softmax over all
    the model's output ids (30,522), whatever the model was trained with."""
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with evaluation_mode(model):
        for ids, att, labels in val.batches:
            n = int((labels != IGNORE).sum())
            loss = mlm_loss(model, ids.to(device), labels.to(device), attention_mask=att.to(device))
            total, count = total + float(loss) * n, count + n
    return total / max(count, 1)


def token_counts(tokenizer: Any, texts: Sequence[str]) -> torch.Tensor:
    """How often each of the tokenizer's ids occurs in ``texts`` (no special tokens): ``(V,)``."""
    counts = torch.zeros(len(tokenizer), dtype=torch.float64)
    # empty texts count nothing; left out, the list is packed_blocks's (the same ids, once)
    for ids in token_ids(tokenizer, [t for t in texts if t.strip()]):
        counts += torch.bincount(torch.tensor(ids, dtype=torch.long), minlength=len(tokenizer)).double()
    return counts


def unigram_nll(counts: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean cross-entropy (nats) of ``targets`` under the unigram model of ``counts`` ``(V,)``,
    add-one smoothed over the vocabulary: the course's one unigram baseline (Chapter 5's masked
    tokens here, the zoo's next tokens in :mod:`course_utils.zoo`)."""
    smoothed = counts.double() + 1
    logp = (smoothed / smoothed.sum()).log()
    return float(-logp[targets.flatten()].mean())


def unigram_loss(tokenizer: Any, train_texts: Sequence[str], val: ValidationSet) -> float:
    """The loss on ``val``'s masked tokens of a model that ignores the context and predicts the
    training text's token frequencies (:func:`unigram_nll`): the line a model must go below to
    show that it uses context."""
    labels = torch.cat([lab[lab != IGNORE] for _, _, lab in val.batches])
    return unigram_nll(token_counts(tokenizer, train_texts), labels)


def unigram_accuracy(counts: torch.Tensor, val: ValidationSet) -> float:
    """Top-1 accuracy at ``val``'s masked positions of the unigram model: it always answers the
    most frequent token of the training text (``counts``: :func:`token_counts`)."""
    labels = torch.cat([lab[lab != IGNORE] for _, _, lab in val.batches])
    return float((labels == int(counts.argmax())).double().mean())


def masked_predictions(model: BertForMaskedLM, val: ValidationSet, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` likeliest ids (full vocabulary) at every masked position of ``val``, in the
    order of the batches, and the right ids: ``(M, k)`` and ``(M,)``."""
    device = next(model.parameters()).device
    tops, labels = [], []
    with evaluation_mode(model):
        for ids, att, lab in val.batches:
            logits = model(input_ids=ids.to(device), attention_mask=att.to(device)).logits  # (B, T, V)
            keep = lab != IGNORE                                                      # (B, T)
            tops.append(logits[keep.to(device)].topk(k, dim=-1).indices.cpu())        # (M_b, k)
            labels.append(lab[keep])
    return torch.cat(tops), torch.cat(labels)


def masked_accuracy(model: BertForMaskedLM, val: ValidationSet, k: int = 5) -> tuple[float, float]:
    """Top-1 and top-``k`` accuracy of ``model`` at ``val``'s masked positions (full vocabulary)."""
    top, labels = masked_predictions(model, val, k)
    hits = top == labels.unsqueeze(1)                                                 # (M, k)
    return float(hits[:, 0].double().mean()), float(hits.any(1).double().mean())


# ---------------------------------------------------------------------------------------------
# Runs, FLOPs and the machine
# ---------------------------------------------------------------------------------------------

@dataclass
class Point:
    """One evaluation: training seconds so far (evaluation excluded), steps, tokens, loss."""

    seconds: float
    step: int
    tokens: int
    val_loss: float


@dataclass
class RunResult:
    """What one training run measured."""

    recipe: str
    curve: list[Point] = field(default_factory=list)
    steps: int = 0
    train_seconds: float = 0.0      #: training time only (evaluation excluded)
    real_tokens: int = 0            #: non-padding tokens seen
    positions: int = 0              #: positions computed (padding included)
    target: float | None = None
    time_to_target: float | None = None  #: training seconds when val loss first <= target
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        """Real (non-padding) tokens per training second."""
        return self.real_tokens / self.train_seconds if self.train_seconds else 0.0

    @property
    def final_val_loss(self) -> float:
        return self.curve[-1].val_loss if self.curve else math.nan

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tokens_per_second"] = self.tokens_per_second
        d["final_val_loss"] = self.final_val_loss
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunResult":
        keep = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        keep["curve"] = [Point(**p) for p in d.get("curve", [])]
        return cls(**keep)


class Clock:
    """Training time with evaluation excluded: ``pause()`` / ``resume()`` around evaluations; the
    device is synchronised at each, so queued GPU work is counted where it was started."""

    def __init__(self, device: torch.device | str = "cpu"):
        self._device, self._total = torch.device(device), 0.0
        self._start: float | None = None

    def resume(self) -> None:
        synchronize(self._device)
        self._start = time.perf_counter()

    def pause(self) -> None:
        synchronize(self._device)
        if self._start is not None:
            self._total += time.perf_counter() - self._start
            self._start = None

    @property
    def running(self) -> bool:
        return self._start is not None

    @property
    def seconds(self) -> float:
        running = time.perf_counter() - self._start if self._start is not None else 0.0
        return self._total + running


def flops_per_token(config: Any, seq_len: int = MAX_LENGTH, predicted_fraction: float = 0.15,
                    head_rows: int | None = None) -> float:
    """Useful training FLOPs per real token (forward + backward = 3 x forward, 2 FLOPs per
    multiply-add): the encoder's matrix products and attention (over ``seq_len`` positions) at
    every token, and the MLM head (the C x C transform and the C x ``head_rows`` output
    projection; default all ``vocab_size`` rows) at the ``predicted_fraction`` of tokens that are
    predicted. Padding and the head at unpredicted positions are not useful work; embedding
    look-ups are free.
    """
    C, L, I = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    V = config.vocab_size if head_rows is None else head_rows
    per_layer = 2 * (4 * C * C + 2 * C * I) + 2 * 2 * seq_len * C  # QKV+out, MLP; QK^T and AV
    head = 2 * (C * C + C * V)
    return 3.0 * (L * per_layer + predicted_fraction * head)


#: Dense peak FLOP/s of common accelerators (vendor data sheets; bf16 tensor cores, fp32).
_GPU_PEAKS = {"H200": (989e12, 67e12), "H100": (989e12, 67e12), "A100": (312e12, 19.5e12),
              "L4": (121e12, 30e12), "A10": (125e12, 31e12), "T4": (65e12, 8.1e12),
              "V100": (125e12, 15.7e12), "L40": (181e12, 90e12), "RTX 4090": (165e12, 82e12)}


def peak_flops(device: torch.device, bf16: bool, *, seconds: float = 1.0) -> tuple[float, str]:
    """(peak FLOP/s, how it was obtained): the denominator of MFU, one per precision.

    CUDA: the GPU's data-sheet number (dense). CPU: no data sheet is known for an arbitrary
    (virtual) CPU, so the best rate of a 1024 x 1024 matrix product in that precision, measured
    on the current thread count, stands in: an achievable peak (the theoretical one is higher).
    """
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, (half, single) in _GPU_PEAKS.items():
            if key in name:
                return (half if bf16 else single), f"{name} data sheet, {'bf16' if bf16 else 'fp32'} dense"
        return math.nan, f"{name}: peak unknown"
    dtype = torch.bfloat16 if bf16 else torch.float32
    n = 1024
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t0))
    kind = str(dtype).removeprefix("torch.")
    return best, f"best {n}x{n} {kind} matmul measured on {torch.get_num_threads()} CPU thread(s)"


def machine_description() -> str:
    """One line: CPU model and cores, or the GPU, plus torch's version."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    desc = f"{cpu}, {os.cpu_count()} CPU cores ({torch.get_num_threads()} torch threads)"
    if torch.cuda.is_available():
        desc = f"{torch.cuda.get_device_name(0)}; " + desc
    return f"{desc}; torch {torch.__version__}"


# ---------------------------------------------------------------------------------------------
# The seed recipe: the Trainer, padded lines, default learning rate
# ---------------------------------------------------------------------------------------------

def train_seed_recipe(tokenizer: Any, train_texts: Sequence[str], val: ValidationSet, *,
                      budget_seconds: float, eval_every_seconds: float, output_dir: str,
                      seed: int = 0, batch_size: int = 32, max_steps: int = -1,
                      target: float | None = None, progress: bool = False) -> tuple[BertForMaskedLM, RunResult]:
    """The seed's recipe with the ``Trainer``, stopped after ``budget_seconds`` of training (or
    when the validation loss reaches ``target``).

    Faithful to the seed: :data:`SEED_CONFIG`, ``padding="max_length"`` to 128,
    ``DataCollatorForLanguageModeling`` (15 %, 80/10/10), batch 32, ``TrainingArguments``'
    defaults (learning rate 5e-5, linear decay over 3 epochs, AdamW). A callback evaluates on
    ``val`` every ``eval_every_seconds`` of training (not counted). No log lines are printed; with
    ``progress`` a text bar shows the steps. Returns ``(model, result)``.
    """
    from datasets import Dataset, disable_progress_bars, enable_progress_bars
    from datasets.utils import are_progress_bars_disabled
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from transformers.utils.notebook import NotebookProgressCallback

    model = build_model(seed)
    device_is_cuda = torch.cuda.is_available()
    bars_were_off = are_progress_bars_disabled()
    disable_progress_bars()  # the tokenising map's bar
    try:
        ds = Dataset.from_dict({"text": list(train_texts)})
        ds = ds.map(lambda b: tokenizer(b["text"], padding="max_length", truncation=True,
                                        max_length=MAX_LENGTH, return_special_tokens_mask=True),
                    batched=True, remove_columns=["text"])
    finally:
        if not bars_were_off:  # restore, don't force: re-enabling warns when the environment disabled them
            enable_progress_bars()
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    result = RunResult("seed recipe (Trainer, padded to 128, lr 5e-5, batch 32)", target=target,
                       settings=dict(engine="Trainer", padding="max_length", lr=5e-5, batch_size=batch_size))
    clock = Clock("cuda" if device_is_cuda else "cpu")
    next_eval = {"at": eval_every_seconds}  # seconds of training time

    def record(step: int, m: BertForMaskedLM) -> float:
        loss = evaluate(m, val)
        result.curve.append(Point(clock.seconds, step, result.real_tokens, loss))
        if target is not None and loss <= target and result.time_to_target is None:
            result.time_to_target = clock.seconds
        return loss

    class BudgetCallback(TrainerCallback):
        def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                          **kwargs: Any) -> None:
            if not clock.running:
                clock.resume()

        def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                        **kwargs: Any) -> None:
            result.steps = state.global_step
            done = clock.seconds >= budget_seconds or (max_steps > 0 and state.global_step >= max_steps)
            if clock.seconds >= next_eval["at"] or done:
                clock.pause()
                record(state.global_step, kwargs["model"])
                next_eval["at"] = clock.seconds + eval_every_seconds
                if done or result.time_to_target is not None:
                    control.should_training_stop = True
                else:
                    clock.resume()

    class QuietProgress(ProgressCallback):
        """The step bar without the log dictionaries it would print."""

        def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                   logs: dict[str, float] | None = None, **kwargs: Any) -> None:
            pass

    class CountingTrainer(Trainer):
        """The stock Trainer; only counts the real tokens and positions each step sees."""

        def training_step(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor | Any],
                          num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
            result.real_tokens += int(inputs["attention_mask"].sum())
            result.positions += inputs["attention_mask"].numel()
            return super().training_step(model, inputs, num_items_in_batch)

    args = TrainingArguments(output_dir=output_dir, per_device_train_batch_size=batch_size,
                             logging_steps=10, save_strategy="no", report_to=[], seed=seed,
                             use_cpu=not device_is_cuda, disable_tqdm=True,
                             dataloader_num_workers=0, max_steps=-1, log_level="error")
    trainer = CountingTrainer(model=model, args=args, train_dataset=ds, data_collator=collator,
                              callbacks=[BudgetCallback()])
    for cb in (PrinterCallback, ProgressCallback, NotebookProgressCallback):
        trainer.remove_callback(cb)
    if progress:
        trainer.add_callback(QuietProgress)
    trainer.train()
    clock.pause()
    result.train_seconds = clock.seconds
    if not result.curve or result.curve[-1].step != result.steps:  # stopped by the epochs running out
        record(result.steps, model)
    model.eval()
    return model, result


def _source_hash(*objs: Any, extra: Any = None) -> str:
    h = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    for obj in objs:
        h.update(inspect.getsource(obj).encode())
    return h.hexdigest()[:16]


def cached_seed_run(tokenizer: Any, train_texts: Sequence[str], val: ValidationSet, *, budget_seconds: float,
                    eval_every_seconds: float, corpus_id: str, seed: int = 0,
                    progress: bool = False) -> tuple[BertForMaskedLM, RunResult]:
    """:func:`train_seed_recipe` for ``budget_seconds``, cached on disk like the zoo's models
    (``cache_dir() / "mlm-seed"``, keyed by the settings, ``corpus_id``, the validation set and the
    code): a second call loads the model and its curve instead of training again."""
    import tempfile

    from transformers import BertForMaskedLM

    from .assets import cache_dir, store_atomically

    key = _source_hash(train_seed_recipe, evaluate, mlm_loss, mask_tokens, build_model,
                       extra=[round(budget_seconds, 1), round(eval_every_seconds, 2), corpus_id, seed,
                              val.n_texts, val.n_masked, len(train_texts)])

    def train(tmp: Path) -> None:
        with tempfile.TemporaryDirectory() as out, torch.enable_grad():
            model, run = train_seed_recipe(tokenizer, train_texts, val, budget_seconds=budget_seconds,
                                           eval_every_seconds=eval_every_seconds, output_dir=out,
                                           seed=seed, progress=progress)
        model.save_pretrained(str(tmp))
        (tmp / "run.json").write_text(json.dumps(run.to_dict(), indent=1))  # written last

    def unfinished(folder: Path) -> str | None:
        return None if (folder / "run.json").is_file() else "run.json is missing"

    final = store_atomically(cache_dir() / "mlm-seed" / f"seed-recipe-{key}", train, problem=unfinished)
    model = BertForMaskedLM.from_pretrained(str(final)).eval()
    return model, RunResult.from_dict(json.loads((final / "run.json").read_text()))


def extrapolate_time_to_target(seconds: Sequence[float], losses: Sequence[float], target: float, *,
                               last: int = 8, draws: int = 4000,
                               seed: int = 0) -> tuple[float, tuple[float, float]] | None:
    """An *estimate* of when a loss curve that stopped above ``target`` would reach it: a straight
    line fitted to the loss against log-time over the ``last`` points of the curve, solved for
    ``target``, with a 90 % interval from ``draws`` samples of the fit's parameters (their
    covariance from ``numpy.polyfit``). Returns ``(estimate, (low, high))`` in seconds, or ``None``
    where the fitted loss does not fall with time (no crossing to extrapolate to).

    A log-time line is the kindest usual shape for a slow curve (a power law in time flattens
    faster): where the real curve bends towards a plateau, the true time is longer.
    """
    import numpy as np

    t = np.asarray(seconds, dtype=float)[-last:]
    y = np.asarray(losses, dtype=float)[-last:]
    keep = t > 0
    t, y = t[keep], y[keep]
    if len(t) < 3:
        raise ValueError(f"need at least 3 points with positive times to fit, got {len(t)}")
    (slope, intercept), cov = np.polyfit(np.log(t), y, 1, cov=True)
    if slope >= 0:
        return None
    estimate = float(np.exp((target - intercept) / slope))
    rng = np.random.default_rng(seed)
    a, b = rng.multivariate_normal([slope, intercept], cov, size=draws).T
    falling = a < 0
    if falling.mean() < 0.95:  # the fit cannot say that the curve falls at all
        return estimate, (estimate, math.inf)
    times = np.exp((target - b[falling]) / a[falling])
    low, high = np.quantile(times, [0.05, 0.95])
    return estimate, (float(max(low, t[-1])), float(high))


# ---------------------------------------------------------------------------------------------
# Probes
# ---------------------------------------------------------------------------------------------

def single_token_probes(tokenizer: Any, probes: Sequence[Any]) -> list[Any]:
    """The probes whose answer is one WordPiece (one [MASK] can then stand for it)."""
    return [p for p in probes if len(tokenizer.tokenize(p.answer)) == 1]


def probe_accuracy(fill_mask: Any, probes: Sequence[Any], mask_token: str = "[MASK]") -> float:
    """Fraction of ``probes`` whose answer is ``fill_mask``'s top prediction for the answer slot."""
    if not probes:
        raise ValueError("no probes given")
    texts = [p.masked(mask_token) for p in probes]
    outs = fill_mask(texts, top_k=1)
    hits = sum(o[0]["token_str"].strip().lower() == p.answer.lower() for o, p in zip(outs, probes))
    return hits / len(probes)


@dataclass(frozen=True)
class RecipeBenchmark:
    """What ``benchmarks/mlm_recipe.py`` measured, ready to show (Chapter 5 reads it)."""

    header: list[str]          #: where and how it was measured: machine, load, target, caps, peaks
    table: Any                 #: a pandas DataFrame: time to target, runs, tokens/s, MFU per recipe
    ratio: str                 #: "at least 48", "52" or "n/a"
    where: str                 #: machine and date
    did_not_help: list[str]    #: additions not faster than the base (cumulative rows: than the row before)


def read_recipe_benchmark(path: str | Path) -> RecipeBenchmark | None:
    """Read ``benchmarks/results/mlm_recipe.json``; ``None`` if there is no committed run."""
    import pandas as pd

    path = Path(path)
    bench = json.loads(path.read_text()) if path.exists() else {}
    if not bench.get("rows") or "ratio_is_lower_bound" not in bench:
        return None
    seed = bench["seed"]
    seed_time = (f"{seed['time_to_target']:.0f}" if seed["time_to_target"]
                 else f"> {seed['train_seconds']:.0f} (loss {seed['final_val_loss']:.2f})")
    rows = [{"change": "seed recipe (Trainer)", "time to target (s)": seed_time, "runs": 1,
             "real tokens/s": f"{seed['tokens_per_second']:,.0f}", "MFU": f"{seed['mfu']:.2%}"}]
    for r in bench["rows"]:
        if r["time_to_target_median"] is not None:
            ttt = f"{r['time_to_target_median']:.1f} [{r['time_to_target_min']:.1f}-{r['time_to_target_max']:.1f}]"
        else:
            ttt = f"> {bench['row_cap_seconds']:.0f} (loss {r['loss_at_stop']:.2f})"
        rows.append({"change": r["name"], "time to target (s)": ttt, "runs": r["repeats"],
                     "real tokens/s": f"{r['tokens_per_second']:,.0f}", "MFU": f"{r['mfu']:.2%}"})
    header = [
        f"benchmarks/mlm_recipe.py, {bench['date_utc']}, {bench['machine']}",
        f"load average (1, 5, 15 min) at start {bench['load_average_at_start']}, at end {bench['load_average_at_end']}"
        + ("  [a --quick smoke test, not a measurement]" if bench.get("quick") else ""),
        f"target {bench['target']:.2f} nats (unigram {bench['unigram_loss']:.2f} - "
        f"{bench.get('target_nats_below_unigram', 1.0):g}); seed cap "
        f"{bench['cap_seconds'] / 60:.0f} min, row cap {bench['row_cap_seconds']:.0f} s",
        *([f"estimated ratio (the seed's curve extrapolated to the target; an estimate): "
           f"{bench['ratio_estimate']:,.0f}, 90 % interval {bench['ratio_estimate_interval'][0]:,.0f}-"
           f"{bench['ratio_estimate_interval'][1]:,.0f}"]
          if bench.get("ratio_estimate") and bench.get("ratio_estimate_interval") else []),
        *(f"MFU peak, {prec}: {peak['flops'] / 1e9:,.0f} GFLOP/s ({peak['how']})"
          for prec, peak in bench["peak_flops"].items()),
    ]
    slower: list[str] = []
    if "base_row" in bench:
        # Single changes from a base: an addition ("+ ...") "did not help" where it is not faster
        # than the base's fastest run (or never reached the target).
        base = next(r for r in bench["rows"] if r["name"] == bench["base_row"])
        for r in bench["rows"]:
            t = r["time_to_target_median"]
            if r["name"].startswith("+") and base["time_to_target_min"] is not None and (
                    t is None or t >= base["time_to_target_min"]):
                slower.append(r["name"])
    else:
        # Cumulative rows (the generated corpus's run): a row "did not help" where the row before
        # it reached the target and it is slower (or never got there).
        before = None
        for r in bench["rows"]:
            t = r["time_to_target_median"]
            if before is not None and (t is None or t > before["time_to_target_max"]):
                slower.append(r["name"])
            before = r if t is not None else None
    ratio = bench["ratio"]
    ratio_text = ("at least " if bench["ratio_is_lower_bound"] else "") + f"{ratio:,.0f}" if ratio else "n/a"
    return RecipeBenchmark(header, pd.DataFrame(rows).set_index("change"), ratio_text,
                           f"{bench['machine']}, {bench['date_utc']}", slower)
