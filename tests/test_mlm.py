"""Chapter 5's training code (course_utils.mlm): the chapter's own cells (tagged ``ch05-loop``)
against the package's copies, masking, the losses, packing, the loop, the fixed validation set and
its baselines, save/load; and what the chapter sets beside it (course_utils.seed_recipe): FLOPs,
the seed recipe with the Trainer (quiet, cached), and the benchmark script."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F

from course_utils import mlm, seed_recipe
from course_utils.modelinfo import count_parameters
from course_utils.training import lr_at, param_groups

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = ROOT / "chapters" / "05_mlm_training.ipynb"
CLS, SEP, PAD, MASK = 101, 102, 0, 103


@pytest.fixture(scope="module")
def tok():
    from course_utils.assets import load_tokenizer

    return load_tokenizer("bert-base-uncased")


@pytest.fixture(scope="module")
def corpus():
    from course_utils.data import generate_corpus

    return generate_corpus(n_words=20_000, seed=0)


@pytest.fixture(scope="module")
def blocks(tok, corpus):
    return mlm.packed_blocks(tok, corpus["train"], 64).input_ids                   # (N, 64)


@pytest.fixture(scope="module")
def chapter():
    """The chapter's cells tagged ch05-loop, executed here: their functions by name."""
    nb = nbformat.read(CHAPTER, as_version=4)
    sources = [c.source for c in nb.cells if "ch05-loop" in c.metadata.get("tags", [])]
    assert len(sources) == 4, "chapter 5 must have its four training cells tagged ch05-loop"
    namespace = {"torch": torch, "F": F, "math": math, "time": time, "mlm": mlm, "lr_at": lr_at,
                 "param_groups": param_groups}
    for i, src in enumerate(sources):
        exec(compile(src, f"{CHAPTER.name}[ch05-loop {i}]", "exec"), namespace)
    return namespace


# --------------------------------------------------------------------------- the chapter's cells = the package
def test_chapter_pack_and_mask_equal_the_package(chapter, tok, corpus):
    passages = tok(corpus["train"][:200], add_special_tokens=False)["input_ids"]
    for T in (5, 64, 128):
        assert torch.equal(chapter["pack_blocks"](passages, T, CLS, SEP), mlm.pack_blocks(passages, T, CLS, SEP))
    assert torch.equal(chapter["pack_blocks"](passages, 16, -2, -1, -3), mlm.pack_blocks(passages, 16, -2, -1, -3))
    ids = mlm.pack_blocks(passages, 64, CLS, SEP)
    kw = dict(mask_id=MASK, vocab_size=len(tok), special_ids=tok.all_special_ids)
    a = chapter["mask_tokens"](ids, generator=torch.Generator().manual_seed(4), **kw)
    b = mlm.mask_tokens(ids, generator=torch.Generator().manual_seed(4), **kw)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_chapter_loss_and_loop_equal_the_package(chapter, tok, blocks):
    vocab = torch.unique(torch.cat([blocks.flatten(), torch.tensor(tok.all_special_ids)]))
    model = mlm.build_model(seed=0, num_hidden_layers=1).eval()
    inputs, labels = mlm.mask_tokens(blocks[:8], mask_id=MASK, vocab_size=len(tok), special_ids=tok.all_special_ids,
                                     generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for kw in ({}, {"sparse": False}, {"vocab": vocab}):
            page_loss = float(chapter["mlm_loss"](model, inputs, labels, **kw))
            assert page_loss == float(mlm.mlm_loss(model, inputs, labels, **kw))
    # The loop, with the options the zoo and the benchmark use: a few steps, the same losses.
    settings = [dict(vocab=vocab, warmup=2), dict(sparse=False, warmup=0, min_lr_ratio=1.0, lr=5e-5),
                dict(vocab=vocab, bf16=True, batch_size=4)]
    for extra in settings:
        kw = {"steps": 4, "lr": 3e-3, "batch_size": 8, "seed": 1, **extra}
        calls: list[tuple[int, int]] = []
        ours, _ = chapter["train_mlm"](mlm.build_model(seed=0, num_hidden_layers=1), tok, blocks,
                                       callback=lambda s, t, calls=calls: calls.append(("page", s)) and False,
                                       every=2, **kw)
        package, _ = mlm.train_mlm(mlm.build_model(seed=0, num_hidden_layers=1), tok, blocks,
                                   callback=lambda s, t, calls=calls: calls.append(("package", s)) and False,
                                   every=2, **kw)
        assert ours == package, extra
        assert calls == [("page", 2), ("page", 4), ("package", 2), ("package", 4)]


# --------------------------------------------------------------------------- model and masking
def test_seed_model_has_the_seed_config_and_a_tied_head():
    model = mlm.build_model(seed=0)
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size,
            cfg.max_position_embeddings, cfg.vocab_size) == (128, 2, 4, 512, 128, 30522)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    # BERT's parameters from its sizes (the output matrix is the tied word embedding: counted once)
    V, C, P, I = cfg.vocab_size, cfg.hidden_size, cfg.max_position_embeddings, cfg.intermediate_size
    embeddings = (V + P + cfg.type_vocab_size) * C + 2 * C                # word, position, segment; LayerNorm
    layer = 4 * (C * C + C) + 2 * C + (C * I + I) + (I * C + C) + 2 * C    # Q, K, V, O; LN; MLP up, down; LN
    head = (C * C + C) + 2 * C + V                                         # transform; LN; output bias
    assert count_parameters(model) == embeddings + cfg.num_hidden_layers * layer + head


def test_mask_tokens_follows_the_80_10_10_rule():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (200, 128), generator=g)
    ids[:, 0], ids[:, -1], ids[:, 100:127] = CLS, SEP, PAD
    inputs, labels = mlm.mask_tokens(ids, mask_id=MASK, vocab_size=30522, special_ids=[CLS, SEP, PAD, MASK],
                                     generator=torch.Generator().manual_seed(1))
    selected = labels != mlm.IGNORE
    assert not selected[:, 0].any() and not selected[:, -1].any() and not selected[:, 100:127].any()
    assert torch.equal(labels[selected], ids[selected])               # labels are the originals
    assert torch.equal(inputs[~selected], ids[~selected])             # unselected: untouched
    n = int(selected.sum())
    assert abs(n / (200 * 99) - 0.15) < 0.01
    masked = (inputs[selected] == MASK).float().mean().item()
    kept = (inputs[selected] == ids[selected]).float().mean().item()
    assert abs(masked - 0.8) < 0.02 and abs(kept - 0.1) < 0.015
    again = mlm.mask_tokens(ids, mask_id=MASK, vocab_size=30522, special_ids=[CLS, SEP, PAD, MASK],
                            generator=torch.Generator().manual_seed(1))
    assert torch.equal(again[0], inputs) and torch.equal(again[1], labels)  # seeded: reproducible


def test_mask_tokens_is_the_documented_rule():
    """One uniform draw per position decides, as the docstring and the chapter state the rule:
    checked against a plain per-position loop, written independently here."""
    ids = torch.randint(1000, 2000, (4, 50), generator=torch.Generator().manual_seed(0))
    ids[:, 0] = CLS
    p = 0.3
    inputs, labels = mlm.mask_tokens(ids, mask_id=MASK, vocab_size=30522, special_ids=[CLS], p=p,
                                     generator=torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    u, rnd = torch.rand(ids.shape, generator=g), torch.randint(30522, ids.shape, generator=g)
    ref_inputs, ref_labels = ids.clone(), torch.full_like(ids, mlm.IGNORE)
    for b in range(ids.shape[0]):
        for t in range(ids.shape[1]):
            if ids[b, t] == CLS or u[b, t] >= p:
                continue
            ref_labels[b, t] = ids[b, t]
            if u[b, t] < 0.8 * p:
                ref_inputs[b, t] = MASK
            elif u[b, t] < 0.9 * p:
                ref_inputs[b, t] = rnd[b, t]
    assert (ref_labels != mlm.IGNORE).sum() > 20          # the case exercises all three branches
    assert torch.equal(inputs, ref_inputs) and torch.equal(labels, ref_labels)


def test_mask_tokens_rejects_bad_input():
    with pytest.raises(ValueError, match="p must be"):
        mlm.mask_tokens(torch.ones(2, 3, dtype=torch.long), mask_id=MASK, vocab_size=10, special_ids=[], p=1.5)
    with pytest.raises(TypeError, match="LongTensor"):
        mlm.mask_tokens(torch.ones(2, 3), mask_id=MASK, vocab_size=10, special_ids=[])


# --------------------------------------------------------------------------- losses
def test_mlm_loss_equals_the_library_loss_dense_sparse_and_restricted(tok, blocks):
    model = mlm.build_model(seed=0).eval()
    inputs, labels = mlm.mask_tokens(blocks[:8], mask_id=MASK, vocab_size=len(tok), special_ids=tok.all_special_ids,
                                     generator=torch.Generator().manual_seed(0))
    vocab = torch.unique(torch.cat([blocks.flatten(), torch.tensor(tok.all_special_ids)]))
    with torch.no_grad():
        library = model(input_ids=inputs, labels=labels).loss
        torch.testing.assert_close(mlm.mlm_loss(model, inputs, labels), library)
        torch.testing.assert_close(mlm.mlm_loss(model, inputs, labels, sparse=False), library)
        hidden = model.bert(input_ids=inputs).last_hidden_state
        torch.testing.assert_close(mlm.sparse_mlm_loss(hidden, labels, model.cls), library)
        # Restricted: equal to the full softmax once the other ids have logit -30 (and only then).
        assert abs(float(mlm.mlm_loss(model, inputs, labels, vocab=vocab)) - float(library)) > 1.0
        model.cls.predictions.bias[~torch.isin(torch.arange(len(tok)), vocab)] = mlm.UNUSED_LOGIT
        full = model(input_ids=inputs, labels=labels).loss
        torch.testing.assert_close(mlm.mlm_loss(model, inputs, labels, vocab=vocab), full, rtol=1e-5, atol=1e-5)
    assert abs(float(library) - math.log(30522)) < 0.5  # untrained: about ln V


# --------------------------------------------------------------------------- data
def test_pack_blocks_on_known_ids():
    out = mlm.pack_blocks([[1, 2, 3], [4, 5]], 5, CLS, SEP)
    # stream 1 2 3 SEP 4 5 SEP -> bodies of 3: [1 2 3] [SEP 4 5]; the tail [SEP] is dropped
    assert out.tolist() == [[CLS, 1, 2, 3, SEP], [CLS, SEP, 4, 5, SEP]]
    assert mlm.pack_blocks([[1, 2, 3], [4, 5]], 5, -2, -1, -3).tolist() == [[-2, 1, 2, 3, -3], [-2, -1, 4, 5, -3]]
    assert mlm.pack_blocks([[1]], 5, CLS, SEP).shape == (0, 5)
    with pytest.raises(ValueError, match="at least 3"):
        mlm.pack_blocks([[1, 2]], 2, CLS, SEP)


def test_waste_packing_and_padding_on_known_lines(tok):
    texts = ["hello world", "", "a " * 200]
    w = mlm.measure_waste(tok, texts)
    # [CLS] hello world [SEP] = 4; empty line = [CLS] [SEP] = 2; 200 x "a" + 2 = 202 -> 128 kept
    assert (w.lines, w.empty_lines, w.real_tokens, w.positions) == (3, 1, 134, 384)
    assert (w.truncated_tokens, w.truncated_lines) == (74, 1)
    assert w.padding_fraction == pytest.approx(1 - 134 / 384)
    padded = mlm.padded_lines(tok, texts)
    assert padded.input_ids.shape == (3, 128) and padded.real_tokens == 134
    packed = mlm.packed_blocks(tok, ["hello world"] * 90)     # 90 x 3 = 270 ids -> 2 bodies of 126
    assert packed.input_ids.shape == (2, 128) and packed.real_tokens == 256
    assert packed.input_ids[0, :5].tolist() == [CLS, 7592, 2088, SEP, 7592]
    assert packed.input_ids[0, -1] == SEP


def test_validation_set_is_fixed_and_cut_to_64(tok, corpus):
    a = mlm.make_validation_set(tok, corpus["validation"], max_texts=30, batch_size=8)
    b = mlm.make_validation_set(tok, corpus["validation"], max_texts=30, batch_size=8)
    assert a.n_texts == 30 and a.n_masked == b.n_masked > 0
    for (x1, _, l1), (x2, _, l2) in zip(a.batches, b.batches):
        assert torch.equal(x1, x2) and torch.equal(l1, l2)
    assert max(x.shape[1] for x, _, _ in a.batches) <= mlm.VAL_MAX_LENGTH
    with pytest.raises(ValueError, match="non-empty"):
        mlm.make_validation_set(tok, ["", "  "])


def test_unigram_loss_by_hand(tok):
    # train text: "a a b" -> counts a=2, b=1, +1 for every id; validation labels: one "a".
    a, b = tok.convert_tokens_to_ids(["a", "b"])
    val = mlm.ValidationSet([(torch.tensor([[CLS, MASK, SEP]]), torch.ones(1, 3, dtype=torch.long),
                              torch.tensor([[-100, a, -100]]))], 1, 1)
    expected = -math.log(3 / (3 + len(tok)))
    assert mlm.unigram_loss(tok, ["a a b"], val) == pytest.approx(expected)


# --------------------------------------------------------------------------- the loop
def test_train_mlm_learns_and_reports(tok, corpus, blocks):
    val = mlm.make_validation_set(tok, corpus["validation"], max_texts=40)
    vocab = torch.unique(torch.cat([blocks.flatten(), torch.tensor(tok.all_special_ids)]))
    model = mlm.build_model(seed=0, num_hidden_layers=1)
    before = mlm.evaluate(model, val)
    seen: list[int] = []
    losses, seconds = mlm.train_mlm(model, tok, blocks, steps=60, lr=3e-3, warmup=10, batch_size=16, vocab=vocab,
                                    callback=lambda step, s: seen.append(step) or step >= 40, every=20)
    assert seen == [20, 40] and len(losses) == 40 and seconds > 0 and not model.training   # stopped at 40
    after = mlm.evaluate(model, val)                                                     # full softmax
    assert after < before - 3.0, (before, after)
    unused = ~torch.isin(torch.arange(len(tok)), vocab)
    assert torch.all(model.cls.predictions.bias[unused] == mlm.UNUSED_LOGIT)  # never trained, never decayed
    with pytest.raises(FloatingPointError, match="learning rate"):
        mlm.train_mlm(mlm.build_model(seed=0, num_hidden_layers=1), tok, blocks, steps=3, lr=1e9, warmup=0,
                      batch_size=4, grad_clip=1e12)


def test_flops_per_token_of_the_seed_model():
    cfg = mlm.build_model().config
    layer = 2 * (4 * 128**2 + 2 * 128 * 512) + 4 * 128 * 128            # 458,752
    head = 2 * (128**2 + 128 * 30522)                                    # 7,846,400
    assert seed_recipe.flops_per_token(cfg, 128) == pytest.approx(3 * (2 * layer + 0.15 * head))
    assert seed_recipe.flops_per_token(cfg, 128, head_rows=500) == pytest.approx(
        3 * (2 * layer + 0.15 * 2 * (128**2 + 128 * 500)))


def test_show_progress_can_be_forced(monkeypatch):
    monkeypatch.setenv("COURSE_PROGRESS", "0")
    assert mlm.show_progress() is False
    monkeypatch.setenv("COURSE_PROGRESS", "1")
    assert mlm.show_progress() is True
    monkeypatch.delenv("COURSE_PROGRESS")
    assert mlm.show_progress() is False  # under pytest: a recorded run
    assert list(mlm.progress_bar(range(3), desc="x", enabled=False)) == [0, 1, 2]


# --------------------------------------------------------------------------- the seed recipe
def test_seed_recipe_runs_quietly_with_the_trainer(tok, corpus, tmp_path, capfd):
    val = mlm.make_validation_set(tok, corpus["validation"], max_texts=20)
    model, res = seed_recipe.train_seed_recipe(tok, corpus["train"], val, budget_seconds=1e9,
                                               eval_every_seconds=1e9, output_dir=str(tmp_path), max_steps=3)
    assert res.steps == 3 and res.curve[-1].step == 3
    assert res.positions == 3 * 32 * 128 and 0 < res.real_tokens < res.positions  # padding counted apart
    assert math.isfinite(res.final_val_loss)
    out, err = capfd.readouterr()
    assert out == "" and "it/s" not in err and "{'loss'" not in err, (out, err[-500:])


@pytest.mark.slow
def test_cached_seed_run_trains_once(tok, corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    val = mlm.make_validation_set(tok, corpus["validation"], max_texts=20)
    kw = dict(budget_seconds=2.0, eval_every_seconds=1.0, corpus_id="test 20k")
    t0 = time.perf_counter()
    model, run = seed_recipe.cached_seed_run(tok, corpus["train"], val, **kw)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    again, run2 = seed_recipe.cached_seed_run(tok, corpus["train"], val, **kw)
    assert time.perf_counter() - t0 < first and run2 == run and run.steps >= 1
    assert torch.equal(again.bert.embeddings.word_embeddings.weight, model.bert.embeddings.word_embeddings.weight)
    assert len(list((tmp_path / "mlm-seed").glob("seed-recipe-*/run.json"))) == 1
    # The key is the zoo's (zoo.cache.code_key over the code that trains): a table that code reads
    # is part of it, so a changed SEED_CONFIG trains again (the functions' source alone would not).
    monkeypatch.setattr(mlm, "SEED_CONFIG", {**mlm.SEED_CONFIG, "intermediate_size": 256})
    other, _ = seed_recipe.cached_seed_run(tok, corpus["train"], val, **kw)
    assert other.config.intermediate_size == 256
    assert len(list((tmp_path / "mlm-seed").glob("seed-recipe-*/run.json"))) == 2


# --------------------------------------------------------------------------- save/load
def test_save_load_round_trip_has_no_missing_keys(tmp_path):
    from transformers import BertForMaskedLM

    model = mlm.build_model(seed=1).eval()
    model.save_pretrained(tmp_path)
    loaded, info = BertForMaskedLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert loaded.cls.predictions.decoder.weight is loaded.bert.embeddings.word_embeddings.weight
    x = torch.tensor([[CLS, 7592, MASK, SEP]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(input_ids=x).logits, model(input_ids=x).logits)
    # The seed's warning: loading untied reports the decoder missing.
    _, untied = BertForMaskedLM.from_pretrained(tmp_path, output_loading_info=True, tie_word_embeddings=False)
    assert "cls.predictions.decoder.weight" in untied["missing_keys"]


# --------------------------------------------------------------------------- the benchmark
@pytest.mark.slow
def test_benchmark_quick_prints_its_ratio(tmp_path, offline_environ):
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "mlm_recipe.py"), "--quick", "--no-ablation",
                          # shorter caps than --quick's own (18 s, 30 s): this checks the report, not the ratio
                          "--cap-minutes", "0.1", "--row-cap-seconds", "12", "--threads", "1", "--json", str(out)],
                         env=dict(os.environ, **offline_environ,
                                  PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")),
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["quick"] and report["threads"] == 1 and report["machine"] and report["load_average_at_start"]
    assert report["target"] == pytest.approx(report["unigram_loss"] - 0.5)
    assert "public-domain" in report["corpus"] and report["base_row"] == report["efficient_row"]
    assert "ratio_estimate" in report and "ratio_estimate_interval" in report
    assert report["cap_seconds"] == pytest.approx(6.0) and report["ratio_is_lower_bound"] is True  # not in 6 s
    eff = next(r for r in report["rows"] if r["name"] == report["efficient_row"])
    assert eff["tokens_per_second"] > 0 and eff["runs"] and eff["flops_per_token"] > 0
    # 12 s of training may not be enough; where it was, the ratio is printed.
    if eff["time_to_target_median"] is not None:
        assert "Time-to-target ratio (seed / efficient): at least" in run.stdout, run.stdout[-2000:]
        assert report["ratio"] == pytest.approx(report["seed"]["train_seconds"] / eff["time_to_target_median"])
    else:
        assert report["ratio"] is None and "did not reach the target" in run.stdout
