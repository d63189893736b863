"""Tests of course_utils.induction: the repeated-tokens test, head scores and ablation.

Fast tests use a tiny random GPT-2; the slow ones check what chapter 4 finds in ``gpt2-course``:
the heads its in-context learning needs (a previous-token head, a head that reads the earlier
answers; thresholds a weaker zoo breaks), and -- as strict expected failures -- that it has no
induction head yet (issue #20).
"""
from __future__ import annotations

import pytest
import torch

from course_utils import data, induction, zoo
from course_utils.assets import load_tokenizer

# Thresholds for gpt2-course (its measured values are printed by chapter 4).
MIN_BEST_PREFIX_MATCHING = 0.5   # attention of the best head to "the token after the earlier occurrence"
MIN_BEST_COPYING = 0.3           # its output alone ranks the right next token first (chance ~ 1/229)
MIN_LOSS_DROP = 2.0              # nats: first copy minus second copy
MIN_ABLATION_DROP = 0.2          # 4-shot accuracy lost when the best induction head is removed
MIN_NEEDED_HEAD_DROP = 0.4       # 4-shot accuracy lost without the head the model needs most
MIN_ROLE_SHARE = 0.5             # attention that head (and the second) pays to the query (the earlier answers)
R = 25
ICL_OPEN = pytest.mark.xfail(strict=True, reason=(
    "issue #20 open: gpt2-course learns in context (0-shot <= 0.2, 4-shot >= 0.8 in held-out formats) through "
    "a previous-token head and a head that reads the earlier answers, but has no induction head (best "
    "prefix-matching score 0.03, second copy 0.1 nats below the first). Chapter 4 grows one in a 2-layer model "
    "trained on repeated sequences at a 10x lower learning rate (tests/site/test_chapter_phenomena.py); "
    "whether gpt2-course can grow one within its CPU budget is open. Remove this mark when it has one."))


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer("gpt2")


@pytest.fixture(scope="module")
def tiny():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=50257, n_positions=64, n_embd=32, n_layer=2, n_head=4)
    return GPT2LMHeadModel(cfg).eval()


def test_repeated_tokens_are_two_copies_of_distinct_ids(tok):
    pool = induction.token_pool(tok)
    assert len(pool) > 150 and all(len(tok.decode([i]).strip()) > 0 for i in pool)
    ids = induction.repeated_tokens(pool, 8, R, bos_id=tok.eos_token_id, seed=1)
    assert ids.shape == (8, 1 + 2 * R) and (ids[:, 0] == tok.eos_token_id).all()
    assert torch.equal(ids[:, 1:R + 1], ids[:, R + 1:])
    assert all(len(set(row[1:R + 1].tolist())) == R for row in ids)
    assert set(ids[:, 1:].flatten().tolist()) <= set(pool)
    assert torch.equal(ids, induction.repeated_tokens(pool, 8, R, bos_id=tok.eos_token_id, seed=1))
    with pytest.raises(ValueError, match="pool"):
        induction.repeated_tokens(pool[:5], 1, 6, bos_id=0)


def test_prefix_matching_score_of_a_perfect_and_a_uniform_head():
    T = 1 + 2 * R
    perfect = torch.zeros(1, 1, 2, T, T)  # (L, B, nh, T, T)
    for q in range(R + 1, T):
        perfect[0, 0, 0, q, q - R + 1] = 1.0
    perfect[0, 0, 1] = torch.tril(torch.ones(T, T)) / torch.arange(1, T + 1)[:, None]
    s = induction.prefix_matching_scores(perfect, R)
    assert s.shape == (1, 2) and s[0, 0] == 1.0 and s[0, 1] < 0.05


def test_attention_maps_are_probabilities_and_restore_the_implementation(tiny, tok):
    ids = induction.repeated_tokens(induction.token_pool(tok), 2, 10, bos_id=tok.eos_token_id)
    before = tiny.config._attn_implementation
    a = induction.attention_maps(tiny, ids)
    assert a.shape == (2, 2, 4, 21, 21) and tiny.config._attn_implementation == before
    assert torch.allclose(a.sum(-1), torch.ones(2, 2, 4, 21)) and (a.triu(1) == 0).all()


def test_head_outputs_add_up_to_the_attention_output(tiny, tok):
    ids = induction.repeated_tokens(induction.token_pool(tok), 2, 10, bos_id=tok.eos_token_id)
    seen = []
    hook = tiny.transformer.h[1].attn.c_proj.register_forward_hook(lambda m, i, o: seen.append(o))
    out = induction.head_outputs(tiny, ids)  # (L, nh, B, T, C)
    hook.remove()
    assert out.shape == (2, 4, 2, 21, 32)
    total = out[1].sum(0) + tiny.transformer.h[1].attn.c_proj.bias
    torch.testing.assert_close(total, seen[0], rtol=1e-4, atol=1e-5)


def test_ablating_heads_zeroes_exactly_them_and_restores_the_model(tiny, tok):
    ids = induction.repeated_tokens(induction.token_pool(tok), 2, 10, bos_id=tok.eos_token_id)
    with torch.no_grad():
        base = tiny(ids).logits
        with induction.ablate_heads(tiny, [(0, 1), (1, 3)]):
            out = induction.head_outputs(tiny, ids)
            ablated = tiny(ids).logits
        again = tiny(ids).logits
    assert (out[0, 1] == 0).all() and (out[1, 3] == 0).all() and (out[0, 0] != 0).any()
    assert not torch.allclose(base, ablated) and torch.equal(base, again)
    with pytest.raises(ValueError, match="no head"):
        with induction.ablate_heads(tiny, [(2, 0)]):
            pass


# --- gpt2-course has an induction head and needs it ------------------------------------------

@pytest.fixture(scope="module")
def gpt2():
    return zoo.load("gpt2-course")


@pytest.fixture(scope="module")
def measured(gpt2, tok):
    pool = induction.token_pool(tok)
    ids = induction.repeated_tokens(pool, 32, R, bos_id=tok.eos_token_id)
    losses = induction.token_losses(gpt2, ids)
    prefix = induction.prefix_matching_scores(induction.attention_maps(gpt2, ids), R)
    copying = induction.copying_scores(gpt2, ids, R, pool)
    best = divmod(int(prefix.argmax()), prefix.size(1))
    return dict(ids=ids, losses=losses, prefix=prefix, copying=copying, best=best)


@pytest.mark.slow
@ICL_OPEN
def test_gpt2_course_predicts_the_second_copy(measured):
    losses = measured["losses"]
    first, second = losses[:, 1:R].mean(), losses[:, R + 1:].mean()
    assert first - second > MIN_LOSS_DROP, f"first copy {first:.2f}, second {second:.2f}"


@pytest.mark.slow
@ICL_OPEN
def test_gpt2_course_has_an_induction_head(measured):
    prefix, copying, best = measured["prefix"], measured["copying"], measured["best"]
    assert prefix[best] > MIN_BEST_PREFIX_MATCHING, f"best prefix-matching score {prefix[best]:.2f}"
    assert copying[best] > MIN_BEST_COPYING, f"its copying score {copying[best]:.2f}"
    assert prefix.median() < 0.2  # most heads are not induction heads


@pytest.fixture(scope="module")
def ablated(gpt2, tok):
    """Four-shot accuracy (chapter 4's 480 held-out-format prompts) intact, with each head removed
    in turn, and intact again afterwards (the model must be whole once the ablation ends)."""
    prompts = data.fewshot_prompts(480, 4, prefix=tok.bos_token)

    def acc() -> float:
        return sum(zoo.causal_probe_correct(gpt2, tok, prompts)) / len(prompts)

    intact = acc()
    accs = {}
    for layer in range(gpt2.config.n_layer):
        for head in range(gpt2.config.n_head):
            with induction.ablate_heads(gpt2, [(layer, head)]):
                accs[layer, head] = acc()
    return dict(prompts=prompts, intact=intact, accs=accs, after=acc())


@pytest.mark.slow
def test_the_model_is_whole_after_the_ablations(ablated):
    assert ablated["after"] == ablated["intact"]


@pytest.mark.slow
@ICL_OPEN
def test_removing_the_induction_head_breaks_in_context_learning(ablated, measured):
    intact, accs, best = ablated["intact"], ablated["accs"], measured["best"]
    assert intact - accs[best] > MIN_ABLATION_DROP, f"{intact:.2f} -> {accs[best]:.2f}"
    assert accs[best] == min(accs.values())  # no other single head matters as much


@pytest.mark.slow
def test_gpt2_course_needs_a_previous_token_head_and_an_answer_reading_head(gpt2, tok, ablated):
    # What chapter 4 finds by ablation: without one head the 4-shot accuracy falls to about the
    # 0-shot level; from where the answer is due, that head looks at the query, the next at the answers.
    drops = {head: ablated["intact"] - acc for head, acc in ablated["accs"].items()}
    first, second = sorted(drops, key=drops.get, reverse=True)[:2]
    assert drops[first] > MIN_NEEDED_HEAD_DROP, drops
    share = induction.attention_by_role(gpt2, tok, ablated["prompts"][:200])
    assert share[first][induction.ROLES.index("query")] > MIN_ROLE_SHARE, share[first]
    assert share[second][induction.ROLES.index("answer")] > MIN_ROLE_SHARE, share[second]


def test_fewshot_roles_label_every_token(tok):
    p = data.fewshot_prompts(1, 2, seed=5, prefix=tok.bos_token)[0]
    ids, roles = induction.fewshot_roles(tok, p)
    assert ids == tok(p.prompt)["input_ids"] and len(roles) == len(ids)
    assert roles[0] == "prefix" and roles[-1] == "due" and roles.count("due") == 1
    assert tok.decode([i for i, r in zip(ids, roles) if r == "query"]).strip() == p.query
    answers = tok.decode([i for i, r in zip(ids, roles) if r == "answer"]).split()
    assert answers == [y for _, y in p.shots]
    # the zero-shot prompt is the query and its separator
    p0 = data.fewshot_prompts(1, 0, seed=5)[0]
    assert induction.fewshot_roles(tok, p0)[1][-1] == "due" and "input" not in induction.fewshot_roles(tok, p0)[1]


def test_attention_by_role_sums_to_one_per_head(tiny, tok):
    prompts = data.fewshot_prompts(6, 3, prefix=tok.bos_token)
    share = induction.attention_by_role(tiny, tok, prompts)
    assert share.shape == (2, 4, len(induction.ROLES))
    torch.testing.assert_close(share.sum(-1), torch.ones(2, 4))
    with pytest.raises(ValueError, match="no prompt"):
        induction.attention_by_role(tiny, tok, [])
