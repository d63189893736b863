"""What a zoo model has learned, measured: losses, baselines and held-out probes (the card's numbers).

The validation loss :func:`eval_loss` also scores ``gpt2-course`` during training; the probe
reports run after it and make no part of the weights (nor of the cache key).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, cast

import torch

from .. import batching as _batching
from .. import corpus as _corpus
from .. import data as _data
from .. import mlm as _mlm
from .. import training as _training
from .blocks import prose_blocks
from .specs import ZooSpec, spec

if TYPE_CHECKING:
    from transformers import BertForMaskedLM, PreTrainedModel, PreTrainedTokenizerBase


def unigram_loss(train_ids: torch.Tensor, eval_ids: torch.Tensor, vocab_size: int) -> float:
    """Cross-entropy (nats/token) of ``eval_ids`` under the add-one unigram model of ``train_ids``
    (:func:`course_utils.mlm.unigram_nll` on their counts)."""
    return _mlm.unigram_nll(torch.bincount(train_ids.flatten(), minlength=vocab_size), eval_ids)


def eval_loss(model: PreTrainedModel, blocks: torch.Tensor, s: ZooSpec, tok: PreTrainedTokenizerBase, *,
              batch_size: int = 16) -> float:
    """Mean next-token validation loss (nats/token) of a full-vocabulary GPT-2 on ``blocks``
    (BERT's validation loss: :func:`course_utils.mlm.evaluate` on Chapter 5's fixed set)."""
    if s.arch != "gpt2":
        raise ValueError("eval_loss is GPT-2's; score a BERT with course_utils.mlm.evaluate(model, "
                         "mlm.make_validation_set(tok, texts))")
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with _training.evaluation_mode(model):
        for i in range(0, len(blocks), batch_size):
            b = blocks[i:i + batch_size]
            logits = model(b[:, :-1].to(device)).logits                     # (B, T, V)
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), b[:, 1:].flatten().to(device),
                                                     reduction="sum")
            total += float(loss)
            count += b[:, 1:].numel()
    return total / max(count, 1)


@torch.no_grad()
def causal_probe_correct(model: PreTrainedModel, tok: PreTrainedTokenizerBase, probes: list[_data.Probe], *,
                         batch_size: int = 64) -> list[bool]:
    """For each probe, whether the model's greedy continuation of ``probe.prompt`` is the answer.

    Computed in one teacher-forced pass: greedy decoding yields the answer exactly when every
    answer token is the arg-max given the prompt and the answer tokens before it. Only the
    answer positions go through the (50,257-row) output layer.
    """
    if not probes:
        raise ValueError("no probes given")
    device = next(model.parameters()).device
    prompts = [tok(p.prompt)["input_ids"] for p in probes]
    answers = [tok(" " + p.answer)["input_ids"] for p in probes]
    correct = []
    for start in range(0, len(probes), batch_size):
        ps, ans = prompts[start:start + batch_size], answers[start:start + batch_size]
        ids, mask = _batching.pad_batch([a + b for a, b in zip(ps, ans)], tok.eos_token_id)  # right padding
        h = model.base_model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state  # (B, T, C)
        rows = [b for b, (p, a) in enumerate(zip(ps, ans)) for _ in a]
        cols = [t for p, a in zip(ps, ans) for t in range(len(p) - 1, len(p) + len(a) - 1)]
        pred = model.get_output_embeddings()(h[rows, cols]).argmax(-1).cpu().tolist()  # (n answer tokens,)
        i = 0
        for a in ans:
            correct.append(pred[i:i + len(a)] == a)
            i += len(a)
    return correct


def causal_probe_accuracy(model: PreTrainedModel, tok: PreTrainedTokenizerBase, probes: list[_data.Probe], *,
                          batch_size: int = 64) -> float:
    """Fraction of probes whose greedy continuation is the answer (see :func:`causal_probe_correct`)."""
    ok = causal_probe_correct(model, tok, probes, batch_size=batch_size)
    return sum(ok) / len(ok)


def templates_report(model: PreTrainedModel, tok: PreTrainedTokenizerBase,
                     s: ZooSpec | None = None) -> dict[str, float]:
    """GPT-2 on templates: held-out fact prompts completed greedily, overall and per relation, and
    (for comparison) on a quarter of the phrasings seen in training."""
    held, seen = _data.heldout_probes(), _data.training_probes()[::4]
    ok = causal_probe_correct(model, tok, held)
    out = {"heldout_greedy": sum(ok) / len(ok)}
    seen_ok = causal_probe_correct(model, tok, seen)
    out["seen_greedy"] = sum(seen_ok) / len(seen_ok)
    for r in _data.FACTS:
        hits = [c for c, probe in zip(ok, held) if probe.relation == r]
        if hits:
            out["heldout_greedy_" + r] = sum(hits) / len(hits)
    return out


def bert_report(model: PreTrainedModel, tok: PreTrainedTokenizerBase,
                s: ZooSpec | None = None) -> dict[str, float]:
    """BERT: top-1 and top-5 accuracy at the masked positions of the held-out test texts
    (:func:`course_utils.mlm.probe_set`), and the unigram baseline's top-1 on the same positions."""
    books = _corpus.load_books()
    probes = _mlm.probe_set(tok, books, max_length=min(_mlm.VAL_MAX_LENGTH, model.config.max_position_embeddings))
    top1, top5 = _mlm.masked_accuracy(cast("BertForMaskedLM", model), probes)
    unigram = _mlm.unigram_accuracy(_mlm.token_counts(tok, books["train"]), probes)
    return {"test_top1": top1, "test_top5": top5, "unigram_top1": unigram,
            "masked_tokens": probes.n_masked}


@torch.no_grad()
def prose_report(model: PreTrainedModel, tok: PreTrainedTokenizerBase,
                 s: ZooSpec | None = None) -> dict[str, float]:
    """``gpt2-course``'s numbers on its validation blocks (:func:`prose_blocks`; ``s``: its spec,
    the zoo's by default): top-1 accuracy of the next token, the unigram baseline's top-1 (always
    the training text's most frequent token), the mean probability on ids the training text
    never uses, how many such ids there are and how often they occur in the validation text."""
    books = _corpus.load_books()
    s = s if s is not None else spec("gpt2-course")
    train_ids = prose_blocks(tok, s, "train", books)
    val = prose_blocks(tok, s, "validation", books)                       # (N, T+1)
    counts = torch.bincount(train_ids.flatten(), minlength=len(tok))
    never = counts == 0                                                   # (V,)
    hits, mass = 0, 0.0
    with _training.evaluation_mode(model):
        for i in range(0, len(val), 16):
            b = val[i:i + 16]
            p = model(b[:, :-1]).logits.softmax(-1)                         # (B, T, V)
            hits += int((p.argmax(-1) == b[:, 1:]).sum())
            mass += float(p[..., never].sum(-1).sum())
    n = val[:, 1:].numel()
    return {"val_top1": hits / n, "unigram_top1": float((val[:, 1:] == counts.argmax()).float().mean()),
            "never_seen_mass": mass / n, "val_never_seen_tokens": float(never[val[:, 1:]].float().mean()),
            "never_seen_ids": int(never.sum())}
