"""Chapter 2's exercise checkers: each reference passes, each known mistake fails with its hint,
and the references agree with the real implementations (course_utils.attention, PyTorch,
a Hugging Face BertLayer with real pretrained weights)."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course_utils import attention as A
from course_utils.exercises import check
from course_utils.exercises import ch02_attention as ch02

CHECKERS = [ch02.sdp_attention, ch02.causal_mask, ch02.split_heads, ch02.merge_heads,
            ch02.layer_norm, ch02.bert_encoder_layer]


@pytest.mark.parametrize("checker", CHECKERS, ids=lambda c: c.name)
def test_reference_passes(checker, capsys):
    result = checker(checker.reference)
    assert result.passed, result.message
    assert capsys.readouterr().out.count("\n") == 1  # one line on a pass


@pytest.mark.parametrize("checker, mistake", [(c, m) for c in CHECKERS for m in c.mistakes],
                         ids=lambda x: getattr(x, "name", None) or x.hint[:40])
def test_each_mistake_fails_with_its_hint(checker, mistake):
    result = checker(mistake.fn)
    assert not result.passed
    assert result.hint == mistake.hint, result.message


def test_checkers_are_reachable_by_name():
    for checker in CHECKERS:
        assert getattr(check, checker.name) is checker


def test_stub_and_misuse_say_what_to_do():
    def stub(q, k, v, mask=None):
        raise NotImplementedError("Hint: scores = q @ k.transpose(-2, -1)")

    r = ch02.sdp_attention(stub)
    assert not r.passed and r.stage == "exception" and "not implemented yet" in r.message
    r = ch02.sdp_attention(torch.zeros(3))
    assert not r.passed and r.stage == "misuse"


def test_typical_student_errors_get_specific_messages():
    # only the weights returned, not (out, weights)
    r = ch02.sdp_attention(lambda q, k, v, mask=None: A.scaled_dot_product_attention(q, k, v, mask)[1])
    assert not r.passed and r.stage == "type"
    # a float causal mask
    r = ch02.causal_mask(lambda T: torch.ones(T, T).tril())
    assert not r.passed and r.stage == "dtype" and "boolean" in r.message
    # split_heads forgetting the transpose: (B, T, nh, hs)
    r = ch02.split_heads(lambda x, nh: x.view(x.size(0), x.size(1), nh, -1))
    assert not r.passed and r.stage == "shape"
    # merge with .view after transpose: non-contiguous -> the exception is reported, with the line
    r = ch02.merge_heads(lambda x: x.transpose(1, 2).view(x.size(0), x.size(2), -1))
    assert not r.passed and r.stage == "exception"
    # an infinite loop is stopped
    def forever(T):
        while True:
            pass
    r = ch02.causal_mask(forever)
    assert not r.passed and r.stage == "timeout"
    # NaN from a fully masked row, with a hint
    r = ch02.sdp_attention(lambda q, k, v, mask=None: ch02._attention(q, k, v, mask, keep_nan=True))
    assert r.stage == "nan" and "nan_to_num" in r.hint


def test_references_agree_with_the_library():
    g = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(3, 2, 4, 6, 8, generator=g).unbind(0)
    mask = A.causal_mask(6)
    for got, want in zip(ch02.sdp_attention_reference(q, k, v, mask), A.scaled_dot_product_attention(q, k, v, mask)):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(ch02.sdp_attention_reference(q, k, v, mask)[0],
                               F.scaled_dot_product_attention(q, k, v, is_causal=True))
    assert torch.equal(ch02.causal_mask_reference(5), A.causal_mask(5))
    x = torch.randn(2, 6, 12, generator=g)
    torch.testing.assert_close(ch02.split_heads_reference(x, 3), A.split_heads(x, 3))
    torch.testing.assert_close(ch02.merge_heads_reference(A.split_heads(x, 3)), x)
    w, b = torch.randn(12, generator=g), torch.randn(12, generator=g)
    torch.testing.assert_close(ch02.layer_norm_reference(x, w, b, 1e-5), F.layer_norm(x, (12,), w, b, 1e-5))


def test_encoder_layer_reference_equals_course_encoder_layer():
    torch.manual_seed(0)
    layer = A.EncoderLayer(16, 4, 32, dropout=0.0, layer_norm_eps=1e-12).eval()
    params = ch02.random_bert_layer_params()
    with torch.no_grad():
        for name, p in layer.named_parameters():
            p.copy_(params[A.bert_name("layers.0." + name).removeprefix("encoder.layer.0.")])
    x = torch.randn(2, 5, 16)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]).bool().view(2, 1, 1, 5)
    with torch.no_grad():
        torch.testing.assert_close(ch02.bert_encoder_layer_reference(x, params, 4, mask), layer(x, mask)[0])


def test_encoder_layer_reference_equals_a_real_bert_layer():
    from course_utils import assets, runtime

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COURSE_OFFLINE", "1")
        runtime.is_online.cache_clear()
        model = assets.load_pretrained(assets.MINILM, attn_implementation="eager").eval()
    runtime.is_online.cache_clear()
    torch.manual_seed(0)
    x = torch.randn(2, 7, 384)
    bert_layer = model.encoder.layer[2]
    with torch.no_grad():
        want = bert_layer(x)[0] if isinstance(bert_layer(x), tuple) else bert_layer(x)
        got = ch02.bert_encoder_layer_reference(x, bert_layer.state_dict(), 12,
                                                eps=model.config.layer_norm_eps)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_each_check_is_fast():
    # one intra-op thread: on a shared, busy machine torch's thread pool spin-waits, and the
    # wall time measures the neighbours; the inputs are tiny, so one thread is what they need.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for checker in CHECKERS:
            r = checker(checker.reference)
            assert r.seconds < 1.0, (checker.name, r.seconds)
    finally:
        torch.set_num_threads(threads)


def test_hints_do_not_fire_on_a_correct_alternative():
    # a correct but differently written solution: scale q instead of the scores, F.softmax
    def alt(q, k, v, mask=None):
        scores = (q / math.sqrt(q.shape[-1])) @ k.mT
        if mask is not None:
            scores = torch.where(mask, scores, torch.tensor(float("-inf")))
        w = F.softmax(scores, dim=-1)
        w = torch.where(torch.isnan(w), torch.zeros_like(w), w)
        return w @ v, w

    assert ch02.sdp_attention(alt).passed
    assert ch02.causal_mask(lambda T: torch.arange(T)[:, None] >= torch.arange(T)[None, :]).passed
    assert ch02.layer_norm(lambda x, w, b, eps=1e-5: F.layer_norm(x, x.shape[-1:], w, b, eps)).passed
