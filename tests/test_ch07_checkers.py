"""Chapter 7's checkers: a correct answer written as a student would passes, the references are the
library's own code (or equal to it), and broken submissions get a clear message. Whether each known
mistake gets its hint, and the garbage suite, are ``tests/test_checker_registry.py``'s job."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from transformers.models.gptj.modeling_gptj import apply_rotary_pos_emb as gptj_rotary
from transformers.models.gptj.modeling_gptj import create_sinusoidal_positions
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb as llama_rotary
from transformers.models.t5.modeling_t5 import T5Attention

from course_utils.exercises import ch07_families_positions as ch07
from course_utils.exercises import check


# --------------------------------------------------------------------------- cross-attention, MHA's layout
def student_mha(x, memory, key_padding_mask, params, n_heads):
    B, T, C = x.shape
    hs = C // n_heads
    w_q, w_k, w_v = params["in_proj_weight"].chunk(3)
    b_q, b_k, b_v = params["in_proj_bias"].chunk(3)
    q = (x @ w_q.T + b_q).view(B, T, n_heads, hs).transpose(1, 2)
    k = (memory @ w_k.T + b_k).view(B, -1, n_heads, hs).transpose(1, 2)
    v = (memory @ w_v.T + b_v).view(B, -1, n_heads, hs).transpose(1, 2)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
    scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    weights = scores.softmax(-1)
    out = (weights @ v).transpose(1, 2).reshape(B, T, C) @ params["out_proj.weight"].T + params["out_proj.bias"]
    return out, weights.mean(1)


def test_mha_cross_attention_right_answer_passes_and_padding_gets_no_weight():
    assert check.mha_cross_attention(student_mha).passed
    case = ch07.mha_cross_attention.make_cases()[0]
    _, weights = ch07.mha_cross_attention_reference(*case.args)
    assert weights.masked_select(case.args[2][:, None, :].expand_as(weights)).abs().max() == 0


def test_mha_cross_attention_broken_submissions():
    assert check.mha_cross_attention(lambda *a: student_mha(*a)[0]).stage in {"type", "shape"}
    r = check.mha_cross_attention(lambda *a: 1 / 0)
    assert r.stage == "exception" and "ZeroDivisionError" in r.message


# --------------------------------------------------------------------------- a decoder layer's step
def student_step(x_t, memory, src_mask, params, n_heads, cache=None):
    def lin(t, name):
        return F.linear(t, params[name + ".weight"], params[name + ".bias"])

    def heads(t):
        B, T, C = t.shape
        return t.view(B, T, n_heads, C // n_heads).transpose(1, 2)

    def attend(q, k, v, mask=None):
        s = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf"))
        out = s.softmax(-1) @ v
        return out.transpose(1, 2).reshape(x_t.size(0), q.size(2), -1)

    def ln(t, name):
        return F.layer_norm(t, t.shape[-1:], params[name + ".weight"], params[name + ".bias"])

    if cache is None:
        cache = {"self_k": None, "self_v": None,
                 "cross_k": heads(lin(memory, "encoder_attn.k_proj")),
                 "cross_v": heads(lin(memory, "encoder_attn.v_proj"))}
    k, v = heads(lin(x_t, "self_attn.k_proj")), heads(lin(x_t, "self_attn.v_proj"))
    if cache["self_k"] is not None:
        k, v = torch.cat([cache["self_k"], k], 2), torch.cat([cache["self_v"], v], 2)
    cache = {**cache, "self_k": k, "self_v": v}
    h = ln(x_t + lin(attend(heads(lin(x_t, "self_attn.q_proj")), k, v), "self_attn.out_proj"),
           "self_attn_layer_norm")
    c = attend(heads(lin(h, "encoder_attn.q_proj")), cache["cross_k"], cache["cross_v"],
               src_mask.bool()[:, None, None, :])
    h = ln(h + lin(c, "encoder_attn.out_proj"), "encoder_attn_layer_norm")
    return ln(h + lin(F.gelu(lin(h, "fc1")), "fc2"), "final_layer_norm"), cache


def test_decoder_layer_step_right_answer_passes():
    assert check.decoder_layer_step(student_step).passed


def test_decoder_layer_step_variant_unswitched_is_the_library():
    checker = ch07.decoder_layer_step
    for case in checker.make_cases(seed=5):
        ours = ch07._step_call(ch07._step_variant, case)
        library = ch07._step_call(ch07.decoder_layer_step_reference, case)
        for a, b in zip(ours, library):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_decoder_layer_step_recompute_without_a_cache_fails_on_the_cache():
    def recompute(x_t, memory, src_mask, params, n_heads, cache=None):
        y, new = ch07.decoder_layer_step_reference(x_t, memory, src_mask, params, n_heads, cache)
        return y, {"_inputs": new["_inputs"]}                       # right outputs, no keys and values kept

    r = check.decoder_layer_step(recompute)
    assert not r.passed and r.stage == "type", r.message
    assert check.decoder_layer_step(lambda *a: a[0]).stage in {"type", "shape"}


# --------------------------------------------------------------------------- RoPE: Meta's layout to the library's
def test_rope_permute_makes_interleaved_rope_equal_to_the_libraries_half_split_rope():
    torch.manual_seed(0)
    n_heads, hs, C, T = 3, 8, 12, 7
    w_q, w_k, x = torch.randn(n_heads * hs, C), torch.randn(n_heads * hs, C), torch.randn(1, T, C)
    position_ids = torch.arange(T)[None]

    def heads(t):
        return t.view(1, T, n_heads, hs)                              # GPT-J's layout: (B, T, nh, hs)

    table = create_sinusoidal_positions(T, hs)[position_ids]          # (1, T, hs): sin | cos
    sin, cos = torch.split(table, hs // 2, dim=-1)                    # apply_rotary_pos_emb interleaves them
    q_meta = gptj_rotary(heads(x @ w_q.T), sin, cos).transpose(1, 2)  # interleaved pairs (2i, 2i + 1)
    k_meta = gptj_rotary(heads(x @ w_k.T), sin, cos).transpose(1, 2)
    inv_freq = 1.0 / 10000 ** (torch.arange(0, hs, 2).float() / hs)
    angle = torch.cat([position_ids[..., None] * inv_freq] * 2, dim=-1)           # (1, T, hs)
    q_hf, k_hf = llama_rotary(heads(x @ ch07.rope_permute_reference(w_q, n_heads).T).transpose(1, 2),
                              heads(x @ ch07.rope_permute_reference(w_k, n_heads).T).transpose(1, 2),
                              angle.cos(), angle.sin())
    torch.testing.assert_close(q_hf @ k_hf.transpose(-2, -1), q_meta @ k_meta.transpose(-2, -1),
                               atol=1e-5, rtol=1e-5)
    unpermuted = llama_rotary(heads(x @ w_q.T).transpose(1, 2), heads(x @ w_k.T).transpose(1, 2),
                              angle.cos(), angle.sin())
    assert not torch.allclose(unpermuted[0] @ unpermuted[1].transpose(-2, -1), q_meta @ k_meta.transpose(-2, -1))


def test_rope_permute_right_answer_passes():
    def student(w, n_heads):
        hs = w.size(0) // n_heads
        order = [h * hs + r for h in range(n_heads) for r in list(range(0, hs, 2)) + list(range(1, hs, 2))]
        return w[order]

    assert check.rope_permute(student).passed


# --------------------------------------------------------------------------- T5's position bias
def student_position_bias(bias_table, query_length, key_length, bidirectional=True, max_distance=128):
    q_pos = torch.arange(key_length - query_length, key_length)[:, None]
    k_pos = torch.arange(key_length)[None, :]
    buckets = T5Attention._relative_position_bucket(k_pos - q_pos, bidirectional, bias_table.size(0), max_distance)
    return bias_table[buckets].permute(2, 0, 1)[None]


def test_position_bias_right_answer_passes():
    assert check.t5_position_bias(student_position_bias).passed


def test_position_bias_wrong_layout_is_a_shape_error():
    def permuted(table, T, S, *a, **k):
        return student_position_bias(table, T, S, *a, **k)[0].permute(1, 2, 0)

    r = check.t5_position_bias(permuted)
    assert r.stage == "shape"
