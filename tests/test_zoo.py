"""Tests of course_utils.zoo: the course's own trained GPT-2 and BERT, and their cache.

The two real zoo models train once (a few minutes on 2 CPU cores) into COURSE_CACHE, which CI
shares with the notebooks; every other test here is fast. The cache tests use a tiny config in
a temporary COURSE_CACHE.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from course_utils import corpus, data, zoo
from course_utils.assets import load_tokenizer
from course_utils.zoo import train as zoo_train
from course_utils.zoo.compact import CompactGPT2

# Thresholds a genuinely trained model passes and a random or undertrained one fails
# (measured values are in each model's card; see the test ids below for both sides).
# gpt2-course (real prose): loss on held-out books and addresses at least this far below the
# unigram baseline's on the same text, and next-token top-1 above the unigram baseline's by a factor
GPT2_MIN_NATS_BELOW_UNIGRAM = 0.15
GPT2_MIN_TOP1_VS_UNIGRAM = 1.5
# gpt2-course's template recipe (zoo.TEMPLATES), only in its tiny, undertrained form here: fails
# the bars the full recipe passed (0.7 of held-out fact prompts, loss below half the unigram's)
GPT2_MIN_HELDOUT_GREEDY = 0.7
MAX_LOSS_VS_UNIGRAM = 0.5
BERT_MIN_NATS_BELOW_UNIGRAM = 0.5  # bert-course (real prose): validation loss <= unigram - 0.5 nat
# bert-course: top-1 on held-out test texts against the unigram baseline's. Issue 30's goal is 2x;
# measured 1.30x (6.8 % vs 5.2 %, top-5 20.5 %) at 800 steps, 2026-12-06: the goal is not met yet.
BERT_MIN_TOP1_VS_UNIGRAM = 1.2

TINY = dict(n_embd=32, n_layer=1, n_head=2, n_inner=64, n_positions=32, block_size=16, batch_size=4,
            steps=3, warmup=1, corpus_words=2_000, eval_every=0)
# The cache's mechanics with a GPT-2 on the (fast) template corpus; the prose path has its own test
TINY_GPT2 = {**TINY, "corpus": "templates"}


# --- the two trained models (trained once, cached) ---------------------------------------------

@pytest.fixture(scope="module")
def gpt2():
    return zoo.load("gpt2-course")


@pytest.fixture(scope="module")
def bert():
    return zoo.load("bert-course")


@pytest.fixture(scope="module")
def gpt2_tok():
    return load_tokenizer("gpt2")


@pytest.fixture(scope="module")
def bert_tok():
    return load_tokenizer("bert-base-uncased")


def _random_like(name: str):
    s = zoo.spec(name)
    return zoo.recipe_for(s).build(s, load_tokenizer(s.tokenizer)).eval()


@pytest.mark.slow
def test_gpt2_course_is_a_plain_labelled_checkpoint(gpt2):
    from transformers import AutoTokenizer, GPT2LMHeadModel

    assert type(gpt2) is GPT2LMHeadModel and not gpt2.training
    assert gpt2.config.vocab_size == 50257 and gpt2.config.eos_token_id == 50256
    src = gpt2.course_asset.source
    assert "course's own small GPT-2" in src and "not OpenAI's pretrained 'gpt2'" in src
    assert "public-domain books and addresses" in src and "generated" not in src
    assert gpt2.course_asset.pretrained is False and gpt2.course_asset.name == "gpt2-course"
    folder = zoo.path("gpt2-course")
    again = GPT2LMHeadModel.from_pretrained(folder)
    assert torch.equal(again.transformer.wte.weight, gpt2.transformer.wte.weight)
    tok = AutoTokenizer.from_pretrained(folder)  # the real GPT-2 tokenizer is saved with it
    assert tok("Hello World. This is Agney")["input_ids"] == [15496, 2159, 13, 770, 318, 2449, 1681]


@pytest.mark.slow
def test_gpt2_course_card(gpt2):
    c = zoo.card("gpt2-course")
    s = zoo.spec("gpt2-course")
    assert c["parameters"] == sum(p.numel() for p in gpt2.parameters())
    assert c["tokens_seen"] == s.steps * s.batch_size * s.block_size
    assert c["device"] in ("cpu", "cuda", "mps") or c["device"].startswith("cuda")
    assert c["train_wall_time_s"] > 0 and c["key"] == zoo.key("gpt2-course")
    curve = c["loss_curve"]
    assert curve["steps"][-1] == s.steps and len(curve["train_loss"]) == len(curve["steps"])
    assert curve["train_loss"][-1] < curve["train_loss"][0] - 2  # the first 25 steps' mean: from ~10.8
    assert curve["eval_loss"][-1] < curve["eval_loss"][0] and curve["eval_steps"][-1] == s.steps
    assert c["baselines"]["uniform"] == pytest.approx(math.log(50257))
    assert c["corpus"] == corpus.load_books().source and s.corpus == "prose"
    assert c["vocab_used_in_training"] > 30_000  # real prose: most of GPT-2's ids, not a thousand


@pytest.mark.slow
def test_gpt2_course_beats_the_baselines_on_held_out_prose(gpt2, gpt2_tok):
    c = zoo.card("gpt2-course")
    s = zoo.spec("gpt2-course")
    books = corpus.load_books()
    train = zoo.prose_blocks(gpt2_tok, s, "train", books)
    # the test books and addresses: never trained on, not the validation text of the card
    blocks = zoo.gpt2_blocks(corpus.spread(books["test"], 200), gpt2_tok, s)[:64]
    loss = zoo.eval_loss(gpt2, blocks, s, gpt2_tok)
    unigram = zoo.unigram_loss(train, blocks[:, 1:], len(gpt2_tok))
    assert loss <= unigram - GPT2_MIN_NATS_BELOW_UNIGRAM, (loss, unigram)
    assert c["final_val_loss"] <= c["baselines"]["unigram"] - GPT2_MIN_NATS_BELOW_UNIGRAM
    val = zoo.prose_blocks(gpt2_tok, s, "validation", books)
    assert zoo.eval_loss(gpt2, val, s, gpt2_tok) == pytest.approx(c["final_val_loss"], rel=1e-4)
    # The same loss for random weights from the same config: about ln |V|, far above.
    assert zoo.eval_loss(_random_like("gpt2-course"), blocks[:8], s, gpt2_tok) > 0.9 * math.log(50257)


@pytest.mark.slow
def test_gpt2_course_probes_are_the_saved_models(gpt2, gpt2_tok):
    probes = zoo.card("gpt2-course")["probes"]
    again = zoo.prose_report(gpt2, gpt2_tok)
    assert again == pytest.approx(probes, rel=1e-4)
    assert probes["val_top1"] >= GPT2_MIN_TOP1_VS_UNIGRAM * probes["unigram_top1"], probes
    assert zoo.prose_report(_random_like("gpt2-course"), gpt2_tok)["val_top1"] < 0.01


@pytest.mark.slow
def test_gpt2_course_generate_and_pipeline(gpt2, gpt2_tok):
    from transformers import pipeline

    prompt = "It was the best of times, it was the"
    ids = gpt2_tok(prompt, return_tensors="pt")
    # min_new_tokens: the model may end a passage (<|endoftext|>) at once; ask for words
    out = gpt2.generate(**ids, max_new_tokens=12, min_new_tokens=12, do_sample=False,
                        pad_token_id=gpt2_tok.eos_token_id)
    pipe = pipeline("text-generation", model=str(zoo.path("gpt2-course")), device="cpu")
    text = pipe(prompt, max_new_tokens=12, min_new_tokens=12, do_sample=False)[0]["generated_text"]
    assert text == gpt2_tok.decode(out[0]) and text.startswith(prompt) and len(text) > len(prompt)
    # words of the training text, not byte pieces of never-seen ids
    counts = torch.bincount(zoo.prose_blocks(gpt2_tok, zoo.spec("gpt2-course"), "train").flatten(),
                            minlength=len(gpt2_tok))
    assert (counts[out[0, ids["input_ids"].shape[1]:]] > 0).all()


@pytest.mark.slow
def test_gpt2_course_learns_to_avoid_never_seen_ids_without_a_pin(gpt2):
    # The softmax over all 50,257 ids (no compact vocabulary, no pinned ln_f channel): the ids the
    # books never use are pushed down by training itself.
    ln_f = gpt2.transformer.ln_f
    assert not ((ln_f.weight == 0) & (ln_f.bias == 1)).any()
    p = zoo.card("gpt2-course")["probes"]
    share = p["never_seen_ids"] / 50257  # what a model spreading evenly would put on them
    assert 10_000 < p["never_seen_ids"] < 25_000 and p["never_seen_mass"] < share / 10, p


@pytest.mark.slow
def test_bert_course_is_a_plain_labelled_checkpoint(bert):
    from transformers import AutoTokenizer, BertForMaskedLM

    assert type(bert) is BertForMaskedLM and not bert.training
    assert bert.config.vocab_size == 30522
    src = bert.course_asset.source
    assert "course's own small BERT" in src and "not Google's pretrained 'bert-base-uncased'" in src
    assert "public-domain" in src
    tok = AutoTokenizer.from_pretrained(zoo.path("bert-course"))
    assert tok.convert_tokens_to_ids(["[MASK]", "italy", "rome"]) == [103, 3304, 4199]
    c = zoo.card("bert-course")
    assert c["parameters"] == sum(p.numel() for p in bert.parameters())
    assert "public-domain prose" in c["corpus"]


@pytest.mark.slow
def test_bert_course_uses_context_on_held_out_prose(bert):
    """Issue 30's goals: validation loss at least half a nat below the unigram baseline (met), and
    top-1 on held-out test texts above the unigram baseline's (always the most frequent token) by
    BERT_MIN_TOP1_VS_UNIGRAM (the issue asks for 2x; not met yet)."""
    c = zoo.card("bert-course")
    assert c["final_val_loss"] <= c["baselines"]["unigram"] - BERT_MIN_NATS_BELOW_UNIGRAM
    probes = c["probes"]
    assert probes["test_top1"] >= BERT_MIN_TOP1_VS_UNIGRAM * probes["unigram_top1"], probes
    assert probes["test_top5"] > probes["test_top1"]


@pytest.mark.slow
def test_bert_course_probes_are_the_saved_models(bert, bert_tok):
    from course_utils import corpus, mlm

    books = corpus.load_books()
    probes = mlm.probe_set(bert_tok, books)
    top1, top5 = mlm.masked_accuracy(bert, probes)
    card = zoo.card("bert-course")["probes"]
    assert (top1, top5) == (pytest.approx(card["test_top1"]), pytest.approx(card["test_top5"]))
    assert probes.n_masked == card["masked_tokens"]
    # The unigram baseline answers "," (the most frequent token of the training text).
    counts = mlm.token_counts(bert_tok, books["train"])
    assert bert_tok.convert_ids_to_tokens(int(counts.argmax())) == ","
    assert mlm.unigram_accuracy(counts, probes) == pytest.approx(card["unigram_top1"])
    random_top1, _ = mlm.masked_accuracy(_random_like("bert-course"), probes)
    assert random_top1 < 0.01


@pytest.mark.slow
def test_bert_course_card_has_chapter_5s_curve(bert, bert_tok):
    """bert-course is scored during training on Chapter 5's fixed validation set, full softmax."""
    from course_utils import corpus, mlm

    c, s = zoo.card("bert-course"), zoo.spec("bert-course")
    curve = c["curve"]
    assert [p["step"] for p in curve] == list(range(s.eval_every, s.steps + 1, s.eval_every))
    assert all(a["seconds"] < b["seconds"] for a, b in zip(curve, curve[1:]))
    assert curve[-1]["val_loss"] == c["final_val_loss"]
    assert curve[0]["val_loss"] > curve[-1]["val_loss"] + 0.3
    val = mlm.prose_validation_set(bert_tok, corpus.load_books())
    assert val.n_masked == c["validation"]["masked_tokens"]
    assert mlm.evaluate(bert, val) == pytest.approx(c["final_val_loss"], rel=1e-4)  # the saved model, 30,522 ids


def test_bert_course_is_trained_by_chapter_5s_loop(tmp_cache, monkeypatch):
    from course_utils import mlm

    calls = []
    real = mlm.train_mlm

    def spy(*args, **kw):
        calls.append(kw)
        return real(*args, **kw)

    monkeypatch.setattr(mlm, "train_mlm", spy)
    zoo.path("bert-course", progress=False, **TINY)
    # BERT's own masking over the full vocabulary: no restricted softmax
    assert len(calls) == 1 and calls[0].get("vocab") is None and calls[0]["masker"] is not None
    c = zoo.card("bert-course", **TINY)
    assert c["curve"][-1]["step"] == TINY["steps"] and c["final_val_loss"] == c["curve"][-1]["val_loss"]


@pytest.mark.slow
def test_bert_course_fill_mask_pipeline(bert):
    from transformers import pipeline

    fill = pipeline("fill-mask", model=str(zoo.path("bert-course")), device="cpu")
    top = fill("It was the best of times, it was the [MASK] of times.")
    assert len(top) == 5 and [r["score"] for r in top] == sorted((r["score"] for r in top), reverse=True)


# --- the cache: keys, reuse, atomic writes, damage, concurrency (tiny config, temp cache) --------

@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    return tmp_path


def _trained_by(arch: str, **spec) -> set[str]:
    return set(zoo.training_code("bert-course" if arch == "bert" else "gpt2-course", **spec))


def test_key_covers_the_code_that_makes_the_weights_and_nothing_else():
    gpt2, bert = _trained_by("gpt2"), _trained_by("bert")
    cu = "course_utils."
    templates = _trained_by("gpt2", **zoo.TEMPLATES)
    # the corpus, its tables, the loop, the schedule, the packing: in
    for needed in ["corpus.load_books", "corpus.VALIDATION_BOOKS", "training.train", "training.lr_at",
                   "training.param_groups", "batching.pack", "batching.pack_ids", "zoo.recipes.GPT2Prose.fit",
                   "zoo.recipes.GPT2Recipe.build"]:
        assert cu + needed in gpt2, needed
    for needed in ["data.generate_corpus", "data._story", "data.COUNTRIES", "training.train", "batching.pack",
                   "zoo.compact.CompactGPT2", "zoo.recipes.GPT2Templates.fit"]:
        assert cu + needed in templates, needed
    # real prose: no template corpus, no compact softmax
    for unused in ["data.generate_corpus", "zoo.compact.CompactGPT2", "zoo.recipes.GPT2Templates.fit"]:
        assert cu + unused not in gpt2, unused
    for needed in ["corpus.load_books", "corpus.VALIDATION_BOOKS", "corpus.PACKAGES", "mlm.train_mlm",
                   "mlm.mask_tokens", "mlm.replace_selected", "mlm.mlm_loss", "mlm.packed_blocks",
                   "batching.pack_ids", "training.lr_at"]:
        assert cu + needed in bert, needed
    # batching helpers the training does not call, the other architecture, probes, prompts: out
    for unused in ["batching.padding_waste", "batching.PaddingReport", "data.fewshot_prompts",
                   "zoo.probes.causal_probe_correct", "zoo.probes.prose_report", "zoo.probes.bert_report",
                   "mlm.probe_set", "zoo.train.train_and_save", "zoo.card.write_card"]:
        assert cu + unused not in gpt2 | bert | templates, unused
    assert cu + "zoo.recipes.BertProse.fit" not in gpt2 and cu + "training.train" not in bert
    assert cu + "batching.pack" not in bert
    assert cu + "data.generate_corpus" not in bert and cu + "corpus.load_books" not in templates
    # in-context documents make the template recipe's weights only where its spec mixes them in
    assert cu + "data.generate_incontext" in templates
    # the recipe as it was before issue 30 (width 128, 900 steps, half again in in-context documents)
    t = zoo.spec("gpt2-course", **zoo.TEMPLATES)
    assert (t.n_embd, t.n_inner, t.n_layer, t.steps, t.batch_size, t.incontext_fraction) == (128, 512, 4, 900, 32, 0.5)
    assert cu + "data.generate_incontext" not in _trained_by("gpt2", **{**zoo.TEMPLATES, "incontext_fraction": 0})


def test_key_changes_with_a_table_of_the_corpus(monkeypatch):
    from course_utils import corpus

    def keys() -> tuple[str, str, str]:
        return zoo.key("gpt2-course"), zoo.key("bert-course"), zoo.key("gpt2-course", **zoo.TEMPLATES)

    before = keys()
    monkeypatch.setattr(data, "COUNTRIES", data.COUNTRIES[:-1])
    after = keys()
    assert after[:2] == before[:2] and after[2] != before[2]  # only the template recipe's
    monkeypatch.setattr(corpus, "VALIDATION_BOOKS", corpus.VALIDATION_BOOKS[:1])
    last = keys()
    assert last[0] != after[0] and last[1] != after[1] and last[2] == after[2]  # the books' models


def test_key_is_the_same_in_another_process():
    # No memory address or set order in what is hashed: another interpreter, another hash seed.
    code = "from course_utils import zoo; print(zoo.key('gpt2-course'), zoo.key('bert-course'))"
    run = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONHASHSEED="123"),
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == [zoo.key("gpt2-course"), zoo.key("bert-course")]


def test_key_covers_the_config():
    assert zoo.key("gpt2-course") == zoo.key("gpt2-course")
    assert zoo.key("gpt2-course") != zoo.key("gpt2-course", steps=1)
    assert zoo.key("gpt2-course") != zoo.key("bert-course")
    with pytest.raises(KeyError, match="gpt2-course"):
        zoo.key("gpt2")
    with pytest.raises(TypeError, match="ZooSpec fields"):
        zoo.spec("gpt2-course", layers=2)


def test_tiny_model_trains_once_then_is_reused(tmp_cache, capsys):
    folder = zoo.path("gpt2-course", progress=False, **TINY_GPT2)
    assert folder.parent == tmp_cache / "zoo" and folder.name == f"gpt2-course-{zoo.key('gpt2-course', **TINY_GPT2)}"
    assert "Training the course's gpt2-course" in capsys.readouterr().out
    for f in ("config.json", "model.safetensors", "tokenizer.json", "card.json", "manifest.json"):
        assert (folder / f).is_file(), f
    mtime = (folder / "model.safetensors").stat().st_mtime_ns
    model = zoo.load("gpt2-course", **TINY_GPT2)
    assert capsys.readouterr().out == ""  # reused: no training
    assert (folder / "model.safetensors").stat().st_mtime_ns == mtime
    assert model.config.n_embd == 32
    # Undertrained (3 steps): fails the quality bar that the real zoo model passes.
    tok = load_tokenizer("gpt2")
    assert zoo.causal_probe_accuracy(model, tok, data.heldout_probes()) < GPT2_MIN_HELDOUT_GREEDY / 4
    c = zoo.card("gpt2-course", **TINY_GPT2)
    assert c["final_val_loss"] > MAX_LOSS_VS_UNIGRAM * c["baselines"]["unigram"]
    assert not list((tmp_cache / "zoo").glob(".*tmp*"))  # no temporary folder left behind


def test_tiny_prose_model_trains_on_the_books_with_the_full_softmax(tmp_cache):
    c = zoo.card("gpt2-course", **TINY)
    assert c["corpus"] == corpus.load_books().source and c["vocab_used_in_training"] > 30_000
    ln_f = zoo.load("gpt2-course", **TINY).transformer.ln_f
    assert not ((ln_f.weight == 0) & (ln_f.bias == 1)).any()  # no pinned channel on prose
    assert set(c["probes"]) == {"val_top1", "unigram_top1", "never_seen_mass", "val_never_seen_tokens",
                                "never_seen_ids"}
    # Undertrained (3 steps): fails the bar that the real zoo model passes.
    assert c["final_val_loss"] > c["baselines"]["unigram"] - GPT2_MIN_NATS_BELOW_UNIGRAM
    assert c["probes"]["val_top1"] < GPT2_MIN_TOP1_VS_UNIGRAM * c["probes"]["unigram_top1"]


def test_damaged_cache_is_detected_and_rebuilt(tmp_cache, capsys):
    folder = zoo.path("bert-course", progress=False, **TINY)
    capsys.readouterr()
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a truncated file
    model = zoo.load("bert-course", **TINY)
    out = capsys.readouterr().out
    assert "damaged (model.safetensors does not match its checksum)" in out and "Training" in out
    assert model.config.hidden_size == 32
    # Undertrained (3 steps): fails the quality bar that the real zoo model passes.
    c = zoo.card("bert-course", **TINY)
    assert c["final_val_loss"] > c["baselines"]["unigram"]
    assert c["probes"]["test_top1"] < c["probes"]["unigram_top1"]
    (folder / "manifest.json").unlink()  # e.g. a copy that stopped half-way
    zoo.path("bert-course", progress=False, **TINY)
    assert "manifest.json is missing" in capsys.readouterr().out


def test_interrupted_training_leaves_nothing_that_loads(tmp_cache, monkeypatch):
    real = zoo_train.train_and_save

    def interrupted(name, s, k, out, **kw):
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")  # half-written
        raise KeyboardInterrupt

    monkeypatch.setattr(zoo_train, "train_and_save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        zoo.path("gpt2-course", progress=False, **TINY_GPT2)
    assert not any((tmp_cache / "zoo").glob("gpt2-course-*/")) and not list((tmp_cache / "zoo").glob(".*tmp*"))
    monkeypatch.setattr(zoo_train, "train_and_save", real)
    # A process killed while saving (no `finally`) leaves a hidden temporary folder: never loaded,
    # and removed by the next training under the lock.
    stale = tmp_cache / "zoo" / f".gpt2-course-{zoo.key('gpt2-course', **TINY_GPT2)}.tmp-999-deadbeef"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    assert (zoo.path("gpt2-course", progress=False, **TINY_GPT2) / "manifest.json").is_file()
    assert not stale.exists()


def test_concurrent_first_uses_train_once(tmp_cache):
    code = ("from course_utils import zoo; import json,sys; "
            f"print(zoo.path('gpt2-course', progress=False, **{TINY_GPT2!r}))")
    env = {**os.environ, "COURSE_CACHE": str(tmp_cache), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    stdout = "".join(o for o, _ in outs)
    assert stdout.count("Training the course's gpt2-course") == 1
    paths = {line for line in stdout.splitlines() if line.startswith(str(tmp_cache))}
    assert len(paths) == 1 and (Path(paths.pop()) / "manifest.json").is_file()
    manifest = json.loads((zoo.path("gpt2-course", **TINY_GPT2) / "manifest.json").read_text())
    assert set(manifest) >= {"model.safetensors", "config.json", "card.json"}


# --- the training loop ---------------------------------------------------------------------------

def test_lr_schedule_and_param_groups():
    from course_utils import training

    assert training.lr_at(0, lr=1.0, warmup=10, steps=100) == pytest.approx(0.1)
    assert training.lr_at(9, lr=1.0, warmup=10, steps=100) == pytest.approx(1.0)
    assert training.lr_at(100, lr=1.0, warmup=10, steps=100) == pytest.approx(0.1)  # cosine to 10%
    assert training.lr_at(55, lr=1.0, warmup=10, steps=100) == pytest.approx(0.55)
    s = zoo.spec("gpt2-course", **TINY)
    model = zoo.recipe_for(s).build(s, load_tokenizer("gpt2"))
    decay, no_decay = training.param_groups(model, 0.1)
    n = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert n == sum(p.numel() for p in model.parameters())  # the tied lm_head counted once
    assert all(p.dim() == 1 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0


def test_compact_training_is_full_vocabulary_training_bit_for_bit():
    # gpt2-course's template recipe (zoo.TEMPLATES) trains a model over the ~1,000 ids its corpus
    # uses (zoo.compact.CompactGPT2) instead of the full 50,257-id one with the softmax over those rows.
    # The weights must be the same, bit for bit: here the full model is trained the direct way (its
    # loss a gather of the used rows of the tied matrix), from the same initial weights and
    # batches, and compared after expand().
    from course_utils import batching, training

    s = zoo.spec("gpt2-course", **{**TINY, "steps": 12, "warmup": 3})
    tok = load_tokenizer("gpt2")
    blocks = batching.pack(data.generate_corpus(2_000, 0)["train"], tok, s.block_size + 1)  # (N, T+1)
    used = torch.unique(torch.cat([blocks.flatten(), torch.tensor(tok.all_special_ids)]))
    compact = CompactGPT2(zoo.recipe_for(s).build(s, tok), s, used)
    assert compact.model.config.vocab_size == len(used) < 2_000 and compact.full.config.vocab_size == 50257

    full = zoo.recipe_for(s).build(s, tok)
    k = s.n_embd - 1
    with torch.no_grad():
        full.transformer.ln_f.weight[k], full.transformer.ln_f.bias[k] = 0.0, 1.0
    keep = torch.ones(s.n_embd)
    keep[k] = 0.0
    full.transformer.ln_f.weight.register_hook(lambda g: g * keep)
    full.transformer.ln_f.bias.register_hook(lambda g: g * keep)
    local = torch.full((50257,), -100, dtype=torch.long)
    local[used] = torch.arange(len(used))

    def full_loss(block):
        h = full.transformer(input_ids=block[:, :-1]).last_hidden_state              # (B, T, C)
        logits = h @ full.transformer.wte.weight[used].T                              # (B, T, U)
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), local[block[:, 1:]].flatten())

    batches = [blocks[torch.randint(len(blocks), (s.batch_size,), generator=torch.Generator().manual_seed(i))]
               for i in range(s.steps)]
    h_full = training.train(full, lambda i: full_loss(batches[i]), steps=s.steps, lr=s.lr, warmup=s.warmup,
                            progress=False)
    h_compact = training.train(compact.model, lambda i: compact.loss(compact.renumber(batches[i])), steps=s.steps,
                               lr=s.lr, warmup=s.warmup, progress=False)
    assert h_full.train_loss == h_compact.train_loss
    trained = compact.expand()
    expected = full.state_dict()
    unused = torch.ones(50257, dtype=torch.bool)
    unused[used] = False
    with torch.no_grad():  # what finalising the full model does: unused ids get a large negative logit
        expected["transformer.wte.weight"][unused] = 0.0
        expected["transformer.wte.weight"][unused, k] = zoo.UNUSED_LOGIT
    got = trained.state_dict()
    assert set(got) == set(expected)
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


def test_train_loop_learns_and_rejects_nan():
    from course_utils import training

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    x = torch.randn(64, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    hist = training.train(model, lambda step: torch.nn.functional.mse_loss(model(x), y), steps=200,
                          lr=0.05, warmup=10, weight_decay=0.0, eval_fn=lambda: float(
                              torch.nn.functional.mse_loss(model(x), y)), eval_every=50, progress=False)
    assert hist.eval_steps == [50, 100, 150, 200] and hist.eval_loss[-1] < 1e-3 < hist.train_loss[0]
    assert not model.training
    with pytest.raises(FloatingPointError, match="learning rate"):
        training.train(model, lambda step: torch.tensor(float("nan"), requires_grad=True), steps=2, lr=0.1,
                       progress=False)


def test_key_is_the_same_after_training_in_this_process(tmp_cache):
    """What the training leaves behind in the process (e.g. batching.token_ids's memo of the
    corpus's ids) is no part of the key: a second call finds the model it just trained."""
    before = zoo.key("bert-course", **TINY)
    zoo.path("bert-course", progress=False, **TINY)
    assert zoo.key("bert-course", **TINY) == before


def test_key_does_not_depend_on_where_the_checkout_is():
    """corpus finds its npm packages from its own __file__: the path of the checkout is no part
    of the training code, so two clones (a CI clone, a worktree) share trained models."""
    for name in ("gpt2-course", "bert-course"):
        assert not [k for k in zoo.training_code(name) if k.rsplit(".", 1)[-1].startswith("__")]


# --- the recipes' table and the command line (fast) --------------------------------------------

def test_each_spec_picks_its_recipe_from_the_table():
    from course_utils.zoo import recipes

    assert type(zoo.recipe_for(zoo.spec("gpt2-course"))) is recipes.GPT2Prose
    assert type(zoo.recipe_for(zoo.spec("gpt2-course", **zoo.TEMPLATES))) is recipes.GPT2Templates
    assert type(zoo.recipe_for(zoo.spec("bert-course"))) is recipes.BertProse
    with pytest.raises(ValueError, match="No zoo recipe trains arch='bert' on corpus='templates'.*"
                                         "arch='gpt2' with corpus='prose'"):
        zoo.recipe_for(zoo.spec("bert-course", corpus="templates"))


def test_the_command_line_lists_trains_and_refuses_unknown_names(tmp_cache, capsys):
    from course_utils.zoo.__main__ import main

    assert main(["list"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert rows == [[name, zoo.key(name), "not trained yet"] for name in zoo.ZOO]
    for argv, message in [(["train"], "name the models to train, or give --all"),
                          (["train", "gpt3-course"], "no zoo model 'gpt3-course'; the zoo has: gpt2-course")]:
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2 and message in capsys.readouterr().err
