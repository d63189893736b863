"""Checkers of Chapter 4 (Sampling and decoding), handed out in ``chapters/04_exercises.ipynb``.

Three truncation rules the chapter does not build, each checked against the ``transformers``
warper that implements it (the reference *is* the library's warper, called on the same scores):

* ``check.min_p_filter``   -- min-p: drop tokens less likely than ``min_p`` times the top
  token's probability (``MinPLogitsWarper``);
* ``check.typical_filter`` -- locally typical sampling: keep the tokens whose surprisal is
  closest to the entropy, up to a mass (``TypicalLogitsWarper``);
* ``check.eta_filter``     -- eta sampling: an entropy-dependent probability floor
  (``EtaLogitsWarper``).

And one head score beside the chapter's prefix matching:

* ``check.previous_token_scores`` -- each head's mean attention from position t to t - 1, over
  (L, B, nh, T, T) attention maps (the first half of the induction circuit).

And one ablation beside the chapter's zeroing of heads:

* ``check.mean_ablated_logits`` -- a Llama model's logits with chosen (layer, query head) heads
  *mean*-ablated: each head's slice of ``o_proj``'s input replaced by its mean over every
  position of a reference batch, with hooks that are gone afterwards. Checked on small random
  ``LlamaForCausalLM`` models (grouped-query attention, ``head_dim`` != hidden / heads) against a
  reference that takes another route (the heads' outputs rebuilt from the attention probabilities
  and the values, the correction added after ``o_proj``), and the model is run again after the
  call to see that it is unchanged.

The known wrong variants are the classic errors: an unscaled threshold, removed tokens set to 0
instead of -inf, probabilities returned instead of scores, the surprisal sorted the wrong way,
the crossing token dropped, the entropy's sign, a previous-token score started at position 0;
zero instead of mean ablation, a mean over the wrong positions (per position, or over ``ids``)
or taken with earlier heads already ablated, key/value groups or a head-minor layout instead of
query heads' head-major slices, the head size taken as hidden / heads, hooks left in place.
Top-level imports stay light (torch only; transformers is imported inside functions).
"""
from __future__ import annotations

import math
from typing import Any, cast

import torch

from .core import Case, Checker, Mistake, draw, register

NEG_INF = float("-inf")


def _ids(scores: torch.Tensor) -> torch.LongTensor:
    return cast(torch.LongTensor, torch.zeros(scores.shape[0], 1, dtype=torch.long))  # the warpers ignore input_ids


# =========================================================================== 1. min-p
# logits: (B, V); min_p in (0, 1]. Return (B, V): the scores, -inf for every token whose
# probability is below min_p x (the most likely token's probability). Keep at least one token.

def min_p_filter_reference(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """``MinPLogitsWarper(min_p)`` (``min_tokens_to_keep=1``)."""
    from transformers import MinPLogitsWarper

    return MinPLogitsWarper(min_p)(_ids(logits), logits.clone())


def _min_p(logits, min_p, *, scaled=True, on_logits=False, fill=NEG_INF, probs_out=False, strict=True):
    probs = logits.softmax(-1)
    if on_logits:
        remove = logits < logits.amax(-1, keepdim=True) + math.log(min_p) if scaled else logits < min_p
    else:
        threshold = min_p * probs.amax(-1, keepdim=True) if scaled else torch.full_like(probs[..., :1], min_p)
        remove = probs < threshold if strict else probs <= threshold
    remove = remove & (probs < probs.amax(-1, keepdim=True))  # the top token stays
    out = logits.masked_fill(remove, fill)
    return out.softmax(-1) if probs_out else out


def _min_p_cases() -> list[Case]:
    flat = torch.zeros(1, 6)
    flat[0, 0] = 0.5
    return [
        Case("random scores, min_p = 0.1", (torch.randn(3, 50) * 2, 0.1)),
        Case("a peaked row and a flat row, min_p = 0.05",
             (torch.stack([torch.randn(40) * 4, torch.randn(40) * 0.3]), 0.05)),
        Case("a token exactly at the threshold (0.2 = 0.5 x 0.4)", (torch.tensor([[4.0, 3.0, 2.0, 1.0]]).log(), 0.5)),
        Case("min_p = 1 keeps only the top token(s)", (flat, 1.0)),
        Case("large vocabulary, min_p = 0.02", (torch.randn(2, 2000) * 3, 0.02)),
    ]


min_p_filter = register(Checker(
    "min_p_filter", min_p_filter_reference, _min_p_cases,
    axes=("batch", "vocab"),
    mistakes=[
        Mistake(lambda l, p: _min_p(l, p, scaled=False),
                "the threshold scales with the top token: remove a token when its probability is below "
                "min_p x max(probs), not below min_p itself — that is what makes min-p adapt to how sure "
                "the model is."),
        Mistake(lambda l, p: _min_p(l, p, on_logits=True, scaled=False),
                "compare *probabilities* (softmax of the scores), not the raw scores, with the threshold."),
        Mistake(lambda l, p: _min_p(l, p, strict=False),
                "a token exactly at the threshold stays: remove `probs < threshold`, not `<=`."),
        Mistake(lambda l, p: _min_p(l, p, fill=0.0),
                "a removed token's score must be -inf (probability exactly 0 after the softmax), not 0."),
        Mistake(lambda l, p: _min_p(l, p, probs_out=True),
                "return the filtered scores (logits), not probabilities: the softmax comes when sampling."),
    ],
    what="your min_p_filter",
))


# =========================================================================== 2. typical sampling
# logits: (B, V); mass in (0, 1]. Return (B, V): the scores, -inf outside the "typical set":
# sort the tokens by |surprisal - entropy| (surprisal = -log p, entropy = sum -p log p), ascending,
# keep the shortest prefix whose probability reaches `mass` (the crossing token included), and at
# least one token.

def typical_filter_reference(logits: torch.Tensor, mass: float) -> torch.Tensor:
    """``TypicalLogitsWarper(mass)`` (``min_tokens_to_keep=1``)."""
    from transformers import TypicalLogitsWarper

    return TypicalLogitsWarper(mass)(_ids(logits), logits.clone())


def _typical(logits, mass, *, key="typical", crossing=True, fill=NEG_INF, bits=False):
    logp = logits.log_softmax(-1)
    p = logp.exp()
    ent = -(p * logp).nansum(-1, keepdim=True)
    if key == "typical":
        dist = (-logp - ent).abs()
        if bits:
            dist = (-logp / math.log(2) - ent / math.log(2)).abs()
    elif key == "prob":
        dist = -p
    else:  # descending distance: the least typical first
        dist = -(-logp - ent).abs()
    order = torch.sort(dist, dim=-1, stable=True).indices
    sorted_p = p.gather(-1, order)
    cum = sorted_p.cumsum(-1)
    remove_sorted = (cum - sorted_p >= mass) if crossing else (cum > mass)
    remove_sorted[..., 0] = False
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, fill)


def _typical_cases() -> list[Case]:
    bimodal = torch.tensor([[3.0, 2.9, 0.0, -0.5, -1.0, -1.2, -2.0, -4.0]])
    return [
        Case("random scores, mass = 0.9", (torch.randn(3, 60) * 2, 0.9)),
        Case("a peaked distribution, mass = 0.5", (torch.randn(2, 40) * 5, 0.5)),
        Case("a small vocabulary, mass = 0.6", (bimodal, 0.6)),
        Case("large vocabulary, mass = 0.95", (torch.randn(1, 2000) * 2, 0.95)),
    ]


typical_filter = register(Checker(
    "typical_filter", typical_filter_reference, _typical_cases,
    axes=("batch", "vocab"), atol=1e-6,
    mistakes=[
        Mistake(lambda l, m: _typical(l, m, key="prob"),
                "that is top-p: typical sampling orders the tokens by how close their surprisal -log p is "
                "to the entropy, |-log p - H|, smallest first — not by probability."),
        Mistake(lambda l, m: _typical(l, m, key="far"),
                "sort by |-log p - H| in *ascending* order: the most typical tokens (surprisal closest to "
                "the entropy) come first."),
        Mistake(lambda l, m: _typical(l, m, crossing=False),
                "the token that makes the running mass cross `mass` belongs to the set: remove a token only "
                "if the mass *before* it already reaches `mass`."),
        Mistake(lambda l, m: _typical(l, m, fill=0.0),
                "a removed token's score must be -inf, not 0."),
    ],
    what="your typical_filter",
))


# =========================================================================== 3. eta sampling
# logits: (B, V); epsilon > 0. Return (B, V): the scores, -inf for every token whose probability
# is below eta = min(epsilon, sqrt(epsilon) * exp(-H)), H the entropy (nats) of that row.

def eta_filter_reference(logits: torch.Tensor, epsilon: float) -> torch.Tensor:
    """``EtaLogitsWarper(epsilon)`` (``min_tokens_to_keep=1``)."""
    from transformers import EtaLogitsWarper

    return EtaLogitsWarper(epsilon)(_ids(logits), logits.clone())


def _eta(logits, epsilon, *, sign=-1.0, use_min=True, root=True, fill=NEG_INF):
    probs = logits.softmax(-1)
    ent = -(probs * logits.log_softmax(-1)).nansum(-1, keepdim=True)
    entropic = (math.sqrt(epsilon) if root else epsilon) * torch.exp(sign * ent)
    eta = torch.minimum(torch.full_like(ent, epsilon), entropic) if use_min else entropic
    # The most likely token can never fall below eta (exp(-H) <= max p), so no row empties.
    return logits.masked_fill(probs < eta, fill)


def _eta_cases() -> list[Case]:
    return [
        Case("a high-entropy row (eta follows the entropy), eps = 3e-4", (torch.randn(2, 1000) * 0.8, 3e-4)),
        Case("a low-entropy row (eta = epsilon), eps = 0.02", (torch.randn(2, 50) * 4, 0.02)),
        Case("a very peaked row: only the top token is above eta", (torch.tensor([[12.0, 0.0, -1.0, -2.0]]), 0.1)),
        Case("mixed rows, eps = 1e-3", (torch.cat([torch.randn(1, 500) * 0.5, torch.randn(1, 500) * 5]), 1e-3)),
    ]


eta_filter = register(Checker(
    "eta_filter", eta_filter_reference, _eta_cases,
    axes=("batch", "vocab"),
    mistakes=[
        Mistake(lambda l, e: _eta(l, e, use_min=False),
                "eta is the *smaller* of epsilon and sqrt(epsilon) x exp(-H): `torch.minimum(...)`, so a "
                "confident row is never cut harder than epsilon."),
        Mistake(lambda l, e: _eta(l, e, root=False),
                "the entropy term is sqrt(epsilon) x exp(-H), with the square root."),
        Mistake(lambda l, e: _eta(l, e, use_min=False, root=False, sign=0.0),
                "that is epsilon sampling (a fixed floor epsilon; exp(+H) instead of exp(-H) gives the same): "
                "eta sampling *lowers* the floor on flat, high-entropy rows: eta = min(epsilon, "
                "sqrt(epsilon) x exp(-H))."),
        Mistake(lambda l, e: _eta(l, e, fill=0.0),
                "a removed token's score must be -inf, not 0."),
    ],
    what="your eta_filter",
))


# =========================================================================== 4. previous-token heads
# attn: (L, B, nh, T, T), every head's attention probabilities (rows sum to 1, causal). Return
# (L, nh): for each head, the mean attention that position t pays to position t - 1, over the
# sequences and over t = 1 ... T-1 (position 0 has no previous token).

def previous_token_scores_reference(attn: torch.Tensor) -> torch.Tensor:
    """attn[..., t, t - 1] for t = 1 ... T-1, averaged over the sequences and positions: (L, nh)."""
    return _previous(attn)


def _previous(attn, *, start=1, offset=-1, axes=(1, 3), diag=False):
    """The reference written out, with one switch per known mistake."""
    T = attn.shape[-1]
    if diag:  # torch.diagonal(offset=-1): the same entries, read another way
        return torch.diagonal(attn, offset=offset, dim1=-2, dim2=-1).mean(dim=(1, 3))
    t = torch.arange(start, T) if offset < 0 else torch.arange(0, T - 1)
    return attn[..., t, t + offset].mean(dim=axes)                 # (L, nh)


def _causal_attention(L: int, B: int, nh: int, T: int, sharp: float = 1.0) -> torch.Tensor:
    scores = torch.randn(L, B, nh, T, T) * sharp
    mask = torch.ones(T, T, dtype=torch.bool).triu(1)
    return scores.masked_fill(mask, float("-inf")).softmax(-1)


def _previous_cases() -> list[Case]:
    L, B, nh, T = 3, 2, 4, 12
    perfect = _causal_attention(L, B, nh, T)
    t = torch.arange(1, T)
    perfect[1, :, 2] = 0.0
    perfect[1, :, 2, 0, 0] = 1.0
    perfect[1, :, 2, t, t - 1] = 1.0                              # layer 1, head 2: a previous-token head
    return [
        Case("random causal attention, 3 layers x 4 heads", (_causal_attention(L, B, nh, T),)),
        Case("one perfect previous-token head (layer 1, head 2)", (perfect,)),
        Case("sharp heads, more sequences than heads", (_causal_attention(2, 5, 3, 20, sharp=4.0),)),
        Case("two positions only", (_causal_attention(1, 3, 2, 2),)),
    ]


previous_token_scores = register(Checker(
    "previous_token_scores", previous_token_scores_reference, _previous_cases,
    axes=("layer", "head"), atol=1e-6,
    mistakes=[
        Mistake(lambda a: _previous(a, start=0),
                "start at position 1: position 0 has no previous token, and attn[..., 0, -1] wraps "
                "around to the *last* position (a zero above the diagonal, which lowers every score)."),
        Mistake(lambda a: _previous(a, offset=+1),
                "the previous token is t - 1 (below the diagonal); attn[..., t, t + 1] is the next "
                "token, which causal attention never sees (all zeros)."),
        Mistake(lambda a: _previous(a, axes=(0, 3)),
                "average over the sequences (dimension 1) and the positions, keeping the layer "
                "(dimension 0) and the head (dimension 2): the result is (L, nh)."),
    ],
    what="your previous_token_scores",
))


# =========================================================================== 5. mean ablation
# model: a LlamaForCausalLM (eval mode); ids: (B, T) token ids; heads: a list of (layer, query
# head); reference_ids: (B_ref, T_ref). Return the logits (B, T, V) of the model on ids with each
# listed head's output (its head_dim slice of o_proj's input) replaced by that head's mean output
# in the *unablated* model over every position of reference_ids. The model is unchanged after.

def _tiny_llama(spec: dict[str, int]) -> Any:
    """A seeded random ``LlamaForCausalLM`` (eager attention, so that it returns its attention
    probabilities) from a case's plain description: layers, hidden, heads, kv_heads, head_dim, vocab."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    config = LlamaConfig(vocab_size=spec["vocab"], hidden_size=spec["hidden"],
                         intermediate_size=2 * spec["hidden"], num_hidden_layers=spec["layers"],
                         num_attention_heads=spec["heads"], num_key_value_heads=spec["kv_heads"],
                         head_dim=spec["head_dim"], max_position_embeddings=64,
                         initializer_range=0.3, tie_word_embeddings=False)
    config._attn_implementation = "eager"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec["seed"])
        model = LlamaForCausalLM(config).eval()
    return model


def _by_layer(heads: list) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for layer, head in heads:
        if head not in out.setdefault(int(layer), []):
            out[int(layer)].append(int(head))
    return out


def mean_ablated_logits_reference(model: Any, ids: torch.Tensor, heads: list,
                                  reference_ids: torch.Tensor) -> torch.Tensor:
    """Mean ablation by another route than the page's solution, so that the two check each other.

    The solution replaces slices of ``o_proj``'s *input* in a pre-hook. This reference never reads
    that input: it rebuilds each head's output from the attention probabilities that eager
    attention returns and the value projection's output, z_h = A_h @ V_(h // group) (grouped-query
    attention spelled out), and corrects the attention block's *output* in a forward hook by
    (m_h - z_h) @ W_O[:, h]^T, W_O[:, h] the columns of o_proj's weight that head h feeds. Its
    means m_h are the same z_h averaged over every position of the clean run on reference_ids.
    Agreement with the solution (``tests/test_ch04_checkers.py``) therefore checks the layout, the
    grouping and the hooks' bookkeeping of both."""
    cfg = model.config
    nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = cfg.head_dim
    kv_of = torch.arange(nh) // (nh // nkv)                     # query head -> its key/value head
    by_layer = _by_layer(heads)
    layers = model.model.layers
    values: dict[int, torch.Tensor] = {}

    def head_outputs(layer: int, weights: torch.Tensor) -> torch.Tensor:   # (B, nh, T, hd)
        v = values[layer]                                       # (B, T, nkv * hd)
        v = v.view(*v.shape[:2], nkv, hd).transpose(1, 2)[:, kv_of]   # (B, nh, T, hd)
        return weights @ v

    def keep_values(layer: int) -> Any:
        def hook(module: torch.nn.Module, args: Any, out: torch.Tensor) -> None:
            values[layer] = out
        return hook

    def run(x: torch.Tensor, attention_hook: Any) -> torch.Tensor:
        handles = []
        try:
            for layer in by_layer:
                attn = layers[layer].self_attn
                handles.append(attn.v_proj.register_forward_hook(keep_values(layer)))
                handles.append(attn.register_forward_hook(attention_hook(layer)))
            with torch.no_grad():
                return model(x, use_cache=False).logits
        finally:
            for handle in handles:
                handle.remove()

    means: dict[int, torch.Tensor] = {}

    def record(layer: int) -> Any:
        def hook(module: torch.nn.Module, args: Any, out: tuple) -> None:
            means[layer] = head_outputs(layer, out[1]).mean(dim=(0, 2))   # (nh, hd)
        return hook

    def substitute(layer: int) -> Any:
        def hook(module: Any, args: Any, out: tuple) -> tuple:
            z = head_outputs(layer, out[1])                     # (B, nh, T, hd)
            w_o = module.o_proj.weight                          # (C, nh * hd)
            fix = out[0]
            for h in by_layer[layer]:
                delta = means[layer][h] - z[:, h]               # (B, T, hd)
                fix = fix + delta @ w_o[:, h * hd:(h + 1) * hd].T
            return (fix, *out[1:])
        return hook

    run(reference_ids, record)
    return run(ids, substitute)


def _o_proj_inputs(model: Any, x: torch.Tensor, layers: Any) -> dict[int, torch.Tensor]:
    """Each listed layer's ``o_proj`` input (B, T, nh * hd) in one run of ``model`` on ``x``."""
    inputs: dict[int, torch.Tensor] = {}

    def record(layer: int) -> Any:
        def hook(module: torch.nn.Module, args: Any) -> None:
            inputs[layer] = args[0]
        return hook

    handles = [model.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(record(layer))
               for layer in layers]
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    return inputs


def _columns(h: int, cfg: Any, layout: str, size: str) -> Any:
    """Head ``h``'s columns of ``o_proj``'s input: right (head-major), or as a known mistake reads them."""
    nh, width = cfg.num_attention_heads, cfg.num_attention_heads * cfg.head_dim
    hd = cfg.hidden_size // nh if size == "hidden" else cfg.head_dim
    if layout == "head-minor":                                  # (.., hd, nh): channel j of head h at j * nh + h
        return torch.arange(hd) * nh + h
    if layout == "group":                                       # head h read as key/value group h
        g = nh // cfg.num_key_value_heads
        return slice(min(h * g * hd, width), min((h + 1) * g * hd, width))
    return slice(min(h * hd, width), min((h + 1) * hd, width))


def _mean_ablated(model, ids, heads, reference_ids, *, mean="reference", layout="head-major",
                  size="head_dim", remove=True):
    """The pre-hook solution with one switch flipped: the known wrong variants."""
    cfg = model.config
    by_layer = _by_layer(heads)
    if mean == "zero":
        means = {layer: torch.zeros(cfg.num_attention_heads * cfg.head_dim) for layer in by_layer}
    elif mean == "batch":                                       # per position: (T_ref, nh * hd)
        means = {layer: x.mean(dim=0) for layer, x in _o_proj_inputs(model, reference_ids, by_layer).items()}
    elif mean == "sequential":
        means = {}                                              # filled layer by layer below
    else:
        source = ids if mean == "ids" else reference_ids
        means = {layer: x.mean(dim=(0, 1)) for layer, x in _o_proj_inputs(model, source, by_layer).items()}

    def replace(layer: int) -> Any:
        def hook(module: torch.nn.Module, args: Any) -> tuple:
            x = args[0].clone()
            for h in by_layer[layer]:
                cols = _columns(h, cfg, layout, size)
                x[..., cols] = means[layer][..., cols]
            return (x,)
        return hook

    handles = []
    for layer in sorted(by_layer):
        if mean == "sequential":  # this layer's mean taken with the earlier layers' heads already ablated
            means[layer] = _o_proj_inputs(model, reference_ids, [layer])[layer].mean(dim=(0, 1))
        handles.append(model.model.layers[layer].self_attn.o_proj.register_forward_pre_hook(replace(layer)))
    with torch.no_grad():
        logits = model(ids).logits
    if remove:
        for handle in handles:
            handle.remove()
    return logits


def _run_then_rerun(fn: Any, case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    """Build the case's seeded model, call ``fn`` on it, then run the model again, plainly: the
    second output must be the model's own logits (no hook left behind, no weight edited)."""
    spec, ids, heads, reference_ids = case.args
    model = _tiny_llama(spec)
    logits = fn(model, ids, heads, reference_ids)
    with torch.no_grad():
        after = model(ids).logits
    return logits, after


_AFTER = ("your logits are right, but the model has changed: run again after your function returned, "
          "it no longer gives its own logits (a hook left registered? a weight edited in place?); ")


class _AblationChecker(Checker):
    """Names the two outputs of :func:`_run_then_rerun` in words rather than ``output[0]``/``[1]``."""

    def fail(self, stage: str, text: str, case: Case | None = None, hint: str | None = None) -> Any:
        text = text.replace("output[0]: ", "").replace("output[1]: ", _AFTER)
        return super().fail(stage, text, case, hint)


def _ablation_cases() -> list[Case]:
    def spec(layers: int, hidden: int, heads: int, kv_heads: int, head_dim: int, vocab: int) -> dict[str, int]:
        return dict(layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
                    vocab=vocab, seed=draw(0, 10**6))

    def tokens(vocab: int, B: int, T: int) -> torch.Tensor:
        return torch.randint(0, vocab, (B, T))

    first = spec(2, 32, 4, 2, 16, 48)
    second = spec(3, 48, 6, 2, 8, 40)
    two = torch.randperm(6)[:2].tolist()
    mqa_layers, mqa_heads = draw(2, 3), 4
    third = spec(mqa_layers, 24, mqa_heads, 1, 12, 32)
    return [
        Case("2 layers, 4 query heads on 2 key/value heads, head_dim 16 (not 32 / 4); "
             "a reference batch as long as the input",
             (first, tokens(48, 2, 7), [(0, draw(0, 3)), (1, draw(0, 3))], tokens(48, 3, 7))),
        Case("3 layers, 6 query heads in groups of 3, two heads of one layer; a longer reference",
             (second, tokens(40, 1, 9), [(1, two[0]), (1, two[1]), (2, draw(0, 5))], tokens(40, 4, 12))),
        Case("one key/value head for all (multi-query), a head of every layer",
             (third, tokens(32, draw(1, 3), draw(2, 8)),
              [(layer, draw(0, mqa_heads - 1)) for layer in range(mqa_layers)], tokens(32, 2, draw(3, 10)))),
        Case("no head listed: the model's own logits",
             (spec(2, 32, 4, 2, 8, 48), tokens(48, 2, 5), [], tokens(48, 2, 5))),
    ]


mean_ablated_logits = register(_AblationChecker(
    "mean_ablated_logits", mean_ablated_logits_reference, _ablation_cases,
    call=_run_then_rerun, axes=(("batch", "position", "vocab"), ("batch", "position", "vocab")),
    atol=1e-5, rtol=1e-4, timeout=5.0,
    mistakes=[
        Mistake(lambda *a: _mean_ablated(*a, mean="zero"),
                "that is zero ablation, the chapter's: replace each head's slice by its *mean* over the "
                "reference batch (record o_proj's input on reference_ids first), not by zeros."),
        Mistake(lambda *a: _mean_ablated(*a, mean="batch"),
                "average over the reference batch's sequences *and* positions (dim=(0, 1)): one "
                "vector per head, the same at every position of ids."),
        Mistake(lambda *a: _mean_ablated(*a, mean="ids"),
                "take the means on reference_ids, not on ids: the head's typical output comes from "
                "the reference batch, whatever sequence is then ablated."),
        Mistake(lambda *a: _mean_ablated(*a, mean="sequential"),
                "take every mean from the *unablated* model: record them all in one clean run on "
                "reference_ids before any replacing hook is in place (here a later layer's mean was "
                "taken with an earlier layer's heads already ablated)."),
        Mistake(lambda *a: _mean_ablated(*a, layout="group"),
                "heads are *query* heads: o_proj's input has num_attention_heads blocks of head_dim "
                "(one per query head), not one per key/value group."),
        Mistake(lambda *a: _mean_ablated(*a, size="hidden"),
                "a head's slice is config.head_dim wide, which need not be hidden_size // "
                "num_attention_heads (here it is not)."),
        Mistake(lambda *a: _mean_ablated(*a, layout="head-minor"),
                "o_proj's input is head-major: head h owns columns h * head_dim ... (h + 1) * "
                "head_dim - 1 (the attention output (B, T, nh, hd) reshaped), not every nh-th column."),
        Mistake(lambda *a: _mean_ablated(*a, remove=False),
                "remove your hooks before returning (keep each register_forward_pre_hook's handle and "
                "call .remove(), in a `finally:` so an error cannot leave them in place)."),
    ],
    what="your mean_ablated_logits",
))
