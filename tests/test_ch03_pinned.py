"""What chapter 3 says about ids the training text never uses holds: ``gpt2-course`` (real
prose, the softmax over all 50,257 ids) has no pinned ids and puts little probability on the ids
its training text never uses, far less than an even spread (or its random initialisation) would;
the zoo's template recipe (``zoo.TEMPLATES``, the compact softmax) instead pins them at
``zoo.UNUSED_LOGIT`` through one ``ln_f`` channel fixed to 1.

If the zoo changes how it treats unused ids, these tests fail, and chapter 3's "Ids it never saw"
must change with it."""
from __future__ import annotations

import pytest
import torch

from course_utils import corpus, zoo
from course_utils.assets import load_tokenizer

PROMPTS = ["Hello World. This is Agney", "The capital of France is Paris.",
           "Once upon a time, a little cat called Anna lived in a village."]
TINY_TEMPLATES = dict(n_embd=32, n_layer=1, n_head=2, n_inner=64, n_positions=32, block_size=16,
                      batch_size=4, steps=3, warmup=1, corpus_words=2_000, eval_every=0,
                      corpus="templates")


@pytest.fixture(scope="module")
def lm():
    model = zoo.load("gpt2-course", progress=False)
    model.loss_type = "ForCausalLM"  # as chapter 3 does
    return model


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("gpt2")


@pytest.fixture(scope="module")
def never(tok) -> torch.Tensor:
    """(V,) the ids the training books and addresses never use (chapter 3's count)."""
    books = corpus.load_books()
    # passages joined by <|endoftext|>, as the zoo packs them
    ids = torch.tensor([i for row in tok(books["train"])["input_ids"] for i in row + [tok.eos_token_id]])
    return torch.bincount(ids, minlength=len(tok)) == 0


def _mass_on(model, tok, ids: torch.Tensor) -> float:
    """Mean probability on ``ids`` over the positions of ten held-out passages."""
    held_out = corpus.spread(corpus.load_books()["validation"], 10, min_words=40)
    mass = []
    with torch.no_grad():
        for text in held_out:
            x = tok(text, return_tensors="pt")["input_ids"][:, :128]
            mass.append(model(x).logits[0].softmax(-1)[:, ids].sum(-1).mean().item())
    return sum(mass) / len(mass)


def test_gpt2_course_has_no_pinned_ids(lm, tok):
    with torch.no_grad():
        logits = torch.cat([lm(**tok(p, return_tensors="pt")).logits[0] for p in PROMPTS])  # (positions, V)
    assert int((logits.max(0).values == logits.min(0).values).sum()) == 0
    ln_f = lm.transformer.ln_f
    assert not ((ln_f.weight == 0) & (ln_f.bias == 1)).any()


def test_never_seen_ids_get_little_probability_on_held_out_prose(lm, tok, never):
    card = zoo.card("gpt2-course")
    assert int(never.sum()) == card["probes"]["never_seen_ids"]
    assert int((~never).sum()) == card["vocab_used_in_training"]
    share = never.float().mean().item()                 # an even spread's probability on them
    assert 0.2 < share < 0.5
    trained = _mass_on(lm, tok, never)
    assert trained < share / 10
    # learnt in training: the same config with random weights spreads about evenly
    random = zoo.recipe_for(zoo.spec("gpt2-course")).build(zoo.spec("gpt2-course"), tok).eval()
    assert _mass_on(random, tok, never) > share / 2 > 5 * trained


def test_the_template_recipe_pins_the_ids_its_corpus_never_uses(tmp_path, monkeypatch, tok):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    model = zoo.load("gpt2-course", progress=False, **TINY_TEMPLATES)
    ln_f, wte = model.transformer.ln_f, model.transformer.wte.weight
    channels = ((ln_f.weight == 0) & (ln_f.bias == 1)).nonzero().flatten().tolist()
    assert len(channels) == 1
    k = channels[0]
    pinned = (wte[:, k] == zoo.UNUSED_LOGIT) & (wte[:, :k] == 0).all(-1) & (wte[:, k + 1:] == 0).all(-1)
    n_used = zoo.card("gpt2-course", **TINY_TEMPLATES)["vocab_used_in_training"]
    assert int((~pinned).sum()) == n_used < 2_000
    with torch.no_grad():
        out = model(**tok(PROMPTS[1], return_tensors="pt"))
    assert torch.all(out.logits[0][:, pinned] == zoo.UNUSED_LOGIT)
