"""Chapter 2's "flies" measurement (the cell tagged ``ch02-flies``) on the real pretrained
all-MiniLM-L6-v2: the two "flies" start identical and end apart, the senses are separable by
the nearest-centroid test, and the controls order as the chapter's prose says."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from _page_code import run_tagged_cell

from course_utils.assets import MINILM, load_pretrained, load_tokenizer

ROOT = Path(__file__).resolve().parent.parent
CHAPTER = ROOT / "chapters" / "02_attention_from_scratch.ipynb"


@pytest.fixture(scope="module")
def cell() -> dict:
    return run_tagged_cell(CHAPTER, "ch02-flies", {"torch": torch, "F": F, "pd": pd})


@pytest.fixture(scope="module")
def minilm():
    return load_pretrained(MINILM, attn_implementation="eager").eval(), load_tokenizer("bert-base-uncased")


@pytest.fixture(scope="module")
def flies(cell, minilm) -> pd.DataFrame:
    return cell["sense_similarities"](*minilm)


def test_identical_input_different_output(flies):
    pair = flies.iloc[:, 0]
    assert pair.iloc[0] == pytest.approx(1.0, abs=1e-5)   # same token, same position: the same vector
    assert pair.iloc[-1] < 0.75                            # MiniLM: 0.63 after the last layer
    assert pair.iloc[-1] < pair.iloc[1]                    # and further apart than after layer 1


def test_senses_separable_from_layer_2(flies, cell):
    n = sum(len(t) for t in cell["SENSES"].values())
    nearest = flies["own sense nearest"]
    assert nearest.iloc[0] < n                             # not from the embeddings alone
    assert (nearest.iloc[2:] == n).all()                   # every occurrence, every layer from 2 on


def test_controls_order_after_last_layer(flies):
    last = flies.iloc[-1]
    assert last["different senses"] < last["same sense (noun)"] - 0.1
    assert last["different senses"] < last["same sense (verb)"]
    assert flies["other words"].iloc[-1] > flies["other words"].iloc[0] + 0.2   # a shared component grows
    assert (flies["other words"] < flies["different senses"]).all()


def test_word_that_is_not_one_token_is_a_clear_error(cell, minilm):
    with pytest.raises(ValueError, match="is not one token"):
        cell["word_states"](*minilm, "the butterflies rested", "flies")
