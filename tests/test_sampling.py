"""The from-scratch decoders of Chapter 4 (course_utils.sampling) against ``transformers``.

For a randomly initialised GPT-2 config and for the course's trained zoo model:
* the processed next-token scores equal the library's logits processors bit for bit, over a
  grid of temperature x top-k x top-p (and repetition penalty / no-repeat-n-gram) and over
  random settings, and equal the scores ``generate`` itself reports at every step;
* with the same seed, sampling draws the same tokens as ``generate(do_sample=True)``;
* greedy decoding and beam search (length penalty, early stopping, EOS) give the same ids.
"""
from __future__ import annotations

import itertools
import random

import pytest
import torch

from course_utils import sampling as S

TEMPERATURES = [0.5, 1.0, 1.7]
TOP_KS = [0, 1, 10, 50]
TOP_PS = [1.0, 0.95, 0.8, 0.3]



@pytest.fixture(autouse=True)
def _quiet_single_threaded():
    from transformers.utils import logging

    old, threads = logging.get_verbosity(), torch.get_num_threads()
    logging.set_verbosity_error()  # generate's advice about pad_token_id etc. is not what we test
    torch.set_num_threads(1)  # tiny models: threads only add overhead (and thrash a shared CPU)
    yield
    logging.set_verbosity(old)
    torch.set_num_threads(threads)


def _random_model():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=512, n_positions=96, n_embd=32, n_layer=2, n_head=2,
                     bos_token_id=511, eos_token_id=511)
    model = GPT2LMHeadModel(cfg).eval()
    prompts = torch.randint(0, 511, (3, 6), generator=torch.Generator().manual_seed(1))
    return model, prompts, 511


def _zoo_model():
    from course_utils import zoo
    from course_utils.assets import load_tokenizer

    model = zoo.load("gpt2-course", progress=False)
    tok = load_tokenizer("gpt2")
    texts = ["The capital of France is", "Once upon a time, there was a", "People in Japan speak"]
    rows = [tok(t)["input_ids"] for t in texts]
    T = min(len(r) for r in rows)  # same length, no padding: keep the last T tokens of each
    prompts = torch.tensor([r[-T:] for r in rows])
    return model, prompts, tok.eos_token_id


_MODELS = {}


def _get(name: str):
    if name not in _MODELS:
        _MODELS[name] = _random_model() if name == "random" else _zoo_model()
    return _MODELS[name]


MODELS = [
    pytest.param("random", id="random-gpt2-config"),
    pytest.param("zoo", id="zoo-gpt2-course"),
]


def _real_logits(model, prompts):
    """Next-token logits at several points of a real continuation (not one hand-picked row)."""
    seqs = S.greedy_decode(model, prompts, 6)
    rows = [S.next_token_logits(model, seqs[:, :t])[0] for t in range(prompts.size(1), seqs.size(1))]
    return seqs, rows


# ----------------------------------------------------------------------------- distributions
@pytest.mark.parametrize("name", MODELS)
def test_processed_scores_equal_library_over_the_grid(name):
    model, prompts, _ = _get(name)
    seqs, rows = _real_logits(model, prompts)
    n = 0
    for t, k, p in itertools.product(TEMPERATURES, TOP_KS, TOP_PS):
        lib = S.library_processors(temperature=t, top_k=k, top_p=p)
        for i, logits in enumerate(rows):
            ids = seqs[:, :prompts.size(1) + i]
            ours = S.process_logits(ids, logits, temperature=t, top_k=k, top_p=p)
            assert torch.equal(ours, lib(ids, logits.clone())), (t, k, p, i)
            assert torch.equal(ours.softmax(-1), lib(ids, logits.clone()).softmax(-1))
            n += 1
    assert n == len(TEMPERATURES) * len(TOP_KS) * len(TOP_PS) * len(rows)


@pytest.mark.parametrize("name", MODELS)
def test_processed_scores_equal_library_for_random_settings(name):
    model, prompts, _ = _get(name)
    seqs, rows = _real_logits(model, prompts)
    rng = random.Random(1234)
    for trial in range(40):
        settings = dict(temperature=rng.choice([1.0, round(rng.uniform(0.05, 3.0), 3)]),
                        top_k=rng.choice([0, rng.randint(1, 200)]),
                        top_p=rng.choice([1.0, round(rng.uniform(0.01, 0.999), 3)]),
                        repetition_penalty=rng.choice([1.0, round(rng.uniform(0.5, 2.0), 2)]),
                        no_repeat_ngram_size=rng.choice([0, 1, 2, 3]))
        i = rng.randrange(len(rows))
        ids = seqs[:, :prompts.size(1) + i]
        ours = S.process_logits(ids, rows[i], **settings)
        theirs = S.library_processors(**settings)(ids, rows[i].clone())
        assert torch.equal(ours, theirs), (trial, settings)


def test_top_p_keeps_the_crossing_token_and_at_least_one():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    # 0.3 makes the mass cross 0.6 (0.5 -> 0.8): it is kept; 0.15 comes after the crossing.
    assert torch.isfinite(S.top_p_filter(logits, 0.6)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(S.top_p_filter(logits, 0.45)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(S.top_p_filter(logits, 0.85)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(S.top_p_filter(logits, 0.01)).sum() == 1  # the top token always stays
    assert torch.isfinite(S.top_k_filter(torch.tensor([[2.0, 1.0, 1.0, 0.0]]), 2)).sum() == 3  # ties kept


# ----------------------------------------------------------------------------- decoding == generate
@pytest.mark.parametrize("name", MODELS)
def test_sampling_same_seed_same_tokens_and_scores_as_generate(name):
    model, prompts, eos = _get(name)
    settings = [dict(temperature=1.0, top_k=0, top_p=1.0), dict(temperature=0.7, top_k=50, top_p=0.9),
                dict(temperature=1.5, top_k=0, top_p=0.8), dict(temperature=0.3, top_k=5, top_p=1.0),
                dict(temperature=1.2, top_k=20, top_p=0.95, repetition_penalty=1.3, no_repeat_ngram_size=2)]
    for seed, s in enumerate(settings):
        torch.manual_seed(seed)
        out = model.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=True,
                             max_new_tokens=12, pad_token_id=eos, eos_token_id=eos,
                             output_scores=True, return_dict_in_generate=True, **s)
        torch.manual_seed(seed)
        ours = S.sample_decode(model, prompts, 12, eos_token_id=eos, **s)
        assert torch.equal(ours, out.sequences), s
        # generate's reported (processed) scores equal ours at every step (same cached forward)
        cache = None
        for i, scores in enumerate(out.scores):
            ids = out.sequences[:, :prompts.size(1) + i]
            logits, cache = S.next_token_logits(model, ids, cache)
            assert torch.equal(S.process_logits(ids, logits, **s), scores), (s, i)


@pytest.mark.parametrize("name", MODELS)
def test_greedy_equals_generate(name):
    model, prompts, eos = _get(name)
    for s in [{}, dict(repetition_penalty=1.5), dict(no_repeat_ngram_size=2),
              dict(repetition_penalty=0.8, no_repeat_ngram_size=3)]:
        lib = model.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=False,
                             max_new_tokens=15, pad_token_id=eos, eos_token_id=eos, **s)
        assert torch.equal(S.greedy_decode(model, prompts, 15, eos_token_id=eos, **s), lib), s


def test_surprising_default_top_k_50_applies_with_only_top_p():
    """`generate(do_sample=True, top_p=...)` also applies top_k=50 unless top_k=0 is passed."""
    model, prompts, eos = _get("random")
    kw = dict(attention_mask=torch.ones_like(prompts), do_sample=True, max_new_tokens=1,
              pad_token_id=eos, output_scores=True, return_dict_in_generate=True)
    only_p = model.generate(prompts, top_p=0.99, **kw).scores[0]
    logits, _ = S.next_token_logits(model, prompts)
    assert torch.equal(only_p, S.process_logits(prompts, logits, top_k=50, top_p=0.99))
    assert torch.isfinite(only_p).sum(-1).max() <= 50
    explicit = model.generate(prompts, top_p=0.99, top_k=0, **kw).scores[0]
    assert torch.equal(explicit, S.process_logits(prompts, logits, top_p=0.99))
    assert torch.isfinite(explicit).sum(-1).min() > 50


def _eos_candidates(model, prompt, num_beams):
    """Token ids the beams actually produce, so that using one as EOS ends hypotheses early."""
    seqs, _ = S.beam_search(model, prompt, num_beams=num_beams, max_new_tokens=8,
                            num_return_sequences=num_beams)
    gen = seqs[:, prompt.size(1) + 1:prompt.size(1) + 6].flatten().tolist()
    return sorted(set(gen), key=gen.index)[:2]


@pytest.mark.parametrize("name", MODELS)
def test_beam_search_equals_generate(name):
    model, prompts, eos = _get(name)
    prompt = prompts[:1]
    checked, ended_early = 0, 0
    for nb, lp, es in itertools.product([2, 4], [-1.0, 0.0, 1.0, 2.0], [False, True, "never"]):
        for eos_id in [eos] + _eos_candidates(model, prompt, nb)[: 1 if nb == 4 else 2]:
            kw = dict(num_beams=nb, length_penalty=lp, early_stopping=es, max_new_tokens=10,
                      num_return_sequences=nb)
            lib = model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                 eos_token_id=eos_id, pad_token_id=eos_id, output_scores=True,
                                 return_dict_in_generate=True, **kw)
            seqs, scores = S.beam_search(model, prompt, eos_token_id=eos_id, **kw)
            assert torch.equal(seqs, lib.sequences), (nb, lp, es, eos_id)
            assert torch.equal(scores, lib.sequences_scores), (nb, lp, es, eos_id)
            checked += 1
            ended_early += int((seqs == eos_id).any())
    assert checked >= 36 and ended_early > 0  # the EOS / early-stopping paths were exercised


@pytest.mark.parametrize("name", MODELS)
def test_beam_search_with_repetition_controls_equals_generate(name):
    model, prompts, eos = _get(name)
    prompt = prompts[1:2]
    for s in [dict(repetition_penalty=1.4), dict(no_repeat_ngram_size=2)]:
        lib = model.generate(prompt, attention_mask=torch.ones_like(prompt), num_beams=3, max_new_tokens=10,
                             eos_token_id=eos, pad_token_id=eos, **s)
        seqs, _ = S.beam_search(model, prompt, num_beams=3, max_new_tokens=10, eos_token_id=eos, **s)
        assert torch.equal(seqs, lib), s


# ----------------------------------------------------------------------------- metrics and errors
def test_metrics_known_values():
    assert S.distinct_n([[1, 2, 3], [1, 2, 4]], 1) == pytest.approx(4 / 6)
    assert S.distinct_n([[1, 2, 3], [1, 2, 4]], 2) == pytest.approx(3 / 4)
    assert S.repetition_rate([[1, 2, 1, 2, 1, 2]], 2) == pytest.approx(1 - 2 / 5)
    assert S.repetition_rate([[1, 2, 3, 4]], 2) == 0.0
    with pytest.raises(ValueError, match="shorter than"):
        S.distinct_n([[1]], 2)


def test_distinct_n_per_text_does_not_pool_identical_copies():
    # Chapter 4 computes distinct-n per text and averages: pooled over 8 identical greedy texts,
    # distinct-2 would be 8 times smaller without the text being any less varied.
    text = [1, 2, 3, 4, 1, 2]  # bigrams 12 23 34 41 12: 4 distinct of 5
    assert S.distinct_n([text], 2) == pytest.approx(4 / 5)
    assert S.distinct_n([text] * 8, 2) == pytest.approx(4 / 40)


def test_equivalent_settings_draw_the_same_tokens():
    # T=1 without top-k, top-p=1.0, and top-k equal to the vocabulary size are one distribution.
    model, prompts, _ = _get("random")
    outs = []
    for settings in [dict(temperature=1.0, top_k=0), dict(top_p=1.0, top_k=0),
                     dict(temperature=1.0, top_k=model.config.vocab_size, top_p=1.0)]:
        torch.manual_seed(3)
        outs.append(S.sample_decode(model, prompts, 12, **settings))
    assert all(torch.equal(outs[0], o) for o in outs[1:])


def test_continuation_logprob_matches_a_direct_computation():
    model, prompts, _ = _get("random")
    seqs = S.greedy_decode(model, prompts, 5)
    got = S.continuation_logprob(model, seqs, prompts.size(1))
    with torch.no_grad():
        logp = model(seqs).logits.log_softmax(-1)
    T0 = prompts.size(1)
    want = torch.stack([logp[:, t - 1].gather(-1, seqs[:, t:t + 1]).squeeze(-1) for t in range(T0, seqs.size(1))], 1)
    torch.testing.assert_close(got, want.mean(-1))


def test_bad_settings_raise_clear_errors():
    logits = torch.randn(2, 10)
    with pytest.raises(ValueError, match="greedy"):
        S.apply_temperature(logits, 0.0)
    with pytest.raises(ValueError, match="top_k"):
        S.top_k_filter(logits, 0)
    with pytest.raises(ValueError, match="top_p"):
        S.top_p_filter(logits, 1.5)
    model, prompts, _ = _get("random")
    with pytest.raises(ValueError, match="one prompt"):
        S.beam_search(model, prompts, num_beams=2, max_new_tokens=3)
