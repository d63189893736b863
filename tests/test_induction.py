"""Tests of course_utils.induction: the repeated-tokens test, head scores and ablation.

Fast tests use a tiny random GPT-2 and a tiny random Llama; the slow one checks what chapter 4
finds in the real SmolLM2-135M-Instruct: it predicts the second copy of a repeated sequence, has
heads that match prefixes, and needs them (switching the best five off costs nats of loss).
"""
from __future__ import annotations

import pytest
import torch

from course_utils import data, induction
from course_utils.assets import load_tokenizer

# Thresholds for SmolLM2 (its measured values are printed by chapter 4).
MIN_BEST_PREFIX_MATCHING = 0.5   # attention of the best head to "the token after the earlier occurrence"
MIN_LOSS_DROP = 2.0              # nats: second-copy loss added by switching the best 5 heads off
R = 25


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


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=50257, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg).eval()


def test_llama_head_outputs_add_up_to_o_proj_and_ablation_zeroes_them(tiny_llama, tok):
    ids = induction.repeated_tokens(induction.token_pool(tok), 2, 10, bos_id=tok.eos_token_id)
    seen = []
    proj = tiny_llama.model.layers[1].self_attn.o_proj
    hook = proj.register_forward_hook(lambda m, i, o: seen.append(o))
    out = induction.head_outputs(tiny_llama, ids)  # (L, nh, B, T, C)
    hook.remove()
    assert out.shape == (2, 6, 2, 21, 48) and induction.num_heads(tiny_llama) == (2, 6)
    torch.testing.assert_close(out[1].sum(0), seen[0], rtol=1e-4, atol=1e-5)
    with induction.ablate_heads(tiny_llama, [(1, 4)]):
        assert (induction.head_outputs(tiny_llama, ids)[1, 4] == 0).all()
    assert induction.attention_maps(tiny_llama, ids).shape == (2, 2, 6, 21, 21)


def test_llama_copying_scores_read_out_through_rmsnorm(tiny_llama, tok):
    # a head's read-out, summed over heads plus the rest of the residual, is the model's own logits
    pool = induction.token_pool(tok)
    ids = induction.repeated_tokens(pool, 2, 10, bos_id=tok.eos_token_id)
    scores = induction.copying_scores(tiny_llama, ids, 10, pool)
    assert scores.shape == (2, 6) and ((scores >= 0) & (scores <= 1)).all()
    a = induction.ANATOMIES["llama"]
    layers, final = induction._per_layer_heads(tiny_llama, ids)
    norm = tiny_llama.model.norm
    torch.testing.assert_close(a.read_out(norm, final, final), norm(final), rtol=1e-5, atol=1e-5)


def test_unknown_architecture_is_named():
    from transformers import BertConfig, BertModel

    with pytest.raises(ValueError, match="'bert'"):
        induction.num_heads(BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                 intermediate_size=64)))


# --- SmolLM2-135M-Instruct, the real model of chapter 4, has induction heads and needs them ------

@pytest.fixture(scope="module")
def smollm2():
    from transformers import AutoModelForCausalLM

    from course_utils import assets

    return (assets.load_pretrained(assets.SMOLLM2, AutoModelForCausalLM).eval(),
            assets.load_tokenizer(assets.SMOLLM2))


@pytest.mark.slow
def test_smollm2_copies_through_its_induction_heads(smollm2):
    model, tok_s = smollm2
    R = 30
    pool = induction.token_pool(tok_s)
    ids = induction.repeated_tokens(pool, 3, R, bos_id=tok_s.bos_token_id, seed=3)
    losses = induction.token_losses(model, ids)
    first, second = float(losses[:, :R].mean()), float(losses[:, R + 1:].mean())
    assert second < 3.0 < first, (first, second)
    prefix = induction.prefix_matching_scores(induction.attention_maps(model, ids), R)  # (30, 9)
    assert prefix.shape == (30, 9) and float(prefix.max()) > MIN_BEST_PREFIX_MATCHING
    n_head = prefix.shape[1]
    top = [divmod(i, n_head) for i in prefix.flatten().argsort(descending=True)[:5].tolist()]
    with induction.ablate_heads(model, top):
        ablated = float(induction.token_losses(model, ids)[:, R + 1:].mean())
    assert ablated - second > MIN_LOSS_DROP, (second, ablated)
    assert torch.equal(induction.token_losses(model, ids), losses)  # whole again afterwards


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
