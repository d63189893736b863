"""Chapter 7's from-scratch encoder–decoder (the chapter's own cells) against transformers' BART:
one decoder layer against ``BartDecoderLayer``, one encoder layer against ``BartEncoderLayer``, and
the whole model against ``BartForConditionalGeneration`` (random weights from configs), max |diff| <= 1e-5."""
from __future__ import annotations

import pytest
import torch
from _ch07_cells import chapter_namespace
from transformers import BartConfig, BartForConditionalGeneration
from transformers.models.bart.modeling_bart import BartDecoderLayer, BartEncoderLayer, shift_tokens_right

from course_utils.attention import causal_mask, padding_mask
from course_utils.families import published_config, random_init

TOL = 1e-5


@pytest.fixture(scope="module")
def ch():
    return chapter_namespace("ch07-encdec-layers", "ch07-encdec-model")


def _small_config(**kw) -> BartConfig:
    cfg = BartConfig(vocab_size=300, d_model=48, encoder_layers=2, decoder_layers=3, encoder_attention_heads=4,
                     decoder_attention_heads=4, encoder_ffn_dim=96, decoder_ffn_dim=96, max_position_embeddings=40,
                     **kw)
    cfg._attn_implementation = "eager"
    return cfg


def _additive(mask: torch.Tensor) -> torch.Tensor:
    return torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)


@pytest.mark.parametrize("T,S", [(1, 5), (6, 9), (11, 3)])
def test_decoder_layer_equals_bart(ch, T, S):
    cfg = _small_config()
    torch.manual_seed(T)
    lib = BartDecoderLayer(cfg, layer_idx=0).eval()
    for p in lib.parameters():  # not the library's init: LayerNorm gains and biases away from 1 and 0 too
        torch.nn.init.normal_(p, std=0.3)
    ours = ch["DecoderLayer"](48, 4, 96).eval()
    ours.load_state_dict(lib.state_dict())
    x, memory = torch.randn(3, T, 48), torch.randn(3, S, 48)
    src_mask = torch.ones(3, S, dtype=torch.long)
    src_mask[1, S // 2 + 1:] = 0
    with torch.no_grad():
        ref = lib(x, attention_mask=_additive(causal_mask(T))[None, None], encoder_hidden_states=memory,
                  encoder_attention_mask=_additive(src_mask.bool()[:, None, None, :].expand(3, 1, T, S)))
        ref = ref[0] if isinstance(ref, tuple) else ref
        got, self_w, cross_w = ours(x, memory, causal_mask(T), padding_mask(src_mask))
    assert (got - ref).abs().max().item() <= TOL
    assert self_w.shape == (3, 4, T, T) and cross_w.shape == (3, 4, T, S)
    assert cross_w[1, :, :, S // 2 + 1:].abs().max().item() == 0.0  # padding gets no weight
    torch.testing.assert_close(cross_w.sum(-1), torch.ones(3, 4, T))


def test_encoder_layer_equals_bart(ch):
    cfg = _small_config()
    torch.manual_seed(0)
    lib = BartEncoderLayer(cfg, layer_idx=0).eval()
    for p in lib.parameters():
        torch.nn.init.normal_(p, std=0.3)
    ours = ch["EncoderLayer"](48, 4, 96).eval()
    ours.load_state_dict(lib.state_dict())
    x = torch.randn(2, 7, 48)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    with torch.no_grad():
        ref = lib(x, _additive(mask.bool()[:, None, None, :].expand(2, 1, 7, 7)))
        ref = ref[0] if isinstance(ref, tuple) else ref
        got, _ = ours(x, padding_mask(mask))
    assert (got - ref).abs().max().item() <= TOL


def _compare_models(ch, cfg, src_ids, src_mask, labels):
    lib = random_init(BartForConditionalGeneration, cfg, seed=1, std=0.1)
    lib.set_attn_implementation("eager")
    ours = ch["EncoderDecoder"](ch["Seq2SeqConfig"].from_hf(cfg)).eval()
    ours.load_state_dict(dict(lib.model.state_dict(), final_logits_bias=lib.final_logits_bias))
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in lib.parameters())
    dec = shift_tokens_right(labels, cfg.pad_token_id, cfg.decoder_start_token_id)
    with torch.no_grad():
        ref = lib(input_ids=src_ids, attention_mask=src_mask, decoder_input_ids=dec, output_attentions=True)
        out = ours(src_ids, dec, src_mask)
    assert (out.encoder_last_hidden_state - ref.encoder_last_hidden_state).abs().max().item() <= TOL
    assert len(out.cross_attentions) == cfg.decoder_layers
    for a, b in zip(out.cross_attentions, ref.cross_attentions):
        assert (a - b).abs().max().item() <= TOL
    assert (out.logits - ref.logits).abs().max().item() <= TOL
    return ours, out


def test_small_encoder_decoder_equals_bart(ch):
    cfg = _small_config()
    g = torch.Generator().manual_seed(0)
    src = torch.randint(3, 300, (3, 10), generator=g)
    src[2, 6:] = 1
    labels = torch.randint(3, 300, (3, 8), generator=g)
    _compare_models(ch, cfg, src, (src != 1).long(), labels)


def test_bart_base_architecture_equals_bart():
    """The chapter's offline check: BART-base's published configuration, random weights."""
    ch = chapter_namespace("ch07-encdec-layers", "ch07-encdec-model")
    cfg = published_config("facebook/bart-base")
    g = torch.Generator().manual_seed(0)
    src = torch.randint(3, cfg.vocab_size, (2, 12), generator=g)
    src[1, 8:] = 1
    labels = torch.randint(3, cfg.vocab_size, (2, 6), generator=g)
    ours, _ = _compare_models(ch, cfg, src, (src != 1).long(), labels)
    assert sum(p.numel() for p in ours.parameters()) == 139_420_416


def test_config_guard(ch):
    with pytest.raises(AssertionError, match="BART-base/large"):
        ch["Seq2SeqConfig"].from_hf(_small_config(scale_embedding=True))
