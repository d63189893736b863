"""Attention building blocks introduced in Chapter 2 (Attention from scratch).

Chapter 2 writes these step by step in the notebook; later chapters import them from here,
so that there is one definition. Shapes: B batch, nh heads, T (query) time, S (key) time,
hs head size, C = nh * hs channels.

The module names of :class:`Encoder` follow the BERT checkpoint where that reads well
(``query``/``key``/``value``, ``word_embeddings``, ``intermediate``); the few places where
they differ are one explicit table, :data:`BERT_NAMES`, used by :func:`load_bert_weights`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple

import torch
from torch import nn


def causal_mask(T: int, S: int | None = None, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean mask of shape (T, S): True where query t may attend to key s (s <= t + S - T).

    With S > T (a KV cache holding S - T earlier positions) the queries are the last T
    positions, so each still sees every key up to and including itself.
    """
    S = T if S is None else S
    offset = S - T
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=offset)


def scaled_dot_product_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q kᵀ / √hs) v, returning (output, attention weights).

    q: (..., T, hs), k and v: (..., S, hs); mask: bool, broadcastable to (..., T, S),
    True where attention is allowed. A query row whose keys are all masked gets zero
    weights (and a zero output) instead of NaN.
    """
    hs = q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(hs)  # (..., T, S)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)  # (..., T, S)
    if mask is not None:
        weights = torch.nan_to_num(weights, nan=0.0)  # fully masked rows: softmax of all -inf
    return weights @ v, weights  # (..., T, hs), (..., T, S)


def padding_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Turn a tokenizer's ``attention_mask`` (B, S) of 1/0 into a bool mask (B, 1, 1, S).

    The result broadcasts over heads and queries: every query may look at the real
    tokens of its sequence and at none of the padding.
    """
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must have shape (B, S), got {tuple(attention_mask.shape)}")
    return attention_mask.bool()[:, None, None, :]  # (B, 1, 1, S)


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, T, C) -> (B, nh, T, hs): give each head its own slice of the channels."""
    B, T, C = x.shape
    if C % n_heads:
        raise ValueError(f"{C} channels cannot be split into {n_heads} equal heads")
    return x.view(B, T, n_heads, C // n_heads).transpose(1, 2)  # (B, nh, T, hs)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, nh, T, hs) -> (B, T, C): the inverse of :func:`split_heads`."""
    B, nh, T, hs = x.shape
    return x.transpose(1, 2).reshape(B, T, nh * hs)  # (B, T, C)


@dataclass
class EncoderConfig:
    """Hyper-parameters of :class:`Encoder`; the defaults are BERT-base's."""

    vocab_size: int = 30522
    max_positions: int = 512
    type_vocab_size: int = 2      # segment A / segment B (BERT's sentence pairs)
    d_model: int = 768            # C
    n_heads: int = 12             # nh; head size hs = d_model // n_heads
    n_layers: int = 12
    d_ff: int = 3072              # the feed-forward's hidden width (4 C in BERT)
    layer_norm_eps: float = 1e-12  # BERT's value; 1e-5 is PyTorch's default
    dropout: float = 0.1
    pre_ln: bool = False          # False: BERT's post-LN; True: pre-LN (GPT-2 and most since)

    @classmethod
    def from_hf(cls, config: Any, **overrides: Any) -> "EncoderConfig":
        """The same hyper-parameters as a Hugging Face ``BertConfig``."""
        if getattr(config, "hidden_act", "gelu") != "gelu":
            raise ValueError(f"Encoder uses exact GELU; this config asks for {config.hidden_act!r}")
        if getattr(config, "position_embedding_type", "absolute") != "absolute":
            raise ValueError("Encoder has learned absolute position embeddings only")
        values = dict(vocab_size=config.vocab_size, max_positions=config.max_position_embeddings,
                      type_vocab_size=config.type_vocab_size, d_model=config.hidden_size,
                      n_heads=config.num_attention_heads, n_layers=config.num_hidden_layers,
                      d_ff=config.intermediate_size, layer_norm_eps=config.layer_norm_eps,
                      dropout=config.hidden_dropout_prob)
        values.update(overrides)
        return cls(**values)


class MultiHeadAttention(nn.Module):
    """nh heads of scaled dot-product attention side by side (Chapter 2).

    Names follow BERT's checkpoint: ``query``, ``key``, ``value`` (its
    ``attention.self.*``) and ``dense``, the output projection (its ``attention.output.dense``).
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
        self.n_heads = n_heads
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.dense = nn.Linear(d_model, d_model)
        self.attn_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                context: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, C); mask: bool, broadcastable to (B, nh, T, S); ``context`` (B, S, C)
        gives cross-attention (keys and values from another sequence). Returns (out, weights)."""
        context = x if context is None else context
        q = split_heads(self.query(x), self.n_heads)        # (B, nh, T, hs)
        k = split_heads(self.key(context), self.n_heads)    # (B, nh, S, hs)
        v = split_heads(self.value(context), self.n_heads)  # (B, nh, S, hs)
        _, weights = scaled_dot_product_attention(q, k, v, mask)  # (B, nh, T, S)
        out = self.attn_dropout(weights) @ v                # (B, nh, T, hs)
        return self.dense(merge_heads(out)), weights        # (B, T, C), (B, nh, T, S)


class FeedForward(nn.Module):
    """Position-wise MLP: Linear(C, d_ff) -> GELU -> Linear(d_ff, C) (Chapter 2).

    Names follow BERT's checkpoint: ``intermediate`` and ``output`` (each its ``.dense``).
    """

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.intermediate = nn.Linear(d_model, d_ff)
        self.act = nn.GELU()  # the exact (erf) GELU, as BERT's "gelu"
        self.output = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.act(self.intermediate(x)))  # (B, T, C)


class EncoderLayer(nn.Module):
    """One Transformer encoder block (Chapter 2): attention and feed-forward, each with a
    residual connection and a LayerNorm.

    * post-LN (BERT, ``pre_ln=False``): ``x = LN(x + sublayer(x))``
    * pre-LN (``pre_ln=True``):          ``x = x + sublayer(LN(x))``
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.1,
                 layer_norm_eps: float = 1e-12, pre_ln: bool = False):
        super().__init__()
        self.pre_ln = pre_ln
        self.attention = MultiHeadAttention(d_model, n_heads, dropout)
        self.attention_norm = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.ffn = FeedForward(d_model, d_ff)
        self.output_norm = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, C) -> ((B, T, C), attention weights (B, nh, T, T))."""
        if self.pre_ln:
            a, weights = self.attention(self.attention_norm(x), mask)
            x = x + self.dropout(a)
            x = x + self.dropout(self.ffn(self.output_norm(x)))
        else:
            a, weights = self.attention(x, mask)
            x = self.attention_norm(x + self.dropout(a))
            x = self.output_norm(x + self.dropout(self.ffn(x)))
        return x, weights


class EncoderOutput(NamedTuple):
    """What :class:`Encoder` returns (the same fields as a Hugging Face ``BertModel``)."""

    last_hidden_state: torch.Tensor        #: (B, T, C)
    hidden_states: tuple[torch.Tensor, ...]  #: n_layers + 1 tensors (B, T, C): embeddings, then each layer
    attentions: tuple[torch.Tensor, ...]     #: n_layers tensors (B, nh, T, T)


class Encoder(nn.Module):
    """A BERT-style Transformer encoder built from the pieces above (Chapter 2).

    Embeddings (token + learned position + segment, then LayerNorm), ``n_layers``
    :class:`EncoderLayer` blocks, and, for pre-LN, a final LayerNorm. Loaded with
    :func:`load_bert_weights` it reproduces a Hugging Face ``BertModel``.
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        c = config
        self.word_embeddings = nn.Embedding(c.vocab_size, c.d_model)
        self.position_embeddings = nn.Embedding(c.max_positions, c.d_model)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.d_model)
        self.embeddings_norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(c.d_model, c.n_heads, c.d_ff, c.dropout, c.layer_norm_eps, c.pre_ln)
            for _ in range(c.n_layers))
        # Pre-LN leaves the residual stream un-normalised: one LayerNorm at the end fixes that.
        self.final_norm = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps) if c.pre_ln else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> EncoderOutput:
        """input_ids (B, T) int; attention_mask (B, T) of 1 (token) / 0 (padding)."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must have shape (B, T), got {tuple(input_ids.shape)}")
        B, T = input_ids.shape
        if T > self.config.max_positions:
            raise ValueError(f"{T} tokens exceed the {self.config.max_positions} learned positions")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        positions = torch.arange(T, device=input_ids.device)  # (T,)
        x = (self.word_embeddings(input_ids) + self.position_embeddings(positions)
             + self.token_type_embeddings(token_type_ids))  # (B, T, C)
        x = self.dropout(self.embeddings_norm(x))
        mask = padding_mask(attention_mask) if attention_mask is not None else None  # (B, 1, 1, T)
        hidden_states, attentions = [x], []
        for layer in self.layers:
            x, weights = layer(x, mask)
            hidden_states.append(x)
            attentions.append(weights)
        if self.final_norm is not None:
            x = self.final_norm(x)
            hidden_states[-1] = x
        return EncoderOutput(x, tuple(hidden_states), tuple(attentions))


#: Our parameter names -> the Hugging Face BERT checkpoint's (``{i}`` is the layer number).
#: Parameters whose names are the same need no entry; every tensor keeps its shape (nn.Linear
#: stores (out, in) in both), so the copy is plain.
BERT_NAMES: dict[str, str] = {
    "word_embeddings": "embeddings.word_embeddings",
    "position_embeddings": "embeddings.position_embeddings",
    "token_type_embeddings": "embeddings.token_type_embeddings",
    "embeddings_norm": "embeddings.LayerNorm",
    "layers.{i}.attention.query": "encoder.layer.{i}.attention.self.query",
    "layers.{i}.attention.key": "encoder.layer.{i}.attention.self.key",
    "layers.{i}.attention.value": "encoder.layer.{i}.attention.self.value",
    "layers.{i}.attention.dense": "encoder.layer.{i}.attention.output.dense",
    "layers.{i}.attention_norm": "encoder.layer.{i}.attention.output.LayerNorm",
    "layers.{i}.ffn.intermediate": "encoder.layer.{i}.intermediate.dense",
    "layers.{i}.ffn.output": "encoder.layer.{i}.output.dense",
    "layers.{i}.output_norm": "encoder.layer.{i}.output.LayerNorm",
}


def bert_name(name: str) -> str:
    """The Hugging Face BERT checkpoint's name of our parameter ``name``."""
    module, _, leaf = name.rpartition(".")
    match = re.fullmatch(r"layers\.(\d+)\.(.+)", module)
    key, i = (f"layers.{{i}}.{match.group(2)}", match.group(1)) if match else (module, None)
    if key not in BERT_NAMES:
        raise KeyError(f"{name!r} has no counterpart in a BERT checkpoint")
    return BERT_NAMES[key].replace("{i}", str(i)) + "." + leaf


def load_bert_weights(encoder: nn.Module, bert: nn.Module | Mapping[str, torch.Tensor]) -> nn.Module:
    """Copy a Hugging Face ``BertModel`` (or its state dict) into ``encoder``, in place.

    ``encoder`` is an :class:`Encoder`, or any module with the same parameter names (the one
    the reader writes in Chapter 2). Every parameter must find a tensor of the same shape;
    the checkpoint's pooler (and a task model's ``bert.`` prefix) are not part of the
    encoder and are ignored.
    """
    if getattr(getattr(encoder, "config", None), "pre_ln", False):
        raise ValueError("BERT is post-LN: build the Encoder with pre_ln=False to load its weights")
    state = bert.state_dict() if isinstance(bert, nn.Module) else bert
    state = {k.removeprefix("bert."): v for k, v in state.items()}
    with torch.no_grad():
        for name, param in encoder.named_parameters():
            source = bert_name(name)
            if source not in state:
                raise KeyError(f"the checkpoint has no {source!r} (for our {name!r}); is it a BERT model?")
            tensor = state[source]
            if tensor.shape != param.shape:
                raise ValueError(f"{source}: checkpoint shape {tuple(tensor.shape)} != ours {tuple(param.shape)}")
            param.copy_(tensor)
    return encoder


def encoder_from_bert(bert: nn.Module) -> Encoder:
    """A new :class:`Encoder` with the config and weights of a Hugging Face ``BertModel``, in eval mode."""
    encoder = Encoder(EncoderConfig.from_hf(bert.config))
    load_bert_weights(encoder, bert)
    return encoder.eval()


__all__ = [
    "BERT_NAMES", "Encoder", "EncoderConfig", "EncoderLayer", "EncoderOutput", "FeedForward",
    "MultiHeadAttention", "bert_name", "causal_mask", "encoder_from_bert", "load_bert_weights",
    "merge_heads", "padding_mask", "scaled_dot_product_attention", "split_heads",
]
