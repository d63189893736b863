"""The exercises' references equal the libraries they stand for.

Where a checker's reference *is* the library (the warpers of chapter 4, the meta-device models of
chapter 1, ``StaticCache`` in chapter 6, ``BertPooler`` and ``tokenizers`` in chapters 2 and 3)
these tests pin known published values; where the reference is the course's own code, they
compare it with the library (a real ``BertLayer``, a pretrained encoder on packed documents,
GPT-2 on a left-padded batch, ``DataCollatorForLanguageModeling(whole_word_mask=True)``,
``get_wsd_schedule``, autograd on the whole batch, ``F.scaled_dot_product_attention``).
Whether each checker's reference passes and its mistakes get their hints is
``tests/test_checker_registry.py``'s job.
"""
from __future__ import annotations

import pytest
import torch

from course_utils.exercises import ch01_architectures as ch01
from course_utils.exercises import ch02_attention as ch02
from course_utils.exercises import ch03_gpt2 as ch03
from course_utils.exercises import ch05_mlm as ch05
from course_utils.exercises import ch06_efficient as ch06


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch):
    from course_utils import runtime

    monkeypatch.setenv("COURSE_OFFLINE", "1")
    runtime.is_online.cache_clear()
    yield
    runtime.is_online.cache_clear()


# =========================================================================== chapter 1

def test_published_parameter_counts():
    llama3_8b = ch01._llama_cases()[0].args[0]
    assert ch01.llama_parameter_count_reference(llama3_8b) == 8_030_261_248   # Llama-3-8B
    mixtral = ch01._moe_cases()[0].args[0]
    total, active = ch01.moe_parameter_counts_reference(mixtral)
    assert round(total / 1e9, 1) == 46.7 and round(active / 1e9, 1) == 12.9  # Mixtral's 46.7B / 12.9B


def test_the_formulas_in_the_mistake_module_are_right_when_unmodified():
    # the wrong variants are the right formula with one switch flipped: the unflipped one must agree
    for case in ch01._llama_cases():
        assert ch01._llama_formula(*case.args) == ch01.llama_parameter_count_reference(*case.args), case.name
    for case in ch01._moe_cases():
        assert ch01._moe_formula(*case.args) == ch01.moe_parameter_counts_reference(*case.args), case.name
    for case in ch01._flops_cases():
        assert ch01._flops_formula(*case.args) == ch01.llama_forward_flops_reference(*case.args), case.name


# =========================================================================== chapter 2

def test_encoder_layer_reference_equals_a_real_bert_layer(offline):
    from course_utils import assets

    model = assets.load_pretrained(assets.MINILM, attn_implementation="eager").eval()
    torch.manual_seed(0)
    x = torch.randn(2, 7, 384)
    layer = model.encoder.layer[2]
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3]).bool()
    additive = torch.zeros(2, 1, 1, 7).masked_fill(~mask.view(2, 1, 1, 7), torch.finfo(torch.float32).min)
    with torch.no_grad():
        out = layer(x, attention_mask=additive)
        want = out[0] if isinstance(out, tuple) else out
        got = ch02.bert_encoder_layer_reference(x, layer.state_dict(), 12, mask.view(2, 1, 1, 7),
                                                eps=model.config.layer_norm_eps)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_classifier_head_reference_equals_bert_for_sequence_classification():
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, num_labels=3)
    model = BertForSequenceClassification(cfg).eval()
    ids = torch.randint(0, 50, (2, 6))
    params = {k: v for k, v in model.state_dict().items() if k in ch02.CLASSIFIER_KEYS}
    assert set(params) == set(ch02.CLASSIFIER_KEYS)  # the names the exercise promises
    with torch.no_grad():
        hidden = model.bert(ids).last_hidden_state
        torch.testing.assert_close(ch02.bert_classifier_head_reference(hidden, params), model(ids).logits)


def test_segment_ids_reference_equals_the_tokenizers_token_type_ids(offline):
    from course_utils import assets

    tok = assets.load_tokenizer("bert-base-uncased")
    batches = [tok(["How old are you?", "Where is it?"], ["Six.", "Left, then right at the end."], padding=True),
               tok(["One sentence.", "Two words"], padding=True), tok(["a"], ["b"])]
    for enc in batches:
        got = ch02.segment_ids_reference(torch.tensor(enc["input_ids"]), tok.sep_token_id, tok.pad_token_id)
        assert got.tolist() == enc["token_type_ids"]


def test_packed_mask_makes_packed_documents_equal_documents_alone(offline):
    """The real pretrained encoder, run on two documents packed into one row with the reference
    mask, gives each document the hidden states it gets alone (the library's BertModel)."""
    from course_utils import assets
    from course_utils.attention import Encoder, EncoderConfig, load_bert_weights

    tok = assets.load_tokenizer(assets.MINILM)
    bert = assets.load_pretrained(assets.MINILM, attn_implementation="eager").eval()
    ours = load_bert_weights(Encoder(EncoderConfig.from_hf(bert.config)), bert).eval()
    docs = ["the cat sat on the mat", "attention is all you need, they said"]
    ids = [tok(d)["input_ids"] for d in docs]
    packed = torch.tensor([ids[0] + ids[1] + [0, 0]])
    doc_ids = torch.tensor([[0] * len(ids[0]) + [1] * len(ids[1]) + [-1, -1]])
    mask = ch02.packed_attention_mask_reference(doc_ids)                     # (1, 1, T, T)
    # positions restart in every document, as in each document alone
    positions = torch.cat([torch.arange(len(ids[0])), torch.arange(len(ids[1])), torch.zeros(2, dtype=torch.long)])
    with torch.no_grad():
        x = (ours.word_embeddings(packed) + ours.position_embeddings(positions)
             + ours.token_type_embeddings(torch.zeros_like(packed)))
        x = ours.embeddings_norm(x)
        for layer in ours.layers:
            x, _ = layer(x, mask)
        start = 0
        for doc in ids:
            alone = bert(torch.tensor([doc])).last_hidden_state[0]
            torch.testing.assert_close(x[0, start:start + len(doc)], alone, atol=1e-4, rtol=1e-4)
            start += len(doc)


# =========================================================================== chapter 3

def test_sliding_window_cache_reference_chained_equals_a_full_recompute():
    """Fed in chunks, each carrying the rolling cache of `window` positions, the reference gives
    what PyTorch's attention over the whole sequence with a sliding-window mask gives."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    C, nh, T, window = 16, 4, 11, 4
    attn = ch03.AttentionWeights(C, nh)
    x = torch.randn(2, T, C)
    with torch.no_grad():
        q, k, v = (t.view(2, T, nh, C // nh).transpose(1, 2) for t in attn.c_attn(x).split(C, dim=2))
        i, j = torch.arange(T)[:, None], torch.arange(T)[None, :]
        mask = (j <= i) & (j > i - window)
        full = attn.c_proj(F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
                           .reshape(2, T, C))
        for chunks in ([T], [1] * T, [3, 1, 5, 2]):
            ys, past, start = [], None, 0
            for n in chunks:
                y, past = ch03.sliding_window_attention_with_cache_reference(attn, x[:, start:start + n], window, past)
                ys.append(y)
                start += n
                assert past[0].size(2) == min(start, window)
            torch.testing.assert_close(torch.cat(ys, dim=1), full, atol=1e-5, rtol=1e-5)
        unswitched = ch03._window_attention(attn, x, window)
        torch.testing.assert_close(unswitched[0], full, atol=1e-5, rtol=1e-5)


TEXTS = ["Hello, World! It's 3.14 o'clock.", "unaffable tokenization of embeddings", "Café déjà vu — naïve façade",
         "snowman☃ melts", "a" * 120 + " end", "line one\tline two\nthree  spaces", "$100 + 5% = ^_^ {ok} <tag>",
         "Ünïcödé and ÅNGSTRÖM", "", "   ", "don't-stop-believin'…"]


@pytest.mark.parametrize("text", TEXTS)
def test_wordpiece_reference_and_scratch_version_equal_bert_tokenizer_fast(offline, text):
    from course_utils import assets

    tok = assets.load_tokenizer("bert-base-uncased")
    vocab = ch03.bert_vocab()
    assert dict(vocab) == tok.vocab  # the same real vocabulary
    want = tok.tokenize(text)
    assert ch03.wordpiece_tokenize_reference(text, vocab) == want
    assert ch03._wordpiece(text, vocab) == want  # the from-scratch solution the notebook shows


@pytest.mark.parametrize("text", ["Hello world, it's me.", "naïve café — déjà vu", "Line one\n\tLine two  ",
                                  " 🦒 and 🦙 emoji", "日本語のテキスト", ""])
def test_byte_level_decoding_from_scratch_equals_the_gpt2_tokenizer(offline, text):
    from course_utils import assets

    tok = assets.load_tokenizer("gpt2")
    tokens = tok.tokenize(text)
    assert ch03._decode(tokens) == tok.convert_tokens_to_string(tokens) == text
    if len(tokens) > 1:  # cut anywhere, even inside a character: still the library's answer
        for cut in range(1, len(tokens)):
            assert ch03._decode(tokens[:cut]) == ch03.byte_level_decode_reference(tokens[:cut])


def test_left_padded_position_ids_make_gpt2_logits_equal_each_prompt_alone():
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=50, n_positions=16)).eval()
    prompts = [[5, 6, 7, 8, 9], [11, 12], [20, 21, 22, 23]]
    T = max(map(len, prompts))
    ids = torch.tensor([[0] * (T - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in prompts])
    position_ids = ch03.left_padded_position_ids_reference(mask)
    with torch.no_grad():
        padded = model(ids, attention_mask=mask, position_ids=position_ids).logits
        naive = model(ids, attention_mask=mask).logits  # positions 0..T-1: shifted for short prompts
        for b, p in enumerate(prompts):
            alone = model(torch.tensor([p])).logits[0]
            torch.testing.assert_close(padded[b, T - len(p):], alone, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(naive[1, T - 2:], model(torch.tensor([prompts[1]])).logits[0], atol=1e-3)


# =========================================================================== chapter 5

@pytest.mark.parametrize("seed, p", [(0, 0.15), (1, 0.5), (2, 0.3)])
def test_whole_word_mask_reference_equals_the_library_collator(offline, seed, p):
    from transformers import DataCollatorForLanguageModeling

    from course_utils import assets

    tok = assets.load_tokenizer("bert-base-uncased")
    texts = ch05._WWM_TEXTS + ["Short one.", "Whole-word masking keeps ##pieces together."]
    enc = tok(texts, padding=True, return_offsets_mapping=True, return_special_tokens_mask=True)
    features = [{k: enc[k][i] for k in ("input_ids", "attention_mask", "special_tokens_mask", "offset_mapping")}
                for i in range(len(texts))]
    with pytest.warns(UserWarning):  # whole-word masking turns the 80/10/10 split into 100 % [MASK]
        collator = DataCollatorForLanguageModeling(tok, whole_word_mask=True, mlm_probability=p, seed=seed)
    batch = collator(features)
    ids = torch.tensor(enc["input_ids"])
    # the collator's Bernoulli draws are torch.rand(shape, generator=seeded) < p, position by position
    u = torch.rand(ids.shape, generator=torch.Generator().manual_seed(seed))
    inputs, labels = ch05.whole_word_mask_reference(ids, torch.tensor(enc["offset_mapping"]),
                                                    torch.tensor(enc["special_tokens_mask"]).bool(), u,
                                                    tok.mask_token_id, p)
    assert torch.equal(labels, batch["labels"]) and torch.equal(inputs, batch["input_ids"])
    assert (labels != -100).any()


def test_wsd_reference_is_the_library_schedule_and_the_formula_agrees():
    for case in ch05._wsd_cases():
        peak, warmup, stable, decay, ratio = case.args
        every = ch05._every_step(ch05.wsd_lr_reference, case)
        assert every == [ch05.wsd_lr_reference(s, *case.args) for s in range(len(every))]
        assert every == pytest.approx([ch05._wsd(s, *case.args) for s in range(len(every))], rel=1e-12, abs=1e-15)
        assert every[warmup] == pytest.approx(peak) and every[-1] == pytest.approx(peak * ratio)


def test_accumulated_gradient_equals_the_whole_batch_gradient():
    for case in ch05._acc_cases():
        seed, micro_batches = case.args
        grads, rows, _ = ch05._grads_and_rows(ch05.accumulate_mlm_grads_reference, case)
        torch.manual_seed(seed)
        model = ch05.TinyMLM()
        ids = torch.cat([i for i, _ in micro_batches])
        labels = torch.cat([label for _, label in micro_batches])
        torch.nn.functional.cross_entropy(model(ids).flatten(0, 1), labels.flatten()).backward()
        for name, p in model.named_parameters():
            torch.testing.assert_close(grads[name], p.grad, atol=1e-6, rtol=1e-5)
        assert rows == max(i.shape[0] for i, _ in micro_batches)


# =========================================================================== chapter 6

def test_sink_window_reference_equals_sdpa_and_skipping_loops_avoid_the_nan_keys():
    """The reference is SDPA with an explicit boolean mask (window band | causal sinks, from
    Chapter 6's sliding_window_mask and causal_mask); on the cases with a KV cache the keys filled
    with NaN are at least a block away from anything a query may see, so a loop that skips (with its
    blocks aligned anywhere) stays finite and a loop that visits every block does not."""
    import torch.nn.functional as F

    from course_utils.efficient import causal_mask, sliding_window_mask

    torch.manual_seed(0)
    for T, S, window, sinks, block in [(16, 16, 4, 2, 4), (13, 13, 5, 3, 4), (4, 40, 8, 4, 4), (8, 48, 6, 2, 3)]:
        q, k, v = torch.randn(2, 3, T, 8), torch.randn(2, 3, S, 8), torch.randn(2, 3, S, 8)
        mask = sliding_window_mask(T, S, window) | (causal_mask(T, S) & (torch.arange(S) < sinks))
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        torch.testing.assert_close(ch06.sink_window_attention_reference(q, k, v, window, sinks, block), want)
        k_nan, v_nan, filled = ch06.nan_far_keys(k, v, T, window, sinks, block)
        if S > T:
            assert filled > 0
        far = torch.isnan(k_nan[0, 0, :, 0])
        for i0 in range(0, T, block):       # every key a block away from a query block's reach is finite
            lo, hi = max(0, i0 + S - T - window + 1), min(S, min(i0 + block, T) + S - T)
            assert not far[max(0, lo - block + 1):hi + block - 1].any()
            assert not far[:sinks + block - 1].any()
        torch.testing.assert_close(ch06.sink_window_attention_reference(q, k_nan, v_nan, window, sinks, block), want)
        torch.testing.assert_close(ch06._sink_tiled(q, k_nan, v_nan, window, sinks, block), want,
                                   atol=1e-5, rtol=1e-4)
        visits_all = ch06._sink_tiled(q, k_nan, v_nan, window, sinks, block, skip=False)
        assert torch.isnan(visits_all).all() if filled else torch.isfinite(visits_all).all()


def test_kv_cache_reference_is_the_static_cache_and_matches_published_sizes():
    llama = ch06._kv_cases()[0].args
    assert ch06.kv_cache_bytes_reference(*llama) == 2**30  # 1 GiB: Llama-3-8B, 8192 tokens, bf16
    for case in ch06._kv_cases():
        assert ch06._kv_formula(*case.args) == ch06.kv_cache_bytes_reference(*case.args), case.name


def test_grouped_attention_from_scratch_equals_sdpa_and_repeated_heads():
    from course_utils.efficient import repeat_kv

    torch.manual_seed(0)
    for nh, nkv, T in [(8, 2, 1), (6, 3, 2), (4, 1, 1), (3, 3, 1)]:
        q, k, v = torch.randn(2, nh, T, 8), torch.randn(2, nkv, 9, 8), torch.randn(2, nkv, 9, 8)
        want = torch.nn.functional.scaled_dot_product_attention(q, repeat_kv(k, nh // nkv), repeat_kv(v, nh // nkv))
        torch.testing.assert_close(ch06.gqa_attention_reference(q, k, v), want)
        torch.testing.assert_close(ch06._gqa(q, k, v), want)


def test_combined_partials_equal_sdpa_over_all_keys():
    import torch.nn.functional as F

    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 5, 8) * 4, torch.randn(2, 3, 17, 8) * 4, torch.randn(2, 3, 17, 8)
    for bounds in ([0, 17], [0, 9, 17], [0, 1, 2, 10, 17]):
        out, lse = ch06.combine_partial_attention_reference(*ch06.chunk_partials(q, k, v, bounds))
        torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v), atol=1e-5, rtol=1e-4)
        scores = q @ k.transpose(-2, -1) / 8 ** 0.5
        torch.testing.assert_close(lse, torch.logsumexp(scores, dim=-1))


# =========================================================================== chapter 9

def test_conv1d_merge_reference_is_what_the_adapted_conv1d_computes():
    """peft's merged Conv1D weight gives the adapted layer's output (x W + b + (alpha / r) x A^T B^T)
    and keeps the (C_in, C_out) layout; the untransposed update differs on the square case."""
    from transformers.pytorch_utils import Conv1D

    from course_utils.exercises import ch09_finetune as ch09

    torch.manual_seed(0)
    for c_in, c_out, r, alpha in [(12, 12, 4, 8), (16, 48, 8, 16), (10, 6, 1, 4)]:
        w, a, b = torch.randn(c_in, c_out), torch.randn(r, c_in), torch.randn(c_out, r)
        merged = ch09.merge_lora_conv1d_reference(w, a, b, alpha)
        assert merged.shape == (c_in, c_out)
        x = torch.randn(5, c_in)
        layer = Conv1D(c_out, c_in)
        with torch.no_grad():
            layer.weight.copy_(merged)
            layer.bias.zero_()
            torch.testing.assert_close(layer(x), x @ w + (alpha / r) * (x @ a.T @ b.T), atol=1e-4, rtol=1e-5)
        if c_in == c_out:
            assert not torch.allclose(merged, ch09._merge_conv1d(w, a, b, alpha, transpose=False), atol=1e-3)
    with pytest.raises(ValueError, match="C_in, C_out"):
        ch09.merge_lora_conv1d_reference(torch.randn(6, 10), torch.randn(1, 10), torch.randn(6, 1), 4)
