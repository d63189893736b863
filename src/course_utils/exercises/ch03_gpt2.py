"""Checkers of Chapter 3 (GPT-2 internals).

* ``check.bpe_merge_step``   -- one step of byte-pair-encoding training;
* ``check.gpt2_block``       -- one GPT-2 block forward from a Hugging Face state dict;
* ``check.attention_with_cache`` -- causal self-attention with a KV cache.

Each reference is the course's solution; the known wrong variants (``Mistake``) are the
classic errors: an unweighted or wrongly tie-broken pair count, overlapping merges, the
Conv1D weights used as if they were ``nn.Linear``'s, the exact GELU instead of GPT-2's tanh
approximation, heads split with a bare ``view``, a causal mask that ignores the cache.
Top-level imports stay light (torch only), as the framework asks.
"""
from __future__ import annotations

import math
import re
from typing import Any

import torch
import torch.nn.functional as F

from .core import Case, Checker, CheckResult, Mistake, register

# =========================================================================== 1. BPE merge step
# splits: list of words, each a list of token ids; counts: how often each word occurs.
# Return (best_pair, new_splits): best_pair is the most frequent adjacent pair (ties: the
# smallest (left id, right id), as Hugging Face's `tokenizers` trainer does), and new_splits
# has every occurrence of it, scanning left to right, replaced by new_id. No pair at all
# (every word is a single token): return (None, splits unchanged).


def _pair_counts(splits, counts, weighted: bool = True) -> dict[tuple[int, int], int]:
    pairs: dict[tuple[int, int], int] = {}
    for word, n in zip(splits, counts):
        for a, b in zip(word, word[1:]):
            pairs[(a, b)] = pairs.get((a, b), 0) + (n if weighted else 1)
    return pairs


def _merge_word(word, pair, new_id):
    out, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def _merge_word_right_to_left(word, pair, new_id):
    out, i = [], len(word) - 1
    while i >= 0:
        if i > 0 and word[i - 1] == pair[0] and word[i] == pair[1]:
            out.append(new_id)
            i -= 2
        else:
            out.append(word[i])
            i -= 1
    return out[::-1]


def _bpe_step(splits, counts, new_id, *, weighted=True, tie="smallest", merge=_merge_word):
    pairs = _pair_counts(splits, counts, weighted)
    if not pairs:
        return None, [list(w) for w in splits]
    if tie == "smallest":
        best = max(pairs, key=lambda p: (pairs[p], -p[0], -p[1]))
    elif tie == "largest":
        best = max(pairs, key=lambda p: (pairs[p], p[0], p[1]))
    else:  # "first seen": max() keeps the first of equal keys in insertion order
        best = max(pairs, key=pairs.get)
    return best, [merge(list(w), best, new_id) for w in splits]


def bpe_merge_step_reference(splits: list[list[int]], counts: list[int], new_id: int):
    """The most frequent adjacent pair (ties -> smallest ids) and the splits with it merged."""
    return _bpe_step(splits, counts, new_id)


def _bpe_cases() -> list[Case]:
    return [
        Case("three words", ([[1, 2, 3], [1, 2], [2, 3, 1, 2]], [5, 2, 1], 10)),
        Case("word counts decide", ([[4, 5], [6, 7], [6, 7]], [10, 1, 1], 8)),
        Case("a tie, first seen is smallest", ([[1, 2], [5, 6]], [3, 3], 7)),
        Case("a tie, first seen is not smallest", ([[9, 3], [2, 7]], [4, 4], 12)),
        Case("a repeated symbol 'aaa'", ([[3, 3, 3], [3, 3, 3, 3], [5, 3]], [2, 1, 1], 6)),
        Case("single-token words only", ([[1], [2]], [3, 4], 3)),
        Case("larger vocabulary", ([[20, 21, 22, 21, 22], [21, 22, 23], [20, 21]], [3, 4, 6], 30)),
    ]


bpe_merge_step = register(Checker(
    "bpe_merge_step", bpe_merge_step_reference, _bpe_cases,
    mistakes=[
        Mistake(lambda s, c, n: _bpe_step(s, c, n, weighted=False),
                "count each pair once per *occurrence in the corpus*: add the word's count, not 1."),
        Mistake(lambda s, c, n: _bpe_step(s, c, n, tie="first"),
                "on a tie you kept the pair seen first; the `tokenizers` trainer takes the smallest "
                "(left id, right id) -- e.g. max(pairs, key=lambda p: (pairs[p], -p[0], -p[1]))."),
        Mistake(lambda s, c, n: _bpe_step(s, c, n, tie="largest"),
                "on a tie you took the largest pair; take the smallest (left id, right id)."),
        Mistake(lambda s, c, n: _bpe_step(s, c, n, merge=_merge_word_right_to_left),
                "merge from left to right: in 'a a a' the first two symbols merge, giving 'aa a'."),
    ],
))


# =========================================================================== 2. one GPT-2 block
# x: (B, T, C); sd: the Hugging Face state dict of one GPT2Block (keys "ln_1.weight",
# "attn.c_attn.weight" ...; Conv1D weights stored as (in, out)); n_head. Return (B, T, C).

def _conv1d(x: torch.Tensor, sd: dict, name: str, transpose: bool = False) -> torch.Tensor:
    w = sd[f"{name}.weight"]
    return x @ (w.t() if transpose else w) + sd[f"{name}.bias"]


def _block(x, sd, n_head, eps=1e-5, *, gelu="tanh", proj_t=False, split="transpose", mask=True,
           scale=True, pre_ln=True):
    B, T, C = x.shape
    hs = C // n_head

    def heads(t):  # (B, T, C) -> (B, nh, T, hs)
        return t.view(B, T, n_head, hs).transpose(1, 2) if split == "transpose" else t.reshape(B, n_head, T, hs)

    def ln(t, name):
        return F.layer_norm(t, (C,), sd[f"{name}.weight"], sd[f"{name}.bias"], eps)

    def attn(h):
        q, k, v = _conv1d(h, sd, "attn.c_attn").split(C, dim=2)            # 3 x (B, T, C)
        q, k, v = heads(q), heads(k), heads(v)                              # (B, nh, T, hs)
        att = q @ k.transpose(-2, -1) / (math.sqrt(hs) if scale else 1.0)   # (B, nh, T, T)
        if mask:
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            att = att.masked_fill(~causal, float("-inf"))
        y = att.softmax(dim=-1) @ v                                         # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C) if split == "transpose" else y.reshape(B, T, C)
        return _conv1d(y, sd, "attn.c_proj", transpose=proj_t)

    def mlp(h):
        return _conv1d(F.gelu(_conv1d(h, sd, "mlp.c_fc"), approximate=gelu), sd, "mlp.c_proj")

    if not pre_ln:  # the original Transformer's post-LN order
        x = ln(x + attn(x), "ln_1")
        return ln(x + mlp(x), "ln_2")
    x = x + attn(ln(x, "ln_1"))
    return x + mlp(ln(x, "ln_2"))


def gpt2_block_reference(x: torch.Tensor, sd: dict, n_head: int) -> torch.Tensor:
    """GPT-2's block: x + attn(ln_1(x)), then + mlp(ln_2(x)); Conv1D layers compute x @ W + b."""
    return _block(x, sd, n_head)


def random_block_state_dict(C: int, scale: float = 0.4) -> dict[str, torch.Tensor]:
    """A GPT2Block-shaped state dict with weights large enough that every mistake shows."""
    shapes = {"ln_1.weight": (C,), "ln_1.bias": (C,), "attn.c_attn.weight": (C, 3 * C),
              "attn.c_attn.bias": (3 * C,), "attn.c_proj.weight": (C, C), "attn.c_proj.bias": (C,),
              "ln_2.weight": (C,), "ln_2.bias": (C,), "mlp.c_fc.weight": (C, 4 * C),
              "mlp.c_fc.bias": (4 * C,), "mlp.c_proj.weight": (4 * C, C), "mlp.c_proj.bias": (C,)}
    sd = {k: torch.randn(s) * scale for k, s in shapes.items()}
    sd["ln_1.weight"] += 1.0
    sd["ln_2.weight"] += 1.0
    return sd


def _block_cases() -> list[Case]:
    return [
        Case("B=2, T=5, C=16, 4 heads", (torch.randn(2, 5, 16), random_block_state_dict(16), 4)),
        Case("one position (T=1)", (torch.randn(1, 1, 16), random_block_state_dict(16), 4)),
        Case("B=1, T=7, C=24, 3 heads", (torch.randn(1, 7, 24), random_block_state_dict(24), 3)),
    ]


class _GPT2BlockChecker(Checker):
    """Adds the classic Conv1D hint when the student's matmul fails on a shape."""

    def _exception(self, outcome, case) -> CheckResult:
        result = super()._exception(outcome, case)
        text = str(outcome.error)
        if re.search(r"shapes cannot be multiplied|size mismatch|must match the size", text):
            hint = ("Hugging Face's GPT-2 stores c_attn, c_proj and c_fc as Conv1D layers whose weight "
                    "has shape (in, out): compute `x @ W + b`. F.linear / nn.Linear expect (out, in), "
                    "so with them you would need W.t().")
            result.message += f"\n   Hint: {hint}"
            result.hint = hint
        return result


gpt2_block = register(_GPT2BlockChecker(
    "gpt2_block", gpt2_block_reference, _block_cases, axes=("batch", "seq", "channels"), atol=1e-4,
    mistakes=[
        Mistake(lambda x, sd, nh: _block(x, sd, nh, proj_t=True),
                "attn.c_proj.weight is square, so using it transposed runs but is wrong: Conv1D weights "
                "are (in, out), compute `y @ W + b` (not F.linear(y, W, b))."),
        Mistake(lambda x, sd, nh: _block(x, sd, nh, gelu="none"),
                "GPT-2 uses the tanh approximation of GELU (`F.gelu(h, approximate='tanh')`, "
                "HF's 'gelu_new'), not the exact erf GELU."),
        Mistake(lambda x, sd, nh: _block(x, sd, nh, split="view"),
                "split heads with .view(B, T, nh, hs).transpose(1, 2); a bare .view(B, nh, T, hs) "
                "mixes positions and channels."),
        Mistake(lambda x, sd, nh: _block(x, sd, nh, mask=False),
                "GPT-2's attention is causal: mask the scores above the diagonal with -inf before "
                "the softmax."),
        Mistake(lambda x, sd, nh: _block(x, sd, nh, scale=False),
                "divide the attention scores by sqrt(hs), the head size (not sqrt(C))."),
        Mistake(lambda x, sd, nh: _block(x, sd, nh, pre_ln=False),
                "GPT-2 is pre-LN: x + attn(ln_1(x)), then x + mlp(ln_2(x)); the LayerNorm goes "
                "*inside* the residual branch, not after the sum."),
    ],
))


# =========================================================================== 3. attention + KV cache
# attn: an object with attn.c_attn (C -> 3C), attn.c_proj (C -> C) (nn.Linear modules: call them)
# and attn.n_head; x: (B, T, C), the T *new* positions; past_kv: None or (k, v), each
# (B, nh, P, hs) for the P earlier positions. Return (y, (k, v)): y (B, T, C) and the cache
# of all S = P + T positions.

class AttentionWeights(torch.nn.Module):
    """Holds c_attn, c_proj and n_head -- and deliberately no forward: write it yourself."""

    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.c_attn = torch.nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = torch.nn.Linear(n_embd, n_embd)

    def forward(self, *args: Any, **kwargs: Any):  # noqa: D401 - see class docstring
        raise NotImplementedError("this exercise asks you to write the attention; calling "
                                  "attn(...) itself is not the solution. Use attn.c_attn, attn.c_proj.")


def _attention(attn, x, past_kv=None, *, offset=True, concat=True, scale=True):
    B, T, C = x.shape
    nh = attn.n_head
    hs = C // nh
    q, k, v = attn.c_attn(x).split(C, dim=2)                                  # 3 x (B, T, C)
    q, k, v = (t.view(B, T, nh, hs).transpose(1, 2) for t in (q, k, v))       # (B, nh, T, hs)
    k_new, v_new = k, v
    if past_kv is not None:
        k = torch.cat([past_kv[0], k], dim=2)                                 # (B, nh, S, hs)
        v = torch.cat([past_kv[1], v], dim=2)
    S = k.size(2)
    att = q @ k.transpose(-2, -1) / (math.sqrt(hs) if scale else 1.0)         # (B, nh, T, S)
    causal = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(diagonal=S - T if offset else 0)
    att = att.masked_fill(~causal, float("-inf")).softmax(dim=-1)
    y = (att @ v).transpose(1, 2).reshape(B, T, C)                            # (B, T, C)
    return attn.c_proj(y), ((k, v) if concat else (k_new, v_new))


def attention_with_cache_reference(attn, x: torch.Tensor, past_kv=None):
    """Causal self-attention over the cached and the new positions; returns (y, (k, v))."""
    return _attention(attn, x, past_kv)


def _attn_cases() -> list[Case]:
    C, nh = 16, 4
    cases = []
    for name, B, P, T in (("no cache, T=6", 2, 0, 6), ("one new token, 5 cached", 2, 5, 1),
                          ("3 new tokens, 4 cached", 1, 4, 3)):
        attn = AttentionWeights(C, nh)
        with torch.no_grad():
            for p in attn.parameters():
                p.mul_(4.0)  # sharper attention, so a wrong mask changes the output visibly
        past = None if P == 0 else (torch.randn(B, nh, P, C // nh), torch.randn(B, nh, P, C // nh))
        cases.append(Case(name, (attn, torch.randn(B, T, C), past)))
    return cases


attention_with_cache = register(Checker(
    "attention_with_cache", attention_with_cache_reference, _attn_cases,
    axes=(("batch", "seq", "channels"), None),
    mistakes=[
        Mistake(lambda a, x, p=None: _attention(a, x, p, offset=False),
                "with a cache the T new queries are the *last* T of S positions: the mask must be "
                "tril(ones(T, S), diagonal=S - T), so the newest token sees every cached key."),
        Mistake(lambda a, x, p=None: _attention(a, x, p, concat=False),
                "return the cache of *all* positions: torch.cat([past_k, k], dim=2) (and v), not "
                "only the new keys/values."),
        Mistake(lambda a, x, p=None: _attention(a, x, p, scale=False),
                "divide the scores by sqrt(hs), the head size."),
    ],
))

__all__ = ["bpe_merge_step", "gpt2_block", "attention_with_cache", "AttentionWeights",
           "random_block_state_dict", "bpe_merge_step_reference", "gpt2_block_reference",
           "attention_with_cache_reference"]
