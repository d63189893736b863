"""Chapter 4's mean-ablation checker: the page's solution (an ``o_proj`` pre-hook) and the checker's
reference (head outputs rebuilt from the attention probabilities, corrected after ``o_proj``) agree,
so each checks the other; the zero-ablation variant is the chapter's own ``induction.ablate_heads``;
each known mistake is recognised with its message, and broken submissions fail cleanly. (That every
checker's reference passes and its mistakes get their hints under the grader too is
``tests/test_checker_registry.py``'s and ``tests/test_grading.py``'s job.)"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from course_utils.exercises import ch04_sampling as ch04
from course_utils.exercises import check
from course_utils.exercises.core import STRICT_ENV


@pytest.fixture(autouse=True)
def _lenient(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(STRICT_ENV, raising=False)  # a failed check must return, not raise


def student_mean_ablated(model, ids, heads, reference_ids):
    """A student's solution by the page's route (pre-hooks on o_proj, removed afterwards)."""
    hd = model.config.head_dim
    layers = model.model.layers
    by_layer: dict[int, set[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, set()).add(head)
    means = {}

    def record(layer):
        def hook(module, args):
            means[layer] = args[0].mean(dim=(0, 1))
        return hook

    def replace(layer):
        def hook(module, args):
            x = args[0].clone()
            for h in by_layer[layer]:
                x[..., h * hd:(h + 1) * hd] = means[layer][h * hd:(h + 1) * hd]
            return (x,)
        return hook

    logits = None
    for make_hook, batch in ((record, reference_ids), (replace, ids)):
        handles = [layers[layer].self_attn.o_proj.register_forward_pre_hook(make_hook(layer))
                   for layer in by_layer]
        try:
            with torch.no_grad():
                logits = model(batch).logits
        finally:
            for handle in handles:
                handle.remove()
    return logits


def _spec(**kw: int) -> dict[str, int]:
    return {"layers": 2, "hidden": 32, "heads": 4, "kv_heads": 2, "head_dim": 16, "vocab": 40, "seed": 0, **kw}


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


def _page_solution() -> Any:
    import nbformat

    page = Path(__file__).resolve().parents[1] / "chapters" / "04_exercises.ipynb"
    cells = [c for c in nbformat.read(page, as_version=4).cells
             if "solution" in c.metadata.get("tags", []) and "def mean_ablated_logits" in c.source]
    assert len(cells) == 1
    namespace: dict[str, Any] = {"torch": torch}
    exec(compile(cells[0].source, str(page), "exec"), namespace)
    return namespace["mean_ablated_logits"]


@pytest.mark.parametrize("solution", ["page", "student"])
def test_a_right_solution_passes(solution: str):
    fn = _page_solution() if solution == "page" else student_mean_ablated
    result = check.mean_ablated_logits(fn)
    assert result.passed, result.message
    assert "4 cases" in result.message


@pytest.mark.parametrize("spec", [
    _spec(),
    _spec(layers=3, hidden=48, heads=6, kv_heads=3, head_dim=8, seed=1),
    _spec(hidden=24, heads=4, kv_heads=1, head_dim=12, seed=2),
    _spec(heads=4, kv_heads=4, head_dim=8, seed=3),                      # plain multi-head attention
], ids=["gqa-hd16", "3-layers-groups-of-2", "mqa", "mha"])
def test_the_two_routes_agree_and_leave_the_model_as_it_was(spec: dict[str, int]):
    torch.manual_seed(spec["seed"])
    model = ch04._tiny_llama(spec)
    ids, reference_ids = torch.randint(0, 40, (2, 6)), torch.randint(0, 40, (3, 11))
    with torch.no_grad():
        plain = model(ids).logits
    heads = [(0, 1), (spec["layers"] - 1, 0), (spec["layers"] - 1, spec["heads"] - 1), (0, 1)]  # one twice
    want = ch04.mean_ablated_logits_reference(model, ids, heads, reference_ids)
    got = student_mean_ablated(model, ids, heads, reference_ids)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert (want - plain).abs().max() > 0.1  # the ablation does something the tolerance can see
    assert _hooks(model) == 0
    with torch.no_grad():
        assert torch.equal(model(ids).logits, plain)


def test_the_mean_of_a_head_replaces_it_exactly():
    """Ablating with reference_ids = ids, one sequence of one token: the head's mean over the
    reference *is* its output there, so nothing changes."""
    model = ch04._tiny_llama(_spec(seed=5))
    ids = torch.tensor([[7]])
    with torch.no_grad():
        plain = model(ids).logits
    out = ch04.mean_ablated_logits_reference(model, ids, [(0, 0), (1, 3)], ids)
    torch.testing.assert_close(out, plain, atol=1e-5, rtol=1e-5)


def test_zero_ablation_is_the_chapters_ablate_heads():
    from course_utils import induction

    model = ch04._tiny_llama(_spec(seed=7))
    ids, reference_ids = torch.randint(0, 40, (2, 6)), torch.randint(0, 40, (2, 6))
    heads = [(0, 2), (1, 1)]
    with induction.ablate_heads(model, heads), torch.no_grad():
        zeroed = model(ids).logits
    torch.testing.assert_close(ch04._mean_ablated(model, ids, heads, reference_ids, mean="zero"), zeroed)
    assert not torch.allclose(ch04.mean_ablated_logits_reference(model, ids, heads, reference_ids), zeroed)


@pytest.mark.parametrize("index, words", [
    (0, "zero ablation"), (1, "dim=(0, 1)"), (2, "reference_ids, not on ids"), (3, "*unablated* model"),
    (4, "*query* heads"), (5, "config.head_dim"), (6, "head-major"), (7, "remove your hooks"),
])
def test_each_mistake_is_diagnosed_with_its_message(index: int, words: str):
    mistake = ch04.mean_ablated_logits.mistakes[index]
    assert words in mistake.hint
    result = check.mean_ablated_logits(mistake.fn)
    assert not result.passed and result.stage == "value", result.message
    assert result.hint == mistake.hint, result.message
    assert "output[" not in result.message
    if index == 7:  # hooks left in place: the logits are right, the model afterwards is not
        assert "your logits are right, but the model has changed" in result.message


def test_a_weight_edited_in_place_is_caught():
    def zero_the_weights(model, ids, heads, reference_ids):  # "ablates" by editing o_proj for good
        out = student_mean_ablated(model, ids, heads, reference_ids)
        hd = model.config.head_dim
        with torch.no_grad():
            for layer, head in heads:
                model.model.layers[layer].self_attn.o_proj.weight[:, head * hd:(head + 1) * hd] = 0.0
        return out

    result = check.mean_ablated_logits(zero_the_weights)
    assert not result.passed and result.stage == "value"
    assert "the model has changed" in result.message and "weight edited in place" in result.message


@pytest.mark.parametrize("wrong, stage, words", [
    (lambda m, i, h, r: None, "type", "returned None"),
    (lambda m, i, h, r: student_mean_ablated(m, i, h, r)[:, -1], "shape", "(batch, position, vocab)"),
    (lambda m, i, h, r: m(i), "type", "expected a torch.Tensor"),
    (lambda m, i, h, r: student_mean_ablated(m, i, h, r) * float("nan"), "nan", "NaN"),
    (lambda m, i, h, r: m.model.layers[99], "exception", "IndexError"),
], ids=["none", "last-position-only", "model-output-object", "nan", "raises"])
def test_garbage_fails_cleanly(wrong: Any, stage: str, words: str):
    result = check.mean_ablated_logits(wrong)
    assert not result.passed and result.stage == stage, result.message
    assert words in result.message, result.message
    assert "output[" not in result.message
