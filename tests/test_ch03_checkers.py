"""Chapter 3's checkers: the references are right (against the libraries), correct solutions
pass, and each classic mistake fails with the hint that names it."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from course_utils.exercises import check
from course_utils.exercises import ch03_gpt2 as ch03


# ----------------------------------------------------------------------------- BPE merge step

def _student_bpe(splits, counts, new_id):
    pairs = {}
    for word, n in zip(splits, counts):
        for pair in zip(word, word[1:]):
            pairs[pair] = pairs.get(pair, 0) + n
    if not pairs:
        return None, splits
    best = max(pairs, key=lambda p: (pairs[p], -p[0], -p[1]))
    out = []
    for word in splits:
        new, i = [], 0
        while i < len(word):
            if word[i:i + 2] == list(best):
                new.append(new_id)
                i += 2
            else:
                new.append(word[i])
                i += 1
        out.append(new)
    return tuple(best), out


def test_bpe_reference_passes_and_a_student_solution_passes():
    assert check.bpe_merge_step(ch03.bpe_merge_step_reference).passed
    assert check.bpe_merge_step(_student_bpe).passed


def test_bpe_reference_values():
    pair, new = ch03.bpe_merge_step_reference([[1, 2, 3], [1, 2], [2, 3, 1, 2]], [5, 2, 1], 10)
    assert pair == (1, 2)  # 5 + 2 + 1 = 8 occurrences, more than (2, 3): 5 + 1 = 6
    assert new == [[10, 3], [10], [2, 3, 10]]
    assert ch03.bpe_merge_step_reference([[3, 3, 3]], [1], 6) == ((3, 3), [[6, 3]])
    assert ch03.bpe_merge_step_reference([[1], [2]], [1, 1], 3) == (None, [[1], [2]])


@pytest.mark.parametrize("variant, words", [
    (dict(weighted=False), "add the word's count"),
    (dict(tie="first"), "seen first"),
    (dict(tie="largest"), "took the largest pair"),
    (dict(merge=ch03._merge_word_right_to_left), "left to right"),
])
def test_bpe_mistakes_are_diagnosed(variant, words):
    result = check.bpe_merge_step(lambda s, c, n: ch03._bpe_step(s, c, n, **variant))
    assert not result.passed
    assert result.hint is not None and words in result.hint, result.message


def test_bpe_checker_survives_bad_submissions():
    def loops(s, c, n):
        while True:
            pass

    assert check.bpe_merge_step(loops).stage == "timeout"
    assert check.bpe_merge_step(lambda s, c, n: None).stage == "type"
    assert check.bpe_merge_step(42).stage == "misuse"
    assert check.bpe_merge_step(lambda s, c, n: 1 / 0).stage == "exception"


def test_bpe_reference_trainer_agrees_with_tokenizers_library():
    """Looping the reference merge step reproduces the `tokenizers` ByteLevel BPE trainer."""
    import regex
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from course_utils import data

    texts = data.generate_corpus(n_words=5000)["train"]
    byte_to_char = {b: c for b, c in zip(range(256), _bytes_to_unicode())}
    pattern = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
    words: dict[str, int] = {}
    for t in texts:
        for w in pattern.findall(t):
            w = "".join(byte_to_char[b] for b in w.encode("utf-8"))
            words[w] = words.get(w, 0) + 1
    vocab = sorted(byte_to_char.values())  # ids: the byte alphabet in code-point order
    ids = {s: i for i, s in enumerate(vocab)}
    splits = [[ids[ch] for ch in w] for w in words]
    counts = list(words.values())
    merges = []
    for _ in range(120):
        new_token_id = len(vocab)
        pair, splits = ch03.bpe_merge_step_reference(splits, counts, new_token_id)
        merges.append((vocab[pair[0]], vocab[pair[1]]))
        vocab.append(vocab[pair[0]] + vocab[pair[1]])
        ids[vocab[-1]] = new_token_id
    assert len(set(vocab)) == len(vocab)  # no merge re-created an existing token on this sample

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=256 + 120, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    theirs = [tuple(m) if isinstance(m, list) else tuple(m.split(" "))
              for m in json.loads(tok.to_str())["model"]["merges"]]
    assert merges == theirs


def _bytes_to_unicode() -> list[str]:
    """GPT-2's byte -> printable character table, as a list indexed by byte."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    table, n = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    return [table[b] for b in range(256)]


def test_bytes_to_unicode_matches_the_library():
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    lib = bytes_to_unicode()
    assert _bytes_to_unicode() == [lib[b] for b in range(256)]


# ----------------------------------------------------------------------------- GPT-2 block

def _hf_block(C: int, n_head: int, sd: dict):
    from transformers import GPT2Config
    from transformers.models.gpt2.modeling_gpt2 import GPT2Block

    cfg = GPT2Config(n_embd=C, n_head=n_head, n_layer=1, n_positions=32, attn_pdrop=0.0, resid_pdrop=0.0)
    cfg._attn_implementation = "eager"
    block = GPT2Block(cfg, layer_idx=0).eval()
    missing, unexpected = block.load_state_dict(sd, strict=False)
    assert not unexpected and all(k.endswith(("attn.bias", "attn.masked_bias")) for k in missing)
    return block


@pytest.mark.parametrize("B, T, C, nh", [(2, 5, 16, 4), (1, 7, 24, 3)])
def test_block_reference_equals_transformers_gpt2block(B, T, C, nh):
    torch.manual_seed(0)
    sd = ch03.random_block_state_dict(C)
    x = torch.randn(B, T, C)
    block = _hf_block(C, nh, sd)
    # A bare GPT2Block is not causal by itself (GPT2Model builds the mask): pass it, additive.
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    mask = torch.zeros(1, 1, T, T).masked_fill(~causal, float("-inf"))
    with torch.no_grad():
        out = block(x, attention_mask=mask)
    out = out[0] if isinstance(out, tuple) else out
    torch.testing.assert_close(ch03.gpt2_block_reference(x, sd, nh), out, atol=1e-5, rtol=1e-5)


def test_block_reference_passes():
    assert check.gpt2_block(ch03.gpt2_block_reference).passed


@pytest.mark.parametrize("variant, words", [
    (dict(proj_t=True), "Conv1D weights are (in, out)"),
    (dict(gelu="none"), "tanh approximation"),
    (dict(split="view"), "split heads"),
    (dict(mask=False), "causal"),
    (dict(scale=False), "sqrt(hs)"),
    (dict(pre_ln=False), "pre-LN"),
])
def test_block_mistakes_are_diagnosed(variant, words):
    result = check.gpt2_block(lambda x, sd, nh: ch03._block(x, sd, nh, **variant))
    assert not result.passed
    assert result.hint is not None and words in result.hint, result.message


def test_block_linear_convention_gets_the_conv1d_hint():
    def as_if_linear(x, sd, n_head):  # the classic mistake: nn.Linear's (out, in) convention
        B, T, C = x.shape
        h = F.layer_norm(x, (C,), sd["ln_1.weight"], sd["ln_1.bias"])
        qkv = F.linear(h, sd["attn.c_attn.weight"], sd["attn.c_attn.bias"])
        return qkv[..., :C]

    result = check.gpt2_block(as_if_linear)
    assert result.stage == "exception"
    assert "Conv1D" in result.message and "(in, out)" in result.hint


def test_block_float64_output_is_a_dtype_problem():
    result = check.gpt2_block(lambda x, sd, nh: ch03.gpt2_block_reference(x, sd, nh).double())
    assert result.stage == "dtype"


# ----------------------------------------------------------------------------- attention + cache

def test_attention_reference_equals_course_gpt_module():
    from course_utils.gpt import CausalSelfAttention, GPTConfig

    torch.manual_seed(0)
    cfg = GPTConfig.tiny(n_embd=16, n_head=4)
    module = CausalSelfAttention(cfg).eval()
    weights = ch03.AttentionWeights(16, 4)
    weights.load_state_dict(module.state_dict())
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        y_ref, kv_ref = ch03.attention_with_cache_reference(weights, x[:, :4])
        y_mod, kv_mod = module(x[:, :4])
        torch.testing.assert_close(y_ref, y_mod)
        y_ref2, kv_ref2 = ch03.attention_with_cache_reference(weights, x[:, 4:], kv_ref)
        y_mod2, kv_mod2 = module(x[:, 4:], kv_mod)
        torch.testing.assert_close(y_ref2, y_mod2)
        torch.testing.assert_close(kv_ref2, kv_mod2)
        # and the cache changes nothing: the last two positions equal a full pass
        y_full, _ = module(x)
        torch.testing.assert_close(y_ref2, y_full[:, 4:], atol=1e-6, rtol=1e-5)


def test_attention_reference_passes():
    assert check.attention_with_cache(ch03.attention_with_cache_reference).passed


@pytest.mark.parametrize("variant, words", [
    (dict(offset=False), "diagonal=S - T"),
    (dict(concat=False), "all* positions"),
    (dict(scale=False), "sqrt(hs)"),
])
def test_attention_mistakes_are_diagnosed(variant, words):
    result = check.attention_with_cache(lambda a, x, p=None: ch03._attention(a, x, p, **variant))
    assert not result.passed
    assert result.hint is not None and words in result.hint, result.message


def test_attention_calling_the_module_is_not_a_solution():
    result = check.attention_with_cache(lambda attn, x, past_kv=None: attn(x, past_kv))
    assert result.stage == "exception" and "write the attention" in result.message


def test_attention_returning_nan_is_reported():
    def nan_out(attn, x, past_kv=None):
        y, kv = ch03.attention_with_cache_reference(attn, x, past_kv)
        return y * math.nan, kv

    assert check.attention_with_cache(nan_out).stage == "nan"
