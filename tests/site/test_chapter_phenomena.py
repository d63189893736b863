"""What the executed chapters must *show*, asserted on the numbers they glued when the book was built.

A chapter's cells assert its prose's claims as they run; these thresholds say the same from
outside, so that a weaker model or a regression fails CI with the number that broke, even if a
chapter's own assertion were loosened. Chapter 4, on the real pretrained SmolLM2-135M-Instruct:
few-shot accuracy rises from (near) zero to the goal with four examples, the second copy of a
repeated sequence is predicted, and switching off the best induction heads costs more than
switching off random heads.
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


def real_model_failures(v: dict[str, str]) -> list[str]:
    """Chapter 4 on SmolLM2-135M-Instruct, by its glued numbers: each goal not met, in words."""
    f = {k: float(v[k]) for k in ("fewshot_real_0shot", "fewshot_real_4shot", "fewshot_real_4shot_low",
                                  "fewshot_real_0shot_high", "induction_real_second_copy_loss",
                                  "induction_ablation_drop", "induction_ablation_drop_ci",
                                  "icl_ablation_drop", "icl_ablation_drop_ci")}
    checks = [
        (f["fewshot_real_0shot"] <= 0.10, f"0-shot accuracy {f['fewshot_real_0shot']:.2f}: the query alone "
                                          "reveals the task (want <= 0.10)"),
        (f["fewshot_real_4shot"] >= 0.60, f"4-shot accuracy {f['fewshot_real_4shot']:.2f} (want >= 0.60)"),
        (f["fewshot_real_4shot_low"] > f["fewshot_real_0shot_high"], "4 shots not above 0 shots outside the intervals"),
        (f["induction_real_second_copy_loss"] <= 3.0,
         f"second copy {f['induction_real_second_copy_loss']:.2f} nats (want <= 3.0)"),
        (f["induction_ablation_drop"] - f["induction_ablation_drop_ci"] > 0,
         "ablating the induction heads does not raise the second-copy loss more than random heads (outside the noise)"),
        (f["icl_ablation_drop"] - f["icl_ablation_drop_ci"] > 0,
         "ablating the induction heads does not cost few-shot accuracy beyond random heads (outside the noise)"),
    ]
    return [msg for ok, msg in checks if not ok]


@pytest.mark.browser  # needs the book built (scripts/test.sh builds it first)
def test_chapter_4_shows_in_context_learning_and_induction_heads_on_the_real_model() -> None:
    values = glued(executed_notebook(CHAPTER_4))
    assert real_model_failures(values) == [], values


def test_the_thresholds_catch_a_model_without_the_phenomena() -> None:
    """The test of the test, on the committed chapter's numbers and on weakened copies of them."""
    import nbformat

    committed = glued(nbformat.read(CHAPTER_4, as_version=4))
    assert real_model_failures(committed) == []
    no_icl = {**committed, "fewshot_real_4shot": "0.05", "fewshot_real_4shot_low": "0.01"}
    assert len(real_model_failures(no_icl)) == 2
    no_heads = {**committed, "induction_ablation_drop": "0.01", "induction_ablation_drop_ci": "0.2"}
    assert real_model_failures(no_heads) == [
        "ablating the induction heads does not raise the second-copy loss more than random heads "
        "(outside the noise)"]


CHAPTER_8 = REPO / "chapters" / "08_modern_decoder.ipynb"


def modern_decoder_failures(v: dict[str, str]) -> list[str]:
    """Chapter 8's claims, by its glued numbers: each one that does not hold, in words."""
    d = {k: float(v[k]) for k in ("llama_max_abs_diff", "n_greedy", "dloss_Q8_0", "dloss_Q8_0_ci", "dloss_Q4_1",
                                  "dloss_Q4_1_ci", "dloss_Q4_0", "dloss_Q4_0_ci", "tps_cache", "tps_nocache",
                                  "mb_float32", "mb_Q8_0", "mb_Q4_1", "mb_Q4_0")}
    checks = [
        (d["llama_max_abs_diff"] <= 1e-4, f"logits differ from LlamaForCausalLM by {d['llama_max_abs_diff']:.2e}"),
        (v["llama_greedy_tokens_equal"] == "True", "greedy tokens differ from the library's"),
        (d["n_greedy"] >= 30, f"only {d['n_greedy']:.0f} greedy tokens compared (want >= 30)"),
        (v["q4_dequant_bit_equal"] == "True", "the dequantizers are not bit-equal to gguf's"),
        (abs(d["dloss_Q8_0"]) < 0.02, f"Q8_0 changed the loss by {d['dloss_Q8_0']:+.4f} (want |.| < 0.02)"),
        (abs(d["dloss_Q4_1"]) < 0.02, f"re-quantizing to Q4_1 changed the loss by {d['dloss_Q4_1']:+.4f}"),
        (d["dloss_Q4_0"] - d["dloss_Q4_0_ci"] > 0, "Q4_0's loss increase is not outside its interval"),
        (d["dloss_Q4_0"] > d["dloss_Q4_1"] and d["dloss_Q4_0"] > d["dloss_Q8_0"], "Q4_0 is not the worst format"),
        # Q4_1 re-quantizes the release to itself: its interval may be exactly 0, the others may not
        (d["dloss_Q8_0_ci"] > 0 and d["dloss_Q4_0_ci"] > 0 and d["dloss_Q4_1_ci"] >= 0, "an interval is missing"),
        (float(v["q41_same"]) > 0.99, f"only {float(v['q41_same']):.1%} of Q4_1 blocks re-quantize to themselves"),
        (d["mb_float32"] > d["mb_Q8_0"] > d["mb_Q4_1"] > d["mb_Q4_0"], "the formats' sizes are out of order"),
        (d["tps_cache"] > 2 * d["tps_nocache"], "the KV cache does not double the speed"),
    ]
    return [msg for ok, msg in checks if not ok]


@pytest.mark.browser  # needs the book built (scripts/test.sh builds it first)
def test_chapter_8_matches_the_library_and_measures_the_formats() -> None:
    values = glued(executed_notebook(CHAPTER_8))
    assert modern_decoder_failures(values) == [], values


def test_chapter_8_thresholds_catch_a_broken_model() -> None:
    """The test of the test, on the committed chapter's numbers and on broken copies of them."""
    import nbformat

    committed = glued(nbformat.read(CHAPTER_8, as_version=4))
    assert modern_decoder_failures(committed) == [], committed
    broken = {**committed, "llama_max_abs_diff": "0.3", "llama_greedy_tokens_equal": "False"}
    assert len(modern_decoder_failures(broken)) == 2
    no_cache_gain = {**committed, "tps_cache": committed["tps_nocache"]}
    assert modern_decoder_failures(no_cache_gain) == ["the KV cache does not double the speed"]


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
