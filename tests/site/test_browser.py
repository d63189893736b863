"""The built site in headless Chromium with no network: every page renders and works.

Each page of the built site is opened once (served from 127.0.0.1; any other request is
blocked, DNS resolves nothing else) and must show no console error, no failed request, no
request to the network, every image loaded, every formula typeset by the local MathJax, and
every bertviz view drawn with the tokens/heads its data declares and reacting to hover/click,
every inline formula of a paragraph or list item inline (desktop and 390 px), and no serious or
critical axe-core violation (output hygiene: test_output_hygiene.py). Screenshots of each page
(desktop, and 390 px wide) are saved to artifacts/screenshots/.
"""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import nbformat
import pytest
import sitecheck

pytestmark = pytest.mark.browser


def test_page_works_offline(page: str, site_reports: dict[str, sitecheck.PageReport]) -> None:
    assert page in site_reports, f"no built site / page {page} was not opened"
    report = site_reports[page]
    assert report.problems() == [], f"{page}:\n  " + "\n  ".join(report.problems())


def test_every_book_page_was_opened(site: Path, site_reports: dict[str, sitecheck.PageReport]) -> None:
    for doc in sitecheck.toc_files():
        assert f"{doc}.html" in site_reports, f"{doc} (in _toc.yml) has no page in {site}"
    for doc in sitecheck.toc_files():
        report = site_reports[f"{doc}.html"]
        assert "Transformers, Inside Out" in report.title, report.title


def test_math_is_typeset_by_the_local_mathjax(site_reports: dict[str, sitecheck.PageReport]) -> None:
    with_math = {p: r.math for p, r in site_reports.items() if r.math.get("elements")}
    assert with_math, "no page of the book has math: the MathJax check would test nothing"
    for page, math in with_math.items():
        assert math["mathjax"], f"{page}: MathJax did not load"
        assert math["typeset"] == math["elements"] and not math["errors"], (page, math)


def test_bertviz_views_draw_their_tokens_and_heads(site: Path, site_reports: dict[str, sitecheck.PageReport]) -> None:
    pages = [p for p in site_reports if 'id="bertviz-' in (site / p).read_text(encoding="utf-8")]
    for page in pages:
        views = site_reports[page].bertviz
        assert views, f"{page} has bertviz output but no view was checked"
        for view in views:
            assert view["problems"] == [], (page, view)
            assert view["heads"] > 0 and min(view["tokens"]) > 0, view
    for chapter in sitecheck.chapter_notebooks():
        nb = nbformat.read(sitecheck.BOOK / f"{chapter}.ipynb", as_version=4)
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        if not re.search(r"\b(head_view|model_view)\(", code):
            continue
        assert f"{chapter}.html" in pages, f"{chapter} uses bertviz but its page shows no view"


def test_chapter_pages_are_readable_on_a_phone(site_reports: dict[str, sitecheck.PageReport], artifacts: Path) -> None:
    for doc in sitecheck.toc_files():
        report = site_reports[f"{doc}.html"]
        # Wide outputs (code, bertviz) scroll inside their own boxes; the page itself must not.
        assert report.overflow_px == 0, f"{doc}: page is {report.overflow_px} px wider than a 390 px phone"
        stem = doc.replace("/", "__")
        assert (artifacts / "screenshots" / f"{stem}.390px.png").stat().st_size > 5000
        assert (artifacts / "screenshots" / f"{stem}.png").stat().st_size > 5000


def test_code_cells_can_be_copied(site_reports: dict[str, sitecheck.PageReport], chromium_browser,
                                  site_url: str) -> None:
    chapters = sitecheck.chapter_notebooks()
    assert chapters, "no chapter notebooks in _toc.yml"
    for chapter in chapters:
        copy = site_reports[f"{chapter}.html"].copy_buttons
        assert copy["code_blocks"] > 0 and copy["without_button"] == 0, (chapter, copy)
    # And the button really copies the cell's code (clipboard read back in the browser).
    context = chromium_browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    try:
        page = context.new_page()
        page.goto(site_url + f"{chapters[0]}.html", wait_until="load")
        block = page.locator("article div.cell_input div.highlight").first
        block.scroll_into_view_if_needed()
        block.hover()
        block.locator("button.copybtn").click()
        copied = page.evaluate("() => navigator.clipboard.readText()")
        code = block.locator("pre").inner_text()
        assert copied.strip() and copied.strip() == code.strip(), (copied, code)
    finally:
        context.close()


def _title_terms(title: str) -> list[str]:
    words = re.findall(r"[A-Za-z][A-Za-z-]{4,}", title.split("—")[-1])
    return sorted(set(words), key=lambda w: (-len(w), w))


def test_search_finds_each_chapter(site_reports: dict[str, sitecheck.PageReport], chromium_browser,
                                   site_url: str) -> None:
    chapters = sitecheck.chapter_notebooks()
    # Chapter 2 (attention) must be among them once it is in the book; every chapter is searched.
    context = chromium_browser.new_context()
    try:
        for chapter in chapters:
            title = site_reports[f"{chapter}.html"].title.split(" — Transformers")[0]
            terms = _title_terms(title)
            assert terms, f"no searchable word in the title {title!r}"
            page = context.new_page()
            errors: list[str] = []
            page.on("console", lambda m, errors=errors: errors.append(m.text) if m.type == "error" else None)
            page.goto(site_url + "search.html?q=" + quote(terms[0]), wait_until="load")
            # Results arrive one by one: wait for Sphinx's summary line, which comes once the search ends.
            page.wait_for_function("() => /search finished|did not match/i.test(document.body.innerText)",
                                   timeout=20000)
            hits = page.evaluate("() => Array.from(document.querySelectorAll('#search-results ul.search li a'))"
                                 ".map(a => a.getAttribute('href'))")
            assert any(h and h.split("?")[0].split("#")[0].endswith(f"{chapter}.html") for h in hits), (terms[0], hits)
            assert errors == [], errors
            page.close()
    finally:
        context.close()


def _notebook_figures(chapter: str) -> int:
    nb = nbformat.read(sitecheck.BOOK / f"{chapter}.ipynb", as_version=4)
    return sum(1 for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if any(k in o.get("data", {}) for k in ("image/png", "image/jpeg", "image/svg+xml")))


def test_every_figure_of_a_chapter_is_on_its_page(site_reports: dict[str, sitecheck.PageReport]) -> None:
    """The committed notebook's figures also appear in the built page (a build with a non-inline
    matplotlib backend, e.g. MPLBACKEND=Agg, silently drops them)."""
    for chapter in sitecheck.chapter_notebooks():
        shown = [i for i in site_reports[f"{chapter}.html"].images if i["in_output"] and i["ok"]]
        expected = _notebook_figures(chapter)
        assert len(shown) >= expected, (
            f"{chapter}: the notebook has {expected} figures, its page shows {len(shown)} "
            "(build with the inline matplotlib backend: do not set MPLBACKEND=Agg for the book build)")


def test_figures_have_alt_text_and_captions(site_reports: dict[str, sitecheck.PageReport]) -> None:
    """Each image of a chapter has alt text, and each figure (a cell's plot, a ``figure``) a
    caption. For a plot, give both in the cell's metadata:
    ``{"mystnb": {"figure": {"caption": "...", "name": "fig-..."}, "image": {"alt": "..."}}}``."""
    missing = []
    for chapter in sitecheck.chapter_notebooks():
        for img in site_reports[f"{chapter}.html"].images:
            if not (img["in_article"] or img["in_output"]):
                continue  # the theme's own icons (Colab logo ...) carry their alt text
            where = f" (the output of the cell `{img['cell_code'][:80]}`)" if img.get("cell_code") else ""
            alt = (img["alt"] or "").strip()
            if not alt or alt.endswith((".png", ".svg", ".jpg", ".jpeg", ".gif")) or "_images/" in alt:
                missing.append(f"{chapter}: image {img['src']}{where} has no alt text (alt={img['alt']!r})")
            if (img["in_output"] or img["figure"]) and not img["caption"]:
                missing.append(f"{chapter}: figure {img['src']}{where} has no caption")
    assert missing == [], "\n".join(missing)


def test_inline_math_stays_inline(page: str, site_reports: dict[str, sitecheck.PageReport]) -> None:
    """No formula of a paragraph or list item renders on a line of its own (desktop and 390 px)."""
    report = site_reports[page]
    assert report.inline_math, f"{page}: the inline-math check did not run"
    problems = report.inline_math_problems()
    assert problems == [], f"{page}: {len(problems)} inline formulas render as blocks:\n  " + "\n  ".join(problems[:10])


def test_the_inline_math_check_had_formulas_to_check(site_reports: dict[str, sitecheck.PageReport]) -> None:
    counts = {p: r.inline_math.get("inline", 0) for p, r in site_reports.items()}
    assert sum(counts.values()) > 0, f"no inline formula in any paragraph: the check would test nothing ({counts})"


def test_no_serious_accessibility_violations(page: str, site_reports: dict[str, sitecheck.PageReport]) -> None:
    """axe-core (pinned, injected from site/test-vendor) finds no serious or critical violation,
    colour contrast included, in the light mode the site is configured to show."""
    problems = site_reports[page].accessibility_problems()
    assert problems == [], f"{page}:\n  " + "\n  ".join(problems)


_COLOUR_GLYPHS_JS = """(chars) => chars.map(ch => {
  const c = document.createElement('canvas'); c.width = 64; c.height = 64;
  const g = c.getContext('2d'); g.fillStyle = '#000'; g.font = '40px sans-serif'; g.textBaseline = 'top';
  g.fillText(ch, 4, 4);
  const d = g.getImageData(0, 0, 64, 64).data;
  let coloured = 0;  // pixels that are neither grey nor blank: a colour emoji, not a black box
  for (let i = 0; i < d.length; i += 4)
    if (d[i + 3] > 0 && (Math.abs(d[i] - d[i + 1]) > 40 || Math.abs(d[i + 1] - d[i + 2]) > 40)) coloured++;
  return coloured;
})"""


def test_the_test_browser_renders_emoji_as_readers_see_them(chromium_browser) -> None:
    """✅/❌ (the checkers' marks) and 🤗 draw in colour, not as empty boxes: the browser has an
    emoji font (fonts-noto-color-emoji, scripts/install_browser.sh), as readers' browsers do."""
    page = chromium_browser.new_page()
    try:
        page.set_content("<html><body></body></html>")
        coloured = page.evaluate(_COLOUR_GLYPHS_JS, ["✅", "❌", "🤗", "A"])
    finally:
        page.close()
    assert all(n > 20 for n in coloured[:3]), f"emoji drawn without colour (no emoji font?): {coloured[:3]}"
    assert coloured[3] == 0  # the test can tell: black text has no colour
