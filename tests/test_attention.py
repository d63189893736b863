"""course_utils.attention: the pieces of Chapter 2, and the from-scratch encoder against real weights."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from course_utils import assets
from course_utils.attention import (
    Encoder,
    EncoderConfig,
    EncoderLayer,
    FeedForward,
    MultiHeadAttention,
    bert_name,
    causal_mask,
    encoder_from_bert,
    load_bert_weights,
    merge_heads,
    padding_mask,
    scaled_dot_product_attention,
    split_heads,
)

SENTENCES = [
    "time flies like an arrow",
    "fruit flies like a banana",
    "The quick brown fox jumps over the lazy dog near the riverbank.",
    "Attention is all you need?",
    "A [MASK] sat on the mat, and nobody knew why.",
]


@pytest.fixture(scope="module")
def minilm():
    """The real pretrained encoder and bert-base-uncased tokenizer, loaded offline once."""
    model = assets.load_pretrained(assets.MINILM, attn_implementation="eager").eval()  # offline: conftest
    tok = assets.load_tokenizer("bert-base-uncased")
    assert model.course_asset.pretrained and model.config.num_hidden_layers == 6
    return model, tok


# --- the small pieces -------------------------------------------------------------------

def test_causal_mask_square_and_with_cache():
    assert causal_mask(3).tolist() == [[True, False, False], [True, True, False], [True, True, True]]
    m = causal_mask(2, 4)  # two new queries after two cached positions
    assert m.tolist() == [[True, True, True, False], [True, True, True, True]]


def test_sdpa_matches_torch_and_masks():
    g = torch.Generator().manual_seed(0)
    q, k, v = torch.randn(3, 2, 4, 5, 8, generator=g).unbind(0)  # (B, nh, T, hs)
    out, w = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 4, 5))
    mask = causal_mask(5)
    out, w = scaled_dot_product_attention(q, k, v, mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True))
    assert (w[..., ~mask] == 0).all()


def test_sdpa_scale_is_one_over_sqrt_head_size():
    q = torch.zeros(1, 1, 4)
    q[0, 0, 0] = 1.0
    k = torch.zeros(1, 2, 4)
    k[0, 0, 0] = math.log(3) * 2.0  # score = log(3) * 2 / sqrt(4) = log(3)
    _, w = scaled_dot_product_attention(q, k, torch.zeros(1, 2, 4))
    torch.testing.assert_close(w[0, 0], torch.tensor([0.75, 0.25]))


def test_fully_masked_row_gives_zeros_not_nan():
    q, k, v = torch.randn(3, 1, 3, 4).unbind(0)
    mask = torch.tensor([[False, False, False], [True, False, False], [True, True, False]])
    out, w = scaled_dot_product_attention(q, k, v, mask)
    assert not out.isnan().any() and not w.isnan().any()
    assert (out[:, 0] == 0).all() and (w[:, 0] == 0).all()  # query 0 may see nothing
    torch.testing.assert_close(w[:, 1:].sum(-1), torch.ones(1, 2))


def test_split_merge_heads():
    x = torch.arange(2 * 3 * 12, dtype=torch.float32).view(2, 3, 12)  # (B, T, C)
    h = split_heads(x, 4)
    assert h.shape == (2, 4, 3, 3)  # (B, nh, T, hs)
    torch.testing.assert_close(h[1, 2, 0], x[1, 0, 6:9])  # head 2 owns channels 6..8
    torch.testing.assert_close(merge_heads(h), x)
    with pytest.raises(ValueError, match="cannot be split"):
        split_heads(x, 5)


def test_padding_mask_shape_and_error():
    m = padding_mask(torch.tensor([[1, 1, 0]]))
    assert m.shape == (1, 1, 1, 3) and m.dtype == torch.bool and m.tolist() == [[[[True, True, False]]]]
    with pytest.raises(ValueError, match=r"\(B, S\)"):
        padding_mask(torch.ones(3))


def test_multi_head_attention_equals_torch_multihead_attention():
    torch.manual_seed(0)
    C, nh = 16, 4
    ours = MultiHeadAttention(C, nh).eval()
    ref = torch.nn.MultiheadAttention(C, nh, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.query.weight, ours.key.weight, ours.value.weight]))
        ref.in_proj_bias.copy_(torch.cat([ours.query.bias, ours.key.bias, ours.value.bias]))
        ref.out_proj.weight.copy_(ours.dense.weight)
        ref.out_proj.bias.copy_(ours.dense.bias)
    x = torch.randn(2, 5, C)
    out, w = ours(x)
    ref_out, ref_w = ref(x, x, x, average_attn_weights=False)
    torch.testing.assert_close(out, ref_out)
    torch.testing.assert_close(w, ref_w)
    # causal: torch's attn_mask is True where attention is *not* allowed
    out, w = ours(x, causal_mask(5))
    ref_out, ref_w = ref(x, x, x, attn_mask=~causal_mask(5), average_attn_weights=False)
    torch.testing.assert_close(out, ref_out)
    # cross-attention: 3 queries over a 7-token context
    out, w = ours(x[:, :3], context=torch.randn(2, 7, C))
    assert out.shape == (2, 3, C) and w.shape == (2, nh, 3, 7)


def test_feed_forward_is_exact_gelu_mlp():
    torch.manual_seed(0)
    ff = FeedForward(8, 32)
    x = torch.randn(2, 3, 8)
    expected = ff.output(0.5 * ff.intermediate(x) * (1 + torch.erf(ff.intermediate(x) / math.sqrt(2))))
    torch.testing.assert_close(ff(x), expected)


def test_post_ln_and_pre_ln_layers():
    torch.manual_seed(0)
    post = EncoderLayer(16, 4, 64, dropout=0.0, layer_norm_eps=1e-5).eval()
    pre = EncoderLayer(16, 4, 64, dropout=0.0, layer_norm_eps=1e-5, pre_ln=True).eval()
    pre.load_state_dict(post.state_dict())
    x = torch.randn(2, 5, 16) * 3 + 1
    y_post, _ = post(x)
    y_pre, _ = pre(x)
    # post-LN ends in a LayerNorm (default affine params): every position has mean 0, std 1
    torch.testing.assert_close(y_post.mean(-1), torch.zeros(2, 5), atol=1e-5, rtol=0)
    # pre-LN keeps the residual stream: the output is x plus the two sub-layers' updates
    a, _ = pre.attention(pre.attention_norm(x))
    h = x + a
    torch.testing.assert_close(y_pre, h + pre.ffn(pre.output_norm(h)))
    assert not torch.allclose(y_pre, y_post)


def test_encoder_shapes_and_final_norm():
    cfg = EncoderConfig(vocab_size=50, max_positions=16, d_model=32, n_heads=4, n_layers=2, d_ff=64)
    enc = Encoder(cfg).eval()
    out = enc(torch.randint(0, 50, (3, 7)))
    assert out.last_hidden_state.shape == (3, 7, 32)
    assert len(out.hidden_states) == 3 and len(out.attentions) == 2
    assert out.attentions[0].shape == (3, 4, 7, 7)
    assert enc.final_norm is None
    pre = Encoder(EncoderConfig(**{**cfg.__dict__, "pre_ln": True}))
    assert pre.final_norm is not None
    with pytest.raises(ValueError, match="post-LN"):
        load_bert_weights(pre, enc.state_dict())
    with pytest.raises(ValueError, match="exceed"):
        enc(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        enc(torch.zeros(7, dtype=torch.long))


def test_bert_names():
    assert bert_name("layers.3.attention.query.weight") == "encoder.layer.3.attention.self.query.weight"
    assert bert_name("layers.0.output_norm.bias") == "encoder.layer.0.output.LayerNorm.bias"
    assert bert_name("embeddings_norm.weight") == "embeddings.LayerNorm.weight"
    with pytest.raises(KeyError):
        bert_name("final_norm.weight")


# --- against the real pretrained encoder ------------------------------------------------

def test_token_ids_of_the_seed_sentence(minilm):
    _, tok = minilm
    assert tok("time flies like an arrow")["input_ids"] == [101, 2051, 10029, 2066, 2019, 8612, 102]


def test_parameter_count_is_bert_model_minus_pooler(minilm):
    model, _ = minilm
    enc = encoder_from_bert(model)
    n_ours = sum(p.numel() for p in enc.parameters())
    n_pooler = sum(p.numel() for p in model.pooler.parameters())
    assert n_ours == sum(p.numel() for p in model.parameters()) - n_pooler == 22_565_376


@pytest.mark.parametrize("sentence", SENTENCES)
def test_from_scratch_encoder_reproduces_bert_per_layer(minilm, sentence):
    model, tok = minilm
    enc = encoder_from_bert(model)
    batch = tok(sentence, return_tensors="pt")
    with torch.no_grad():
        ref = model(**batch, output_hidden_states=True, output_attentions=True)
        ours = enc(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    assert len(ours.hidden_states) == len(ref.hidden_states) == 7
    for layer, (a, b) in enumerate(zip(ours.hidden_states, ref.hidden_states)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=lambda m, layer=layer: f"hidden state {layer}: {m}")
    for layer, (a, b) in enumerate(zip(ours.attentions, ref.attentions)):
        assert a.shape == b.shape == (1, 12, batch["input_ids"].shape[1], batch["input_ids"].shape[1])
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=lambda m, layer=layer: f"attention {layer}: {m}")
    torch.testing.assert_close(ours.last_hidden_state, ref.last_hidden_state, atol=1e-5, rtol=0)


def test_padded_batch_and_sentence_pair(minilm):
    model, tok = minilm
    enc = encoder_from_bert(model)
    batch = tok(SENTENCES[:3], ["and so on"] * 3, padding=True, return_tensors="pt")
    assert batch["attention_mask"].eq(0).any() and batch["token_type_ids"].eq(1).any()
    with torch.no_grad():
        ref = model(**batch, output_hidden_states=True, output_attentions=True)
        ours = enc(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    real = batch["attention_mask"].bool()  # padded positions' states are never used
    for a, b in zip(ours.hidden_states, ref.hidden_states):
        torch.testing.assert_close(a[real], b[real])  # float32 defaults: atol 1e-5, rtol 1.3e-6
    for a, b in zip(ours.attentions, ref.attentions):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        assert (a[..., ~real[0]][0] == 0).all()  # no weight on padding


def test_load_errors_name_the_problem(minilm):
    model, _ = minilm
    enc = Encoder(EncoderConfig.from_hf(model.config))
    state = dict(model.state_dict())
    state.pop("encoder.layer.2.attention.self.key.weight")
    with pytest.raises(KeyError, match="encoder.layer.2.attention.self.key.weight"):
        load_bert_weights(enc, state)
    small = Encoder(EncoderConfig(d_model=32, n_heads=4, n_layers=1, d_ff=64))
    with pytest.raises(ValueError, match="shape"):
        load_bert_weights(small, model)
    # a task model's "bert." prefix is accepted
    prefixed = {"bert." + k: v for k, v in model.state_dict().items()}
    load_bert_weights(enc, prefixed)
    torch.testing.assert_close(enc.layers[5].ffn.output.weight, model.encoder.layer[5].output.dense.weight)
