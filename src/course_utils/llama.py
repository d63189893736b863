"""A Llama-style decoder from scratch (Chapter 8): RMSNorm, SwiGLU, RoPE, grouped-query attention.

Chapter 8 writes these classes in its cells (tagged ``ch08-model``) and loads SmolLM2-135M's real
weights into them; this module holds the same code for tests and later chapters
(``tests/test_llama.py`` runs the chapter's cells and compares them with this module and with
``transformers``' ``LlamaForCausalLM`` on random configurations).

Attribute names mirror Hugging Face's checkpoint (``model.embed_tokens``,
``model.layers[i].self_attn.q_proj``, ``mlp.gate_proj``, ``input_layernorm``, ``model.norm``,
``lm_head``), so ``LlamaForCausalLM``'s state dict loads without a renaming table.

Shapes: ``B`` batch, ``T`` new positions, ``S`` cached + new positions, ``C`` channels
(``hidden_size``), ``nh`` query heads, ``nkv`` key/value heads, ``hs`` head size, ``I`` the MLP's
inner width, ``V`` vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .positions import apply_rope


@dataclass
class LlamaConfig:
    """SmolLM2-135M's shape by default (its ``config.json``)."""

    vocab_size: int = 49152
    n_layer: int = 30
    n_head: int = 9            # query heads
    n_kv_head: int = 3         # key/value heads: each serves n_head // n_kv_head query heads
    n_embd: int = 576          # C
    n_inner: int = 1536        # I, the SwiGLU's inner width (about 8/3 C, rounded)
    head_dim: int = 64         # hs = C // n_head here; Qwen3 sets it independently
    rope_theta: float = 100000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = True
    attention_bias: bool = False  # Qwen2 adds biases to q, k, v

    def __post_init__(self) -> None:
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_head={self.n_head} must be a multiple of n_kv_head={self.n_kv_head}")
        if self.head_dim % 2:
            raise ValueError(f"RoPE rotates pairs of channels: head_dim={self.head_dim} must be even")

    @classmethod
    def from_hf(cls, cfg: Any) -> "LlamaConfig":
        """From a ``transformers`` ``LlamaConfig`` (or any config with the same field names)."""
        rope = getattr(cfg, "rope_parameters", None) or {}
        theta = rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
        return cls(vocab_size=cfg.vocab_size, n_layer=cfg.num_hidden_layers, n_head=cfg.num_attention_heads,
                   n_kv_head=cfg.num_key_value_heads, n_embd=cfg.hidden_size, n_inner=cfg.intermediate_size,
                   head_dim=getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads,
                   rope_theta=float(theta), rms_norm_eps=cfg.rms_norm_eps,
                   tie_word_embeddings=cfg.tie_word_embeddings,
                   attention_bias=bool(getattr(cfg, "attention_bias", False)))


class RMSNorm(nn.Module):
    """x / sqrt(mean(x²) + eps) · weight: no mean subtracted, no bias (LayerNorm without centring)."""

    def __init__(self, n_embd: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n_embd))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()                                                          # (B, T, C) in float32
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) · up(x)); three matrices instead of GPT-2's two."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(config.n_embd, config.n_inner, bias=False)
        self.up_proj = nn.Linear(config.n_embd, config.n_inner, bias=False)
        self.down_proj = nn.Linear(config.n_inner, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))     # (B, T, I) -> (B, T, C)


class KVCache:
    """Per layer, the keys (after RoPE) and values of every position seen so far."""

    def __init__(self, n_layer: int) -> None:
        self.layers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layer

    def seen(self, i: int) -> int:
        """Positions layer ``i`` has cached (layers fill one after another within a step)."""
        layer = self.layers[i]
        return 0 if layer is None else layer[0].size(2)

    def update(self, i: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        old = self.layers[i]
        if old is not None:
            k, v = torch.cat([old[0], k], dim=2), torch.cat([old[1], v], dim=2)  # (B, nkv, S, hs)
        self.layers[i] = (k, v)
        return k, v


class Attention(nn.Module):
    """Grouped-query attention: nh query heads share nkv key/value heads (RoPE on q and k)."""

    def __init__(self, config: LlamaConfig, layer_idx: int) -> None:
        super().__init__()
        self.nh, self.nkv, self.hs = config.n_head, config.n_kv_head, config.head_dim
        self.layer_idx, self.theta = layer_idx, config.rope_theta
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.n_embd, self.nh * self.hs, bias=bias)
        self.k_proj = nn.Linear(config.n_embd, self.nkv * self.hs, bias=bias)
        self.v_proj = nn.Linear(config.n_embd, self.nkv * self.hs, bias=bias)
        self.o_proj = nn.Linear(self.nh * self.hs, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        start = 0 if cache is None else cache.seen(self.layer_idx)              # positions already cached
        q = self.q_proj(x).view(B, T, self.nh, self.hs).transpose(1, 2)         # (B, nh, T, hs)
        k = self.k_proj(x).view(B, T, self.nkv, self.hs).transpose(1, 2)        # (B, nkv, T, hs)
        v = self.v_proj(x).view(B, T, self.nkv, self.hs).transpose(1, 2)        # (B, nkv, T, hs)
        pos = torch.arange(start, start + T, device=x.device)
        q, k = apply_rope(q, pos, self.theta), apply_rope(k, pos, self.theta)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)                           # (B, nkv, S, hs)
        S = k.size(2)
        k = k.repeat_interleave(self.nh // self.nkv, dim=1)                     # (B, nh, S, hs)
        v = v.repeat_interleave(self.nh // self.nkv, dim=1)                     # (B, nh, S, hs)
        att = (q @ k.transpose(-2, -1)) * self.hs ** -0.5                       # (B, nh, T, S)
        causal = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(S - T)  # query t sees keys <= S-T+t
        att = att.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, self.nh * self.hs)          # (B, T, nh*hs)
        return self.o_proj(y)                                                   # (B, T, C)


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, config: LlamaConfig, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.n_embd, config.rms_norm_eps)
        self.self_attn = Attention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.n_embd, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cache)                 # (B, T, C)
        return x + self.mlp(self.post_attention_layernorm(x))                  # (B, T, C)


class Llama(nn.Module):
    """The whole decoder: embeddings, n_layer blocks, a final RMSNorm, the (tied) output head."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        embed_tokens = nn.Embedding(config.vocab_size, config.n_embd)          # (V, C)
        self.model: Any = nn.ModuleDict(dict(
            embed_tokens=embed_tokens,
            layers=nn.ModuleList(Block(config, i) for i in range(config.n_layer)),
            norm=RMSNorm(config.n_embd, config.rms_norm_eps),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = embed_tokens.weight                           # one (V, C) table

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = self.model.embed_tokens(idx)                                        # (B, T, C)
        for block in self.model.layers:
            x = block(x, cache)
        return self.lm_head(self.model.norm(x))                                 # (B, T, V)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, use_cache: bool = True) -> torch.Tensor:
        """Greedy decoding; with the cache each step feeds only the newest token."""
        cache = KVCache(self.config.n_layer) if use_cache else None
        logits = self(idx, cache)                                               # (B, T, V)
        for step in range(max_new_tokens):
            nxt = logits[:, -1].argmax(dim=-1, keepdim=True)                    # (B, 1)
            idx = torch.cat([idx, nxt], dim=1)
            if step + 1 < max_new_tokens:
                logits = self(nxt, cache) if use_cache else self(idx)           # (B, 1 or T, V)
        return idx

    @classmethod
    def from_hf(cls, hf_model: Any) -> "Llama":
        """The from-scratch model with a ``LlamaForCausalLM``'s weights (strict: same names)."""
        model = cls(LlamaConfig.from_hf(hf_model.config))
        model.load_state_dict(hf_model.state_dict())
        return model.eval()


def num_parameters(config: Any) -> int:
    """Exact parameters of a Llama-style decoder from a ``transformers`` config, by formula.

    Per layer: two RMSNorm gains (2C), q and o (2 · C · nh·hs), k and v (2 · C · nkv·hs), the
    SwiGLU's three matrices (3 · C · I); Qwen2 adds q/k/v biases, Qwen3 an RMSNorm of hs on each
    head's queries and keys. Then the embedding (V · C), the final norm (C) and, when not tied,
    the output head (V · C).
    """
    C, L, I, V = config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.vocab_size
    nh, nkv = config.num_attention_heads, config.num_key_value_heads
    hs = getattr(config, "head_dim", None) or C // nh
    attn = 2 * C * nh * hs + 2 * C * nkv * hs
    if config.model_type == "qwen2" or getattr(config, "attention_bias", False):
        attn += nh * hs + 2 * nkv * hs                                   # q, k, v biases
    if config.model_type == "qwen3":
        attn += 2 * hs                                                   # q_norm, k_norm
    per_layer = 2 * C + attn + 3 * C * I
    return V * C * (1 if config.tie_word_embeddings else 2) + L * per_layer + C
