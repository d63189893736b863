"""Chapter 5's training code (course_utils.mlm): masking, the sparse loss, data, schedules,
FLOPs, both recipes, save/load, the torchrun entry point (DDP with 2 CPU processes) and the
benchmark script."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from course_utils import mlm

ROOT = Path(__file__).resolve().parent.parent
CLS, SEP, PAD, MASK = 101, 102, 0, 103


@pytest.fixture(scope="module")
def tok():
    from course_utils.assets import load_tokenizer

    return load_tokenizer("bert-base-uncased")


@pytest.fixture(scope="module")
def corpus():
    from course_utils.data import generate_corpus

    return generate_corpus(n_words=20_000, seed=0)


def _env() -> dict[str, str]:
    return dict(os.environ, COURSE_OFFLINE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
                PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))


# --------------------------------------------------------------------------- model
def test_seed_model_has_the_seed_config_and_a_tied_head():
    model = mlm.build_model(seed=0)
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.intermediate_size,
            cfg.max_position_embeddings, cfg.vocab_size) == (128, 2, 4, 512, 128, 30522)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    # embeddings 3,923,712 + 2 layers x 198,272 + head (transform 16,768, bias 30,522); tied: counted once
    assert sum(p.numel() for p in model.parameters()) == 4_367_546


# --------------------------------------------------------------------------- masking
def test_mask_tokens_follows_the_80_10_10_rule():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 30000, (200, 128), generator=g)
    ids[:, 0], ids[:, -1], ids[:, 100:127] = CLS, SEP, PAD
    inputs, labels = mlm.mask_tokens(ids, mask_token_id=MASK, vocab_size=30522, special_ids=[CLS, SEP, PAD, MASK],
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
    again = mlm.mask_tokens(ids, mask_token_id=MASK, vocab_size=30522, special_ids=[CLS, SEP, PAD, MASK],
                            generator=torch.Generator().manual_seed(1))
    assert torch.equal(again[0], inputs) and torch.equal(again[1], labels)  # seeded: reproducible


def test_mask_tokens_rejects_bad_input():
    with pytest.raises(ValueError, match="mlm_probability"):
        mlm.mask_tokens(torch.ones(2, 3, dtype=torch.long), mask_token_id=MASK, vocab_size=10, special_ids=[],
                        mlm_probability=1.5)
    with pytest.raises(TypeError, match="LongTensor"):
        mlm.mask_tokens(torch.ones(2, 3), mask_token_id=MASK, vocab_size=10, special_ids=[])


# --------------------------------------------------------------------------- losses
def test_sparse_loss_equals_the_library_loss(tok, corpus):
    model = mlm.build_model(seed=0).eval()
    val = mlm.make_validation_set(tok, corpus["validation"], max_texts=16)
    ids, att, labels = val.batches[0]
    with torch.no_grad():
        library = model(input_ids=ids, attention_mask=att, labels=labels).loss
        hidden = model.bert(input_ids=ids, attention_mask=att)[0]
        torch.testing.assert_close(mlm.sparse_mlm_loss(hidden, labels, model.cls), library)
        s_sum, n = mlm.MLMObjective(model, sparse=True)(ids, att, labels)
        d_sum, n2 = mlm.MLMObjective(model, sparse=False)(ids, att, labels)
    assert int(n) == int(n2) == int((labels != -100).sum())
    torch.testing.assert_close(s_sum / n, library)
    torch.testing.assert_close(d_sum, s_sum, rtol=1e-5, atol=1e-3)
    # an untrained model is close to the uniform baseline ln V
    assert abs(float(library) - math.log(30522)) < 0.5


def test_validation_set_is_fixed(tok, corpus):
    a = mlm.make_validation_set(tok, corpus["validation"], max_texts=30, batch_size=8)
    b = mlm.make_validation_set(tok, corpus["validation"], max_texts=30, batch_size=8)
    assert a.n_texts == 30 and a.n_masked == b.n_masked > 0
    for (x1, m1, l1), (x2, m2, l2) in zip(a.batches, b.batches):
        assert torch.equal(x1, x2) and torch.equal(l1, l2)
    with pytest.raises(ValueError, match="non-empty"):
        mlm.make_validation_set(tok, ["", "  "])


# --------------------------------------------------------------------------- data
def test_waste_packing_and_padding_on_known_lines(tok):
    texts = ["hello world", "", "a " * 200]
    w = mlm.measure_waste(tok, texts)
    # [CLS] hello world [SEP] = 4; empty line = [CLS] [SEP] = 2; 200 x "a" + 2 = 202 -> 128 kept
    assert (w.lines, w.empty_lines, w.real_tokens, w.positions) == (3, 1, 134, 384)
    assert (w.truncated_tokens, w.truncated_lines) == (74, 1)
    assert w.padding_fraction == pytest.approx(1 - 134 / 384)
    padded = mlm.padded_lines(tok, texts)
    assert padded.input_ids.shape == (3, 128) and padded.real_tokens == 134
    packed = mlm.packed_blocks(tok, ["hello world"] * 70)          # 70 x 4 = 280 tokens -> 2 full blocks
    assert packed.input_ids.shape == (2, 128) and packed.real_tokens == 256
    assert packed.input_ids[0, :4].tolist() == [CLS, 7592, 2088, SEP]


def test_lr_schedule_warms_up_then_decays():
    r = mlm.Recipe(lr=1e-3, warmup_steps=10)
    lrs = [mlm.lr_at(s, r) for s in range(40)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert lrs[39] == pytest.approx(1e-3 * math.sqrt(10 / 40))
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10])) and all(a > b for a, b in zip(lrs[10:], lrs[11:]))
    assert mlm.lr_at(100, mlm.Recipe.seed_like()) == 5e-5


def test_recipe_auto_switches_resolve():
    cpu = mlm.Recipe().resolved(torch.device("cpu"))
    assert cpu.compile is False and cpu.batch_size == 64 and isinstance(cpu.bf16, bool)
    assert mlm.Recipe(bf16=False, compile=True).resolved(torch.device("cpu")).compile is True
    names = [n for n, _ in mlm.ablation_rows(torch.device("cpu"))]
    assert names[0] == "seed settings, our loop" and names[-1].startswith("efficient recipe")


def test_flops_per_token_of_the_seed_model():
    cfg = mlm.build_model().config
    layer = 2 * (4 * 128**2 + 2 * 128 * 512) + 4 * 128 * 128            # 458,752
    head = 2 * (128**2 + 128 * 30522)                                    # 7,846,400
    assert mlm.flops_per_token(cfg, 128) == pytest.approx(3 * (2 * layer + 0.15 * head))
    peak, how = mlm.peak_flops(torch.device("cpu"), bf16=False, seconds=0.2)
    assert peak > 1e8 and "measured" in how


# --------------------------------------------------------------------------- training
def test_efficient_recipe_learns(tok, corpus):
    val = mlm.make_validation_set(tok, corpus["validation"], max_texts=40)
    data = mlm.packed_blocks(tok, corpus["train"])
    recipe = mlm.Recipe(batch_size=16, warmup_steps=5, bf16=False, compile=False)
    model, res = mlm.train_efficient(tok, data, val, recipe, max_steps=25, eval_every_seconds=1e9,
                                     progress=False)
    assert res.steps == 25 and res.real_tokens == res.positions == 25 * 16 * 128
    assert res.curve[-1].val_loss < math.log(30522) - 1.0, res.curve   # from 10.3 to well below
    assert res.tokens_per_second > 0 and not model.training
    with pytest.raises(ValueError, match="never ends"):
        mlm.train_efficient(tok, data, val, recipe)


def test_seed_recipe_runs_with_the_trainer(tok, corpus, tmp_path):
    val = mlm.make_validation_set(tok, corpus["validation"], max_texts=20)
    model, res = mlm.train_seed_recipe(tok, corpus["train"], val, budget_seconds=1e9, eval_every_seconds=1e9,
                                       output_dir=str(tmp_path), max_steps=3, progress=False)
    assert res.steps == 3 and res.curve[-1].step == 3
    assert res.positions == 3 * 32 * 128 and 0 < res.real_tokens < res.positions  # padding counted apart
    assert math.isfinite(res.final_val_loss)


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


def test_probe_helpers(tok):
    from course_utils.data import heldout_probes

    probes = mlm.single_token_probes(tok, heldout_probes(relations=["capital"]))
    assert probes and all(len(tok.tokenize(p.answer)) == 1 for p in probes)
    assert all(p.answer not in ("New Delhi", "Addis Ababa") for p in probes)

    def oracle(texts, top_k=1):
        by_text = {p.masked("[MASK]"): p.answer for p in probes}
        return [[{"token_str": by_text[t].lower(), "score": 1.0}] for t in texts]

    assert mlm.probe_accuracy(oracle, probes) == 1.0
    with pytest.raises(ValueError):
        mlm.probe_accuracy(oracle, [])


# --------------------------------------------------------------------------- torchrun (DDP, gloo)
@pytest.mark.slow
def test_ddp_two_processes_match_one(tmp_path):
    """torchrun --nproc_per_node=2 (gloo on CPU) gives the single-process losses on the same global batch.

    Dropout off and fp32, so that the only difference is how the batch is split: the loss
    normalisation makes the averaged DDP gradient equal to the single-process one.
    """
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    args = ["--recipe", "efficient", "--max-steps", "4", "--batch-size", "8", "--n-words", "20000",
            "--no-eval", "--no-bf16", "--no-compile", "--dropout", "0", "--seed", "3"]
    env = dict(_env(), OMP_NUM_THREADS="1")
    one = subprocess.run([sys.executable, "-m", "course_utils.mlm", *args, "--json", str(tmp_path / "one.json")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "course_utils.mlm", *args,
                          "--json", str(tmp_path / "two.json")],
                         env=env, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    a = json.loads((tmp_path / "one.json").read_text())
    b = json.loads((tmp_path / "two.json").read_text())
    assert a["settings"]["processes"] == 1 and b["settings"]["processes"] == 2
    losses_a, losses_b = a["settings"]["losses"], b["settings"]["losses"]
    assert len(losses_a) == len(losses_b) == 4
    assert losses_a[-1] < losses_a[0]  # it trains
    torch.testing.assert_close(torch.tensor(losses_b), torch.tensor(losses_a), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_benchmark_quick_prints_its_ratio(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "mlm_recipe.py"), "--quick",
                          "--budget-seconds", "10", "--json", str(out)],
                         env=_env(), capture_output=True, text=True, timeout=400)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Time-to-target ratio (seed / efficient)" in run.stdout, run.stdout[-2000:]
    report = json.loads(out.read_text())
    assert report["quick"] and report["ratio"] > 1 and report["machine"]
    assert report["seed"]["tokens_per_second"] > 0 and report["rows"][-1]["tokens_per_second"] > 0
