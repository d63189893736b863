"""Induction heads: find them, look at them, switch them off (Chapter 4, "Sampling and decoding").

An *induction head* (Elhage et al., 2021; Olsson et al., 2022, *In-context Learning and
Induction Heads*) completes a pattern it saw earlier in the context: at a token ``A`` it attends
to the token that followed the previous ``A`` and copies it, so ``... A B ... A`` -> ``B``.
The tools here work on any Hugging Face ``GPT2LMHeadModel`` (``gpt2-course`` offline, GPT-2
small online):

* :func:`repeated_tokens` makes the classic test input: random tokens, then the same tokens again;
* :func:`attention_maps` returns every head's attention probabilities;
* :func:`prefix_matching_scores` and :func:`copying_scores` score each head on the repeated half;
* :func:`ablate_heads` zeroes chosen heads' outputs inside a ``with`` block;
* :func:`fewshot_roles` and :func:`attention_by_role` say where each head looks from the position
  where a few-shot answer is due: the query, the earlier answers, the separators ...

Shapes: L layers, nh heads, B sequences, T positions, R the length of the repeated half,
C channels, hs head size, V vocabulary.
"""
from __future__ import annotations

import contextlib
import random
from typing import Iterable, Iterator, Sequence

import torch

from . import data as _data


def token_pool(tok) -> list[int]:
    """Ids of ordinary words and symbols that are one GPT-2 token each (with a leading space):
    the words of the generated corpus, so both ``gpt2-course`` and GPT-2 know them well."""
    words = sorted({w.strip() for w in _data.FORMAT_TOKENS} | set(_data._RANDOM_TOKENS)
                   | set(_data.MARKET_ITEMS))
    ids = [tok(" " + w, add_special_tokens=False)["input_ids"] for w in words]
    return sorted({i[0] for i in ids if len(i) == 1})


def repeated_tokens(pool: Sequence[int], n_seq: int, length: int, *, bos_id: int,
                    seed: int = 0) -> torch.Tensor:
    """``n_seq`` sequences ``[bos, r_1 ... r_R, r_1 ... r_R]`` of ``R = length`` distinct random
    ids from ``pool``: the second half is predictable only by copying from the first.
    Returns a ``(B, 1 + 2R)`` LongTensor."""
    if length > len(pool):
        raise ValueError(f"length={length} needs at least that many distinct ids; the pool has {len(pool)}")
    rng = random.Random(f"course-induction/{seed}")
    rows = []
    for _ in range(n_seq):
        half = rng.sample(list(pool), length)  # distinct: no repeats inside the first half
        rows.append([bos_id] + half + half)
    return torch.tensor(rows, dtype=torch.long)  # (B, 1 + 2R)


@torch.no_grad()
def token_losses(model, ids: torch.Tensor) -> torch.Tensor:
    """Next-token loss at every position: ``(B, T - 1)``, entry t is the loss of token t + 1."""
    logits = model(ids.to(model.device)).logits[:, :-1].float()          # (B, T-1, V)
    return torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:].to(model.device),
                                             reduction="none").cpu()   # (B, T-1)


@torch.no_grad()
def attention_maps(model, ids: torch.Tensor) -> torch.Tensor:
    """Every head's attention probabilities, ``(L, B, nh, T, T)`` (computed with the eager
    attention, the only implementation that returns them; the model's own is restored)."""
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        out = model(ids.to(model.device), output_attentions=True)
    finally:
        model.set_attn_implementation(before)
    return torch.stack([a.float().cpu() for a in out.attentions])    # (L, B, nh, T, T)


def prefix_matching_scores(attn: torch.Tensor, length: int) -> torch.Tensor:
    """Per head, the mean attention that a token of the second copy pays to the token *after*
    its earlier occurrence (offset ``R - 1`` back). ``attn``: ``(L, B, nh, T, T)`` on
    :func:`repeated_tokens` input; returns ``(L, nh)``, 1.0 for a perfect induction head."""
    R = length
    q = torch.arange(R + 1, 2 * R + 1)                  # positions of the second copy
    k = q - R + 1                                       # the token after the earlier occurrence
    return attn[..., q, k].mean(dim=(1, 3))             # (L, nh)


@torch.no_grad()
def head_outputs(model, ids: torch.Tensor) -> torch.Tensor:
    """What each head writes into the residual stream: ``(L, nh, B, T, C)`` (its slice of the
    attention output times its rows of ``c_proj``; the bias belongs to no head)."""
    return _heads_and_final_residual(model, ids)[0]


@torch.no_grad()
def _heads_and_final_residual(model, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass: :func:`head_outputs` ``(L, nh, B, T, C)`` and the residual stream after
    the last block, before ``ln_f``, ``(B, T, C)``."""
    cfg = model.config
    nh, hs = cfg.n_head, cfg.n_embd // cfg.n_head
    seen: list[torch.Tensor] = []
    final: list[torch.Tensor] = []
    hooks = [blk.attn.c_proj.register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
             for blk in model.transformer.h]
    hooks.append(model.transformer.ln_f.register_forward_pre_hook(lambda mod, args: final.append(args[0])))
    try:
        model(ids.to(model.device))
    finally:
        for h in hooks:
            h.remove()
    outs = []
    for blk, z in zip(model.transformer.h, seen):       # z: (B, T, C), the heads side by side
        B, T, _ = z.shape
        w = blk.attn.c_proj.weight.view(nh, hs, -1)     # Conv1D: (C_in, C_out) -> (nh, hs, C)
        outs.append(torch.einsum("bthd,hdc->hbtc", z.view(B, T, nh, hs), w))  # (nh, B, T, C)
    return torch.stack(outs).float().cpu(), final[0].float()   # (L, nh, B, T, C), (B, T, C)


@torch.no_grad()
def copying_scores(model, ids: torch.Tensor, length: int, pool: Sequence[int]) -> torch.Tensor:
    """Per head, how often its output *alone*, read out by the unembedding, ranks the right next
    token first among ``pool`` on the second copy (direct logit attribution; the final layer
    norm's scale is taken from the full forward pass). Chance is ``1 / len(pool)``."""
    R = length
    out, final = _heads_and_final_residual(model, ids)  # (L, nh, B, T, C); (B, T, C) before ln_f
    ln = model.transformer.ln_f
    # ln_f(x) = (x - mean) / std * w + b is linear in x once std is fixed: apply it to each head.
    std = (final.var(-1, keepdim=True, unbiased=False) + ln.eps).sqrt().cpu()  # (B, T, 1)
    pool_t = torch.tensor(list(pool))
    w_u = model.get_output_embeddings().weight[pool_t].float().cpu()      # (P, C)
    centred = out - out.mean(-1, keepdim=True)
    logits = (centred / std * ln.weight.float().cpu()) @ w_u.T          # (L, nh, B, T, P)
    q = torch.arange(R + 1, 2 * R)                                       # predict positions q + 1
    target = ids[:, q + 1]                                               # (B, R-1)
    where = (target[..., None] == pool_t).float().argmax(-1)             # index of the target in pool
    best = logits[:, :, :, q].argmax(-1)                                 # (L, nh, B, R-1)
    return (best == where).float().mean(dim=(2, 3))                     # (L, nh)


@contextlib.contextmanager
def ablate_heads(model, heads: Iterable[tuple[int, int]]) -> Iterator[None]:
    """Inside the ``with`` block, the listed ``(layer, head)`` heads write nothing: their slice of
    the attention output is zeroed before ``c_proj``. The model is unchanged afterwards."""
    cfg = model.config
    hs = cfg.n_embd // cfg.n_head
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        if not (0 <= layer < cfg.n_layer and 0 <= head < cfg.n_head):
            raise ValueError(f"no head ({layer}, {head}) in a model of {cfg.n_layer} layers x {cfg.n_head} heads")
        by_layer.setdefault(layer, []).append(head)

    def zero(heads_here: list[int]):
        def hook(mod, args):
            z = args[0].clone()                                          # (B, T, C)
            for h in heads_here:
                z[..., h * hs:(h + 1) * hs] = 0.0
            return (z,)
        return hook

    hooks = [model.transformer.h[layer].attn.c_proj.register_forward_pre_hook(zero(hh))
             for layer, hh in by_layer.items()]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


#: The part of a few-shot prompt each token belongs to (:func:`fewshot_roles`). ``"due"`` is the
#: last token, the separator after the query: where the answer is predicted.
ROLES = ("prefix", "input", "sep", "answer", "delim", "query", "due")


def fewshot_roles(tok, prompt: _data.FewShotPrompt) -> tuple[list[int], list[str]]:
    """The prompt's token ids and, for each, its role in :data:`ROLES`. The prompt is tokenized
    piece by piece (every piece starts at a space, where GPT-2's tokenizer splits anyway); the
    pieces' ids must equal the whole prompt's, or a ``ValueError`` says which prompt differs."""
    pieces: list[tuple[str, str]] = [(prompt.prefix, "prefix")] if prompt.prefix else []
    for i, (x, y) in enumerate(prompt.shots):
        pieces += [(x if i == 0 else " " + x, "input"), (prompt.sep, "sep"), (" " + y, "answer"),
                   (prompt.delim, "delim")]
    pieces += [(prompt.query if not prompt.shots else " " + prompt.query, "query"), (prompt.sep, "due")]
    ids: list[int] = []
    roles: list[str] = []
    for text, role in pieces:
        piece = tok(text, add_special_tokens=False)["input_ids"]
        ids += piece
        roles += [role] * len(piece)
    if ids != tok(prompt.prompt, add_special_tokens=False)["input_ids"]:
        raise ValueError(f"tokenizing {prompt.prompt!r} piece by piece gives other ids than tokenizing it whole")
    if roles[-1] != "due" or roles.count("due") != 1:
        raise ValueError(f"the separator after the query is not one token in {prompt.prompt!r}")
    return ids, roles


@torch.no_grad()
def attention_by_role(model, tok, prompts: Sequence[_data.FewShotPrompt]) -> torch.Tensor:
    """For every head, the attention paid *from the last position* (where the answer is due) to
    each role of :data:`ROLES`, averaged over ``prompts``: ``(L, nh, len(ROLES))``, rows sum to 1.
    Prompts whose separator after the query is more than one token are skipped."""
    total, n = None, 0
    for p in prompts:
        try:
            ids, roles = fewshot_roles(tok, p)
        except ValueError:
            continue
        attn = attention_maps(model, torch.tensor([ids]))[:, 0, :, -1, :]   # (L, nh, T)
        onehot = torch.tensor([[r == role for role in ROLES] for r in roles], dtype=attn.dtype)  # (T, roles)
        share = attn @ onehot                                                # (L, nh, roles)
        total = share if total is None else total + share
        n += 1
    if total is None:
        raise ValueError("no prompt had a one-token separator after its query")
    return total / n
