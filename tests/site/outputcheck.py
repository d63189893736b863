"""Output hygiene of a built page: what the executed cells left on it, read from its HTML.

A page is a chapter a reader reads, not a log. In the outputs myst-nb rendered (``div.cell_output``)
this reports:

* ``progress``: more than :data:`MAX_PROGRESS_LINES` progress-bar updates in one output (a tqdm
  bar that did not disable itself; each update is a line on a static page);
* ``datasets-bar``: any ``Map:`` / ``Filter:`` bar of datasets;
* ``warning``: ``Warning`` text (``UserWarning``, ``FutureWarning``, ``warnings.warn``'s
  ``file.py:12: ...Warning:``, a logger's ``WARNING``), and library log lines on stderr;
* ``stderr``: anything else written to stderr (libraries' chatter; a chapter prints to stdout);
* ``trainer-log``: the ``Trainer``'s metrics dicts (``{'loss': ..., 'grad_norm': ...}``);
* ``traceback``: a traceback in a cell not tagged ``raises-exception`` (the one tag that says
  the cell is meant to show an error);
* ``banner``: the banner shown twice on one page (``banner()`` as a cell's last expression);
* ``large-output``: one output over :data:`MAX_OUTPUT_BYTES` of HTML (a bertviz view of a long
  text or of every layer: show fewer tokens, layers or views).

The allow-list (:data:`ALLOW`) is short and explicit: each entry names the page, the rule and a
piece of the output's text, and says why it is allowed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

#: A final "100%|##########| 10/10" line is fine; a stream of updates is not.
MAX_PROGRESS_LINES = 1
#: The largest HTML one output may add to a page (bertviz views of a short sentence: 0.2-0.8 MB).
MAX_OUTPUT_BYTES = 1_000_000
#: The tag that marks a cell meant to show an error (myst-nb renders it as the class tag_...).
ERROR_TAG = "raises-exception"

_PROGRESS = re.compile(r"\d+%\|[^|\n]*\|\s*\d|\b\d+it \[\d"
                       r"|\[\d+:\d+(?::\d+)?<[^\]]*(?:it/s|s/it|examples/s)|\d\s*it/s\]|\d\s*s/it\]")
_DATASETS_BAR = re.compile(r"^\s*(?:Map|Filter|Map \(num_proc=\d+\)|Filter \(num_proc=\d+\)|"
                           r"Generating \w+ split|Saving the dataset[^:]*|Loading dataset shards):\s+\d+%",
                           re.MULTILINE)
_WARNING = re.compile(r"\b[A-Z]\w*Warning\b|^\s*WARNING\b|^\s*Warning:|\bwarnings\.warn\(", re.MULTILINE)
_LIBRARY_LOG = re.compile(r"^\s*\[(?:transformers|datasets|huggingface_hub|torch|accelerate)\]", re.MULTILINE)
_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^\s*File \"[^\"]+\", line \d+, in ", re.MULTILINE)
_TRAINER_LOG = re.compile(r"\{'(?:loss|eval_loss|train_runtime|train_loss|grad_norm|learning_rate)': ")
_BANNER = re.compile(r"(?:^|['\"])World:\s+(?:online|offline)\b", re.MULTILINE)


@dataclass(frozen=True)
class Finding:
    """One thing wrong with an output of a page."""

    rule: str
    cell: str    # the first line of the cell's code (where to look)
    excerpt: str  # the offending text, shortened

    def __str__(self) -> str:
        return f"[{self.rule}] in the cell `{self.cell}`: {self.excerpt}"


@dataclass(frozen=True)
class Allowed:
    """An allow-list entry: on ``page``, a ``rule`` finding whose excerpt contains ``contains``."""

    page: str
    rule: str
    contains: str
    why: str


#: Short on purpose; every entry says why. Empty: no output of the book is exempt.
ALLOW: list[Allowed] = []


def _short(text: str, n: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _cell_label(cell) -> str:
    code = cell.select_one("div.cell_input pre")
    source = code.get_text() if code else ""
    lines = [ln for ln in source.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return _short(lines[0], 80) if lines else "(no code)"


def check_outputs(html: str) -> list[Finding]:
    """Everything :mod:`outputcheck`'s rules find in the outputs of one page's HTML."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    findings: list[Finding] = []
    banners = 0
    for cell in soup.select("div.cell"):
        tags = {c.removeprefix("tag_") for c in cell.get("class", []) if c.startswith("tag_")}
        label = _cell_label(cell)
        for out in cell.select("div.cell_output div.output"):
            classes = set(out.get("class", []))
            text = out.get_text()
            # Each \r-overwritten bar update is a line of its own on a static page.
            lines = [ln for ln in re.split(r"[\r\n]", text) if ln.strip()]
            progress = [ln for ln in lines if _PROGRESS.search(ln)]
            if len(progress) > MAX_PROGRESS_LINES:
                example = _short(progress[-1])
                findings.append(Finding("progress", label, f"{len(progress)} progress-bar updates, e.g. {example}"))
            bars = _DATASETS_BAR.findall(text)
            if bars:
                findings.append(Finding("datasets-bar", label, f"{len(bars)} datasets bars, e.g. {_short(bars[0])}"))
            traceback = "traceback" in classes or _TRACEBACK.search(text)
            if traceback and ERROR_TAG not in tags:
                findings.append(Finding("traceback", label, _short(text[-300:])))
            warn = _WARNING.search(text) or _LIBRARY_LOG.search(text)
            if warn and not traceback:
                line = next(ln for ln in text.splitlines() if _WARNING.search(ln) or _LIBRARY_LOG.search(ln))
                findings.append(Finding("warning", label, _short(line)))
            log = _TRAINER_LOG.search(text)
            if log:
                findings.append(Finding("trainer-log", label, _short(log.group(0) + text[log.end():][:120])))
            if "stderr" in classes and not (progress or bars or warn or traceback):
                findings.append(Finding("stderr", label, _short(text)))
            banners += len(_BANNER.findall(text))
            size = len(str(out).encode("utf-8"))
            if size > MAX_OUTPUT_BYTES:
                findings.append(Finding("large-output", label, f"{size / 1e6:.1f} MB of HTML in one output"))
    if banners > 1:
        findings.append(Finding("banner", "(page)", f"the banner is shown {banners} times"))
    return findings


def page_findings(page: str, html: str, allow: list[Allowed] | None = None) -> list[Finding]:
    """The findings of ``page`` (its path in the site) that the allow-list does not excuse."""
    allow = ALLOW if allow is None else allow
    return [f for f in check_outputs(html)
            if not any(a.page == page and a.rule == f.rule and a.contains in f.excerpt for a in allow)]
