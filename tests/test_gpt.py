"""GPT-2 internals (Chapter 3): the real tokenizer's ids, GPT-2 small's parameter count, the
chapter's manual forward pass and the from-scratch ``course_utils.gpt.GPT`` against the library
(exact GPT-2 small architecture with random weights, and the course's trained zoo GPT-2), and
the KV cache against uncached computation."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from _page_code import run_tagged_cell

from course_utils.assets import load_architecture, load_tokenizer
from course_utils.gpt import GPT, GPTConfig
from course_utils.sampling import apply_temperature, process_logits

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = ROOT / "chapters" / "03_gpt2_internals.ipynb"
PROMPTS = ["Hello World. This is Agney", "The capital of France is Paris.",
           "Once upon a time, a little cat called Anna lived in a village.", "In 2026, 12345 + 678 = 13023."]
TOL = 1e-5  # fp32: the bound on max |ours - library|



@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("gpt2")


@pytest.fixture(scope="module")
def gpt2_small():
    from transformers import GPT2LMHeadModel

    model = load_architecture("gpt2", GPT2LMHeadModel)  # exact GPT-2 small, random weights
    model.set_attn_implementation("eager")
    return model


@pytest.fixture(scope="module")
def zoo_gpt2():
    from course_utils import zoo

    model = zoo.load("gpt2-course", progress=False)
    model.set_attn_implementation("eager")
    return model


@pytest.fixture(scope="module")
def manual_forward():
    """The chapter's own ``manual_forward`` (the cell tagged ``ch03-manual-forward``), executed here."""
    namespace = run_tagged_cell(CHAPTER, "ch03-manual-forward", {"math": math, "torch": torch})
    return namespace["manual_forward"]


def _ids(tok, text):
    return torch.tensor([tok(text)["input_ids"]])


# ------------------------------------------------------------------------------------ tokenizer

def test_seed_sentence_token_ids(tok):
    ids = tok("Hello World. This is Agney")["input_ids"]
    assert ids == [15496, 2159, 13, 770, 318, 2449, 1681]
    assert tok.convert_ids_to_tokens(ids) == ["Hello", "ĠWorld", ".", "ĠThis", "Ġis", "ĠAg", "ney"]
    assert tok.tokenize("Agney") == ["Ag", "ney"]
    assert len(tok) == 50257 and tok.eos_token_id == 50256


# ------------------------------------------------------------------------------------ parameter count

def test_gpt2_small_parameter_count_and_tying():
    from transformers import GPT2LMHeadModel

    hf = load_architecture("gpt2", GPT2LMHeadModel, on_meta=True)
    assert sum(p.numel() for p in hf.parameters()) == 124_439_808
    with torch.device("meta"):
        ours = GPT(GPTConfig())
    assert ours.num_parameters() == 124_439_808
    assert ours.lm_head.weight is ours.transformer.wte.weight
    # 12 blocks of 12 C^2 + 13 C, embeddings V C + 1024 C, ln_f 2 C
    C, V = 768, 50257
    assert 12 * (12 * C * C + 13 * C) + V * C + 1024 * C + 2 * C == 124_439_808


# ------------------------------------------------------------------------------------ manual forward

def _assert_matches(model, ours_fn, tok):
    worst = 0.0
    for text in PROMPTS:
        ids = _ids(tok, text)
        with torch.no_grad():
            lib = model(ids, output_hidden_states=True)
            hidden, logits = ours_fn(ids)
        assert logits.shape == lib.logits.shape
        torch.testing.assert_close(hidden, lib.hidden_states[-1], atol=TOL, rtol=0)
        torch.testing.assert_close(logits, lib.logits, atol=TOL, rtol=0)
        worst = max(worst, (logits - lib.logits).abs().max().item())
    return worst


def test_manual_forward_equals_library_on_exact_gpt2_small(gpt2_small, manual_forward, tok):
    assert _assert_matches(gpt2_small, lambda ids: manual_forward(gpt2_small, ids), tok) <= TOL


def test_manual_forward_equals_library_on_zoo_model(zoo_gpt2, manual_forward, tok):
    assert _assert_matches(zoo_gpt2, lambda ids: manual_forward(zoo_gpt2, ids), tok) <= TOL


# ------------------------------------------------------------------------------------ from scratch

def _scratch(model):
    def run(ids):
        out = model(ids)
        return out.hidden, out.logits
    return run


def test_from_scratch_equals_library_on_exact_gpt2_small(gpt2_small, tok):
    ours = GPT.from_hf(gpt2_small)
    assert ours.num_parameters() == 124_439_808
    assert ours.lm_head.weight is ours.transformer.wte.weight
    assert _assert_matches(gpt2_small, _scratch(ours), tok) <= TOL
    # the fused PyTorch kernel gives the same answer as the hand-written attention
    fused = GPT.from_hf(gpt2_small, attn_impl="sdpa")
    ids = _ids(tok, PROMPTS[2])
    with torch.no_grad():
        torch.testing.assert_close(fused(ids).logits, ours(ids).logits, atol=TOL, rtol=0)


def test_from_scratch_equals_library_on_zoo_model(zoo_gpt2, tok):
    ours = GPT.from_hf(zoo_gpt2)
    assert ours.config.n_layer == zoo_gpt2.config.n_layer
    assert ours.num_parameters() == sum(p.numel() for p in zoo_gpt2.parameters())
    assert _assert_matches(zoo_gpt2, _scratch(ours), tok) <= TOL


def test_from_hf_accepts_bare_state_dicts():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=300, n_positions=32, n_embd=128, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
    hf = GPT2LMHeadModel(cfg).eval()
    ids = torch.randint(0, 300, (2, 9))
    with torch.no_grad():
        expected = hf(ids).logits
        # config given explicitly
        a = GPT.from_hf(hf.state_dict(), GPTConfig(block_size=32, vocab_size=300, n_layer=2, n_head=2, n_embd=128))
        torch.testing.assert_close(a(ids).logits, expected, atol=TOL, rtol=0)
        # config inferred from the shapes (head size 64 -> 2 heads), from a GPT2Model without the head
        b = GPT.from_hf(hf.transformer.state_dict())
        assert (b.config.n_head, b.config.n_layer, b.config.block_size) == (2, 2, 32)
        torch.testing.assert_close(b(ids).logits, expected, atol=TOL, rtol=0)


def test_from_hf_transposes_exactly_the_conv1d_weights(gpt2_small):
    ours = GPT.from_hf(gpt2_small)
    hf_sd = gpt2_small.state_dict()
    for k, v in ours.state_dict().items():
        if k.endswith(GPT.TRANSPOSED):
            assert torch.equal(v, hf_sd[k].t()), k
        elif k in hf_sd:
            assert torch.equal(v, hf_sd[k]), k
    assert sum(k.endswith(GPT.TRANSPOSED) for k in hf_sd) == 4 * 12


def test_from_hf_rejects_what_it_cannot_load():
    from transformers import GPT2Config, GPT2LMHeadModel

    with pytest.raises(ValueError, match="scale_attn_by_inverse_layer_idx"):
        GPTConfig.from_hf(GPT2Config(scale_attn_by_inverse_layer_idx=True))
    with pytest.raises(TypeError, match="GPT-2 model or its state dict"):
        GPT.from_hf("gpt2")
    with pytest.raises(KeyError, match="wte"):
        GPT.from_hf({"foo": torch.zeros(1)})
    hf = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=16, n_embd=64, n_layer=1, n_head=1,
                                    bos_token_id=0, eos_token_id=0, tie_word_embeddings=False))
    with pytest.raises(ValueError, match="ties them"):
        GPT.from_hf(hf)


def test_forward_rejects_bad_input():
    model = GPT(GPTConfig.tiny()).eval()
    with pytest.raises(ValueError, match="integer token ids"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match="exceed block_size"):
        model(torch.zeros(1, 65, dtype=torch.long))
    out = model(torch.zeros(1, 60, dtype=torch.long), use_cache=True)
    with pytest.raises(ValueError, match="exceed block_size"):
        model(torch.zeros(1, 5, dtype=torch.long), past_kv=out.past_kv)
    with pytest.raises(ValueError, match="n_embd"):
        GPTConfig(n_embd=100, n_head=3)


def test_loss_is_cross_entropy_and_ln_vocab_at_uniform():
    model = GPT(GPTConfig.tiny()).eval()
    with torch.no_grad():
        model.transformer.wte.weight.zero_()  # all logits 0 -> uniform over the vocabulary
        idx = torch.randint(0, 1000, (2, 10))
        out = model(idx[:, :-1], targets=idx[:, 1:])
    assert out.loss.item() == pytest.approx(math.log(1000), abs=1e-5)


# ------------------------------------------------------------------------------------ KV cache

@pytest.mark.parametrize("attn_impl", ["manual", "sdpa"])
def test_kv_cache_gives_the_uncached_logits(attn_impl):
    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny(attn_impl=attn_impl)).eval()
    idx = torch.randint(0, 1000, (2, 20))
    with torch.no_grad():
        full = model(idx).logits
        out = model(idx[:, :7], use_cache=True)  # prefill 7, then 1, then a chunk of 4, then 1 by 1
        parts, cache = [out.logits], out.past_kv
        for a, b in [(7, 8), (8, 12)] + [(t, t + 1) for t in range(12, 20)]:
            out = model(idx[:, a:b], past_kv=cache, use_cache=True)
            parts.append(out.logits)
            cache = out.past_kv
    assert len(cache) == 2 and cache[0][0].shape == (2, 4, 20, 16)  # (B, nh, S, hs)
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=TOL, rtol=0)


def test_kv_cache_on_exact_gpt2_small(gpt2_small, tok):
    ours = GPT.from_hf(gpt2_small)
    ids = _ids(tok, PROMPTS[2])
    with torch.no_grad():
        full = ours(ids).logits
        out = ours(ids[:, :-1], use_cache=True)
        last = ours(ids[:, -1:], past_kv=out.past_kv, use_cache=True).logits
    torch.testing.assert_close(last, full[:, -1:], atol=TOL, rtol=0)


def test_cached_generation_on_zoo_model_equals_uncached_and_the_library(zoo_gpt2, tok):
    ours = GPT.from_hf(zoo_gpt2)
    start = _ids(tok, "Once upon a time, a little")
    cached = ours.generate(start, 15, use_cache=True)
    plain = ours.generate(start, 15, use_cache=False)
    assert torch.equal(cached, plain)
    with torch.no_grad():
        lib = zoo_gpt2.generate(start, max_new_tokens=15, do_sample=False, attention_mask=torch.ones_like(start),
                                pad_token_id=tok.eos_token_id)
    # The library stops at <|endoftext|> (the zoo's model, trained on packed passages, may end one);
    # ours generates a fixed number of tokens: they agree up to there.
    assert lib.shape[1] == cached.shape[1] or lib[0, -1] == tok.eos_token_id
    assert torch.equal(cached[:, :lib.shape[1]], lib)


def test_last_only_logits_are_the_last_row():
    torch.manual_seed(0)
    model = GPT(GPTConfig.tiny()).eval()
    idx = torch.randint(0, 1000, (2, 9))
    with torch.no_grad():
        full, last = model(idx).logits, model(idx, last_only=True).logits
    assert last.shape == (2, 1, 1000)
    torch.testing.assert_close(last, full[:, -1:])
    with pytest.raises(ValueError, match="last_only"):
        model(idx, targets=idx, last_only=True)


def test_sampling_is_reproducible_with_a_generator():
    model = GPT(GPTConfig.tiny()).eval()
    start = torch.zeros(1, 3, dtype=torch.long)
    kw = dict(do_sample=True, temperature=0.8, top_k=5)
    a = model.generate(start, 10, generator=torch.Generator().manual_seed(1), **kw)
    b = model.generate(start, 10, generator=torch.Generator().manual_seed(1), **kw)
    assert torch.equal(a, b) and a.shape == (1, 13)


def test_generate_samples_from_the_sampling_processors():
    # Each step draws from softmax(process_logits(...)): replay the draws with the same generator.
    model = GPT(GPTConfig.tiny()).eval()
    start = torch.randint(0, 1000, (2, 4), generator=torch.Generator().manual_seed(0))
    got = model.generate(start, 6, use_cache=False, do_sample=True, temperature=0.7, top_k=3,
                         generator=torch.Generator().manual_seed(2))
    gen, idx = torch.Generator().manual_seed(2), start
    with torch.no_grad():
        for _ in range(6):
            scores = process_logits(idx, model(idx, last_only=True).logits[:, -1], temperature=0.7, top_k=3)  # (B, V)
            assert int(torch.isfinite(scores).sum(-1).max()) <= 3 + 2  # top-3, ties aside
            idx = torch.cat([idx, torch.multinomial(scores.softmax(-1), 1, generator=gen)], dim=1)
    assert torch.equal(got, idx)


def test_temperature_zero_means_the_same_as_in_sampling():
    # One meaning across the course: temperature must be > 0; greedy decoding is do_sample=False.
    model = GPT(GPTConfig.tiny()).eval()
    start = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="temperature must be > 0") as ours:
        model.generate(start, 2, do_sample=True, temperature=0.0)
    with pytest.raises(ValueError, match="temperature must be > 0") as theirs:
        apply_temperature(torch.zeros(1, 5), 0.0)
    assert str(ours.value) == str(theirs.value)
    with pytest.raises(ValueError, match="do_sample=True"):
        model.generate(start, 2, temperature=0.5)
    greedy = model.generate(start, 4)
    with torch.no_grad():
        assert greedy[0, 3] == model(start, last_only=True).logits[0, -1].argmax()
