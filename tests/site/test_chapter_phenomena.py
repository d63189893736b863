"""What the executed chapters must *show*, asserted on the numbers they glued when the book was built.

A chapter's cells assert its prose's claims as they run; these thresholds say the same from
outside, so that a weaker model or a regression fails CI with the number that broke, even if a
chapter's own assertion were loosened. Chapter 4: a 2-layer GPT-2 trained on repeated random
sequences grows induction heads after a plateau; removing them, or the layer-0 heads their keys
read, takes its copying to near chance, while no single head is needed (issue #20).
"""
from __future__ import annotations

from typing import Any

import pytest
from test_executed_chapters import REPO, executed_notebook

CHAPTER_4 = REPO / "chapters" / "04_sampling.ipynb"
CHAPTER_9 = REPO / "chapters" / "09_finetuning.ipynb"


def glued(nb: Any) -> dict[str, str]:
    """The values a notebook glued with ``myst_nb.glue``, by name (their ``text/plain`` form)."""
    out = {}
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            book = o.get("metadata", {}).get("scrapbook")
            if book:
                out[book["name"]] = o["data"][book["mime_prefix"] + "text/plain"]
    return out


def induction_failures(v: dict[str, str]) -> list[str]:
    """Chapter 4's toy model, by its glued numbers: each claim that does not hold, in words."""
    f = {k: float(v[k]) for k in ("toy_first", "toy_second", "toy_prefix", "toy_plateau_second", "toy_phase_step",
                                  "toy_acc", "toy_single_min", "toy_acc_without_ind", "toy_acc_without_layer0")}
    checks = [
        (f["toy_phase_step"] > 0, "no head reached 0.5 prefix matching"),
        (f["toy_plateau_second"] > 4.0, "no plateau: the second copy was learnt 300 steps before the head formed"),
        (f["toy_first"] > 5.0, "the first copy (random tokens) is below the uniform loss: a bug in the test input"),
        (f["toy_second"] < 1.5, f"second copy {f['toy_second']:.2f} nats at the end (want < 1.5)"),
        (f["toy_prefix"] > 0.5, f"best prefix matching {f['toy_prefix']:.2f} at the end (want > 0.5)"),
        (f["toy_acc"] > 0.7, f"second-copy accuracy {f['toy_acc']:.2f} (want > 0.7)"),
        (f["toy_acc_without_ind"] < f["toy_acc"] / 4, "induction heads removed: over 1/4 of the accuracy left"),
        (f["toy_acc_without_layer0"] < f["toy_acc"] / 4, "layer 0 removed: over 1/4 of the accuracy left"),
        (f["toy_single_min"] > f["toy_acc"] / 2, "one head alone is needed: the prose says none is"),
    ]
    return [msg for ok, msg in checks if not ok]


@pytest.mark.browser  # needs the book built (scripts/test.sh builds it first)
def test_chapter_4_grows_an_induction_head_and_needs_it() -> None:
    values = glued(executed_notebook(CHAPTER_4))
    assert induction_failures(values) == [], values


def test_the_thresholds_catch_a_model_without_the_circuit() -> None:
    """The test of the test, on the committed chapter's numbers and on weakened copies of them."""
    import nbformat

    committed = glued(nbformat.read(CHAPTER_4, as_version=4))
    assert induction_failures(committed) == []
    no_head = {**committed, "toy_prefix": "0.08", "toy_second": "4.9", "toy_phase_step": "-1"}
    assert len(induction_failures(no_head)) == 3
    no_layer0_role = {**committed, "toy_acc_without_layer0": committed["toy_acc"]}
    assert induction_failures(no_layer0_role) == ["layer 0 removed: over 1/4 of the accuracy left"]


def finetuning_failures(v: dict[str, str]) -> list[str]:
    """Chapter 9's goals (issue #34), by its glued numbers: each one that does not hold, in words."""
    f = {k: float(v[k]) for k in ("ft_probe_acc", "ft_probe_ci", "ft_full_acc", "ft_full_ci", "ft_lora_acc",
                                  "ft_lora_share", "lora_max_abs_diff_vs_peft", "ft_n_seeds", "ft_n_test")}
    checks = [
        (f["ft_n_seeds"] >= 3 and f["ft_n_test"] >= 2000,
         f"{f['ft_n_seeds']:.0f} seeds, {f['ft_n_test']:.0f} test sentences (want >= 3 and >= 2,000)"),
        (f["ft_full_acc"] - f["ft_full_ci"] > f["ft_probe_acc"] + f["ft_probe_ci"],
         f"full fine-tuning {f['ft_full_acc']:.3f} ± {f['ft_full_ci']:.3f} does not beat the probe "
         f"{f['ft_probe_acc']:.3f} ± {f['ft_probe_ci']:.3f} outside their intervals"),
        (f["ft_lora_share"] <= 0.02, f"LoRA trains {f['ft_lora_share']:.2%} of the parameters (want <= 2 %)"),
        (abs(f["ft_lora_acc"] - f["ft_full_acc"]) <= 0.02,
         f"LoRA {f['ft_lora_acc']:.3f} is more than 2 points from full fine-tuning {f['ft_full_acc']:.3f}"),
        (f["lora_max_abs_diff_vs_peft"] <= 1e-6, f"LoRA differs from peft by {f['lora_max_abs_diff_vs_peft']:.1e}"),
        (v["lora_merged_equal"] == "True", "the merged model's logits differ"),
        (f["ft_full_acc"] > 0.6 and f["ft_probe_acc"] > 0.6, "accuracies near chance: a broken run"),
    ]
    return [msg for ok, msg in checks if not ok]


@pytest.mark.browser  # needs the book built (scripts/test.sh builds it first)
def test_chapter_9_meets_its_goals() -> None:
    values = glued(executed_notebook(CHAPTER_9))
    assert finetuning_failures(values) == [], values


def test_chapter_9_thresholds_catch_a_weaker_result() -> None:
    """The test of the test, on the committed chapter's numbers and on weakened copies of them."""
    import nbformat

    committed = glued(nbformat.read(CHAPTER_9, as_version=4))
    assert finetuning_failures(committed) == []
    close = {**committed, "ft_full_acc": committed["ft_probe_acc"]}
    assert any("does not beat the probe" in m for m in finetuning_failures(close))
    lora_behind = {**committed, "ft_lora_acc": str(float(committed["ft_full_acc"]) - 0.03)}
    assert finetuning_failures(lora_behind) == [
        f"LoRA {float(lora_behind['ft_lora_acc']):.3f} is more than 2 points from full fine-tuning "
        f"{float(committed['ft_full_acc']):.3f}"]
    assert len(finetuning_failures({**committed, "lora_max_abs_diff_vs_peft": "3e-6",
                                    "lora_merged_equal": "False"})) == 2
