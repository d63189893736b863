"""Checkers of Chapter 5 (Training a BERT with masked-language modelling).

* ``check.mask_tokens_80_10_10(fn)``: ``fn(input_ids, u, random_ids, special, mask_token_id,
  p=0.15) -> (inputs, labels)``. The randomness is given, so that the answer is exact: one
  uniform number ``u`` per position decides everything. A position is *selected* where
  ``u < p`` and it is not special; a selected position becomes ``mask_token_id`` where
  ``u < 0.8 p``, the token ``random_ids`` where ``0.8 p <= u < 0.9 p``, and stays itself where
  ``0.9 p <= u < p``. ``labels`` holds the original id at selected positions and -100 elsewhere.
* ``check.sparse_mlm_loss(fn)``: ``fn(hidden, labels, head) -> loss`` is the mean cross-entropy
  over the masked positions (``labels != -100``), with ``head`` (a module mapping ``(N, C)`` to
  logits ``(N, V)``) applied **only** to the masked rows. The checker counts the rows the head
  is given.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .core import Case, Checker, Mistake, register

IGNORE = -100


# --------------------------------------------------------------------------- 80/10/10 masking
def _mask_reference(input_ids, u, random_ids, special, mask_token_id, p=0.15):  # noqa: ANN001, ANN202
    selected = (u < p) & ~special                                   # (B, T)
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE))
    inputs = torch.where(selected & (u < 0.8 * p), torch.full_like(input_ids, mask_token_id), input_ids)
    inputs = torch.where(selected & (u >= 0.8 * p) & (u < 0.9 * p), random_ids, inputs)
    return inputs, labels


def _mask_cases() -> list[Case]:
    def batch(B: int, T: int, lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.randint(1000, 5000, (B, T))
        special = torch.zeros(B, T, dtype=torch.bool)
        for b, n in enumerate(lengths):  # [CLS] tokens [SEP] [PAD]...
            ids[b, 0], ids[b, n - 1] = 101, 102
            ids[b, n:] = 0
            special[b, 0] = True
            special[b, n - 1:] = True
        return ids, special

    ids, special = batch(4, 40, [40, 30, 12, 3])
    u = torch.rand(4, 40)
    u[0, 1:6] = torch.tensor([0.01, 0.125, 0.13, 0.14, 0.5])  # one of each outcome, for sure
    small, small_special = batch(1, 6, [6])
    return [
        Case("a batch with [CLS], [SEP] and padding, p = 0.15",
             (ids, u, torch.randint(1000, 5000, (4, 40)), special, 103)),
        Case("p = 0.5 (more of every outcome)", (ids, torch.rand(4, 40), torch.randint(1000, 5000, (4, 40)),
                                                 special, 103), {"p": 0.5}),
        Case("u = 0 everywhere (every ordinary token selected and masked)",
             (small, torch.zeros(1, 6), torch.randint(1000, 5000, (1, 6)), small_special, 103)),
    ]


def _mask_labels_everywhere(input_ids, u, random_ids, special, mask_token_id, p=0.15):  # noqa: ANN001, ANN202
    inputs, _ = _mask_reference(input_ids, u, random_ids, special, mask_token_id, p)
    return inputs, input_ids.clone()


def _mask_special_too(input_ids, u, random_ids, special, mask_token_id, p=0.15):  # noqa: ANN001, ANN202
    return _mask_reference(input_ids, u, random_ids, torch.zeros_like(special), mask_token_id, p)


def _mask_all_mask(input_ids, u, random_ids, special, mask_token_id, p=0.15):  # noqa: ANN001, ANN202
    selected = (u < p) & ~special
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE))
    return torch.where(selected, torch.full_like(input_ids, mask_token_id), input_ids), labels


def _mask_labels_after(input_ids, u, random_ids, special, mask_token_id, p=0.15):  # noqa: ANN001, ANN202
    inputs, labels = _mask_reference(input_ids, u, random_ids, special, mask_token_id, p)
    return inputs, torch.where(labels != IGNORE, inputs, labels)


def _mask_swapped(input_ids, u, random_ids, special, mask_token_id, p=0.15):  # noqa: ANN001, ANN202
    selected = (u < p) & ~special
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE))
    inputs = torch.where(selected & (u < 0.8 * p), torch.full_like(input_ids, mask_token_id), input_ids)
    inputs = torch.where(selected & (u >= 0.9 * p), random_ids, inputs)
    return inputs, labels


def _mask_labels_zero(input_ids, u, random_ids, special, mask_token_id, p=0.15):  # noqa: ANN001, ANN202
    inputs, labels = _mask_reference(input_ids, u, random_ids, special, mask_token_id, p)
    return inputs, labels.masked_fill(labels == IGNORE, 0)


mask_tokens_80_10_10 = register(Checker(
    "mask_tokens_80_10_10", _mask_reference, _mask_cases,
    axes=(("batch", "seq"), ("batch", "seq")),
    mistakes=[
        Mistake(_mask_labels_everywhere, "labels must be -100 at the positions that were *not* selected, so "
                                         "that the loss ignores them: only the selected ~15 % are predicted."),
        Mistake(_mask_labels_zero, "use -100 (the ignore index of F.cross_entropy), not 0, for the "
                                   "positions that are not predicted: 0 is the id of [PAD], a real class."),
        Mistake(_mask_special_too, "special tokens ([CLS], [SEP], [PAD]: where `special` is True) are never "
                                   "selected: `selected = (u < p) & ~special`."),
        Mistake(_mask_all_mask, "not every selected position becomes [MASK]: 80 % do (u < 0.8·p), 10 % get a "
                                "random token (0.8·p <= u < 0.9·p) and 10 % stay as they are. The thresholds are "
                                "fractions of p, because u < p already selected the position."),
        Mistake(_mask_labels_after, "the labels are the *original* ids (what the model must recover), taken "
                                    "before any replacement — not the [MASK] or random ids you put in."),
        Mistake(_mask_swapped, "the random token goes where 0.8·p <= u < 0.9·p; where 0.9·p <= u < p the token "
                               "is kept unchanged."),
    ],
    what="your mask_tokens",
))


# --------------------------------------------------------------------------- sparse MLM loss
class _CountingHead(torch.nn.Module):
    """A linear MLM head that remembers how many rows it was given in total."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.weight, self.bias = torch.nn.Parameter(weight), torch.nn.Parameter(bias)
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x[..., 0].numel()
        return F.linear(x, self.weight, self.bias)


def _sparse_reference(hidden, labels, head):  # noqa: ANN001, ANN202
    selected = labels != IGNORE                       # (B, T)
    return F.cross_entropy(head(hidden[selected]), labels[selected])


def _call_counting(fn, case: Case):  # noqa: ANN001, ANN202
    hidden, labels, weight, bias = case.args
    head = _CountingHead(weight, bias)
    loss = fn(hidden, labels, head)
    if isinstance(loss, torch.Tensor):
        loss = loss.detach()
    return loss, head.rows


def _sparse_cases() -> list[Case]:
    def case(B: int, T: int, C: int, V: int, frac: float) -> tuple:
        labels = torch.randint(0, V, (B, T))
        keep = torch.rand(B, T) < frac
        keep[0, 0] = True  # at least one predicted token
        labels = labels.masked_fill(~keep, IGNORE)
        return torch.randn(B, T, C), labels, torch.randn(V, C) * 0.5, torch.randn(V) * 0.1

    return [
        Case("B=2, T=10, about 15 % masked", case(2, 10, 8, 13, 0.15)),
        Case("B=3, T=7, about half masked", case(3, 7, 6, 11, 0.5)),
        Case("a single masked token", case(1, 5, 4, 9, 0.0)),
    ]


def _sparse_dense(hidden, labels, head):  # noqa: ANN001, ANN202
    logits = head(hidden)                              # (B, T, V): the head at every position
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten())


def _sparse_mean_over_all(hidden, labels, head):  # noqa: ANN001, ANN202
    selected = labels != IGNORE
    return F.cross_entropy(head(hidden[selected]), labels[selected], reduction="sum") / labels.numel()


def _sparse_sum(hidden, labels, head):  # noqa: ANN001, ANN202
    selected = labels != IGNORE
    return F.cross_entropy(head(hidden[selected]), labels[selected], reduction="sum")


def _sparse_no_log_softmax(hidden, labels, head):  # noqa: ANN001, ANN202
    selected = labels != IGNORE
    logits = head(hidden[selected])
    return -logits.gather(1, labels[selected, None]).mean()


sparse_mlm_loss = register(Checker(
    "sparse_mlm_loss", _sparse_reference, _sparse_cases,
    call=_call_counting, axes=((), None),
    mistakes=[
        Mistake(_sparse_dense, "the loss is right, but the head was applied at every position (B·T rows): "
                               "select the masked rows first, `hidden[labels != -100]` (shape (N, C)), and give "
                               "only those to the head — that is the whole saving."),
        Mistake(_sparse_mean_over_all, "average over the masked tokens only (divide by their number N), not over "
                                       "all B·T positions."),
        Mistake(_sparse_sum, "return the mean over the masked tokens (F.cross_entropy's default reduction), "
                             "not the sum."),
        Mistake(_sparse_no_log_softmax, "the loss is the cross-entropy of the softmax of the logits: use "
                                        "F.cross_entropy(logits, targets), which applies log-softmax."),
    ],
    what="your sparse_mlm_loss",
))
