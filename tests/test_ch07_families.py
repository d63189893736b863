"""The model-family table: counts equal numel() of meta-device models built here independently,
known exact counts of the released checkpoints, and agreement with the papers' rounded counts."""
from __future__ import annotations

import pytest
import torch
import transformers
from transformers import CONFIG_MAPPING

from course_utils import families
from course_utils.runtime import is_online

#: Exact counts the released checkpoints are known by (model cards and ``num_parameters()``).
KNOWN = {"bert-base-uncased": 109_482_240, "distilbert-base-uncased": 66_362_880, "roberta-base": 124_645_632,
         "albert-base-v2": 11_683_584, "t5-base": 222_903_552, "facebook/bart-base": 139_420_416,
         "gpt2": 124_439_808, "bigscience/bloom-560m": 559_214_592, "tiiuae/falcon-7b": 6_921_720_704,
         "meta-llama/Meta-Llama-3-8B": 8_030_261_248, "mistralai/Mistral-7B-v0.1": 7_241_732_096,
         "mistralai/Mixtral-8x7B-v0.1": 46_702_792_704, "HuggingFaceTB/SmolLM2-135M": 134_515_008,
         "meta-llama/Llama-3.2-1B": 1_235_814_400, "Qwen/Qwen2.5-0.5B": 494_032_768, "Qwen/Qwen3-0.6B": 596_049_920}


@pytest.fixture(scope="module")
def table():
    return families.family_table()


def test_table_counts_equal_numel_of_meta_models(table):
    assert len(table) == len(families.FAMILIES) >= 11
    for f in families.FAMILIES:
        config = CONFIG_MAPPING[f.model_type](**f.values)            # built here, not by the module
        with torch.device("meta"):
            model = getattr(transformers, f.model_class)(config)
        assert all(p.device.type == "meta" for p in model.parameters())
        assert table.loc[f.label, "parameters"] == sum(p.numel() for p in model.parameters()), f.label


@pytest.mark.parametrize("name,count", sorted(KNOWN.items()))
def test_known_exact_counts(table, name, count):
    assert table.loc[families.family(name).label, "parameters"] == count


def test_papers_agree_except_gpt2(table):
    ratios = table["exact / paper"].dropna()
    assert len(ratios) >= 12
    off = ratios.drop("GPT-2 small")
    assert ((off - 1).abs() < 0.03).all(), off[(off - 1).abs() >= 0.03]
    assert ratios["GPT-2 small"] > 1.05   # the paper's 117M was a miscount of the 124M model


def test_table_columns(table):
    assert table.loc["Llama-3-8B", "heads (q/kv)"] == "32/8"
    assert table.loc["Falcon-7B", "heads (q/kv)"] == "71/1"
    assert table.loc["T5-base", "layers"] == "12 + 12"
    assert "next-sentence" in table.loc["BERT-base", "objective"]
    assert "NSP dropped" in table.loc["RoBERTa-base", "objective"]
    assert table.loc["GPT-3 (175B)", "parameters"] > 174e9
    assert set(table["kind"]) == {"encoder", "decoder", "encoder–decoder"}


def test_random_init_ties_and_is_seeded():
    cfg = CONFIG_MAPPING["bart"](vocab_size=50, d_model=16, encoder_layers=1, decoder_layers=1,
                                 encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                                 decoder_ffn_dim=32, max_position_embeddings=20)
    a = families.random_init(transformers.BartForConditionalGeneration, cfg, seed=3)
    b = families.random_init(transformers.BartForConditionalGeneration, cfg, seed=3)
    assert a.lm_head.weight is a.model.shared.weight and a.model.encoder.embed_tokens.weight is a.model.shared.weight
    torch.testing.assert_close(a.model.shared.weight, b.model.shared.weight)
    assert a.model.encoder.layernorm_embedding.weight.mean().item() == pytest.approx(1.0, abs=0.05)


def test_unknown_name_is_a_clear_error():
    with pytest.raises(KeyError, match="no model 'gpt5'"):
        families.family("gpt5")


@pytest.mark.skipif(not is_online(), reason="needs the Hugging Face hub (compares the written values with config.json)")
def test_written_values_match_the_hub():
    from transformers import AutoConfig

    for f in families.FAMILIES:
        if f.gated:
            continue
        hub = AutoConfig.from_pretrained(f.name)
        for key, value in f.values.items():
            assert getattr(hub, key) == value, (f.name, key, getattr(hub, key), value)
