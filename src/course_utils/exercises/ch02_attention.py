"""Checkers of Chapter 2 (Attention from scratch), handed out in ``chapters/02_exercises.ipynb``.

* ``check.bert_encoder_layer(fn)``: ``fn(x, params, n_heads, mask=None, eps=1e-12)`` -> (B, T, C):
  one post-LN BERT layer from the weights ``params`` of a Hugging Face ``BertLayer`` (its
  ``state_dict()``: ``attention.self.query.weight`` ... ``output.LayerNorm.bias``;
  ``nn.Linear`` weights stored (out, in)); ``mask`` bool (B, 1, 1, T), True for real tokens.
  The reference is tested against a real ``BertLayer`` (``tests/test_exercise_references.py``).
* ``check.bert_classifier_head(fn)``: ``fn(hidden, params) -> logits`` (B, n_labels): BERT's
  pooler (dense + tanh on the ``[CLS]`` vector) and the classification layer of
  ``BertForSequenceClassification``, from its state dict (``bert.pooler.dense.*``,
  ``classifier.*``). The reference runs the library's own ``BertPooler`` and ``nn.Linear``.
* ``check.packed_attention_mask(fn)``: ``fn(doc_ids) -> (B, 1, T, T)`` bool: several documents
  packed into one row attend only within their own document; ``doc_ids`` (B, T) gives each
  token's document, -1 for padding. Tested against the library: a real pretrained encoder run
  on the packed rows with this mask equals the same encoder run on each document alone.
* ``check.segment_ids(fn)``: ``fn(input_ids, sep_id, pad_id=0) -> token_type_ids`` (B, T) of a
  batch of sentence pairs, as ``BertTokenizerFast`` returns them (tested on the real tokenizer).

Each ``Mistake`` is a classic error (pre-LN where BERT is post-LN, the mean instead of ``[CLS]``,
a missing tanh, weights used without their transpose, padding attending to padding ...).
Top-level imports: torch only.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from .core import Case, Checker, Mistake, draw, random_text, register

# =========================================================================== LayerNorm (a helper of the layer)

def _layer_norm(x, weight, bias, eps=1e-5, *, use_eps=True):
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + (eps if use_eps else 0.0)) * weight + bias


# =========================================================================== 1. a BERT encoder layer

def _linear(x, params, name, transpose=False):
    w = params[f"{name}.weight"]
    return x @ (w if transpose else w.t()) + params[f"{name}.bias"]


def _encoder_layer(x, params, n_heads, mask=None, eps=1e-12, *, pre_ln=False, scale=True, softmax_dim=-1,
                   bare_view=False, use_eps=True, tanh_gelu=False, transpose_qkv=False,
                   attn_residual=True):
    B, T, C = x.shape
    hs = C // n_heads

    def ln(h, name):
        return _layer_norm(h, params[f"{name}.weight"], params[f"{name}.bias"], eps, use_eps=use_eps)

    def heads(h):
        if bare_view:
            return h.reshape(B, n_heads, T, hs)
        return h.view(B, T, n_heads, hs).transpose(1, 2)  # (B, nh, T, hs)

    def attention(h):
        q, k, v = (heads(_linear(h, params, f"attention.self.{n}", transpose_qkv)) for n in ("query", "key", "value"))
        scores = q @ k.transpose(-2, -1)  # (B, nh, T, T)
        if scale:
            scores = scores / math.sqrt(hs)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        w = torch.softmax(scores, dim=softmax_dim)
        out = (w @ v).transpose(1, 2).reshape(B, T, C)  # (B, T, C)
        return _linear(out, params, "attention.output.dense")

    def ffn(h):
        a = _linear(h, params, "intermediate.dense")
        a = F.gelu(a, approximate="tanh" if tanh_gelu else "none")
        return _linear(a, params, "output.dense")

    if pre_ln:
        x = x + attention(ln(x, "attention.output.LayerNorm"))
        return x + ffn(ln(x, "output.LayerNorm"))
    a = attention(x)
    h = ln(x + a if attn_residual else a, "attention.output.LayerNorm")
    return ln(h + ffn(h), "output.LayerNorm")


def bert_encoder_layer_reference(x: torch.Tensor, params: dict[str, torch.Tensor], n_heads: int,
                                 mask: torch.Tensor | None = None, eps: float = 1e-12) -> torch.Tensor:
    """One post-LN BERT layer: h = LN(x + Attn(x)); return LN(h + FFN(h)). Exact GELU."""
    return _encoder_layer(x, params, n_heads, mask, eps)


def random_bert_layer_params(C: int = 16, d_ff: int = 32, scale: float = 0.3) -> dict[str, torch.Tensor]:
    """Weights with the names and shapes of a Hugging Face ``BertLayer``'s state dict."""
    p: dict[str, torch.Tensor] = {}
    for name, (n_out, n_in) in {"attention.self.query": (C, C), "attention.self.key": (C, C),
                                "attention.self.value": (C, C), "attention.output.dense": (C, C),
                                "intermediate.dense": (d_ff, C), "output.dense": (C, d_ff)}.items():
        p[f"{name}.weight"] = torch.randn(n_out, n_in) * scale
        p[f"{name}.bias"] = torch.randn(n_out) * 0.1
    for name in ("attention.output.LayerNorm", "output.LayerNorm"):
        p[f"{name}.weight"] = 1 + 0.1 * torch.randn(C)
        p[f"{name}.bias"] = 0.1 * torch.randn(C)
    return p


def _layer_cases() -> list[Case]:
    params = random_bert_layer_params()
    tiny = {k: (v * 1e-3 if k.endswith("dense.weight") or ".self." in k or "LayerNorm.bias" in k
                or k.endswith("dense.bias") else v) for k, v in params.items()}
    pad = torch.tensor([[True, True, True, True, True], [True, True, True, False, False]]).view(2, 1, 1, 5)
    return [
        Case("B=2, T=5, C=16, 4 heads", (torch.randn(2, 5, 16), params, 4)),
        Case("T=1", (torch.randn(3, 1, 16), params, 2)),
        Case("padding mask", (torch.randn(2, 5, 16), params, 4), {"mask": pad}),
        Case("tiny activations, eps=1e-5", (torch.randn(2, 3, 16) * 1e-3, tiny, 4), {"eps": 1e-5}),
    ]


bert_encoder_layer = register(Checker(
    "bert_encoder_layer", bert_encoder_layer_reference, _layer_cases,
    axes=("batch", "seq", "channels"), atol=1e-4, rtol=1e-4,
    mistakes=[
        Mistake(lambda *a, **k: _encoder_layer(*a, **k, pre_ln=True),
                "that is a *pre-LN* layer; BERT is post-LN: `h = LN(x + attn(x))`, then `LN(h + ffn(h))`."),
        Mistake(lambda *a, **k: _encoder_layer(*a, **k, attn_residual=False),
                "the attention sub-layer lost its residual connection: LN(x + attn(x)), not LN(attn(x))."),
        Mistake(lambda *a, **k: _encoder_layer(*a, **k, scale=False),
                "divide the attention scores by sqrt(hs) (the head size, C // n_heads), not by nothing."),
        Mistake(lambda *a, **k: _encoder_layer(*a, **k, softmax_dim=-2),
                "the softmax runs over the wrong axis: over the keys (`dim=-1`)."),
        Mistake(lambda *a, **k: _encoder_layer(*a, **k, bare_view=True),
                "split the heads with `.view(B, T, nh, hs).transpose(1, 2)`; a bare view to "
                "(B, nh, T, hs) mixes tokens into heads."),
        Mistake(lambda *a, **k: _encoder_layer(*a, **k, use_eps=False),
                "LayerNorm needs its eps inside the square root (`sqrt(var + eps)`, with the `eps` argument)."),
        Mistake(lambda *a, **k: _encoder_layer(*a, **k, tanh_gelu=True),
                "BERT's \"gelu\" is the exact (erf) GELU: `F.gelu(a)`, not the tanh approximation."),
        Mistake(lambda *a, **k: _encoder_layer(*a, **k, transpose_qkv=True),
                "`nn.Linear` stores its weight as (out, in): compute `x @ W.T + b` (or `F.linear(x, W, b)`), "
                "not `x @ W`."),
    ],
))


# =========================================================================== 2. pooler + classifier
# hidden: (B, T, C), the encoder's last hidden state; params: the part of a
# BertForSequenceClassification state dict after the encoder. Return the logits (B, n_labels).

CLASSIFIER_KEYS = ("bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias")


def bert_classifier_head_reference(hidden: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """The library's own modules: ``BertPooler`` (dense + tanh on [CLS]), then the classifier."""
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertPooler

    C = hidden.size(-1)
    pooler = BertPooler(BertConfig(hidden_size=C, num_attention_heads=1))
    classifier = torch.nn.Linear(C, params["classifier.weight"].size(0))
    with torch.no_grad():
        pooler.dense.weight.copy_(params["bert.pooler.dense.weight"])
        pooler.dense.bias.copy_(params["bert.pooler.dense.bias"])
        classifier.weight.copy_(params["classifier.weight"])
        classifier.bias.copy_(params["classifier.bias"])
        return classifier(pooler(hidden))  # dropout sits between them; it is off in eval mode


def random_classifier_params(C: int, n_labels: int) -> dict[str, torch.Tensor]:
    """Weights with the names and shapes of BertForSequenceClassification's pooler and classifier."""
    return {"bert.pooler.dense.weight": torch.randn(C, C) * 0.5, "bert.pooler.dense.bias": torch.randn(C) * 0.2,
            "classifier.weight": torch.randn(n_labels, C), "classifier.bias": torch.randn(n_labels) * 0.2}


def _head(hidden, params, *, pool="cls", act=torch.tanh, pooler=True, transpose=True):
    x = hidden[:, 0] if pool == "cls" else hidden.mean(1) if pool == "mean" else hidden[:, -1]  # (B, C)
    if pooler:
        w = params["bert.pooler.dense.weight"]
        x = act(x @ (w.t() if transpose else w) + params["bert.pooler.dense.bias"])
    return x @ params["classifier.weight"].t() + params["classifier.bias"]            # (B, n_labels)


def _classifier_cases() -> list[Case]:
    return [
        Case("B=3, T=6, C=16, 3 labels", (torch.randn(3, 6, 16) * 2, random_classifier_params(16, 3))),
        Case("one label (regression)", (torch.randn(2, 4, 8) * 2, random_classifier_params(8, 1))),
        Case("T=1 ([CLS] only)", (torch.randn(2, 1, 12) * 2, random_classifier_params(12, 5))),
    ]


bert_classifier_head = register(Checker(
    "bert_classifier_head", bert_classifier_head_reference, _classifier_cases,
    axes=("batch", "labels"), atol=1e-5,
    mistakes=[
        Mistake(lambda h, p: _head(h, p, pool="mean"),
                "BERT's pooler reads only the first position, [CLS] (`hidden[:, 0]`), not the mean over tokens."),
        Mistake(lambda h, p: _head(h, p, pool="last"),
                "the pooled token is the *first* one, [CLS] (`hidden[:, 0]`), not the last."),
        Mistake(lambda h, p: _head(h, p, pooler=False),
                "the classifier does not read [CLS] directly: the pooler (dense + tanh, "
                "`bert.pooler.dense.*`) comes first."),
        Mistake(lambda h, p: _head(h, p, act=lambda t: t),
                "the pooler ends with a tanh: `torch.tanh(dense(cls))`."),
        Mistake(lambda h, p: _head(h, p, act=F.gelu),
                "the pooler's activation is tanh, not the GELU of the feed-forward layers."),
        Mistake(lambda h, p: _head(h, p, transpose=False),
                "nn.Linear stores its weight as (out, in): the pooler computes `cls @ W.T + b` "
                "(`F.linear`); its square weight makes `cls @ W` run, but wrong."),
    ],
    what="your bert_classifier_head",
))


# =========================================================================== 3. packed documents
# doc_ids: (B, T) integers, the document of each token (any ids; -1 marks padding). Return the
# (B, 1, T, T) bool mask, True where query i may attend to key j: both in the same document.
# A padding position attends to nothing and nothing attends to it.

def packed_attention_mask_reference(doc_ids: torch.Tensor) -> torch.Tensor:
    """Block-diagonal mask of packed documents; padding rows and columns all False."""
    real = doc_ids != -1                                                       # (B, T)
    same = doc_ids[:, :, None] == doc_ids[:, None, :]                          # (B, T, T)
    return (same & real[:, :, None] & real[:, None, :])[:, None]               # (B, 1, T, T)


def _packed_cases() -> list[Case]:
    t = torch.tensor
    return [
        Case("three documents and padding", (t([[0, 0, 0, 1, 1, 2, 2, 2, 2, -1, -1],
                                                 [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, -1]]),)),
        Case("document ids that are not 0, 1, 2 (5, 9, 5 reused)", (t([[5, 5, 9, 9, 9, 5, 5, -1]]),)),
        Case("one document, no padding", (t([[0, 0, 0, 0, 0]]),)),
        Case("one token per document", (t([[0, 1, 2, 3], [7, 8, -1, -1]]),)),
        Case("random documents and padding", (_random_doc_ids(),)),
    ]


def _random_doc_ids() -> torch.Tensor:
    """Rows of packed documents of random lengths (ids in order, some reused) and padding (-1)."""
    T = draw(6, 14)
    rows = []
    for _ in range(draw(1, 3)):
        row: list[int] = []
        while len(row) < T:
            row += [draw(0, 9)] * draw(1, 5)
        pad = draw(0, T // 2)
        rows.append(row[:T - pad] + [-1] * pad)
    return torch.tensor(rows)


packed_attention_mask = register(Checker(
    "packed_attention_mask", packed_attention_mask_reference, _packed_cases,
    axes=("batch", "1", "query", "key"),
    mistakes=[
        Mistake(lambda d: ((d[:, :, None] == d[:, None, :]))[:, None],
                "padding (-1) is not a document: its positions must attend to nothing and be attended "
                "by nothing; as it is, padding tokens attend to each other."),
        Mistake(lambda d: packed_attention_mask_reference(d)[:, 0],
                "keep an axis of size 1 for the heads, (B, 1, T, T), so that the mask broadcasts over "
                "the (B, nh, T, T) scores: `mask[:, None]`."),
        Mistake(lambda d: ((d != -1)[:, :, None] & (d != -1)[:, None, :])[:, None],
                "that mask only hides padding: tokens still attend across documents. Compare the "
                "document ids of query and key (`doc_ids[:, :, None] == doc_ids[:, None, :]`)."),
        Mistake(lambda d: packed_attention_mask_reference(d)
                & torch.ones(d.size(1), d.size(1), dtype=torch.bool).tril(),
                "BERT's encoder is bidirectional: within a document every token sees every other, "
                "before and after it (no causal triangle)."),
    ],
    what="your packed_attention_mask",
))


# =========================================================================== 4. segment ids of a pair
# input_ids: (B, T), "[CLS] a [SEP] b [SEP] [PAD]..." or a single "[CLS] a [SEP] [PAD]..."; sep_id, pad_id.
# Return token_type_ids (B, T) int64: 0 up to and including the first [SEP], 1 after it (the
# second segment and its [SEP]), 0 on padding -- what BertTokenizerFast returns for pairs.

def segment_ids_reference(input_ids: torch.Tensor, sep_id: int, pad_id: int = 0) -> torch.Tensor:
    """1 after the first [SEP] (exclusive), 0 before it and on padding."""
    is_sep = (input_ids == sep_id).long()
    seps_before = is_sep.cumsum(-1) - is_sep                                    # (B, T)
    return ((seps_before >= 1) & (input_ids != pad_id)).long()


def _segments(input_ids, sep_id, pad_id=0, *, inclusive=False, clamp=True, zero_pad=True):
    is_sep = (input_ids == sep_id).long()
    count = is_sep.cumsum(-1) - (0 if inclusive else is_sep)
    seg = count.clamp(max=1) if clamp else count
    return seg.masked_fill(input_ids == pad_id, 0) if zero_pad else seg


def _segment_cases() -> list[Case]:
    from ..assets import load_tokenizer

    tok = load_tokenizer("bert-base-uncased")
    pairs = tok(["How old are you?", "Where is the station?"], ["I am six.", "Turn left, then right at the end."],
                padding=True, return_tensors="pt")["input_ids"]
    single = tok(["Just one sentence here.", "Short."], padding=True, return_tensors="pt")["input_ids"]
    exact = tok(["Same length"], ["as this"], return_tensors="pt")["input_ids"]
    return [
        Case("a batch of pairs with padding", (pairs, tok.sep_token_id, tok.pad_token_id)),
        Case("single sentences (no second segment)", (single, tok.sep_token_id, tok.pad_token_id)),
        Case("one pair, no padding", (exact, tok.sep_token_id, tok.pad_token_id)),
        Case("random pairs", (_random_pairs(tok), tok.sep_token_id, tok.pad_token_id)),
    ]


def _random_pairs(tok: Any) -> torch.Tensor:
    """A batch of random sentence pairs (some single sentences), tokenized and padded."""
    first = [random_text(draw(1, 6)) for _ in range(3)]
    second = [random_text(draw(1, 6)) for _ in range(3)]
    if draw(0, 1):
        return tok(first, second, padding=True, return_tensors="pt")["input_ids"]
    return tok(first, padding=True, return_tensors="pt")["input_ids"]


segment_ids = register(Checker(
    "segment_ids", segment_ids_reference, _segment_cases,
    axes=("batch", "seq"),
    mistakes=[
        Mistake(lambda i, s, p=0: _segments(i, s, p, inclusive=True),
                "the first [SEP] closes segment A and belongs to it: count only the [SEP]s *before* "
                "each position (cumsum minus the token's own)."),
        Mistake(lambda i, s, p=0: _segments(i, s, p, clamp=False, zero_pad=False),
                "after the second [SEP] comes padding: its segment id is 0 (BertTokenizerFast pads "
                "token_type_ids with 0), not the number of [SEP]s seen."),
        Mistake(lambda i, s, p=0: _segments(i, s, p, zero_pad=False),
                "padding positions get segment 0 (the tokenizer's pad value), even after the second "
                "segment."),
    ],
    what="your segment_ids",
))
