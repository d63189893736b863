"""What chapter 3 says about the zoo's ``gpt2-course`` holds: the ids its corpus never uses are
pinned at ``zoo.UNUSED_LOGIT`` through one ``ln_f`` channel fixed to 1, the other ids' logits
stay inside it, and undoing the pinning would move probability onto never-seen ids.

If the zoo changes how it treats unused ids, these tests fail, and chapter 3's explanation of
the "max |logit|" column must change with it."""
from __future__ import annotations

import pytest
import torch

from course_utils import data, zoo
from course_utils.assets import load_tokenizer

PROMPTS = ["Hello World. This is Agney", "The capital of France is Paris.",
           "Once upon a time, a little cat called Anna lived in a village."]


@pytest.fixture(scope="module")
def lm():
    model = zoo.load("gpt2-course", progress=False)
    model.loss_type = "ForCausalLM"  # as chapter 3 does
    return model


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("gpt2")


@pytest.fixture(scope="module")
def pinned(lm, tok) -> torch.Tensor:
    with torch.no_grad():
        logits = torch.cat([lm(**tok(p, return_tensors="pt")).logits[0] for p in PROMPTS])  # (positions, V)
    return logits.max(0).values == logits.min(0).values


def test_pinned_ids_are_the_ids_the_corpus_never_uses(lm, pinned):
    n_used = zoo.card("gpt2-course")["vocab_used_in_training"]
    assert int((~pinned).sum()) == n_used
    assert int(pinned.sum()) == lm.config.vocab_size - n_used > 40_000


def test_pinning_mechanism(lm, tok, pinned):
    ln_f, wte = lm.transformer.ln_f, lm.transformer.wte.weight
    channels = ((ln_f.weight == 0) & (ln_f.bias == 1)).nonzero().flatten().tolist()
    assert len(channels) == 1
    k = channels[0]
    expected = torch.zeros(int(pinned.sum()), wte.shape[1])
    expected[:, k] = zoo.UNUSED_LOGIT
    assert torch.equal(wte[pinned], expected)
    with torch.no_grad():
        out = lm(**tok(PROMPTS[1], return_tensors="pt"))
    assert torch.all(out.logits[0][:, pinned] == zoo.UNUSED_LOGIT)
    assert out.logits[0][:, ~pinned].abs().max() < abs(zoo.UNUSED_LOGIT)  # the 30.00 is the pinned ids'


def test_unpinning_would_move_probability_to_never_seen_ids(lm, tok, pinned):
    wte = lm.transformer.wte.weight
    g = torch.Generator().manual_seed(0)
    random_rows = wte.clone()
    random_rows[pinned] = torch.randn(int(pinned.sum()), wte.shape[1], generator=g) * lm.config.initializer_range
    text = data.generate_corpus(n_words=20_000)["validation"][0]
    with torch.no_grad():
        hidden = lm.transformer(tok(text, return_tensors="pt")["input_ids"]).last_hidden_state[0]  # (T, C)
        as_saved = (hidden @ wte.T).softmax(-1)[:, pinned].sum(-1).mean().item()
        unpinned = (hidden @ random_rows.T).softmax(-1)[:, pinned].sum(-1).mean().item()
    assert as_saved < 1e-9
    # how much depends on how peaked the model is (the 100-step trial model: 0.85); always far more
    assert unpinned > 1e-4 and unpinned > 1e3 * as_saved

