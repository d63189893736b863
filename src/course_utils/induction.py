"""Induction heads: find them, look at them, switch them off (Chapter 4, "Sampling and decoding").

An *induction head* (Elhage et al., 2021; Olsson et al., 2022, *In-context Learning and
Induction Heads*) completes a pattern it saw earlier in the context: at a token ``A`` it attends
to the token that followed the previous ``A`` and copies it, so ``... A B ... A`` -> ``B``.
The tools here work on Hugging Face's ``GPT2LMHeadModel`` and on Llama-style decoders
(``LlamaForCausalLM``: SmolLM2-135M-Instruct, the real model Chapter 4 studies), chosen by
``config.model_type`` from :data:`ANATOMIES`:

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
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import torch

from . import data as _data

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase


def token_pool(tok: PreTrainedTokenizerBase) -> list[int]:
    """Ids of ordinary words and symbols that are one GPT-2 token each (with a leading space):
    the words of the generated corpus, so both the template recipe of ``gpt2-course``
    (``zoo.TEMPLATES``) and GPT-2 know them well."""
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
def token_losses(model: PreTrainedModel, ids: torch.Tensor) -> torch.Tensor:
    """Next-token loss at every position: ``(B, T - 1)``, entry t is the loss of token t + 1."""
    logits = model(ids.to(model.device)).logits[:, :-1].float()          # (B, T-1, V)
    return torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:].to(model.device),
                                             reduction="none").cpu()   # (B, T-1)


@torch.no_grad()
def attention_maps(model: PreTrainedModel, ids: torch.Tensor) -> torch.Tensor:
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


class _GPT2Anatomy:
    """Where GPT-2 (``GPT2LMHeadModel``) keeps what the head tools need.

    The methods reach submodules and weights by their attribute names (``model.transformer.h``,
    ``proj.weight``), which ``torch.nn.Module`` types as ``Tensor | Module``: the walked objects
    are ``Any`` here, and each method's return type says what it finds."""

    def blocks(self, model: Any) -> Sequence[torch.nn.Module]:
        return model.transformer.h

    def heads(self, cfg: PretrainedConfig) -> tuple[int, int]:
        return cfg.n_head, cfg.n_embd // cfg.n_head                      # nh, hs

    def out_proj(self, block: Any) -> torch.nn.Module:
        return block.attn.c_proj                                         # Conv1D, weight (C_in, C_out)

    def out_weight(self, proj: Any, nh: int, hs: int) -> torch.Tensor:
        return proj.weight.view(nh, hs, -1)                              # (nh, hs, C)

    def final_norm(self, model: Any) -> torch.nn.Module:
        return model.transformer.ln_f

    def read_out(self, norm: Any, x: torch.Tensor, final: torch.Tensor) -> torch.Tensor:
        """``ln_f`` applied to a head's output ``x`` with the scale of the full residual ``final``:
        (x - mean) / std * w is linear in x once std is fixed (the bias belongs to no head)."""
        std = (final.var(-1, keepdim=True, unbiased=False) + norm.eps).sqrt()
        return (x - x.mean(-1, keepdim=True)) / std * norm.weight.float().cpu()


class _LlamaAnatomy(_GPT2Anatomy):
    """Where a Llama-style decoder (``LlamaForCausalLM``: SmolLM2) keeps the same things."""

    def blocks(self, model: Any) -> Sequence[torch.nn.Module]:
        return model.model.layers

    def heads(self, cfg: PretrainedConfig) -> tuple[int, int]:
        nh = cfg.num_attention_heads
        return nh, getattr(cfg, "head_dim", None) or cfg.hidden_size // nh

    def out_proj(self, block: Any) -> torch.nn.Module:
        return block.self_attn.o_proj                                    # Linear, weight (C_out, C_in)

    def out_weight(self, proj: Any, nh: int, hs: int) -> torch.Tensor:
        return proj.weight.T.reshape(nh, hs, -1)                         # (nh, hs, C)

    def final_norm(self, model: Any) -> torch.nn.Module:
        return model.model.norm

    def read_out(self, norm: Any, x: torch.Tensor, final: torch.Tensor) -> torch.Tensor:
        """RMSNorm x / rms * w, with the rms of the full residual: linear in x, no centring."""
        rms = (final.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon).sqrt()
        return x / rms * norm.weight.float().cpu()


#: The architectures the head tools know, by ``config.model_type``.
ANATOMIES: dict[str, _GPT2Anatomy] = {"gpt2": _GPT2Anatomy(), "llama": _LlamaAnatomy()}


def _anatomy(model: PreTrainedModel) -> _GPT2Anatomy:
    kind = model.config.model_type
    if kind not in ANATOMIES:
        raise ValueError(f"the induction tools know the model types {sorted(ANATOMIES)}, not {kind!r}")
    return ANATOMIES[kind]


def num_heads(model: PreTrainedModel) -> tuple[int, int]:
    """``(layers, heads per layer)`` of a model the head tools know."""
    a = _anatomy(model)
    return len(a.blocks(model)), a.heads(model.config)[0]


@torch.no_grad()
def head_outputs(model: PreTrainedModel, ids: torch.Tensor) -> torch.Tensor:
    """What each head writes into the residual stream: ``(L, nh, B, T, C)`` (its slice of the
    attention output times its rows of the output projection; a bias belongs to no head).
    For a large model prefer :func:`copying_scores`, which never holds all layers at once."""
    per_layer, _ = _per_layer_heads(model, ids)
    return torch.stack(list(per_layer))


@torch.no_grad()
def _per_layer_heads(model: PreTrainedModel, ids: torch.Tensor) -> tuple[Iterator[torch.Tensor], torch.Tensor]:
    """One forward pass: a generator of each layer's head outputs ``(nh, B, T, C)`` (made one layer
    at a time, on demand) and the residual stream after the last block, before the final norm."""
    a = _anatomy(model)
    nh, hs = a.heads(model.config)
    seen: list[torch.Tensor] = []
    final: list[torch.Tensor] = []
    hooks = [a.out_proj(blk).register_forward_pre_hook(lambda mod, args: seen.append(args[0].detach()))
             for blk in a.blocks(model)]
    hooks.append(a.final_norm(model).register_forward_pre_hook(lambda mod, args: final.append(args[0])))
    try:
        model(ids.to(model.device))
    finally:
        for h in hooks:
            h.remove()

    def layers() -> Iterator[torch.Tensor]:
        for blk, z in zip(a.blocks(model), seen):               # z: (B, T, nh * hs), heads side by side
            B, T, _ = z.shape
            w = a.out_weight(a.out_proj(blk), nh, hs)           # (nh, hs, C)
            yield torch.einsum("bthd,hdc->hbtc", z.view(B, T, nh, hs), w).float().cpu()  # (nh, B, T, C)

    return layers(), final[0].float().cpu()                     # ..., (B, T, C)


@torch.no_grad()
def copying_scores(model: PreTrainedModel, ids: torch.Tensor, length: int, pool: Sequence[int]) -> torch.Tensor:
    """Per head, how often its output *alone*, read out by the unembedding, ranks the right next
    token first among ``pool`` on the second copy (direct logit attribution; the final norm's
    scale is taken from the full forward pass). Chance is ``1 / len(pool)``. Returns ``(L, nh)``."""
    R = length
    a = _anatomy(model)
    per_layer, final = _per_layer_heads(model, ids)            # final: (B, T, C) before the norm
    norm = a.final_norm(model)
    pool_t = torch.tensor(list(pool))
    w_u = model.get_output_embeddings().weight[pool_t.to(model.device)].float().cpu()  # (P, C)
    q = torch.arange(R + 1, 2 * R)                             # predict positions q + 1
    target = ids[:, q + 1]                                     # (B, R-1)
    where = (target[..., None] == pool_t).float().argmax(-1)   # index of the target in pool
    scores = []
    for out in per_layer:                                      # (nh, B, T, C)
        logits = a.read_out(norm, out[:, :, q], final[:, q]) @ w_u.T   # (nh, B, R-1, P)
        scores.append((logits.argmax(-1) == where).float().mean(dim=(1, 2)))  # (nh,)
    return torch.stack(scores)                                 # (L, nh)


@contextlib.contextmanager
def ablate_heads(model: PreTrainedModel, heads: Iterable[tuple[int, int]]) -> Iterator[None]:
    """Inside the ``with`` block, the listed ``(layer, head)`` heads write nothing: their slice of
    the attention output is zeroed before the output projection. The model is unchanged afterwards."""
    a = _anatomy(model)
    n_layer, (nh, hs) = len(a.blocks(model)), a.heads(model.config)
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        if not (0 <= layer < n_layer and 0 <= head < nh):
            raise ValueError(f"no head ({layer}, {head}) in a model of {n_layer} layers x {nh} heads")
        by_layer.setdefault(layer, []).append(head)

    def zero(heads_here: list[int]) -> Callable[[torch.nn.Module, tuple[torch.Tensor, ...]], tuple[torch.Tensor]]:
        def hook(mod: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
            z = args[0].clone()                                          # (B, T, nh * hs)
            for h in heads_here:
                z[..., h * hs:(h + 1) * hs] = 0.0
            return (z,)
        return hook

    hooks = [a.out_proj(a.blocks(model)[layer]).register_forward_pre_hook(zero(hh))
             for layer, hh in by_layer.items()]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


#: The part of a few-shot prompt each token belongs to (:func:`fewshot_roles`). ``"due"`` is the
#: last token, the separator after the query: where the answer is predicted.
ROLES = ("prefix", "input", "sep", "answer", "delim", "query", "due")


def fewshot_roles(tok: PreTrainedTokenizerBase, prompt: _data.FewShotPrompt) -> tuple[list[int], list[str]]:
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
def attention_by_role(model: PreTrainedModel, tok: PreTrainedTokenizerBase,
                      prompts: Sequence[_data.FewShotPrompt]) -> torch.Tensor:
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
