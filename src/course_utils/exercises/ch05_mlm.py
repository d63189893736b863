"""Checkers of Chapter 5 (Training a BERT with masked-language modelling), handed out in
``chapters/05_exercises.ipynb``.

* ``check.whole_word_mask(fn)``: ``fn(input_ids, offsets, special, u, mask_token_id, p=0.15) ->
  (inputs, labels)``: whole-word masking as ``DataCollatorForLanguageModeling(whole_word_mask=True)``
  does it. The randomness is given (``u``, one uniform number per position) so that the answer
  is exact; the reference is tested against the library collator seeded so that its Bernoulli
  draws are exactly ``u < p`` (``tests/test_exercise_references.py``).
* ``check.wsd_lr(fn)``: ``fn(step, peak_lr, warmup, stable, decay, min_lr_ratio) -> float``: the
  warm-up / stable / decay schedule, checked at every step against ``transformers``'
  ``get_wsd_schedule`` (linear warm-up, "1-sqrt" decay).
* ``check.accumulate_mlm_grads(fn)``: ``fn(model, micro_batches) -> None`` leaves in ``.grad``
  the gradient of the MLM loss of the *whole* batch (the mean over all its predicted tokens),
  with one forward/backward per micro-batch. The reference is autograd on the whole batch.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from .core import Case, Checker, Mistake, draw, pick, register

IGNORE = -100


# =========================================================================== 1. whole-word masking
# input_ids (B, T); offsets (B, T, 2): each token's (start, end) characters in the text;
# special (B, T) bool: [CLS], [SEP], [PAD]; u (B, T) uniform in [0, 1).
# A word is a run of tokens with no gap between one token's end and the next one's start
# (special tokens belong to no word). A word is selected when u at its *first* token is < p; every
# token of a selected word becomes mask_token_id and keeps its id as label; elsewhere label -100.

def _word_starts(offsets: torch.Tensor, special: torch.Tensor, *, prev_special_breaks: bool = True) -> torch.Tensor:
    start, end = offsets[..., 0], offsets[..., 1]                       # (B, T)
    prev_end = torch.cat([torch.full_like(end[:, :1], -1), end[:, :-1]], dim=1)
    prev_special = torch.cat([torch.zeros_like(special[:, :1]), special[:, :-1]], dim=1)
    new = start != prev_end
    if prev_special_breaks:
        new = new | prev_special
    return new & ~special                                                # (B, T)


def _wwm(input_ids, offsets, special, u, mask_token_id, p=0.15, *, per_token=False, any_token=False,
         prev_special_breaks=True, labels_everywhere=False):
    starts = _word_starts(offsets, special, prev_special_breaks=prev_special_breaks)
    word = starts.long().cumsum(-1)                                      # (B, T): word number, from 1
    word = word.masked_fill(special, 0)
    if per_token:
        selected = (u < p) & ~special
    else:
        picked = (u < p) & (starts if not any_token else ~special)       # the tokens that pick their word
        B, T = input_ids.shape
        chosen = torch.zeros(B, T + 1, dtype=torch.bool)
        chosen.scatter_(1, torch.where(picked, word, torch.zeros_like(word)), picked)  # word -> picked
        chosen[:, 0] = False                                              # word 0: special tokens
        selected = chosen.gather(1, word) & ~special
    labels = input_ids.masked_fill(~selected, IGNORE)
    if labels_everywhere:
        labels = input_ids.clone()
    inputs = input_ids.masked_fill(selected, mask_token_id)
    return inputs, labels


def whole_word_mask_reference(input_ids: torch.Tensor, offsets: torch.Tensor, special: torch.Tensor, u: torch.Tensor,
                              mask_token_id: int, p: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole-word masking with the library's word rule (offsets) and its Bernoulli draws ``u < p``."""
    return _wwm(input_ids, offsets, special, u, mask_token_id, p)


_WWM_TEXTS = ["The tokenizer's embeddings were unaffable, weren't they?",
              "Transformers tokenize unbelievably long words.",
              "Packing avoids padding entirely"]


def _wwm_batch(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from ..assets import load_tokenizer

    tok = load_tokenizer("bert-base-uncased")
    enc = tok(texts, padding=True, return_offsets_mapping=True, return_special_tokens_mask=True,
              return_tensors="pt")
    return enc["input_ids"], enc["offset_mapping"], enc["special_tokens_mask"].bool()


def _wwm_cases() -> list[Case]:
    ids, offsets, special = _wwm_batch(_WWM_TEXTS)
    u = torch.rand(ids.shape)
    u[0, 1] = 0.01  # the first word after [CLS] is selected, for sure
    u[0, 2:5] = torch.tensor([0.9, 0.01, 0.9])  # 'tokenizer' + "'" + 's' continue one word
    big_u = torch.rand(ids.shape)
    return [
        Case("3 sentences with multi-piece words and padding, p = 0.15", (ids, offsets, special, u, 103)),
        Case("p = 0.5", (ids, offsets, special, big_u, 103), {"p": 0.5}),
        Case("u = 0: every word selected", (ids, offsets, special, torch.zeros(ids.shape), 103)),
    ]


whole_word_mask = register(Checker(
    "whole_word_mask", whole_word_mask_reference, _wwm_cases,
    axes=(("batch", "seq"), ("batch", "seq")),
    mistakes=[
        Mistake(lambda *a, **k: _wwm(*a, **k, per_token=True),
                "that masks tokens one by one: whole-word masking selects *words* — with u at a word's "
                "first token — and then masks every token of a selected word. A word is a run of tokens "
                "with no gap between them (next start == previous end): 'una', '##ffa', '##ble' are one "
                "word, and so are 'weren', \"'\", 't'."),
        Mistake(lambda *a, **k: _wwm(*a, **k, any_token=True),
                "a word's fate is decided by u at its *first* token only (the library gives the other "
                "tokens of a word probability 0); here any token of the word could select it."),
        Mistake(lambda *a, **k: _wwm(*a, **k, prev_special_breaks=False),
                "[CLS] ends at character 0 and the first word starts there: with no gap, you joined the "
                "first word to [CLS]. A token right after a special token always starts a new word."),
        Mistake(lambda *a, **k: _wwm(*a, **k, labels_everywhere=True),
                "labels must be -100 wherever the token is not masked, so that the loss ignores them."),
    ],
    what="your whole_word_mask",
))


# =========================================================================== 2. warm-up, stable, decay
# The learning rate at `step` (0, 1, 2 ...): linear warm-up from min_lr_ratio x peak_lr to peak_lr over
# `warmup` steps, `stable` steps at peak_lr, then over `decay` steps a "1-sqrt" decay:
# factor = 1 - sqrt(progress), progress = (step - warmup - stable) / decay, rescaled so that it ends at
# min_lr_ratio; after that, min_lr_ratio x peak_lr.

def _library_factors(warmup: int, stable: int, decay: int, min_lr_ratio: float, steps: int) -> list[float]:
    from transformers import get_wsd_schedule

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = get_wsd_schedule(opt, num_warmup_steps=warmup, num_decay_steps=decay, num_stable_steps=stable,
                             min_lr_ratio=min_lr_ratio, decay_type="1-sqrt", warmup_type="linear")
    return [sched.lr_lambdas[0](s) for s in range(steps)]


def wsd_lr_reference(step: int, peak_lr: float, warmup: int, stable: int, decay: int,
                     min_lr_ratio: float) -> float:
    """``peak_lr`` x the multiplier of ``get_wsd_schedule(..., decay_type="1-sqrt")`` at ``step``."""
    return peak_lr * _library_factors(warmup, stable, decay, min_lr_ratio, step + 1)[step]


def _every_step(fn: Any, case: Case) -> Any:
    """The schedule at every step 0 ... end + 3, as a list (one call per step)."""
    peak, warmup, stable, decay, ratio = case.args
    if fn is wsd_lr_reference:  # the library's multipliers, computed once for all steps
        factors = _library_factors(warmup, stable, decay, ratio, warmup + stable + decay + 4)
        return [peak * f for f in factors]
    return [fn(step, peak, warmup, stable, decay, ratio) for step in range(warmup + stable + decay + 4)]


def _wsd(step, peak, warmup, stable, decay, ratio, *, warm_from_zero=False, sqrt_of_rest=False,
         to_zero=False, clamp=True, plus_one=False):
    floor = 0.0 if to_zero else ratio
    if step < warmup:
        progress = (step + (1 if plus_one else 0)) / max(1, warmup)
        return peak * (progress if warm_from_zero else progress * (1 - floor) + floor)
    if step < warmup + stable:
        return peak
    if step < warmup + stable + decay or not clamp:
        progress = (step - warmup - stable) / max(1, decay)
        factor = math.sqrt(max(0.0, 1 - progress)) if sqrt_of_rest else 1 - math.sqrt(progress)
        return peak * (factor * (1 - floor) + floor)
    return peak * floor


def _wsd_cases() -> list[Case]:
    return [
        Case("warm-up 4, stable 5, decay 8, floor 0.1", (3e-4, 4, 5, 8, 0.1)),
        Case("no stable phase, floor 0", (1e-3, 3, 0, 6, 0.0)),
        Case("long decay, floor 0.2", (0.01, 2, 3, 25, 0.2)),
        Case("random phases", (pick((1e-4, 3e-4, 1e-3, 5e-3)), draw(1, 6), draw(0, 6), draw(2, 12),
                               pick((0.0, 0.05, 0.1, 0.25)))),
    ]


wsd_lr = register(Checker(
    "wsd_lr", wsd_lr_reference, _wsd_cases, call=_every_step, atol=1e-12, rtol=1e-6,
    mistakes=[
        Mistake(lambda *a: _wsd(*a, warm_from_zero=True),
                "this warm-up starts at 0; the schedule asked for starts at min_lr_ratio x peak_lr: "
                "lr = peak x (progress x (1 - ratio) + ratio)."),
        Mistake(lambda *a: _wsd(*a, sqrt_of_rest=True),
                "the decay is 1 - sqrt(progress) (fast at first, then slow), not sqrt(1 - progress)."),
        Mistake(lambda *a: _wsd(*a, to_zero=True),
                "the decay ends at min_lr_ratio x peak_lr, not 0: rescale the factor, "
                "factor x (1 - ratio) + ratio."),
        Mistake(lambda *a: _wsd(*a, clamp=False),
                "after the decay phase the rate stays at min_lr_ratio x peak_lr; the formula must not be "
                "used past the end (sqrt of a progress > 1)."),
        Mistake(lambda *a: _wsd(*a, plus_one=True),
                "off by one in the warm-up: step 0 has progress 0 (step / warmup)."),
    ],
    what="your wsd_lr",
))


# =========================================================================== 3. gradient accumulation
# model: a module mapping input_ids (b, T) to logits (b, T, V); micro_batches: a list of
# (input_ids, labels) pairs, labels -100 where no prediction is asked. Leave in every parameter's
# .grad the gradient of the whole batch's loss -- the mean cross-entropy over *all* its predicted
# tokens -- with one forward and one backward per micro-batch. Return None.

class TinyMLM(torch.nn.Module):
    """Embedding -> tanh -> output layer: small, but every parameter gets a gradient."""

    def __init__(self, vocab: int = 23, d_model: int = 8) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, d_model)
        self.out = torch.nn.Linear(d_model, vocab)
        self.rows_per_forward: list[int] = []  # what the checker inspects: one entry per forward

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        self.rows_per_forward.append(int(input_ids.shape[0]))
        return self.out(torch.tanh(self.embed(input_ids)))  # (b, T, V)


def _grads_and_rows(fn: Any, case: Case) -> Any:
    """Run ``fn`` on a fresh seeded model; return (its gradients by name, largest forward batch)."""
    seed, micro_batches = case.args
    torch.manual_seed(seed)
    model = TinyMLM()
    out = fn(model, micro_batches)
    grads = {name: (p.grad.detach().clone() if p.grad is not None else None) for name, p in model.named_parameters()}
    rows = max(model.rows_per_forward, default=0)
    return grads, rows, out


def accumulate_mlm_grads_reference(model: torch.nn.Module, micro_batches: list) -> None:
    """Each micro-batch's *sum* of token losses, divided by the whole batch's number of predicted
    tokens, so that the accumulated gradient is that of the global mean."""
    _accumulate(model, micro_batches)


def _accumulate(model, micro_batches, *, mode="global_mean"):
    """The reference written out, with one switch per known mistake."""
    if mode == "concat":
        ids = torch.cat([i for i, _ in micro_batches])
        labels = torch.cat([label for _, label in micro_batches])
        F.cross_entropy(model(ids).flatten(0, 1), labels.flatten(), ignore_index=IGNORE).backward()
        return None
    n = len(micro_batches)
    n_total = sum(int((labels != IGNORE).sum()) for _, labels in micro_batches)
    for input_ids, labels in micro_batches:
        logits = model(input_ids).flatten(0, 1)                            # (b*T, V)
        if mode == "global_mean":
            loss = F.cross_entropy(logits, labels.flatten(), ignore_index=IGNORE, reduction="sum") / n_total
        elif mode == "mean_of_means":
            loss = F.cross_entropy(logits, labels.flatten(), ignore_index=IGNORE) / n
        elif mode == "sum_of_means":
            loss = F.cross_entropy(logits, labels.flatten(), ignore_index=IGNORE)
        elif mode == "sum":
            loss = F.cross_entropy(logits, labels.flatten(), ignore_index=IGNORE, reduction="sum")
        elif mode == "all_positions":
            loss = F.cross_entropy(logits, labels.flatten().clamp_min(0), reduction="sum") / n_total
        loss.backward()
    return None


def _micro_batches(sizes: list[tuple[int, float]], T: int = 6, V: int = 23) -> list:
    out = []
    for b, frac in sizes:
        ids = torch.randint(0, V, (b, T))
        keep = torch.rand(b, T) < frac
        keep[0, 0] = True  # at least one predicted token in every micro-batch
        out.append((ids, ids.masked_fill(~keep, IGNORE)))
    return out


def _acc_cases() -> list[Case]:
    return [
        Case("3 micro-batches with 1, many and few predicted tokens",
             (1, _micro_batches([(2, 0.05), (2, 0.9), (2, 0.3)]))),
        Case("micro-batches of different sizes", (2, _micro_batches([(1, 0.5), (4, 0.2)]))),
        Case("a single micro-batch", (3, _micro_batches([(3, 0.4)]))),
    ]


accumulate_mlm_grads = register(Checker(
    "accumulate_mlm_grads", accumulate_mlm_grads_reference, _acc_cases,
    call=_grads_and_rows, atol=1e-6, rtol=1e-4, timeout=5.0,
    mistakes=[
        Mistake(lambda m, mb: _accumulate(m, mb, mode="mean_of_means"),
                "the mean of the micro-batches' means weights a token of a micro-batch with few predicted "
                "tokens more than one of a full micro-batch: sum each micro-batch's token losses "
                "(reduction='sum') and divide by the number of predicted tokens in the *whole* batch."),
        Mistake(lambda m, mb: _accumulate(m, mb, mode="sum_of_means"),
                "backward() *adds* into .grad: summing each micro-batch's mean makes the gradient grow "
                "with the number of micro-batches — and weights tokens unequally."),
        Mistake(lambda m, mb: _accumulate(m, mb, mode="sum"),
                "divide the summed token losses by the number of predicted tokens in the whole batch "
                "(count `labels != -100` over all micro-batches first)."),
        Mistake(lambda m, mb: _accumulate(m, mb, mode="all_positions"),
                "only the predicted tokens (labels != -100) count: pass ignore_index=-100 to "
                "F.cross_entropy (its default), and count only those tokens."),
        Mistake(lambda m, mb: _accumulate(m, mb, mode="concat"),
                "the gradient is right, but you ran the whole batch in one forward: accumulation exists "
                "to keep one micro-batch in memory at a time — one forward and backward per micro-batch."),
    ],
    what="your accumulate_mlm_grads",
))
