"""Tests of course_utils.data: the generated corpus and held-out phrasings (batching: test_batching)."""
from __future__ import annotations

import re
import time

import pytest

from course_utils import data


@pytest.fixture(scope="module")
def corpus() -> data.Corpus:
    return data.generate_corpus(300_000, seed=0)


# --- the corpus --------------------------------------------------------------------------------

def test_corpus_is_deterministic_by_seed():
    a = data.generate_corpus(20_000, seed=3)
    b = data.generate_corpus(20_000, seed=3)
    c = data.generate_corpus(20_000, seed=4)
    assert a.splits == b.splits
    assert a["train"] != c["train"]
    assert a["heldout"] == c["heldout"]  # the held-out phrasings are fixed, not seeded


def test_corpus_scales_to_wikitext2_in_seconds():
    t0 = time.perf_counter()
    big = data.generate_corpus(2_000_000, seed=0)
    elapsed = time.perf_counter() - t0
    assert 2_000_000 <= big.n_words("train") < 2_000_100  # stops at the first passage past n_words
    assert 95_000 <= big.n_words("validation") < 100_100
    assert elapsed < 30, f"2 M words took {elapsed:.1f} s (about 2 s on a quiet 2-core machine)"


def test_splits_are_different_draws(corpus):
    assert set(corpus.splits) == {"train", "validation", "test", "heldout"}
    train = set(corpus["train"])
    # Short passages (e.g. "Seven plus zero is seven.") recur; long stories almost never do.
    long_val = [t for t in corpus["validation"] if len(t.split()) > 40]
    assert long_val and sum(t in train for t in long_val) / len(long_val) < 0.05


def test_text_is_varied_english(corpus):
    words = " ".join(corpus["train"]).split()
    assert len(set(words)) > 500
    assert corpus["train"][0][0].isupper()
    assert sum(t.startswith("Once upon a time") for t in corpus["train"]) > 100
    assert all(t.rstrip()[-1] in '.!"' for t in corpus["train"][:2000])


def test_seed_probe_has_a_learnable_answer(corpus):
    # The seed's probe "The capital of [MASK] is Rome." has one right answer that the corpus teaches:
    # every sentence that names Rome names Italy, and the pair occurs in several phrasings.
    sentences = [x for t in corpus["train"] for x in re.split(r"(?<=[.!?])\s+", t)]
    rome = [x for x in sentences if "Rome" in x]
    assert len(rome) > 30 and all("Italy" in x for x in rome)
    assert len({x.replace("Italy", "{s}").replace("Rome", "{o}") for x in rome}) == len(data.TEMPLATES["capital"]) - 1


def test_heldout_phrasings_never_occur_in_train_validation_test(corpus):
    probes = data.heldout_probes()
    assert len(probes) == sum(len(f) for f in data.FACTS.values()) == 249
    joined = {s: "\n".join(corpus[s]) for s in ("train", "validation", "test")}
    for p in probes:
        for split, text in joined.items():
            assert p.text not in text, f"held-out {p.text!r} found in {split}"
    assert corpus["heldout"] == [p.text for p in probes]


def test_every_fact_is_taught_in_another_phrasing(corpus):
    text = "\n".join(corpus["train"])
    seen = data.training_probes()
    assert len(seen) == sum(len(f) * (len(data.TEMPLATES[r]) - 1) for r, f in data.FACTS.items()) == 992
    missing = [p.text for p in seen if p.text not in text]
    assert len(missing) / len(seen) < 0.05  # 300k words: nearly every seen pair occurs
    for relation, facts in data.FACTS.items():
        for s, _ in facts:
            assert any(p.subject == s and p.relation == relation and p.text in text for p in seen), (relation, s)


def test_an_before_a_vowel(corpus):
    text = "\n".join(corpus["train"])
    assert " an owl " in text and "called an owlet." in text and " an orange " in text
    assert not re.search(r"\b[Aa] [aeiouAEIOU]", text)  # never "a owl", "a owlet", "a orange"
    assert data.heldout_probes(["sound"])[9].text == "An owl says hoot."  # held out: never in train
    owl = [p for p in data.heldout_probes(["baby"]) if p.subject == "owl"][0]
    assert owl.text == "When an owl has a baby, the baby is an owlet."
    assert owl.masked("[MASK]") == "When an owl has a baby, the baby is a [MASK]."


def test_probes_have_prompt_answer_and_masked_forms():
    p = data.heldout_probes(["capital"])[0]
    assert (p.prompt, p.answer, p.text) == ("The capital of Italy is", "Rome", "The capital of Italy is Rome.")
    assert p.masked("[MASK]", slot="subject") == "The capital of [MASK] is Rome."
    assert p.masked("[MASK]") == "The capital of Italy is [MASK]."
    rev = [q for q in data.heldout_probes(["capital"]) if q.answer_slot == "subject"][0]
    assert rev.text == f"{rev.fact[1]} is the capital of {rev.subject}." or rev.text.startswith(rev.fact[1])
    assert rev.prompt + " " + rev.answer + "." == rev.text
    for q in data.heldout_probes():
        assert q.prompt + " " + q.answer + "." == q.text
        assert q.template == data.heldout_template(q.relation, data.FACTS[q.relation].index(q.fact))
    with pytest.raises(ValueError, match="Unknown relation"):
        data.heldout_probes(["capitals"])


def test_templates_end_with_a_slot_and_reverse_only_for_unique_objects():
    for relation, templates in data.TEMPLATES.items():
        for t in templates:
            assert re.search(r"\{[so]\}\.$", t), t
            if t.endswith("{s}."):
                objects = [o for _, o in data.FACTS[relation]]
                assert len(set(objects)) == len(objects), f"{t!r} would have several right answers"


def test_load_corpus_offline_is_the_generated_one():
    c = data.load_corpus(n_words=5_000, online=False)
    assert c.generated and "generated" in c.source and c.name == "course-generated"
    assert c.n_words() >= 5_000
    ds = c.to_datasets()
    assert ds["train"].column_names == ["text"] and ds["train"][0]["text"] == c["train"][0]
    with pytest.raises(ValueError, match="wikitext-2-raw-v1"):
        data.load_corpus("wikitext-103")
    with pytest.raises(ValueError, match="n_words"):
        data.generate_corpus(0)


def test_load_corpus_detects_the_world(monkeypatch):
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    from course_utils import runtime
    runtime.is_online.cache_clear()
    try:
        assert data.load_corpus(n_words=1_000).generated
    finally:
        runtime.is_online.cache_clear()


# --- in-context documents (gpt2-course's template recipe, zoo.TEMPLATES, only) -----------------

def test_bert_corpus_is_byte_identical_to_before_the_incontext_documents():
    # generate_corpus is what bert-course trains on: adding generators for gpt2-course must not
    # change one byte of it (hash recorded from main before generate_incontext existed).
    import hashlib
    import json

    c = data.generate_corpus(50_000, seed=0)
    digest = hashlib.sha256(json.dumps(c.splits, sort_keys=True).encode()).hexdigest()
    assert digest == "7d036bea40ac8c825a9e74b8ee09a8f1198fdb99d48bb7e2db47fdd51ff5ce16"


def test_incontext_documents_are_deterministic_and_mixed():
    a = data.generate_incontext(20_000, seed=0)
    assert a == data.generate_incontext(20_000, seed=0) != data.generate_incontext(20_000, seed=1)
    assert 20_000 <= sum(t.count(" ") + 1 for t in a) < 20_200
    market = [t for t in a if "went to the market and bought" in t]
    assert 0.1 < len(market) / len(a) < 0.35
    assert data.generate_incontext(0) == []
    with pytest.raises(ValueError, match="n_words"):
        data.generate_incontext(-1)
    mixed = data.mix(["x", "y"], a[:10], seed=0)
    assert sorted(mixed) == sorted(["x", "y"] + a[:10]) and mixed == data.mix(["x", "y"], a[:10], seed=0)


def test_rule_documents_never_use_a_heldout_format_token():
    import random

    held = {t.strip() for t in data.HELDOUT_FORMAT_TOKENS}
    assert held and not held & {t.strip() for t in data.TRAIN_FORMAT_TOKENS}
    rng = random.Random(0)
    for _ in range(2_000):
        doc = data._rule_document(rng)
        words = doc.split(" ")
        assert not held & set(words)
        # the format is the 2nd and 4th token (single-word inputs and outputs come first):
        # never a held-out pair
        sep, delim = " " + words[1], " " + words[3]
        if doc.count(sep) >= 3 and doc.count(delim) >= 3 and len(words) > 8 and words[5] == words[1]:
            assert not data.heldout_format(sep, delim), doc
    # ... but every held-out token does occur in training, as an ordinary token of the repeats
    repeats = " ".join(data._repeat_document(rng) for _ in range(2_000)).split(" ")
    assert held <= set(repeats)


def test_repeat_documents_copy_a_random_sequence_at_varied_distances():
    import random

    rng = random.Random(0)
    distances = set()
    for _ in range(200):
        words = data._repeat_document(rng).split(" ")  # seq + gap + seq
        n = max(n for n in range(8, 31) if 2 * n <= len(words) and words[:n] == words[-n:])
        distances.add(len(words) - n)  # how far back the copied token is: no fixed offset
    assert len(distances) > 20


def test_format_tokens_are_many_and_never_rule_words():
    # Many separators, so that a model cannot learn which tokens separate, only to read the format.
    assert len(data.TRAIN_FORMAT_TOKENS) > 100 and len(data.HELDOUT_FORMAT_TOKENS) > 30
    rule_words = {w for pairs in data.RULES.values() for pair in pairs for w in pair}
    assert not {t.strip() for t in data.FORMAT_TOKENS} & rule_words
    assert all(t.startswith(" ") and " " not in t[1:] for t in data.FORMAT_TOKENS)
    # copying is the commonest rule: a model that cannot tell the rule should guess it
    assert max(data.RULE_WEIGHTS, key=data.RULE_WEIGHTS.get) == "copy" and set(data.RULE_WEIGHTS) == set(data.RULES)


def test_fewshot_prompts_share_query_and_format_across_shots():
    by_k = {k: data.fewshot_prompts(50, k, seed=2) for k in range(9)}
    for i in range(50):
        p0, p4, p8 = by_k[0][i], by_k[4][i], by_k[8][i]
        assert (p0.rule, p0.query, p0.answer, p0.sep, p0.delim) == (p8.rule, p8.query, p8.answer, p8.sep, p8.delim)
        assert p0.prompt == f"{p0.query}{p0.sep}"
        assert p8.prompt.startswith(p4.prompt[: -len(p4.query + p4.sep)])  # the first 4 of the same 8
        assert p4.prompt.endswith(f"{p4.delim} {p4.query}{p4.sep}") and p4.n_shots == 4
        assert (p0.query, p0.answer) in data.RULES[p0.rule]
        # by default a format no training document uses, made of tokens that separate in training
        assert {p0.sep, p0.delim} <= set(data.TRAIN_FORMAT_TOKENS) and p0.sep != p0.delim
        assert data.heldout_format(p0.sep, p0.delim)
    for p in data.fewshot_prompts(50, 2, formats="unseen-tokens", seed=0):
        assert {p.sep, p.delim} <= set(data.HELDOUT_FORMAT_TOKENS)
    for p in data.fewshot_prompts(50, 2, formats="train", seed=0):
        assert {p.sep, p.delim} <= set(data.TRAIN_FORMAT_TOKENS) and not data.heldout_format(p.sep, p.delim)
    import itertools
    pairs = list(itertools.permutations(data.TRAIN_FORMAT_TOKENS, 2))
    assert 0.2 < sum(data.heldout_format(*p) for p in pairs) / len(pairs) < 0.3  # one pair in four
    with pytest.raises(ValueError, match="formats must be one of"):
        data.fewshot_prompts(1, 1, formats="new")
    assert data.fewshot_prompts(1, 0, prefix="<|endoftext|>")[0].prompt.startswith("<|endoftext|>")
    assert data.fewshot_text([("Italy", "Rome"), ("Peru", "Lima")], " ->", " |") == "Italy -> Rome | Peru -> Lima |"
    with pytest.raises(ValueError, match="Unknown rule"):
        data.fewshot_prompts(1, 1, rules=["capitals"])
    with pytest.raises(ValueError, match="n_shots"):
        data.fewshot_prompts(1, 9)


def test_market_items_have_a_long_tail():
    import math

    w = [x / sum(data._MARKET_WEIGHTS) for x in data._MARKET_WEIGHTS]
    assert -sum(p * math.log(p) for p in w) > 3.0  # nats: far from a handful of choices
    assert len(set(data.MARKET_ITEMS)) == len(data.MARKET_ITEMS) >= 50
