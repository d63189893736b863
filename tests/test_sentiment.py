"""Chapter 9's sentences (course_utils.sentiment): the pinned archive's file read exactly, a fixed
split, and an error that says what to install when the archive is missing."""
from __future__ import annotations

import sys

import pytest

from course_utils import sentiment


def test_the_archive_holds_the_10605_snippets_of_the_paper():
    snippets = sentiment.read_snippets()
    assert len(snippets) == 10_605                         # the VADER paper's count
    assert [s.id for s in snippets] == list(range(1, 10_606))
    assert snippets[0].text.startswith("The Rock is destined to be the 21st Century's new")
    assert abs(snippets[0].score - 2.26666666667) < 1e-9
    assert all(-4 <= s.score <= 4 for s in snippets)
    assert not any("\r" in s.text or "\t" in s.text for s in snippets)


def test_the_split_is_fixed_balanced_and_disjoint():
    data = sentiment.load_sentiment(online=False)
    again = sentiment.load_sentiment(online=False)
    assert data.test_texts == again.test_texts and data.train_labels == again.train_labels
    assert data.info["kept"] == 10_043                     # |score| > 0.5
    assert len(data.test_texts) == 2_500 and len(data.train_texts) == 10_043 - 2_500
    share = sum(data.train_labels + data.test_labels) / data.info["kept"]
    assert 0.48 < share < 0.52
    other = sentiment.load_sentiment(online=False, seed=1)
    assert other.test_texts != data.test_texts
    assert "MIT" in data.licence and "vaderSentiment 3.3.2" in data.source


def test_labels_follow_the_sign_of_the_score():
    kept = [s for s in sentiment.read_snippets() if abs(s.score) > 0.5]
    data = sentiment.load_sentiment(online=False, n_test=len(kept) - 1)
    by_text = {s.text: int(s.score > 0) for s in kept}
    assert all(by_text[t] == y for t, y in zip(data.test_texts[:500], data.test_labels[:500]))


def test_a_missing_archive_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("COURSE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(sentiment.ENV, raising=False)
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    with pytest.raises(sentiment.SentimentDataMissing, match="vaderSentiment==3.3.2"):
        sentiment.load_sentiment(online=False)
    monkeypatch.setenv(sentiment.ENV, str(tmp_path / "nowhere.tar.gz"))
    with pytest.raises(sentiment.SentimentDataMissing, match="nowhere.tar.gz"):
        sentiment.sdist_path()


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="n_test"):
        sentiment.load_sentiment(online=False, n_test=0)
    with pytest.raises(ValueError, match="threshold"):
        sentiment.load_sentiment(online=False, threshold=-1)
