"""Every model and attention function of the package runs where its inputs are: on Colab's GPU as
here on the CPU. Without a GPU, the ``meta`` device stands in for one: a model moved there and fed
meta inputs fails the moment its code creates a tensor on the CPU (``torch.arange(T)`` without
``device=``) and mixes it with theirs. Shapes are checked too (meta tensors have shapes, no values).
Chapter 7's tiny language model is executed from its cells the same way.
"""
from __future__ import annotations

import pytest
import torch
from _ch07_cells import chapter_namespace

from course_utils import efficient, positions
from course_utils.attention import Encoder, EncoderConfig, causal_mask
from course_utils.gpt import GPT, GPTConfig
from course_utils.llama import KVCache, Llama, LlamaConfig

META = torch.device("meta")


def _ids(B: int, T: int, vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T)).to(META)


def test_a_cpu_tensor_inside_forward_fails_on_meta() -> None:
    """What the tests below rely on: meta and CPU tensors do not mix."""
    with pytest.raises((RuntimeError, NotImplementedError)):
        torch.zeros(2, 3, device=META) + torch.arange(3)[None].float() @ torch.ones(3, 3)


@pytest.mark.parametrize("attn_impl", ["manual", "sdpa"])
def test_gpt_runs_on_its_inputs_device(attn_impl: str) -> None:
    model = GPT(GPTConfig(block_size=16, vocab_size=37, n_layer=2, n_head=2, n_embd=16,
                          attn_impl=attn_impl)).to(META)
    idx = _ids(2, 7, 37)
    out = model(idx, targets=idx, use_cache=True)
    assert out.logits.device == META and out.logits.shape == (2, 7, 37)
    step = model(idx[:, -1:], past_kv=out.past_kv, use_cache=True, last_only=True)
    assert step.logits.device == META


@pytest.mark.parametrize("pre_ln", [False, True])
def test_encoder_runs_on_its_inputs_device(pre_ln: bool) -> None:
    model = Encoder(EncoderConfig(vocab_size=31, max_positions=16, d_model=16, n_heads=2, n_layers=2,
                                  d_ff=32, pre_ln=pre_ln)).to(META).eval()
    ids = _ids(2, 9, 31)
    out = model(ids, attention_mask=torch.ones(2, 9, dtype=torch.long, device=META))
    hidden = out[0] if isinstance(out, tuple) else getattr(out, "last_hidden_state", out)
    assert hidden.device == META and hidden.shape == (2, 9, 16)


def test_llama_runs_on_its_inputs_device_with_and_without_cache() -> None:
    config = LlamaConfig(vocab_size=41, n_layer=2, n_head=4, n_kv_head=2, n_embd=32, n_inner=48,
                         head_dim=8)
    model = Llama(config).to(META)
    ids = _ids(1, 5, 41)
    logits = model(ids)
    assert logits.device == META and logits.shape == (1, 5, 41)
    cache = KVCache(config.n_layer)
    model(ids, cache=cache)
    step = model(ids[:, -1:], cache=cache)
    assert step.device == META and step.shape == (1, 1, 41)


def test_grouped_query_attention_runs_on_its_inputs_device() -> None:
    gqa = efficient.GroupedQueryAttention(n_embd=16, n_head=4, n_kv_head=2).to(META)
    out = gqa(torch.empty(2, 5, 16, device=META))
    assert out.device == META and out.shape == (2, 5, 16)


def test_position_helpers_make_their_tensors_where_asked() -> None:
    assert positions.sinusoidal_positions(6, 8, device=META).device == META
    assert positions.alibi_bias(4, 5, device=META).device == META
    assert positions.alibi_bias(4, 3, 5, device=META).shape == (4, 3, 5)
    x = torch.empty(2, 4, 6, 8, device=META)
    assert positions.apply_rope(x, torch.arange(6, device=META)).device == META
    assert causal_mask(5, device=META).device == META
    # the defaults stay where they were (the chapters' CPU cells)
    assert positions.sinusoidal_positions(6, 8).device.type == "cpu"
    assert positions.alibi_bias(4, 5).device.type == "cpu"


def test_chapter7_tiny_lm_runs_on_its_inputs_device() -> None:
    ns = chapter_namespace("ch07-rope", "ch07-alibi", "ch07-tinylm")
    for scheme in ns["TinyLM"].SCHEMES:
        model = ns["TinyLM"](vocab=23, scheme=scheme, C=16, n_head=2, n_layer=1, max_T=12).to(META)
        logits = model(_ids(2, 8, 23))
        assert logits.device == META and logits.shape == (2, 8, 23), scheme
