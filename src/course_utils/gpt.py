"""GPT-2 from scratch, nanoGPT style (introduced in Chapter 3, "GPT-2 internals").

One small file a reader can hold in their head. Attribute names mirror the Hugging Face
checkpoint (``transformer.wte``, ``transformer.h[i].attn.c_attn`` ...), so a GPT-2 state
dict loads without a renaming table; only the four Conv1D weights per block need a
transpose (Hugging Face stores them as (in, out), ``nn.Linear`` as (out, in)), and
:meth:`GPT.from_hf` lists them explicitly, with a shape assert before every copy.

The forward pass supports a **KV cache**: pass the ``past_kv`` a previous call returned
and only the new tokens; Chapter 3 shows cached and uncached logits agree and measures
the speed-up, and Chapter 6 (efficient attention) reuses this cache.

Shapes: B batch, T (new) time steps, S key time steps (cache + new), C channels
(``n_embd``), nh heads, hs head size (C // nh), V vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Mapping, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import causal_mask, scaled_dot_product_attention
from .modelinfo import count_parameters
from .sampling import process_logits

#: One layer's cache: (keys, values), each (B, nh, S, hs).
LayerKV = tuple[torch.Tensor, torch.Tensor]

GELU_APPROXIMATE = {  # Hugging Face's names -> the ``approximate`` argument of F.gelu
    "gelu_new": "tanh",           # GPT-2's GELU: the tanh approximation
    "gelu_pytorch_tanh": "tanh",
    "gelu": "none",               # the exact erf GELU (BERT)
}


@dataclass
class GPTConfig:
    """Hyper-parameters; the defaults are GPT-2 small's (124,439,808 parameters)."""

    block_size: int = 1024    # longest context: rows of the position table wpe
    vocab_size: int = 50257   # 50,000 BPE merges + 256 byte tokens + <|endoftext|>
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    n_inner: int | None = None    # MLP width; None means 4 * n_embd (GPT-2's choice)
    layer_norm_epsilon: float = 1e-5
    activation: str = "gelu_new"  # GPT-2 uses the tanh approximation of GELU
    dropout: float = 0.0
    attn_impl: str = "manual"     # "manual" (the teaching version) or "sdpa" (PyTorch's fused kernel)

    def __post_init__(self) -> None:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} must be divisible by n_head={self.n_head}.")
        if self.activation not in GELU_APPROXIMATE:
            raise ValueError(f"activation={self.activation!r} is not one of {sorted(GELU_APPROXIMATE)}.")
        if self.attn_impl not in ("manual", "sdpa"):
            raise ValueError(f"attn_impl={self.attn_impl!r}: use 'manual' or 'sdpa'.")

    @classmethod
    def tiny(cls, **overrides: Any) -> "GPTConfig":
        """A CPU-sized preset for tests and demos (about 0.9M parameters with V=1000)."""
        values: dict[str, Any] = dict(block_size=64, vocab_size=1000, n_layer=2, n_head=4, n_embd=64)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_hf(cls, hf_config: Any, **overrides: Any) -> "GPTConfig":
        """The equivalent config of a ``transformers.GPT2Config`` (refuses variants we don't implement)."""
        unsupported = {
            "scale_attn_weights": (True, "attention scores are always divided by sqrt(hs)"),
            "scale_attn_by_inverse_layer_idx": (False, "no per-layer attention scaling"),
            "reorder_and_upcast_attn": (False, "no upcast attention"),
            "add_cross_attention": (False, "no cross-attention"),
        }
        for name, (expected, what) in unsupported.items():
            if getattr(hf_config, name, expected) != expected:
                raise ValueError(f"This GPT implements {what}; the config has {name}="
                                 f"{getattr(hf_config, name)!r}.")
        values = dict(block_size=hf_config.n_positions, vocab_size=hf_config.vocab_size,
                      n_layer=hf_config.n_layer, n_head=hf_config.n_head, n_embd=hf_config.n_embd,
                      layer_norm_epsilon=hf_config.layer_norm_epsilon,
                      activation=hf_config.activation_function,
                      n_inner=getattr(hf_config, "n_inner", None))
        values.update(overrides)
        return cls(**values)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with an optional KV cache."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.n_embd = config.n_head, config.n_embd
        self.attn_impl = config.attn_impl
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)      # output projection
        self.resid_dropout = nn.Dropout(config.dropout)
        self.attn_dropout_p = config.dropout

    def forward(self, x: torch.Tensor,
                past_kv: LayerKV | None = None) -> tuple[torch.Tensor, LayerKV]:
        """x: (B, T, C) new positions; past_kv: keys/values of the S - T earlier ones, or None.

        Returns the output (B, T, C) and this layer's updated cache (k, v), each (B, nh, S, hs).
        """
        B, T, C = x.shape
        nh, hs = self.n_head, C // self.n_head
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)   # 3 x (B, T, C)
        q = q.view(B, T, nh, hs).transpose(1, 2)             # (B, nh, T, hs)
        k = k.view(B, T, nh, hs).transpose(1, 2)             # (B, nh, T, hs)
        v = v.view(B, T, nh, hs).transpose(1, 2)             # (B, nh, T, hs)
        if past_kv is not None:  # the cache holds the keys/values of earlier positions
            k = torch.cat([past_kv[0], k], dim=2)            # (B, nh, S, hs)
            v = torch.cat([past_kv[1], v], dim=2)            # (B, nh, S, hs)
        S = k.size(2)
        mask = causal_mask(T, S, device=x.device)  # (T, S): query t sees keys <= S - T + t
        if self.attn_impl == "sdpa":
            dropout = self.attn_dropout_p if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        else:  # the hand-written version of Chapter 2: softmax(q k^T / sqrt(hs)) v
            y, att = scaled_dot_product_attention(q, k, v, mask)  # (B, nh, T, hs)
            if self.training and self.attn_dropout_p > 0:
                y = F.dropout(att, self.attn_dropout_p) @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)     # (B, T, C): heads side by side
        return self.resid_dropout(self.c_proj(y)), (k, v)


class MLP(nn.Module):
    """Position-wise feed-forward network: C -> 4C (``n_inner``) -> GELU -> C."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        hidden = config.n_inner or 4 * config.n_embd
        self.c_fc = nn.Linear(config.n_embd, hidden)
        self.c_proj = nn.Linear(hidden, config.n_embd)
        self.approximate = GELU_APPROXIMATE[config.activation]  # "tanh" for GPT-2
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.c_fc(x), approximate=self.approximate)  # (B, T, 4C)
        return self.dropout(self.c_proj(h))                      # (B, T, C)


class Block(nn.Module):
    """A pre-LayerNorm Transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor,
                past_kv: LayerKV | None = None) -> tuple[torch.Tensor, LayerKV]:
        a, present = self.attn(self.ln_1(x), past_kv)
        x = x + a                       # (B, T, C) residual
        x = x + self.mlp(self.ln_2(x))  # (B, T, C) residual
        return x, present


class GPTOutput(NamedTuple):
    """What :meth:`GPT.forward` returns (a tuple: ``logits, loss, past_kv, hidden = out``)."""

    logits: torch.Tensor                   # (B, T, V)
    loss: torch.Tensor | None              # mean cross-entropy when targets were given
    past_kv: list[LayerKV] | None          # one (k, v) per layer when use_cache=True
    hidden: torch.Tensor                   # (B, T, C) after ln_f (= HF's hidden_states[-1])


class GPT(nn.Module):
    """GPT-2 as a compact module; ``lm_head`` shares its weight with ``transformer.wte``."""

    def __init__(self, config: GPTConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or GPTConfig()
        wte = nn.Embedding(config.vocab_size, config.n_embd)      # token embeddings (V, C)
        # Any: a ModuleDict's entries (wte, h, ...) are made at run time, unseen by mypy.
        self.transformer: Any = nn.ModuleDict(dict(
            wte=wte,
            wpe=nn.Embedding(config.block_size, config.n_embd),   # positions (block_size, C)
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = wte.weight  # weight tying: one (V, C) matrix, two uses
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # GPT-2's initialisation: N(0, 0.02) for matrices and embeddings, zero biases.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        """Number of distinct parameters (the tied wte/lm_head matrix counted once)."""
        return count_parameters(self)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                past_kv: list[LayerKV] | None = None, use_cache: bool = False,
                last_only: bool = False) -> GPTOutput:
        """idx: (B, T) token ids of the *new* positions; past_kv: the cache of the earlier ones.

        With ``use_cache=True`` the returned ``past_kv`` holds the keys/values of all S
        positions seen so far; feed it back with only the next token(s). ``last_only=True``
        computes the logits of the last position only, (B, 1, V): generation needs no more,
        and the (T, V) output projection is the largest matmul of a small model.
        """
        if idx.dim() != 2 or idx.dtype not in (torch.int64, torch.int32):
            raise ValueError("idx must be a (B, T) tensor of integer token ids, got "
                             f"{tuple(idx.shape)} {idx.dtype}.")
        B, T = idx.shape
        past_len = 0 if past_kv is None else past_kv[0][0].size(2)
        if past_kv is not None and len(past_kv) != self.config.n_layer:
            raise ValueError(f"past_kv has {len(past_kv)} layers, "
                             f"the model {self.config.n_layer}.")
        if past_len + T > self.config.block_size:
            raise ValueError(f"{past_len} cached + {T} new positions exceed block_size="
                             f"{self.config.block_size}; crop the context (or the cache).")
        pos = torch.arange(past_len, past_len + T, device=idx.device)  # (T,) positions
        tok_emb = self.transformer.wte(idx)                # (B, T, C)
        pos_emb = self.transformer.wpe(pos)                # (T, C), broadcast over B
        x = self.transformer.drop(tok_emb + pos_emb)       # (B, T, C)
        presents: list[LayerKV] = []
        for i, block in enumerate(self.transformer.h):
            x, present = block(x, None if past_kv is None else past_kv[i])
            presents.append(present)
        hidden = self.transformer.ln_f(x)                  # (B, T, C)
        logits = self.lm_head(hidden[:, -1:] if last_only else hidden)  # (B, T or 1, V)
        loss = None
        if targets is not None:
            if last_only:
                raise ValueError("targets need the logits of every position: "
                                 "drop last_only=True.")
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                                   ignore_index=-100)
        return GPTOutput(logits, loss, presents if use_cache else None, hidden)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, use_cache: bool = True,
                 do_sample: bool = False, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Append ``max_new_tokens`` tokens to idx (B, T): greedy, or with ``do_sample`` drawn from
        the scores after Chapter 4's processors (:func:`course_utils.sampling.process_logits`:
        ``temperature`` > 0, ``top_k``), as ``transformers``' ``generate`` does. Temperature 0 is
        not a temperature there or here: greedy decoding is ``do_sample=False``.

        With ``use_cache=True`` the prompt is processed once and each step feeds only the
        newest token plus the cache; otherwise every step re-runs the whole sequence.
        """
        if not do_sample and (temperature != 1.0 or top_k):
            raise ValueError(f"temperature={temperature!r} and top_k={top_k!r} shape sampling: "
                             "pass do_sample=True with them, or neither for greedy decoding.")
        past_kv = None
        for _ in range(max_new_tokens):
            if use_cache and past_kv is not None:  # the newest token, plus the cache
                out = self(idx[:, -1:], past_kv=past_kv, use_cache=True, last_only=True)
            else:
                out = self(idx[:, -self.config.block_size:], use_cache=use_cache,
                           last_only=True)
            past_kv = out.past_kv
            logits = out.logits[:, -1, :]                  # (B, V)
            if do_sample:  # Chapter 4's processors, then one draw
                logits = process_logits(idx, logits, temperature=temperature,
                                        top_k=top_k)
                probs = F.softmax(logits, dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
            else:
                nxt = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
            idx = torch.cat([idx, nxt], dim=1)             # (B, T + 1)
        return idx

    #: Weights stored by Hugging Face's Conv1D as (in, out); nn.Linear wants (out, in).
    TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight",
                  "mlp.c_fc.weight", "mlp.c_proj.weight")

    @classmethod
    def from_hf(cls, source: Any, config: GPTConfig | None = None, **overrides: Any) -> "GPT":
        """A GPT with the weights of a Hugging Face GPT-2 (``GPT2LMHeadModel``/``GPT2Model``)
        or of its state dict (then pass ``config``, or it is inferred: :func:`hf_state_dict`).
        ``overrides`` (e.g. ``attn_impl="sdpa"``) change the config.
        """
        sd, config = hf_state_dict(source, config, **overrides)  # our names, no lm_head
        with torch.device("meta"):  # no random init to throw away: every tensor is copied
            model = cls(config)
        model = model.to_empty(device=sd["transformer.wte.weight"].device)
        model.lm_head.weight = model.transformer.wte.weight  # to_empty made two: re-tie
        ours = model.state_dict()
        missing = sorted(set(ours) - set(sd) - {"lm_head.weight"})
        unexpected = sorted(set(sd) - set(ours))
        if missing or unexpected:
            raise KeyError(f"State dict does not match GPT(config): missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]}.")
        with torch.no_grad():
            for k, v in sd.items():
                if k.endswith(cls.TRANSPOSED):  # Conv1D (in, out) -> Linear (out, in)
                    assert v.shape[::-1] == ours[k].shape, f"{k}: {tuple(v.shape)}"
                    ours[k].copy_(v.t())
                else:
                    assert v.shape == ours[k].shape, f"{k}: {tuple(v.shape)}"
                    ours[k].copy_(v)
        return model.eval()


#: Buffers some transformers versions keep in the state dict (old causal masks): not weights.
_IGNORED = (".attn.bias", ".attn.masked_bias")


def hf_state_dict(source: Any, config: GPTConfig | None = None,
                  **overrides: Any) -> tuple[dict[str, torch.Tensor], GPTConfig]:
    """A Hugging Face GPT-2's tensors under :class:`GPT`'s names, and the config to build it.

    ``source``: a ``GPT2LMHeadModel``/``GPT2Model`` (the config comes from ``source.config``)
    or a bare state dict (pass ``config``; otherwise it is inferred from the shapes, with
    GPT-2's head size of 64: n_head = n_embd // 64). ``overrides`` change the config. The
    ``lm_head.weight`` is checked to be ``wte``'s (this GPT ties them) and left out.
    """
    if isinstance(source, nn.Module):
        if config is None:
            config = GPTConfig.from_hf(source.config)
        sd = source.state_dict()
    elif isinstance(source, Mapping):
        sd = dict(source)
    else:
        raise TypeError("from_hf wants a Hugging Face GPT-2 model or its state dict, got "
                        f"{type(source).__name__}.")
    # A GPT2Model (no LM head) has no "transformer." prefix: add it.
    sd = {(k if k.startswith(("transformer.", "lm_head.")) else f"transformer.{k}"): v
          for k, v in sd.items()}
    sd = {k: v for k, v in sd.items() if not k.endswith(_IGNORED)}
    if "transformer.wte.weight" not in sd:
        raise KeyError("No 'transformer.wte.weight' in the state dict: "
                       "is this a GPT-2 checkpoint?")
    if config is None:  # infer from shapes; GPT-2's head size is 64
        V, C = sd["transformer.wte.weight"].shape
        n_layer = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("transformer.h."))
        inner = sd["transformer.h.0.mlp.c_fc.weight"].shape[1]  # Conv1D: (C, n_inner)
        config = GPTConfig(block_size=sd["transformer.wpe.weight"].shape[0], vocab_size=V,
                           n_layer=n_layer, n_head=C // 64, n_embd=C,
                           n_inner=None if inner == 4 * C else inner)
    if overrides:
        config = replace(config, **overrides)
    hf_head = sd.pop("lm_head.weight", None)
    if hf_head is not None and not torch.equal(hf_head, sd["transformer.wte.weight"]):
        raise ValueError("lm_head.weight differs from transformer.wte.weight: "
                         "this GPT ties them.")
    return sd, config


__all__ = ["GPTConfig", "CausalSelfAttention", "MLP", "Block", "GPT", "GPTOutput", "LayerKV",
           "GELU_APPROXIMATE", "hf_state_dict"]
