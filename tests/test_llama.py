"""Chapter 8's decoder from scratch: the chapter's own cells and ``course_utils.llama`` against
``transformers`` (random Llama configs of width 48 with 1, 2, 3 and 6 query heads per key/value
head, Qwen2's biases, an explicit head size), the from-scratch KV cache against no cache, the
parameter formula against meta-device models, and the real SmolLM2 weights."""
from __future__ import annotations

import itertools
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from course_utils import llama
from course_utils.positions import apply_rope

CHAPTER = Path(__file__).resolve().parent.parent / "chapters" / "08_modern_decoder.ipynb"
_COUNTER = itertools.count()
RATIOS = [(6, 6), (6, 3), (6, 2), (6, 1)]  # query heads, key/value heads: 1, 2, 3 and 6 per group


def chapter_namespace(*tags: str) -> dict:
    """Execute Chapter 8's cells carrying ``tags`` (every cell of each tag, in page order)."""
    nb = nbformat.read(CHAPTER, as_version=4)
    module = types.ModuleType(f"ch08_cells_{next(_COUNTER)}")  # @dataclass looks its module up
    sys.modules[module.__name__] = module
    namespace = module.__dict__
    namespace.update({"torch": torch, "nn": nn, "F": F, "dataclass": dataclass, "apply_rope": apply_rope})
    for tag in tags:
        sources = [c.source for c in nb.cells if tag in c.metadata.get("tags", [])]
        assert sources, f"chapter 8 has no cell tagged {tag}"
        for i, src in enumerate(sources):
            exec(compile(src, f"{CHAPTER.name}[{tag}:{i}]", "exec"), namespace)
    return namespace


@pytest.fixture(scope="module")
def cells() -> dict:
    return chapter_namespace("ch08-model", "ch08-dequant", "ch08-quant")


def _random_llama(n_head: int, n_kv: int, seed: int = 0, **kw) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    values = dict(vocab_size=97, hidden_size=48, intermediate_size=128, num_hidden_layers=3,
                  num_attention_heads=n_head, num_key_value_heads=n_kv, max_position_embeddings=64,
                  rope_theta=500.0, eos_token_id=None, tie_word_embeddings=n_kv % 2 == 0)
    values.update(kw)
    model = LlamaForCausalLM(LlamaConfig(**values)).eval()
    model.set_attn_implementation("eager")
    with torch.no_grad():  # random norm gains too, so that a misplaced gain shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.2)
    return model


@pytest.mark.parametrize("n_head,n_kv", RATIOS)
@pytest.mark.parametrize("source", ["chapter", "package"])
def test_logits_equal_the_library(cells, source, n_head, n_kv):
    hf = _random_llama(n_head, n_kv)
    model = (cells["Llama"] if source == "chapter" else llama.Llama).from_hf(hf)
    ids = torch.randint(0, 97, (2, 17), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, atol=1e-5, rtol=1e-5)


def test_chapter_cells_equal_the_package(cells):
    hf = _random_llama(6, 2, seed=3)
    ours, pkg = cells["Llama"].from_hf(hf), llama.Llama.from_hf(hf)
    assert list(ours.state_dict()) == list(pkg.state_dict())
    ids = torch.randint(0, 97, (1, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(ours(ids), pkg(ids))
    assert torch.equal(ours.generate(ids[:, :4], 10), pkg.generate(ids[:, :4], 10))
    assert cells["LlamaConfig"].from_hf(hf.config).__dict__ == llama.LlamaConfig.from_hf(hf.config).__dict__


@pytest.mark.parametrize("n_head,n_kv", RATIOS)
def test_greedy_with_cache_equals_library_and_no_cache(cells, n_head, n_kv):
    hf = _random_llama(n_head, n_kv, seed=5)
    model = cells["Llama"].from_hf(hf)
    prompt = torch.randint(0, 97, (1, 5), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        theirs = hf.generate(prompt, max_new_tokens=30, do_sample=False)
    assert theirs.size(1) == 35
    assert torch.equal(model.generate(prompt, 30), theirs)
    assert torch.equal(model.generate(prompt, 30, use_cache=False), theirs)


def test_cached_logits_equal_uncached(cells):
    """Step by step: the cache's logits for each new token equal a full forward pass."""
    model = cells["Llama"].from_hf(_random_llama(6, 2, seed=7))
    ids = torch.randint(0, 97, (2, 12), generator=torch.Generator().manual_seed(6))
    cache = cells["KVCache"](model.config.n_layer)
    with torch.no_grad():
        full = model(ids)
        parts = [model(ids[:, :5], cache)] + [model(ids[:, t:t + 1], cache) for t in range(5, 12)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=1e-5)
    assert [cache.seen(i) for i in range(model.config.n_layer)] == [12] * model.config.n_layer


def test_explicit_head_size_and_qwen2_biases(cells):
    hf = _random_llama(4, 2, head_dim=16)  # nh * hs = 64 != C = 48 (as Qwen3's head_dim = 128)
    with torch.no_grad():
        ids = torch.randint(0, 97, (1, 9))
        torch.testing.assert_close(cells["Llama"].from_hf(hf)(ids), hf(ids).logits, atol=1e-5, rtol=1e-5)
    torch.manual_seed(0)
    qwen = Qwen2ForCausalLM(Qwen2Config(vocab_size=97, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                        num_attention_heads=6, num_key_value_heads=2, tie_word_embeddings=True,
                                        attention_bias=True)).eval()
    qwen.set_attn_implementation("eager")
    with torch.no_grad():
        for name, p in qwen.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.5)
        cfg = llama.LlamaConfig.from_hf(qwen.config)
        cfg.attention_bias = True  # Qwen2 always has q/k/v biases
        ours = llama.Llama(cfg).eval()
        ours.load_state_dict(qwen.state_dict())
        torch.testing.assert_close(ours(ids), qwen(ids).logits, atol=1e-5, rtol=1e-5)


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="multiple of n_kv_head"):
        llama.LlamaConfig(n_head=9, n_kv_head=2)
    with pytest.raises(ValueError, match="must be even"):
        llama.LlamaConfig(head_dim=7)


@pytest.mark.parametrize("name", ["HuggingFaceTB/SmolLM2-135M", "meta-llama/Llama-3.2-1B", "Qwen/Qwen2.5-0.5B",
                                  "Qwen/Qwen3-0.6B", "meta-llama/Meta-Llama-3-8B", "mistralai/Mistral-7B-v0.1"])
def test_parameter_formula_equals_meta_model(name):
    from course_utils.families import build_on_meta, published_config

    cfg = published_config(name)
    assert llama.num_parameters(cfg) == sum(p.numel() for p in build_on_meta(name, cfg).parameters())


def test_real_smollm2_logits_and_greedy_tokens():
    from transformers import AutoModelForCausalLM

    from course_utils import assets

    hf = assets.load_pretrained(assets.SMOLLM2, AutoModelForCausalLM, attn_implementation="eager").eval()
    tok = assets.load_tokenizer(assets.SMOLLM2)
    model = llama.Llama.from_hf(hf)
    ids = tok("It was the best of times, it was the worst of times, it was the age of wisdom.",
              return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert (model(ids) - hf(ids).logits).abs().max().item() <= 1e-4
        theirs = hf.generate(ids[:, :6], max_new_tokens=30, do_sample=False)
    assert torch.equal(model.generate(ids[:, :6], 30)[:, : theirs.size(1)], theirs)
    assert theirs.size(1) - 6 >= 20
