"""Labelled movie-review sentences for fine-tuning (Chapter 9), in both worlds.

* **Offline**: the 10,605 Rotten Tomatoes sentence snippets with human sentiment scores (mean of
  at least 20 raters, from -4 to +4) that Hutto & Gilbert released with the VADER paper (ICWSM
  2014). The PyPI source archive of ``vaderSentiment==3.3.2`` (MIT licence) ships them in
  ``additional_resources/hutto_ICWSM_2014.tar.gz`` as
  ``hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt`` (tab-separated id, score, sentence; CRLF
  line endings, UTF-8). ``scripts/install.sh`` downloads that archive into
  ``<virtual environment>/share/course-data/``; :func:`sdist_path` finds it there, in the course
  cache, or where ``COURSE_SENTIMENT_SDIST`` points. Nothing is extracted to disk.
* **Online**: the hub's ``rotten_tomatoes`` data set (train / validation / test).

Sentences whose score is within ``threshold`` (0.5) of 0 are dropped as neutral; the others are
labelled 1 (positive) or 0 (negative). The split is fixed: a seeded shuffle, the first
``n_test`` sentences for testing.
"""
from __future__ import annotations

import io
import os
import random
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

SDIST = "vaderSentiment-3.3.2.tar.gz"
INNER_ARCHIVE = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
SNIPPETS = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
ENV = "COURSE_SENTIMENT_SDIST"
HUB_NAME = "rotten_tomatoes"
INSTALL_HINT = (f"bash scripts/install.sh (it runs: pip download --no-deps --no-binary :all: vaderSentiment==3.3.2 "
                f"-d .venv/share/course-data), or download that archive anywhere and set {ENV} to its path")
SOURCE_OFFLINE = ("Rotten Tomatoes sentence snippets with human sentiment scores (Hutto & Gilbert, ICWSM 2014), "
                  "from the PyPI source archive vaderSentiment 3.3.2 (MIT licence)")
SOURCE_ONLINE = "hub: rotten_tomatoes (Pang & Lee, 2005; the data set card states no licence)"


class SentimentDataMissing(FileNotFoundError):
    """The source archive with the sentences is not where the course looks for it."""


def _candidates() -> list[Path]:
    from .assets import cache_dir

    found = [Path(os.environ[ENV])] if os.environ.get(ENV) else []
    return found + [Path(sys.prefix) / "share" / "course-data" / SDIST, cache_dir() / SDIST]


def sdist_path() -> Path:
    """The path of ``vaderSentiment-3.3.2.tar.gz``; a clear error says how to get it if missing."""
    places = _candidates()
    for path in places:
        if path.is_file():
            return path
    raise SentimentDataMissing(
        f"The movie-review sentences of Chapter 9 come from the source archive {SDIST}, which is not "
        f"installed. Looked in: {', '.join(str(p) for p in places)}. Install it with: {INSTALL_HINT}.")


@dataclass(frozen=True)
class Snippet:
    """One line of ``movieReviewSnippets_GroundTruth.txt``."""

    id: int
    score: float  #: mean human rating, -4 (extremely negative) to +4 (extremely positive)
    text: str


def read_snippets(path: str | Path | None = None) -> list[Snippet]:
    """Every snippet of the file, in the file's order (10,605 for the pinned archive)."""
    path = Path(path) if path is not None else sdist_path()
    with tarfile.open(path, "r:gz") as outer:
        member = outer.extractfile(INNER_ARCHIVE)
        if member is None:
            raise SentimentDataMissing(f"{path} has no {INNER_ARCHIVE}: is it vaderSentiment 3.3.2's sdist?")
        with tarfile.open(fileobj=io.BytesIO(member.read()), mode="r:gz") as inner:
            data = inner.extractfile(SNIPPETS)
            if data is None:
                raise SentimentDataMissing(f"{INNER_ARCHIVE} has no {SNIPPETS}")
            lines = data.read().decode("utf-8").split("\r\n")
    snippets = []
    for n, line in enumerate(lines, 1):
        if not line:
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise ValueError(f"{SNIPPETS}, line {n}: expected id, score, sentence separated by tabs: {line!r}")
        snippets.append(Snippet(int(parts[0]), float(parts[1]), parts[2].strip()))
    return snippets


@dataclass
class SentimentData:
    """A fixed train/test split of labelled sentences (label 1 positive, 0 negative)."""

    name: str
    source: str
    licence: str
    train_texts: list[str]
    train_labels: list[int]
    test_texts: list[str]
    test_labels: list[int]
    info: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return (f"SentimentData({self.name!r}: {len(self.train_texts):,} train, {len(self.test_texts):,} test "
                f"sentences; {self.source}; licence: {self.licence})")


def load_sentiment(*, online: bool | None = None, threshold: float = 0.5, n_test: int = 2500,
                   seed: int = 0) -> SentimentData:
    """One loader for both worlds (``online`` overrides the detection).

    Offline: the snippets whose score is beyond ``threshold`` from 0, shuffled with ``seed``; the
    first ``n_test`` are the test set, the rest the training set. Online: ``rotten_tomatoes``'s
    train split for training and its validation and test splits together (2,132 sentences) for
    testing (one test split has only 1,066).
    """
    from .online import is_online

    if not 0 <= threshold < 4:
        raise ValueError(f"threshold must be in [0, 4), got {threshold!r}")
    if online is None:
        online = is_online()
    if online:
        from datasets import load_dataset

        ds = load_dataset(HUB_NAME)
        test = [ds["validation"], ds["test"]]
        return SentimentData(HUB_NAME, SOURCE_ONLINE, "none stated on the data set card",
                             list(ds["train"]["text"]), [int(x) for x in ds["train"]["label"]],
                             [t for d in test for t in d["text"]], [int(x) for d in test for x in d["label"]],
                             {"splits": "train | validation + test"})
    snippets = read_snippets()
    kept = [s for s in snippets if abs(s.score) > threshold]
    if not 0 < n_test < len(kept):
        raise ValueError(f"n_test must be between 1 and {len(kept) - 1}, got {n_test!r}")
    order = list(range(len(kept)))
    random.Random(f"course-sentiment/{seed}").shuffle(order)
    rows = [kept[i] for i in order]
    test, train = rows[:n_test], rows[n_test:]
    return SentimentData("movie-review snippets (VADER)", SOURCE_OFFLINE, "MIT (vaderSentiment 3.3.2)",
                         [s.text for s in train], [int(s.score > 0) for s in train],
                         [s.text for s in test], [int(s.score > 0) for s in test],
                         {"snippets": len(snippets), "kept": len(kept), "threshold": threshold,
                          "split_seed": seed})
