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
