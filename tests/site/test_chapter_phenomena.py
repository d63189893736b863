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
