"""check.gpt2_parameter_count: the reference equals the real model; each mistake gets its hint."""
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from course_utils.exercises import ch01_architectures as ch01


@pytest.mark.parametrize("L, C, V, P", [(12, 768, 50257, 1024), (24, 1024, 50257, 1024), (2, 8, 11, 5), (0, 4, 7, 3)])
def test_reference_equals_the_library_model(L, C, V, P):
    with torch.device("meta"):
        model = GPT2LMHeadModel(GPT2Config(n_layer=L, n_embd=C, vocab_size=V, n_positions=P, n_head=1 if C < 12 else 4))
    assert ch01.gpt2_parameter_count_reference(L, C, V, P) == sum(p.numel() for p in model.parameters())


def test_reference_passes():
    assert ch01.gpt2_parameter_count(ch01.gpt2_parameter_count_reference).passed


@pytest.mark.parametrize("mistake", ch01.gpt2_parameter_count.mistakes, ids=lambda m: m.fn.__name__)
def test_each_mistake_fails_with_its_hint(mistake):
    result = ch01.gpt2_parameter_count(mistake.fn)
    assert not result.passed and result.hint == mistake.hint


def test_bad_student_code_is_reported_not_raised():
    assert "forget the `return`" in ch01.gpt2_parameter_count(lambda *a: None).message
    result = ch01.gpt2_parameter_count(lambda *a: 1 / 0)
    assert not result.passed and result.stage == "exception"
