"""Checkers of Chapter 1 (Architectures: encoders, decoders, encoder-decoders).

Handed out in ``chapters/01_exercises.ipynb`` (each checked against the library itself):

* ``check.llama_parameter_count(fn)``: ``fn(config: LlamaConfig) -> int``, the exact parameter
  count of ``LlamaForCausalLM(config)`` (grouped-query attention, a SwiGLU MLP of three matrices,
  RMSNorm without bias, no biases in the linear layers, a head tied or not). The reference *is*
  the library: the model built on the meta device (no memory, no weights) and counted.
* ``check.moe_parameter_counts(fn)``: ``fn(config: MixtralConfig) -> (total, active)``: all the
  parameters of ``MixtralForCausalLM(config)``, and those one token uses (every expert the router
  did not pick left out). The reference counts the meta-device model.
* ``check.llama_forward_flops(fn)``: ``fn(config: LlamaConfig, T: int) -> int``, the FLOPs of one
  forward pass of ``LlamaForCausalLM`` over one sequence of T tokens, as PyTorch's
  ``FlopCounterMode`` counts them (matrix products only, 2 FLOPs per multiply-add): the chapter
  counted GPT-2's; this is the transfer to grouped-query attention, SwiGLU, a head_dim of its own
  and RoPE. The reference runs the model on the meta device under the counter.

Not handed out (the chapter shows its solution), kept as the framework's worked example:

* ``check.count_parameters(fn)``: ``fn(model: nn.Module) -> int`` returns the number of
  parameters of ``model``: every number in every parameter tensor, trainable or frozen,
  each tensor counted once even when two modules share it (GPT-2 ties its output layer to
  its token embedding), and no buffers (a causal mask, BatchNorm's running statistics are
  state, not parameters). For GPT-2 small this gives 124,439,808.

It is also the worked example of the checker framework (:mod:`.core`): the reference,
the deliberately wrong variants with their hints, and seeded cases built to tell those
variants apart (each mistake is wrong on at least one case that comes before the cases
where it might coincide with another).
"""
from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from .. import modelinfo
from .core import Case, Checker, Mistake, draw, pick, register

__all__ = ["count_parameters", "llama_parameter_count", "moe_parameter_counts", "llama_forward_flops",
           "count_parameters_reference", "llama_parameter_count_reference", "moe_parameter_counts_reference",
           "llama_forward_flops_reference"]


def count_parameters_reference(model: nn.Module) -> int:
    """The course's solution: ``parameters()`` yields each (possibly shared) tensor once."""
    return modelinfo.count_parameters(model)


class TinyTiedLM(nn.Module):
    """A GPT-style toy: token embedding, LayerNorm, output layer tied to the embedding."""

    def __init__(self, vocab: int = 11, d_model: int = 6) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, d_model)     # (V, C): 66 numbers
        self.ln_f = nn.LayerNorm(d_model)          # 2 x C: 12 numbers
        self.lm_head = nn.Linear(d_model, vocab, bias=False)
        self.lm_head.weight = self.wte.weight      # tied: the same tensor, counted once


class TinyMaskedBlock(nn.Module):
    """A layer with buffers: a causal mask and BatchNorm's running statistics."""

    def __init__(self, d_model: int = 4, max_len: int = 5) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, d_model)    # 20 numbers
        self.norm = nn.BatchNorm1d(d_model)        # 8 numbers + 3 buffers (4 + 4 + 1)
        self.register_buffer("causal_mask", torch.ones(max_len, max_len).tril())  # 25, not a parameter


def _frozen_model() -> nn.Module:
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))  # 20 + 12
    for p in model[0].parameters():
        p.requires_grad_(False)  # frozen, still parameters
    return model


def _cases() -> list[Case]:
    return [
        Case("one Linear(3, 4)", (nn.Linear(3, 4),)),
        Case("nested submodules", (nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.ReLU(), nn.Linear(3, 2))),)),
        Case("tied embedding and output weights", (TinyTiedLM(),)),
        Case("a module with buffers", (TinyMaskedBlock(),)),
        Case("partly frozen", (_frozen_model(),)),
        Case("no parameters at all", (nn.ReLU(),)),
        Case("random layer sizes", (_random_stack(),)),
    ]


def _random_stack() -> nn.Module:
    """Linear layers of sizes drawn under the run's seed (a table of counts by architecture fails)."""
    a, b, c = draw(2, 40), draw(2, 40), draw(1, 40)
    return nn.Sequential(nn.Linear(a, b), nn.GELU(), nn.Linear(b, c, bias=bool(draw(0, 1))), nn.LayerNorm(c))


# --- the classic mistakes, each a function with the student's signature -------------------

def _count_tensors(model):
    return len(list(model.parameters()))


def _not_recursive(model):
    return sum(p.numel() for p in model.parameters(recurse=False))


def _every_module(model):
    return sum(p.numel() for m in model.modules() for p in m.parameters())


def _tied_twice(model):
    return sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))


def _with_buffers(model):
    return sum(p.numel() for p in model.parameters()) + sum(b.numel() for b in model.buffers())


def _trainable_only(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


count_parameters = register(Checker(
    "count_parameters", count_parameters_reference, _cases,
    mistakes=[
        Mistake(_count_tensors, "you counted parameter *tensors*; count the numbers in them: "
                                "`p.numel()` for each tensor."),
        Mistake(_not_recursive, "only the module's own parameters were counted: `parameters()` must "
                                "recurse into the submodules (the default, `recurse=True`)."),
        Mistake(_every_module, "`model.modules()` visits the model and every submodule, and "
                               "`m.parameters()` already recurses — each parameter is counted once per "
                               "ancestor. Call `model.parameters()` once."),
        Mistake(_tied_twice, "the tied weight was counted twice: `state_dict()` and "
                             "`named_parameters(remove_duplicate=False)` list a shared tensor under each of "
                             "its names (`wte.weight` and `lm_head.weight`); `model.parameters()` yields it once."),
        Mistake(_with_buffers, "buffers were counted: the causal mask and BatchNorm's running statistics "
                               "are state, not parameters. `state_dict()` contains them; "
                               "`model.parameters()` does not."),
        Mistake(_trainable_only, "frozen parameters (`requires_grad=False`) are parameters too: do not "
                                 "filter on `p.requires_grad` unless asked for the *trainable* count."),
    ],
))




# =========================================================================== Llama-style count
# The configs are built inside the cases (transformers is imported lazily: the framework asks
# for light top-level imports).

def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # tiny configs warn about token ids outside the vocabulary


def _config_key(config: Any) -> tuple[str, str]:
    """A hashable stand-in for a config, so that the library's answer is computed once per config
    (each check asks for it again, once per case and per known mistake)."""
    return type(config).__name__, config.to_json_string(use_diff=False)


def _hf_config(class_name: str, **kw: Any) -> Any:
    """``transformers.<class_name>(**kw)`` (LlamaConfig, MixtralConfig), with the library quiet."""
    import transformers

    _quiet_transformers()
    return getattr(transformers, class_name)(**kw)


def _meta_model(key: tuple[str, str], model_class: str, *, eager_attention: bool = False) -> Any:
    """``transformers.<model_class>`` of the config behind ``key`` (:func:`_config_key`), built on
    the meta device: shapes without memory or weights."""
    import json

    import transformers

    config = _hf_config(key[0], **json.loads(key[1]))
    if eager_attention:
        config._attn_implementation = "eager"  # SDPA's CPU kernel is not counted; eager's matmuls are
    with torch.device("meta"):
        return getattr(transformers, model_class)(config)


@functools.lru_cache(maxsize=64)
def _llama_count(key: tuple[str, str]) -> int:
    model = _meta_model(key, "LlamaForCausalLM")
    return sum(p.numel() for p in model.parameters())  # a tied matrix is yielded once


def llama_parameter_count_reference(config: Any) -> int:
    """The library's own count: ``LlamaForCausalLM(config)`` on the meta device."""
    return _llama_count(_config_key(config))


def _llama_config(**kw: Any) -> Any:
    return _hf_config("LlamaConfig", **kw)


#: Real models' shapes (keyword arguments of LlamaConfig), in the cases of two checkers.
_LLAMA_3_8B = dict(vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                   num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=False)
_LLAMA_3_2_1B = dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                     num_attention_heads=32, num_key_value_heads=8, head_dim=64, tie_word_embeddings=True)


def _llama_cases() -> list[Case]:
    return [
        Case("Llama-3-8B (GQA 32/8, untied head)", (_llama_config(**_LLAMA_3_8B),)),
        Case("Llama-3.2-1B (tied head, head_dim 64)", (_llama_config(**_LLAMA_3_2_1B),)),
        Case("multi-head (n_kv = n_heads), toy", (_llama_config(
            vocab_size=1000, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=False),)),
        Case("multi-query (1 key/value head), toy", (_llama_config(
            vocab_size=500, hidden_size=48, intermediate_size=128, num_hidden_layers=3,
            num_attention_heads=6, num_key_value_heads=1, tie_word_embeddings=False),)),
        Case("head_dim set explicitly (32, not hidden/heads = 16)", (_llama_config(
            vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, head_dim=32, tie_word_embeddings=False),)),
        Case("a random toy", (_random_llama(),)),
    ]


def _random_llama() -> Any:
    heads = pick((2, 4, 6, 8))
    return _llama_config(vocab_size=draw(100, 3000), hidden_size=heads * pick((8, 16)),
                         intermediate_size=draw(16, 300), num_hidden_layers=draw(1, 4), num_attention_heads=heads,
                         num_key_value_heads=pick([k for k in (1, 2, heads) if heads % k == 0]),
                         tie_word_embeddings=bool(draw(0, 1)))


def _llama_formula(cfg: Any, *, gqa: bool = True, mlp_mats: int = 3, tied: bool | None = None,
                   norm_size: int = 1, own_head_dim: bool = True, final_norm: bool = True,
                   biases: bool = False) -> int:
    V, C, F = cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size
    nh = cfg.num_attention_heads
    nkv = cfg.num_key_value_heads if gqa else nh
    hd = cfg.head_dim if own_head_dim else C // nh
    attn = C * nh * hd + 2 * C * nkv * hd + nh * hd * C                  # q, k, v, o
    if biases:
        attn += nh * hd + 2 * nkv * hd + C
    mlp = mlp_mats * C * F + (F * 2 + C if biases else 0) * (mlp_mats == 3)
    block = attn + mlp + 2 * norm_size * C                                # two RMSNorms
    tied = cfg.tie_word_embeddings if tied is None else tied
    return V * C + cfg.num_hidden_layers * block + (norm_size * C if final_norm else 0) + (0 if tied else V * C)


llama_parameter_count = register(Checker(
    "llama_parameter_count", llama_parameter_count_reference, _llama_cases,
    mistakes=[
        Mistake(lambda c: _llama_formula(c, gqa=False),
                "with grouped-query attention k_proj and v_proj have only num_key_value_heads heads: "
                "each is hidden_size x (num_key_value_heads * head_dim), not hidden_size x hidden_size."),
        Mistake(lambda c: _llama_formula(c, mlp_mats=2),
                "Llama's SwiGLU MLP has *three* matrices: gate_proj and up_proj (C -> intermediate_size) "
                "and down_proj (intermediate_size -> C); GPT-2's MLP has two."),
        Mistake(lambda c: _llama_formula(c, tied=False),
                "this model ties its output layer to the token embedding (config.tie_word_embeddings): "
                "lm_head adds nothing then."),
        Mistake(lambda c: _llama_formula(c, tied=True),
                "Llama-3-8B does not tie: with tie_word_embeddings=False lm_head is its own "
                "vocab_size x hidden_size matrix."),
        Mistake(lambda c: _llama_formula(c, norm_size=2),
                "RMSNorm has a weight and no bias: hidden_size parameters each, not 2 x hidden_size."),
        Mistake(lambda c: _llama_formula(c, own_head_dim=False),
                "use config.head_dim: it may differ from hidden_size // num_attention_heads, and the "
                "projections are sized by it (q_proj is hidden_size x num_attention_heads * head_dim)."),
        Mistake(lambda c: _llama_formula(c, biases=True),
                "Llama's linear layers have no bias (attention_bias=False, mlp_bias=False)."),
        Mistake(lambda c: _llama_formula(c, final_norm=False),
                "the final norm (model.norm, hidden_size parameters) after the last layer is missing."),
    ],
    timeout=5.0,
    what="your llama_parameter_count",
))


# =========================================================================== mixture of experts

def moe_parameter_counts_reference(config: Any) -> tuple[int, int]:
    """(total, active): ``MixtralForCausalLM(config)`` counted on the meta device; *active* leaves
    out, in every layer, the experts the router does not pick for a token."""
    return _moe_counts(_config_key(config))


@functools.lru_cache(maxsize=64)
def _moe_counts(key: tuple[str, str]) -> tuple[int, int]:
    model = _meta_model(key, "MixtralForCausalLM")
    config = model.config
    total = sum(p.numel() for p in model.parameters())
    unused = 0
    for layer in model.model.layers:
        experts = layer.mlp.experts
        per_expert = sum(p.numel() for p in experts.parameters()) // config.num_local_experts
        unused += (config.num_local_experts - config.num_experts_per_tok) * per_expert
    return total, total - unused


def _mixtral_config(**kw: Any) -> Any:
    return _hf_config("MixtralConfig", **kw)


def _moe_cases() -> list[Case]:
    return [
        Case("Mixtral-8x7B (8 experts, 2 per token)", (_mixtral_config(
            vocab_size=32000, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
            num_attention_heads=32, num_key_value_heads=8, num_local_experts=8, num_experts_per_tok=2),)),
        Case("toy: 4 experts, 1 per token", (_mixtral_config(
            vocab_size=200, hidden_size=32, intermediate_size=80, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=1),)),
        Case("toy: 16 experts, 4 per token, tied head", (_mixtral_config(
            vocab_size=300, hidden_size=48, intermediate_size=64, num_hidden_layers=3,
            num_attention_heads=6, num_key_value_heads=3, num_local_experts=16, num_experts_per_tok=4,
            tie_word_embeddings=True),)),
        Case("a random toy", (_random_mixtral(),)),
    ]


def _random_mixtral() -> Any:
    heads, experts = pick((2, 4)), draw(2, 8)
    return _mixtral_config(vocab_size=draw(100, 1000), hidden_size=heads * 8, intermediate_size=draw(16, 100),
                           num_hidden_layers=draw(1, 3), num_attention_heads=heads,
                           num_key_value_heads=pick((1, heads)),
                           num_local_experts=experts, num_experts_per_tok=draw(1, experts))


def _moe_formula(cfg: Any, *, active_all: bool = False, router: bool = True, mlp_mats: int = 3,
                 proportional: bool = False) -> tuple[int, int]:
    V, C, F = cfg.vocab_size, cfg.hidden_size, cfg.intermediate_size
    nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = getattr(cfg, "head_dim", None) or C // nh
    E, k, L = cfg.num_local_experts, cfg.num_experts_per_tok, cfg.num_hidden_layers
    attn = 2 * C * nh * hd + 2 * C * nkv * hd
    expert = mlp_mats * C * F
    shared = attn + 2 * C + (E * C if router else 0)                        # attention, 2 norms, router
    head = 0 if cfg.tie_word_embeddings else V * C
    total = V * C + head + C + L * (shared + E * expert)
    if active_all:
        return total, total
    if proportional:
        return total, total * k // E
    return total, V * C + head + C + L * (shared + k * expert)


moe_parameter_counts = register(Checker(
    "moe_parameter_counts", moe_parameter_counts_reference, _moe_cases,
    mistakes=[
        Mistake(lambda c: _moe_formula(c, active_all=True),
                "*active* counts what one token uses: in each layer only num_experts_per_tok of the "
                "num_local_experts expert MLPs run; leave the others out."),
        Mistake(lambda c: _moe_formula(c, proportional=True),
                "only the expert MLPs are sparse: attention, norms, router, embeddings and head are used "
                "by every token, so active is not total x k / E."),
        Mistake(lambda c: _moe_formula(c, router=False),
                "each layer has a router (mlp.gate: hidden_size -> num_local_experts, no bias) that every "
                "token uses; count it in both numbers."),
        Mistake(lambda c: _moe_formula(c, mlp_mats=2),
                "each expert is a SwiGLU MLP with three matrices (gate, up: C -> F; down: F -> C)."),
    ],
    timeout=5.0,
    what="your moe_parameter_counts",
))


# =========================================================================== forward FLOPs

def llama_forward_flops_reference(config: Any, T: int) -> int:
    """What ``torch.utils.flop_counter.FlopCounterMode`` counts for one forward pass of
    ``LlamaForCausalLM(config)`` (eager attention) over one sequence of T tokens, on the meta device."""
    return _llama_flops(_config_key(config), int(T))


@functools.lru_cache(maxsize=64)
def _llama_flops(key: tuple[str, str], T: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    model = _meta_model(key, "LlamaForCausalLM", eager_attention=True)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, T, dtype=torch.long, device="meta"))
    return int(counter.get_total_flops())


def _flops_cases() -> list[Case]:
    return [
        Case("Llama-3-8B (GQA 32/8), T = 512", (_llama_config(**_LLAMA_3_8B), 512)),
        Case("toy with head_dim 16 != C / heads = 8, T = 9", (_llama_config(
            vocab_size=97, hidden_size=32, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, tie_word_embeddings=False), 9)),
        Case("SmolLM2-135M (9 heads, 3 key/value heads, tied), T = 2048", (_llama_config(
            vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
            num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True), 2048)),
        Case("Llama-3.2-1B (tied head, head_dim 64), one token", (_llama_config(**_LLAMA_3_2_1B), 1)),
        Case("a random toy", _random_llama_and_length()),
    ]


def _random_llama_and_length() -> tuple[Any, int]:
    kv = pick((1, 2))
    heads = kv * pick((1, 2, 4))
    hd = pick((8, 16))
    C = heads * pick((8, 16))
    return _llama_config(vocab_size=draw(50, 500), hidden_size=C, intermediate_size=draw(2, 4) * C,
                         num_hidden_layers=draw(1, 3), num_attention_heads=heads, num_key_value_heads=kv,
                         head_dim=hd, tie_word_embeddings=bool(draw(0, 1))), draw(1, 64)


def _flops_formula(cfg: Any, T: int, *, head: bool = True, attention: float = 1.0, factor: int = 2,
                   gqa: bool = True, mlp_matrices: int = 3, own_head_dim: bool = True,
                   attention_heads: str = "query") -> int:
    """The count written out, with one switch per known mistake (unswitched it equals the
    reference: ``tests/test_exercise_references.py``)."""
    C, L, V, nh = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size, cfg.num_attention_heads
    nkv = cfg.num_key_value_heads if gqa else nh
    hd = (getattr(cfg, "head_dim", None) or C // nh) if own_head_dim else C // nh
    per_layer = C * nh * hd + 2 * C * nkv * hd + nh * hd * C + mlp_matrices * C * cfg.intermediate_size
    matmuls = factor * T * (L * per_layer + (V * C if head else 0))
    heads_in_attention = nh if attention_heads == "query" else cfg.num_key_value_heads
    scores = attention * L * 4 * T * T * heads_in_attention * hd      # q k^T and weights @ v
    return int(matmuls + scores)             # RoPE, RMSNorm, SiLU, softmax: elementwise, not counted


llama_forward_flops = register(Checker(
    "llama_forward_flops", llama_forward_flops_reference, _flops_cases,
    mistakes=[
        Mistake(lambda c, T: _flops_formula(c, T, gqa=False),
                "grouped-query attention: k_proj and v_proj map C to num_key_value_heads x head_dim, "
                "not to num_attention_heads x head_dim — fewer FLOPs than q_proj."),
        Mistake(lambda c, T: _flops_formula(c, T, mlp_matrices=2),
                "Llama's MLP is SwiGLU: three matrices (gate_proj, up_proj: C -> intermediate_size; "
                "down_proj back), not GPT-2's two."),
        Mistake(lambda c, T: _flops_formula(c, T, attention=0.0),
                "the attention itself is matrix products too: q k^T and weights @ v cost 2 x T x T x head_dim "
                "each, per query head and layer — the term that grows with T^2."),
        Mistake(lambda c, T: _flops_formula(c, T, attention_heads="kv"),
                "every *query* head multiplies its own T x T scores: the shared keys and values are "
                "repeated for each group (repeat_kv), so the T^2 term counts num_attention_heads heads."),
        Mistake(lambda c, T: _flops_formula(c, T, own_head_dim=False),
                "read head_dim from the config when it is set: it need not be hidden_size // "
                "num_attention_heads (q_proj then maps C to heads x head_dim, not to C)."),
        Mistake(lambda c, T: _flops_formula(c, T, head=False),
                "the output layer (lm_head: C -> vocab_size) is a matrix product at every position, tied "
                "or not — in Llama-3-8B the largest single one."),
        Mistake(lambda c, T: _flops_formula(c, T, factor=6, attention=3.0),
                "that is a training step (forward + backward, about 3x); the question is one forward pass."),
    ],
    timeout=5.0,
    what="your llama_forward_flops",
))
