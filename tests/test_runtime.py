"""course_utils.runtime: world detection, device, seeds, banner."""
import time

import pytest
import torch

from course_utils import online, runtime


@pytest.fixture(autouse=True)
def fresh_detection():
    runtime.is_online.cache_clear()
    yield
    runtime.is_online.cache_clear()


def test_forced_offline_is_instant(monkeypatch):
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    t0 = time.perf_counter()
    assert runtime.is_online() is False
    assert time.perf_counter() - t0 < 0.05
    assert runtime.world() == "offline"


def test_forced_online(monkeypatch):
    monkeypatch.setenv("COURSE_OFFLINE", "0")
    assert runtime.is_online() is True


def test_detection_on_closed_network_answers_in_about_a_second(monkeypatch):
    monkeypatch.delenv("COURSE_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    # An address that never answers (TEST-NET-1) stands in for the hub, as on a closed network.
    monkeypatch.setattr(online, "_HUB_HOST", ("192.0.2.1", 443))
    t0 = time.perf_counter()
    assert runtime.is_online(timeout=1.0) is False
    assert time.perf_counter() - t0 < 1.5


def test_bad_flag_says_what_to_do(monkeypatch):
    monkeypatch.setenv("COURSE_OFFLINE", "maybe")
    with pytest.raises(ValueError, match="set it to 1"):
        runtime.is_online()


def test_device_choice(monkeypatch):
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert runtime.get_device().type == expected
    assert runtime.get_device("cpu") == torch.device("cpu")


def test_unavailable_device_is_a_clear_error(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeError, match="available: .*cpu"):
        runtime.get_device("cuda")


def test_seed_everything_is_reproducible():
    runtime.seed_everything(123)
    a = torch.randn(5)
    g = runtime.seed_everything(123)
    assert torch.equal(a, torch.randn(5))
    assert isinstance(g, torch.Generator)
    with pytest.raises(ValueError):
        runtime.seed_everything(-1)


def test_banner_names_world_device_versions_and_assets(monkeypatch, capsys):
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    text = runtime.banner(["gpt2", "facebook/bart-large-cnn", "nlptown/bert-base-multilingual-uncased-sentiment"])
    assert capsys.readouterr().out.strip() == text
    assert text.startswith("World:    offline")
    assert "torch " + torch.__version__ in text
    assert "gpt2 -> real GPT-2 BPE tokenizer" in text
    assert "facebook/bart-large-cnn -> exact architecture" in text
    assert "nlptown/bert-base-multilingual-uncased-sentiment -> not available offline" in text
