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

Around them: the seed's model (:func:`build_model`), the fixed validation set scored over all
30,522 ids (:func:`make_validation_set`, :func:`evaluate`, :func:`unigram_loss`), the cost of
padding (:func:`measure_waste`), masked-token accuracy on held-out probes
(:func:`masked_accuracy`), and quiet progress bars (:func:`show_progress`). The seed's recipe
with the ``Trainer``, which the chapter runs beside this loop, is :mod:`course_utils.seed_recipe`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence, TypeVar

import torch
import torch.nn.functional as F

from .batching import PaddingReport, pack_ids, pad_batch, padding_waste, token_ids
from .runtime import progress_bar as progress_bar_
from .runtime import show_progress as show_progress  # re-exported: Chapter 5 calls mlm.show_progress()
from .training import evaluation_mode, lr_at, param_groups

if TYPE_CHECKING:
    from transformers import BertForMaskedLM

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

