"""The real model families, exactly (Chapter 7): published configurations, written out.

Each entry of :data:`FAMILIES` holds a released model's hub name, the ``transformers`` class
that builds it and the values of its published ``config.json`` that differ from the library's
defaults, plus what the model is known for (pre-training objective, positions, attention).
:func:`family_config` turns an entry into a config (the hub's online, these values offline),
:func:`build_on_meta` builds the exact architecture on PyTorch's meta device (shapes only: no
memory, no weights, a 175B-parameter model in a second), and :func:`family_table` counts
every model's parameters with ``numel()``.

The paper counts (``paper``) are what the papers or release notes quote, rounded as they
round them; the chapter shows how far each is from the exact count.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from .modelinfo import count_parameters
from .runtime import is_online

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel


@dataclass(frozen=True)
class Family:
    """One released model: how to build it exactly, and what it is known for."""

    name: str                 #: hub name
    label: str                #: short name for tables
    model_type: str           #: transformers' model type (key of CONFIG_MAPPING)
    model_class: str          #: the transformers class counted (the released checkpoint's class)
    values: dict[str, Any]    #: config values that differ from the library's defaults
    kind: str                 #: encoder, decoder or encoder–decoder
    objective: str            #: pre-training objective
    positions: str            #: how positions enter the model
    attention: str            #: MHA / MQA / GQA, windows, sparsity
    paper: float | None = None   #: parameter count quoted by the paper / release (None: not quoted)
    paper_text: str = "—"        #: that quote, with its source
    gated: bool = False          #: the hub's config needs a log-in: the written values are used online too
    notes: tuple[str, ...] = field(default=())


_BERT_BASE = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                  intermediate_size=3072, max_position_embeddings=512)
_LLAMA_LIKE = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                   num_key_value_heads=8, rms_norm_eps=1e-5, tie_word_embeddings=False)

#: The models of the chapter's table, in its order.
FAMILIES: list[Family] = [
    Family("bert-base-uncased", "BERT-base", "bert", "BertModel", dict(_BERT_BASE, type_vocab_size=2),
           "encoder", "masked LM (15%) + next-sentence prediction", "learned absolute (512)", "MHA, 12 heads",
           110e6, "110M (Devlin et al., 2018)"),
    Family("distilbert-base-uncased", "DistilBERT", "distilbert", "DistilBertModel",
           dict(vocab_size=30522, dim=768, n_layers=6, n_heads=12, hidden_dim=3072, max_position_embeddings=512),
           "encoder", "distillation from BERT (soft targets + MLM + cosine), no NSP", "learned absolute (512)",
           "MHA, 12 heads", 66e6, "66M (Sanh et al., 2019)"),
    Family("roberta-base", "RoBERTa-base", "roberta", "RobertaModel",
           dict(_BERT_BASE, vocab_size=50265, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
                bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5),
           "encoder", "masked LM only (dynamic masking); NSP dropped", "learned absolute (512 + 2)",
           "MHA, 12 heads", 125e6, "125M (fairseq release)"),
    Family("albert-base-v2", "ALBERT-base-v2", "albert", "AlbertModel",
           dict(_BERT_BASE, vocab_size=30000, embedding_size=128, hidden_act="gelu_new", type_vocab_size=2,
                num_hidden_groups=1, inner_group_num=1),
           "encoder", "masked LM + sentence-order prediction", "learned absolute (512)",
           "MHA, 12 heads; one layer's weights shared by all 12", 12e6, "12M (Lan et al., 2019)"),
    Family("microsoft/deberta-v3-base", "DeBERTa-v3-base", "deberta-v2", "DebertaV2Model",
           dict(_BERT_BASE, vocab_size=128100, relative_attention=True, position_buckets=256,
                norm_rel_ebd="layer_norm", share_att_key=True, pos_att_type=["p2c", "c2p"],
                position_biased_input=False, type_vocab_size=0, max_relative_positions=-1, layer_norm_eps=1e-7),
           "encoder", "replaced-token detection (ELECTRA-style)", "relative (disentangled content/position "
           "attention, 256 log buckets)", "MHA, 12 heads", 184e6, "86M backbone + 98M embeddings (He et al., 2021)"),
    Family("google/electra-base-discriminator", "ELECTRA-base (discr.)", "electra", "ElectraModel",
           dict(_BERT_BASE, embedding_size=768),
           "encoder", "replaced-token detection (a small generator fills the masks)", "learned absolute (512)",
           "MHA, 12 heads", 110e6, "110M (Clark et al., 2020)"),
    Family("google/bigbird-roberta-base", "BigBird-RoBERTa-base", "big_bird", "BigBirdModel",
           dict(_BERT_BASE, vocab_size=50358, max_position_embeddings=4096, attention_type="block_sparse",
                block_size=64, num_random_blocks=3, pad_token_id=0, bos_token_id=1, eos_token_id=2, sep_token_id=66),
           "encoder", "masked LM (warm-started from RoBERTa)", "learned absolute (4096)",
           "block-sparse: window + global + random blocks of 64", None, "—"),
    Family("t5-base", "T5-base", "t5", "T5ForConditionalGeneration",
           dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
                relative_attention_num_buckets=32, feed_forward_proj="relu"),
           "encoder–decoder", "span corruption (text-to-text)", "relative bias (32 log buckets, "
           "shared by the layers)", "MHA, 12 heads + cross-attention", 220e6, "220M (Raffel et al., 2019)"),
    Family("facebook/bart-base", "BART-base", "bart", "BartForConditionalGeneration",
           dict(vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6, encoder_attention_heads=12,
                decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072,
                max_position_embeddings=1024, activation_function="gelu", pad_token_id=1, bos_token_id=0,
                eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2, scale_embedding=False),
           "encoder–decoder", "denoising: text infilling + sentence permutation", "learned absolute (1024 + 2)",
           "MHA, 12 heads + cross-attention", 140e6, "140M (fairseq release)"),
    Family("gpt2", "GPT-2 small", "gpt2", "GPT2LMHeadModel",
           dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                activation_function="gelu_new"),
           "decoder", "next-token prediction", "learned absolute (1024)", "MHA, 12 heads",
           117e6, "117M (Radford et al., 2019)"),
    Family("gpt3-175b", "GPT-3 (175B)", "gpt2", "GPT2LMHeadModel",
           dict(vocab_size=50257, n_positions=2048, n_embd=12288, n_layer=96, n_head=96,
                activation_function="gelu_new"),
           "decoder", "next-token prediction", "learned absolute (2048)",
           "MHA, 96 heads; dense and locally banded sparse layers alternate", 175.0e9,
           "175.0B (Brown et al., 2020)", gated=True,
           notes=("never released: the GPT-2 architecture with the paper's Table 2.1 shape",)),
    Family("bigscience/bloom-560m", "BLOOM-560m", "bloom", "BloomForCausalLM",
           dict(vocab_size=250880, hidden_size=1024, n_layer=24, n_head=16),
           "decoder", "next-token prediction", "ALiBi (no position vectors)", "MHA, 16 heads",
           560e6, "560M (the model's name)"),
    Family("tiiuae/falcon-7b", "Falcon-7B", "falcon", "FalconForCausalLM",
           dict(vocab_size=65024, hidden_size=4544, num_hidden_layers=32, num_attention_heads=71,
                multi_query=True, parallel_attn=True, bias=False, alibi=False, new_decoder_architecture=False),
           "decoder", "next-token prediction", "RoPE", "MQA: 71 query heads, 1 key/value head",
           7e9, "7B (the model's name)"),
    Family("meta-llama/Meta-Llama-3-8B", "Llama-3-8B", "llama", "LlamaForCausalLM",
           dict(_LLAMA_LIKE, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
                bos_token_id=128000, eos_token_id=128001),
           "decoder", "next-token prediction", "RoPE (θ = 500,000)", "GQA: 32 query heads, 8 key/value heads",
           8e9, "8B (the model's name)", gated=True),
    Family("mistralai/Mistral-7B-v0.1", "Mistral-7B", "mistral", "MistralForCausalLM",
           dict(_LLAMA_LIKE, vocab_size=32000, max_position_embeddings=32768, rope_theta=10000.0,
                sliding_window=4096),
           "decoder", "next-token prediction", "RoPE (θ = 10,000)",
           "GQA 32/8 + sliding window of 4096", 7.3e9, "7.3B (Mistral AI's announcement)", gated=True),
    Family("mistralai/Mixtral-8x7B-v0.1", "Mixtral-8x7B", "mixtral", "MixtralForCausalLM",
           dict(_LLAMA_LIKE, vocab_size=32000, max_position_embeddings=32768, rope_theta=1e6,
                num_local_experts=8, num_experts_per_tok=2),
           "decoder", "next-token prediction", "RoPE (θ = 1,000,000)",
           "GQA 32/8; 8 expert MLPs per layer, 2 used per token", 46.7e9, "46.7B (Mistral AI's announcement)",
           gated=True),
    # Small Llama-style decoders (Chapter 8 builds their block from scratch): RMSNorm, SwiGLU, RoPE, GQA,
    # tied embeddings. Qwen2 adds q/k/v biases; Qwen3 an RMSNorm on each head's queries and keys.
    Family("HuggingFaceTB/SmolLM2-135M", "SmolLM2-135M", "llama", "LlamaForCausalLM",
           dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0,
                rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0),
           "decoder", "next-token prediction", "RoPE (θ = 100,000)", "GQA: 9 query heads, 3 key/value heads",
           135e6, "135M (the model's name)"),
    Family("meta-llama/Llama-3.2-1B", "Llama-3.2-1B", "llama", "LlamaForCausalLM",
           dict(vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                num_attention_heads=32, num_key_value_heads=8, head_dim=64, max_position_embeddings=131072,
                rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=128000,
                eos_token_id=128001),
           "decoder", "next-token prediction (pruned and distilled from Llama 3.1 8B)",
           "RoPE (θ = 500,000, rescaled for 128K)", "GQA: 32 query heads, 8 key/value heads",
           1.23e9, "1.23B (Meta's model card)", gated=True),
    Family("Qwen/Qwen2.5-0.5B", "Qwen2.5-0.5B", "qwen2", "Qwen2ForCausalLM",
           dict(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=151643,
                eos_token_id=151643),
           "decoder", "next-token prediction", "RoPE (θ = 1,000,000)",
           "GQA: 14 query heads, 2 key/value heads; q/k/v biases", 0.49e9, "0.49B (Qwen's model card)"),
    Family("Qwen/Qwen3-0.6B", "Qwen3-0.6B", "qwen3", "Qwen3ForCausalLM",
           dict(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, bos_token_id=151643,
                eos_token_id=151645),
           "decoder", "next-token prediction", "RoPE (θ = 1,000,000)",
           "GQA: 16 query heads, 8 key/value heads; RMSNorm on q and k", 0.6e9, "0.6B (Qwen's model card)"),
]

_BY_NAME = {f.name: f for f in FAMILIES}


def family(name: str) -> Family:
    """The :class:`Family` called ``name`` (its hub name or its label)."""
    for f in FAMILIES:
        if name in (f.name, f.label):
            return f
    raise KeyError(f"no model {name!r} in course_utils.families; known: {', '.join(f.name for f in FAMILIES)}")


def published_config(name: str) -> PretrainedConfig:
    """The config built from the values written out here (both worlds; no network)."""
    from transformers import CONFIG_MAPPING

    f = family(name)
    cfg = CONFIG_MAPPING[f.model_type](**f.values)
    cfg.course_source = "published values written out in course_utils.families"
    return cfg


def family_config(name: str) -> PretrainedConfig:
    """The config of ``name``: the hub's ``config.json`` online (when not gated), else the
    published values written out in this module. ``cfg.course_source`` says which."""
    f = family(name)
    if is_online() and not f.gated:
        from transformers import AutoConfig

        try:
            cfg = AutoConfig.from_pretrained(f.name)
            cfg.course_source = f"hub: {f.name}/config.json"
            return cfg
        except OSError:  # the hub refused (renamed, rate-limited): the written values still hold
            pass
    return published_config(name)


def model_class(name: str) -> type[PreTrainedModel]:
    """The transformers class that the family's parameter count refers to."""
    return getattr(importlib.import_module("transformers"), family(name).model_class)


def build_on_meta(name: str, config: Any = None) -> torch.nn.Module:
    """The exact architecture of ``name`` on the meta device: shapes, no memory, no weights."""
    config = config if config is not None else family_config(name)
    with torch.device("meta"):
        return model_class(name)(config)


def random_init(model_cls: Any, config: Any, seed: int = 0, std: float = 0.02) -> torch.nn.Module:
    """``model_cls(config)`` with random N(0, std²) weights (LayerNorm gains near 1), built fast.

    The library's own initialisation of a 140M-parameter model takes many seconds on a CPU;
    building on the meta device and filling the tensors once is several times faster. The
    weights are random: outputs mean nothing, but two implementations must still agree.
    """
    with torch.device("meta"):
        model = model_cls(config)
    model = model.to_empty(device="cpu")
    model.tie_weights()  # to_empty gives tied parameters separate storage: tie them again
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            mean = 1.0 if (p.dim() == 1 and "norm" in name.lower() and name.endswith("weight")) else 0.0
            p.copy_(torch.randn(p.shape, generator=gen) * std + mean)
        for _, b in model.named_buffers():
            if b.is_floating_point():
                b.copy_(torch.randn(b.shape, generator=gen) * std)
    return model.eval()


def _shape(cfg: Any) -> dict[str, Any]:
    """Layers, width, heads, key/value heads, vocabulary and context from any config."""
    def get(*keys: str) -> Any:  # the first of these config attributes that is set
        return next((getattr(cfg, k) for k in keys if getattr(cfg, k, None) is not None), None)

    layers = get("num_hidden_layers", "n_layer", "n_layers", "num_layers", "encoder_layers")
    if getattr(cfg, "is_encoder_decoder", False):
        layers = f"{layers} + {get('num_decoder_layers', 'decoder_layers')}"
    heads = get("num_attention_heads", "n_head", "n_heads", "num_heads", "encoder_attention_heads")
    kv = get("num_key_value_heads", "num_kv_heads")
    if getattr(cfg, "multi_query", False):
        kv = 1
    context = get("max_position_embeddings", "n_positions")
    return {"layers": layers, "d_model": get("hidden_size", "n_embd", "dim", "d_model"),
            "heads (q/kv)": f"{heads}/{kv or heads}", "vocabulary": get("vocab_size"),
            # T5 and BLOOM have no position table: nothing in the architecture bounds the length
            "context": f"{context:,}" if context else "no position table"}


def family_table(names: list[str] | None = None) -> pd.DataFrame:
    """One row per model: kind, objective, positions, attention, shape, and the exact parameter
    count of the meta-device model (``numel()``), beside the paper's quote."""
    rows = []
    for f in (FAMILIES if names is None else [family(n) for n in names]):
        cfg = family_config(f.name)
        n = count_parameters(build_on_meta(f.name, cfg))
        rows.append({"model": f.label, "kind": f.kind, "objective": f.objective, "positions": f.positions,
                     "attention": f.attention, **_shape(cfg), "class counted": f.model_class,
                     "parameters": n, "paper says": f.paper_text,
                     "exact / paper": n / f.paper if f.paper else float("nan"),
                     "config from": cfg.course_source})
    return pd.DataFrame(rows).set_index("model")
