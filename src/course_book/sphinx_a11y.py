"""Sphinx extension: fixes to the built pages that axe-core reports as serious or critical.

Listed in ``_config.yml`` under ``sphinx.extra_extensions``; ``tests/site`` runs axe-core on
every page. It

* names bertviz's menus (``Layer: <select>`` gets ``aria-label="Layer"``) in notebook outputs,
  with :func:`course_utils.viz.label_selects` (outputs made before viz did it themselves);
* fixes two buttons of the pinned pydata/book theme, in the written HTML:
  the search field's button shows "Search Ctrl+K" but is named "Search" (axe:
  label-content-name-mismatch; its visible text is a fine name, so the ``aria-label`` goes), and
  the colour-mode button's icons carry titles ("Light", "Dark", "System Settings") that
  Font Awesome turns into visible-text SVG titles the button's name "Color mode" lacks (the
  titles go; the button keeps its name and tooltip); names the sidebar's icon-only
  expand/collapse toggles (``<summary>``); and lets myst-nb's toggle of a folded cell
  (``hide-input``) be named by what it shows ("Show code cell source");
* makes the tables a cell printed (pandas) focusable (``tabindex="0"``): one wider than the page
  scrolls inside its own box, and a keyboard user must be able to reach it to scroll it (axe:
  scrollable-region-focusable).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx

from course_utils.viz import label_selects

#: (pattern, replacement) applied to each written page, for the theme's own markup.
THEME_FIXES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r'(<button class="btn search-button-field search-button__button[^"]*"[^>]*?)\s+aria-label="Search"'),
     r"\1"),
    (re.compile(r'(<i class="theme-switch [^"]*"\s+data-mode="\w+")\s+title="[^"]*"'), r"\1"),
    # The sidebar's expand/collapse toggles (a chapter with its exercises page nested under it) are
    # <summary> elements holding only an icon: axe summary-name. Give them a name.
    (re.compile(r'<summary>(<span class="toctree-toggle" role="presentation">)'),
     r'<summary aria-label="Show or hide the pages under this chapter">\1'),
    # myst-nb's toggle of a cell whose code is folded (tag hide-input / hide-output / hide-cell)
    # shows "Show code cell source" but is named "Toggle hidden content" (axe:
    # label-content-name-mismatch): its visible text is a fine name (the hidden "Hide code cell
    # source" half is display: none, so not part of it), so the aria-label goes.
    (re.compile(r'(<details class="admonition hide [^"]*">\s*<summary) aria-label="Toggle hidden content">'),
     r"\1>"),
]


#: A pandas table's opening tag (``DataFrame.to_html``: class "dataframe"; a ``Styler``: id "T_...").
_OUTPUT_TABLE = re.compile(r'<table(?![^>]*\btabindex=)(?=[^>]*(?:class="dataframe"|id="T_))')


def focusable_output_tables(html: str) -> str:
    """Give every pandas table in ``html`` a keyboard tab stop (``tabindex="0"``)."""
    return _OUTPUT_TABLE.sub('<table tabindex="0"', html)


def fix_theme_markup(html: str) -> tuple[str, int]:
    """Apply :data:`THEME_FIXES` to one page; returns the new HTML and how many places changed."""
    count = 0
    for pattern, repl in THEME_FIXES:
        html, n = pattern.subn(repl, html)
        count += n
    return html, count


def _on_page_context(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    if isinstance(context.get("body"), str):
        context["body"] = focusable_output_tables(label_selects(context["body"]))


def _on_build_finished(app: Sphinx, exception: Exception | None) -> None:
    if exception is not None or app.builder.format != "html":
        return
    for page in Path(app.outdir).rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        fixed, n = fix_theme_markup(html)
        if n:
            page.write_text(fixed, encoding="utf-8")


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the extension (Sphinx entry point)."""
    app.connect("html-page-context", _on_page_context)
    app.connect("build-finished", _on_build_finished)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
