"""Tests of course_utils.batching: packing, dynamic padding, padding waste."""
from __future__ import annotations

import pytest
import torch

from course_utils import batching, data

# --- packing, padding --------------------------------------------------------------------------

def test_pack_ids_tiny_example():
    out = batching.pack_ids([[1, 2, 3], [4, 5]], 3, sep_id=0)
    assert out.tolist() == [[1, 2, 3], [0, 4, 5]]  # the final separator is the dropped tail
    assert batching.pack_ids([[1, 2, 3, 4, 5, 6, 7]], 2).tolist() == [[1, 2], [3, 4], [5, 6]]
    assert out.dtype == torch.long
    with pytest.raises(ValueError, match="block_size"):
        batching.pack_ids([[1]], 0)


def test_pack_with_the_real_gpt2_tokenizer():
    from course_utils.assets import load_tokenizer

    tok = load_tokenizer("gpt2")
    blocks = batching.pack(["Hello World.", "This is Agney"], tok, 4)
    # Real GPT-2 ids: Hello 15496, " World" 2159, "." 13, <|endoftext|> 50256, This 1212, " is" 318 ...
    assert blocks.tolist() == [[15496, 2159, 13, 50256], [1212, 318, 2449, 1681]]
    with pytest.raises(TypeError, match="str"):
        batching.pack([[1, 2]], tok, 4)


def test_pad_batch_dynamic_right_and_left():
    ids, mask = batching.pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = batching.pad_batch([[5, 6, 7], [8]], pad_id=0, side="left", multiple_of=4)
    assert ids.tolist() == [[0, 5, 6, 7], [0, 0, 0, 8]] and mask.tolist() == [[0, 1, 1, 1], [0, 0, 0, 1]]
    ids, _ = batching.pad_batch([[1, 2, 3, 4, 5]], pad_id=0, max_length=3)
    assert ids.tolist() == [[1, 2, 3]]
    with pytest.raises(ValueError, match="side"):
        batching.pad_batch([[1]], 0, side="middle")


def test_padding_waste_on_a_hand_made_example():
    lengths = [2, 7, 3, 8]  # 20 real tokens, batches of 2
    r = batching.padding_waste(lengths, 2, "max_length")
    assert (r.real_tokens, r.total_positions, r.waste) == (20, 32, 12 / 32)
    r = batching.padding_waste(lengths, 2, "dynamic")         # [2, 7] -> 2*7, [3, 8] -> 2*8
    assert (r.total_positions, r.padding) == (30, 10)
    r = batching.padding_waste(lengths, 2, "sorted")          # [2, 3] -> 2*3, [7, 8] -> 2*8
    assert (r.total_positions, r.waste) == (22, 2 / 22)
    r = batching.padding_waste(lengths, 2, "packed", max_length=8)  # 20 tokens -> 3 blocks of 8
    assert (r.total_positions, r.waste, r.n_batches) == (24, 4 / 24, 2)
    assert "padding" in str(r)
    with pytest.raises(ValueError, match="recipe"):
        batching.padding_waste(lengths, 2, "bucketed")


def test_padding_waste_of_the_corpus_orders_the_recipes():
    from course_utils.assets import load_tokenizer

    tok = load_tokenizer("bert-base-uncased")
    corpus = data.generate_corpus(300_000, seed=0)
    lengths = [len(x) for x in tok(corpus["validation"][:512])["input_ids"]]
    waste = {r: batching.padding_waste(lengths, 32, r, max_length=128).waste for r in batching.RECIPES}
    assert waste["max_length"] > waste["dynamic"] > waste["sorted"] > waste["packed"]
    assert waste["max_length"] > 0.5 and waste["packed"] < 0.01


def test_token_ids_are_the_tokenizers_and_computed_once():
    from course_utils.assets import load_tokenizer

    tok = load_tokenizer("bert-base-uncased")
    texts = ["Call me Ishmael.", "  ", "It was the best of times."]
    ids = batching.token_ids(tok, texts)
    assert ids == tok(texts, add_special_tokens=False)["input_ids"] and ids[1] == []
    assert batching.token_ids(tok, list(texts)) is ids               # the same corpus: not again
    assert batching.token_ids(tok, texts[:1]) == ids[:1]             # another corpus: its own
    assert batching.pack(texts, tok, 4).tolist() == batching.pack_ids(ids, 4, tok.sep_token_id).tolist()
