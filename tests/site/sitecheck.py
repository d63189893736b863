"""Open a built static site in headless Chromium with no network and report what is wrong.

Used by the browser tests (tests/site/test_browser.py) and by the test of those tests, which
runs the same checks on a deliberately broken page. Everything a page may load must come from
the local server: any other request is blocked (and reported), DNS resolves nothing but
127.0.0.1, so a CDN script cannot sneak through.
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import re
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlsplit

import book_toc  # scripts/ (pytest's pythonpath, pyproject.toml): the one reader of _toc.yml

REPO = Path(__file__).resolve().parents[2]
# The book whose built site is tested (its _toc.yml, _config.yml, chapters/): this repository,
# unless COURSE_BOOK_DIR names another (e.g. a throwaway book used to try the tests).
BOOK = Path(os.environ.get("COURSE_BOOK_DIR", REPO)).resolve()
CHROMIUM = Path("/usr/bin/chromium")
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

# bertviz puts its parameters (tokens, attention) into the page as a JS literal: the head and
# model views in their own script, the neuron view as a global assigned just before its script.
_BERTVIZ_PARAMS = re.compile(r"const params = (\{.*?\}); // HACK", re.DOTALL)
_NEURON_PARAMS = re.compile(r"window\.bertviz_params = (\{.*?\})\s*</script>", re.DOTALL)


def find_chromium() -> Path:
    """Debian's Chromium, installed by scripts/install_browser.sh when missing."""
    if not CHROMIUM.exists():
        subprocess.run(["bash", str(REPO / "scripts" / "install_browser.sh")], check=True)
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing after scripts/install_browser.sh")
    return CHROMIUM


def site_pages(site: Path) -> list[Path]:
    """Every HTML page of a built site (not the copied sources or static files)."""
    skip = {"_static", "_sources", "_images", "_downloads", "_sphinx_design_static"}
    return sorted(p for p in site.rglob("*.html") if not (set(p.relative_to(site).parts[:-1]) & skip))


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def browser() -> Iterator[Any]:
    """A headless Debian Chromium driven by Playwright, resolving no host but 127.0.0.1."""
    from playwright.sync_api import sync_playwright

    executable = find_chromium()
    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=str(executable),
            headless=True,
            args=["--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
                  "--disable-background-networking", "--no-first-run"],
        )
        try:
            yield b
        finally:
            b.close()


#: axe-core (pinned npm package, copied by scripts/prepare_static.sh; not part of the site).
AXE = REPO / "site" / "test-vendor" / "axe-core" / "axe.min.js"
SERIOUS_IMPACTS = ("serious", "critical")


@dataclass
class PageReport:
    """What one page did in the browser."""

    url: str
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    blocked_requests: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    math: dict = field(default_factory=dict)
    bertviz: list[dict] = field(default_factory=list)
    copy_buttons: dict = field(default_factory=dict)
    overflow_px: int = 0
    title: str = ""
    #: inline formulas (in a paragraph or list item) and those of them rendered as a block,
    #: on the desktop page and at 390 px: {"inline": n, "blocks": [...], "phone_blocks": [...]}
    inline_math: dict = field(default_factory=dict)
    #: axe-core's violations (every impact): [{"id", "impact", "help", "nodes": [selector, ...]}];
    #: None when axe did not run on the page
    axe: list[dict] | None = None

    def problems(self) -> list[str]:
        """Human-readable failures (empty when the page is fine)."""
        out = [f"console error: {e}" for e in self.console_errors]
        out += [f"failed request: {r}" for r in self.failed_requests]
        out += [f"request to the network (blocked): {r}" for r in self.blocked_requests]
        out += [f"image did not load: {i['src']}" for i in self.images if not i["ok"]]
        if self.math.get("elements", 0) and self.math.get("typeset", 0) < self.math["elements"]:
            out.append(f"math not typeset: {self.math['typeset']} of {self.math['elements']} formulas "
                       f"rendered by MathJax (MathJax loaded: {self.math.get('mathjax')})")
        out += [f"MathJax error: {e}" for e in self.math.get("errors", [])]
        for view in self.bertviz:
            out += [f"bertviz {view['kind']} view {view['id']}: {p}" for p in view["problems"]]
        return out

    def inline_math_problems(self) -> list[str]:
        """Inline formulas of a paragraph or list item that render as a block (a line of their own)."""
        out = [f"inline formula renders as a block ({b['why']}): ...{b['before']}[{b['tex']}]{b['after']}..."
               for b in self.inline_math.get("blocks", [])]
        out += [f"at 390 px, inline formula renders as a block ({b['why']}): "
                f"...{b['before']}[{b['tex']}]{b['after']}..."
                for b in self.inline_math.get("phone_blocks", [])]
        return out

    def accessibility_problems(self, impacts: tuple[str, ...] = SERIOUS_IMPACTS) -> list[str]:
        """axe-core violations of the given impacts (by default serious and critical)."""
        if self.axe is None:
            return ["axe-core did not run on this page"]
        return [f"axe {v['impact']} {v['id']}: {v['help']} ({len(v['nodes'])} elements, e.g. "
                f"{'; '.join(v['nodes'][:3])})" for v in self.axe if v["impact"] in impacts]


def _install_listeners(page: Any, report: PageReport) -> None:
    page.on("console", lambda m: report.console_errors.append(f"{m.text} ({m.location.get('url', '')})")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: report.console_errors.append(f"uncaught: {e}"))

    def failed(req: Any) -> None:
        if urlsplit(req.url).hostname in LOCAL_HOSTS:
            report.failed_requests.append(f"{req.url} ({req.failure})")

    page.on("requestfailed", failed)
    page.on("response", lambda r: report.failed_requests.append(f"{r.url} (HTTP {r.status})")
            if r.status >= 400 else None)

    def route(r: Any) -> None:
        url = r.request.url
        if url.startswith(("data:", "blob:", "about:")) or urlsplit(url).hostname in LOCAL_HOSTS:
            r.continue_()
        else:
            report.blocked_requests.append(url)
            r.abort("blockedbyclient")

    page.route("**/*", route)


_IMAGES_JS = """async () => {
  const out = [];
  for (const img of Array.from(document.images)) {
    if (img.loading === 'lazy') img.loading = 'eager';
    try { await img.decode(); } catch (e) {}
    const code = img.closest('.cell') && img.closest('.cell').querySelector('.cell_input pre');
    out.push({src: img.getAttribute('src'), ok: img.complete && img.naturalWidth > 0,
              alt: img.getAttribute('alt'),
              in_article: !!img.closest('article'),
              in_output: !!img.closest('.cell_output'),
              cell_code: code ? code.innerText.split('\\n').filter(l => l.trim()).slice(0, 2).join(' | ') : '',
              figure: !!img.closest('figure'),
              caption: (img.closest('figure') && img.closest('figure').querySelector('figcaption'))
                       ? img.closest('figure').querySelector('figcaption').innerText.trim() : ''});
  }
  return out;
}"""

_MATH_JS = """async () => {
  const mj = window.MathJax;
  const loaded = !!(mj && mj.startup && mj.startup.promise);
  if (loaded) { try { await mj.startup.promise; } catch (e) {} }
  const els = Array.from(document.querySelectorAll('.math'))
      .filter(e => !e.parentElement.closest('.math'));
  return {mathjax: loaded, elements: els.length,
          typeset: els.filter(e => e.querySelector('mjx-container')).length,
          errors: Array.from(document.querySelectorAll('mjx-merror'))
                      .map(e => e.getAttribute('data-mjx-error') || e.textContent)};
}"""


# An inline formula is MyST's span.math (display math is a div.math); inside a paragraph or a
# list item, it and every element between it and that p/li must be laid out inline: an outer
# display that is not inline-level (block, flex, grid, table, list-item, flow-root) puts the
# formula on a line of its own -- what `.bd-article .math { display: block }` did to all of them.
_INLINE_MATH_JS = """async () => {
  const mj = window.MathJax;
  if (mj && mj.startup && mj.startup.promise) { try { await mj.startup.promise; } catch (e) {} }
  const inlineLevel = d => d.startsWith('inline') || d === 'contents' || d === 'none';
  const text = n => (n ? n.textContent : '').replace(/\\s+/g, ' ');
  const els = Array.from(document.querySelectorAll('article span.math, article mjx-container:not([display="true"])'))
      .filter(e => !e.parentElement.closest('span.math, div.math, mjx-container'))
      .filter(e => e.closest('p, li'));
  const blocks = [];
  for (const e of els) {
    const host = e.closest('p, li');
    let why = '';
    for (let n = e; n && n !== host; n = n.parentElement) {
      const d = getComputedStyle(n).display;
      if (!inlineLevel(d)) {
        const named = n.className && typeof n.className === 'string';
        const cls = named ? '.' + n.className.trim().split(/\\s+/).join('.') : '';
        why = `${n.tagName.toLowerCase()}${cls} has display: ${d}`; break;
      }
    }
    if (!why) continue;
    const prev = e.previousSibling, next = e.nextSibling;
    blocks.push({why, tex: (e.dataset.tex || text(e.querySelector('mjx-assistive-mml')) || text(e)).slice(0, 60),
                 before: text(prev).slice(-40), after: text(next).slice(0, 40)});
  }
  // Display formulas: how many, and how many scroll sideways inside their own box.
  const shown = Array.from(document.querySelectorAll('article mjx-container[display="true"]'));
  return {inline: els.length, blocks, display: shown.length,
          display_scrolling: shown.filter(c => c.scrollWidth > c.clientWidth + 1).length};
}"""

# axe-core in the page (injected from the local copy: no network), light mode as configured.
_AXE_JS = """async () => {
  const mj = window.MathJax;
  if (mj && mj.startup && mj.startup.promise) { try { await mj.startup.promise; } catch (e) {} }
  const r = await axe.run(document, {resultTypes: ['violations']});
  return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                                 nodes: v.nodes.map(n => n.target.join(' '))}));
}"""


def bertviz_params(html: str) -> dict[str, dict]:
    """The parameters of every bertviz view in a page's HTML, by the view's root div id."""
    views = {}
    for m in _BERTVIZ_PARAMS.finditer(html):
        params = json.loads(m.group(1))
        params["_kind"] = "model" if "total_heads" in params or "display_mode" in params else "head"
        views[params["root_div_id"]] = params
    for m in _NEURON_PARAMS.finditer(html):
        params = json.loads(m.group(1))
        params["_kind"] = "neuron"
        views[params["root_div_id"]] = params
    return views


def _start_view(page: Any, kind: str, vid: str, data: dict, n_heads: int, n_layers: int) -> tuple[dict, bool]:
    """A view's report, and whether require.js loaded (without it, bertviz's code never runs)."""
    result = {"kind": kind, "id": vid, "tokens": (len(data["left_text"]), len(data["right_text"])),
              "heads": n_heads, "layers": n_layers, "problems": []}
    if not page.evaluate("() => typeof window.requirejs === 'function'"):
        result["problems"].append(f"drew no SVG: require.js did not load, so {kind} view's d3/jQuery code never ran")
        return result, False
    return result, True


def _drawn(page: Any, script: str, arg: list, problems: list[str], what: str) -> bool:
    """Whether ``script`` becomes true within 15 s (the view drew); if not, why, in ``problems``."""
    try:
        page.wait_for_function(script, arg=arg, timeout=15000)
        return True
    except Exception:  # noqa: BLE001 - a timeout or a crashed page: either way nothing was drawn
        problems.append(f"drew no SVG {what} (require.js / d3 / jQuery not loaded?)")
        return False


def _hover_highlights(page: Any, token: Any, script: str, arg: str, problems: list[str]) -> int:
    """Hover ``token``: how many tokens ``script`` finds highlighted (one is expected)."""
    token.scroll_into_view_if_needed()
    token.hover()
    highlighted = page.evaluate(script, arg)
    if highlighted != 1:
        problems.append(f"hovering a token highlighted {highlighted} tokens, expected 1")
    return highlighted


def _check_head_view(page: Any, vid: str, params: dict) -> dict:
    data = params["attention"][int(params.get("default_filter", 0))]
    n_heads = len(data["attn"][0])
    n_layers = len(params.get("include_layers") or data["attn"])
    root = f"#{vid}"
    result, ok = _start_view(page, "head", vid, data, n_heads, n_layers)
    problems = result["problems"]
    if not ok or not _drawn(page, "([r, n]) => document.querySelectorAll(r + ' #vis svg #left text').length >= n",
                            [root, len(data["left_text"])], problems, "with its tokens"):
        return result
    drawn = page.evaluate("""(r) => {
      const svg = document.querySelector(r + ' #vis svg');
      const texts = side => Array.from(svg.querySelectorAll('#' + side + ' text')).map(t => t.textContent);
      const boxes = Array.from(svg.querySelectorAll(':scope > g:not([id])')).filter(g => g.querySelector('rect'));
      return {left: texts('left'), right: texts('right'),
              checkboxes: boxes.length ? boxes[boxes.length - 1].querySelectorAll('rect').length : 0,
              layers: document.querySelectorAll(r + ' #layer option').length,
              lines: svg.querySelectorAll('#attention line').length};
    }""", root)
    if drawn["left"] != data["left_text"] or drawn["right"] != data["right_text"]:
        problems.append(f"tokens drawn {drawn['left']} / {drawn['right']} differ from the view's data "
                        f"{data['left_text']} / {data['right_text']}")
    if drawn["checkboxes"] != n_heads:
        problems.append(f"{drawn['checkboxes']} head boxes drawn, data has {n_heads} heads")
    if drawn["layers"] != n_layers:
        problems.append(f"layer menu has {drawn['layers']} entries, data has {n_layers} layers")
    expected_lines = n_heads * len(data["left_text"]) * len(data["right_text"])
    if drawn["lines"] != expected_lines:
        problems.append(f"{drawn['lines']} attention lines drawn, expected {expected_lines}")
    # Hover a token: its gray background appears (d3 'mouseover' handler ran).
    highlighted = _hover_highlights(page, page.locator(f"{root} #vis svg #left text").first,
                                    "(r) => Array.from(document.querySelectorAll(r + ' #vis svg #left .background'))"
                                    ".filter(b => b.style.opacity === '1').length", root, problems)
    page.mouse.move(0, 0)
    # Click a head's box: it toggles (its colour is lightened or restored). bertviz ignores a
    # click that would switch off the only visible head, so pick another one then.
    shown = params.get("heads")
    index = 1 if (shown and len(shown) == 1 and shown[0] == 0 and n_heads > 1) else 0
    box = page.locator(f"{root} #vis svg > g:not([id]) rect").nth(index)
    before = box.get_attribute("fill")
    box.click()
    after = box.get_attribute("fill")
    if before == after:
        problems.append("clicking a head's box did not toggle it")
    box.click()  # and back on
    result["interaction"] = {"hover_highlighted": highlighted, "fill": [before, after]}
    return result


def _check_model_view(page: Any, vid: str, params: dict) -> dict:
    data = params["attention"][int(params.get("default_filter", 0))]
    n_layers, n_heads = len(data["attn"]), len(data["attn"][0])
    root = f"#{vid}"
    result, ok = _start_view(page, "model", vid, data, n_heads, n_layers)
    problems = result["problems"]
    if not ok or not _drawn(page, "([r, n]) => document.querySelectorAll(r + ' #vis svg .attn_background').length >= n",
                            [root, n_layers * n_heads], problems, "grid of heads"):
        return result
    thumbs = page.evaluate("(r) => document.querySelectorAll(r + ' #vis svg .attn_background').length", root)
    if thumbs != n_layers * n_heads:
        problems.append(f"{thumbs} head thumbnails drawn, data has {n_layers} layers x {n_heads} heads")
    # Click the first thumbnail: the detail view with every token opens.
    first = page.locator(f"{root} #attn_background_0_0")
    first.scroll_into_view_if_needed()
    bbox = first.bounding_box()
    page.mouse.click(bbox["x"] + bbox["width"] / 2, bbox["y"] + bbox["height"] / 2)
    detail = page.evaluate(
        "(r) => Array.from(document.querySelectorAll(r + ' #vis svg .detail text.token'))"
        ".map(t => t.textContent)", root)
    expected = data["left_text"] + data["right_text"]
    if detail != expected:
        problems.append(f"clicking a head showed tokens {detail}, expected {expected}")
    result["interaction"] = {"detail_tokens": len(detail)}
    return result


def _check_neuron_view(page: Any, vid: str, params: dict) -> dict:
    data = params["attention"][params.get("default_filter", "all")]
    n_layers, n_heads = len(data["attn"]), len(data["attn"][0])
    root = f"#{vid}"
    result, ok = _start_view(page, "neuron", vid, data, n_heads, n_layers)
    problems = result["problems"]
    collapsed = f"{root} #vis svg #collapsed"
    if not ok or not _drawn(page, "([s, n]) => document.querySelectorAll(s + ' #leftText text.token').length >= n",
                            [collapsed, len(data["left_text"])], problems, "with its tokens"):
        return result
    drawn = page.evaluate("""([r, s]) => ({
        left: Array.from(document.querySelectorAll(s + ' #leftText text.token')).map(t => t.textContent),
        right: Array.from(document.querySelectorAll(s + ' #rightText text.token')).map(t => t.textContent),
        layers: document.querySelectorAll(r + ' #layer option').length,
        heads: document.querySelectorAll(r + ' #att_head option').length})""", [root, collapsed])
    if drawn["left"] != data["left_text"] or drawn["right"] != data["right_text"]:
        problems.append(f"tokens drawn {drawn['left']} / {drawn['right']} differ from the view's data "
                        f"{data['left_text']} / {data['right_text']}")
    if (drawn["layers"], drawn["heads"]) != (n_layers, n_heads):
        problems.append(f"menus offer {drawn['layers']} layers / {drawn['heads']} heads, "
                        f"data has {n_layers} / {n_heads}")
    # Hover the first token: it is highlighted; click its (+): the query/key computation opens.
    token = page.locator(f"{collapsed} #leftText > g").first
    highlighted = _hover_highlights(page, token, "(s) => Array.from(document.querySelectorAll(s + ' #leftText "
                                    ".highlight')).filter(b => b.style.opacity === '1').length", collapsed, problems)
    token.locator("rect").nth(1).click()
    expanded = page.evaluate("(r) => document.querySelector(r + ' #vis svg #expanded')"
                             ".getAttribute('visibility')", root)
    if expanded != "visible":
        problems.append(f"clicking a token's (+) did not open the query/key view (visibility={expanded})")
    result["interaction"] = {"hover_highlighted": highlighted, "expanded": expanded}
    return result


def check_page(page: Any, url: str, html: str | None = None, *, screenshot: Path | None = None,
               phone_screenshot: Path | None = None, interact: bool = True, axe: bool = True) -> PageReport:
    """Open ``url`` in ``page`` (a fresh Playwright page) and check everything the site promises.

    ``html`` is the page's source (for the bertviz views' expected tokens and heads).
    """
    report = PageReport(url=url)
    _install_listeners(page, report)
    page.set_viewport_size(DESKTOP)
    page.goto(url, wait_until="load", timeout=60000)
    with contextlib.suppress(Exception):
        page.wait_for_load_state("networkidle", timeout=15000)
    report.title = page.title()
    report.images = page.evaluate(_IMAGES_JS)
    report.math = page.evaluate(_MATH_JS)
    report.inline_math = page.evaluate(_INLINE_MATH_JS)
    if axe:
        if not AXE.is_file():
            subprocess.run(["bash", str(REPO / "scripts" / "prepare_static.sh")], check=True)
        page.add_script_tag(path=str(AXE))
        report.axe = page.evaluate(_AXE_JS)
    views = bertviz_params(html or "")
    roots = set(re.findall(r"""<div id=["'](bertviz-[0-9a-f]+)["']""", html or ""))
    for vid in sorted(roots - set(views)):
        report.bertviz.append({"kind": "?", "id": vid, "problems": [
            "no `const params = {...}; // HACK` found for this view: cannot tell its tokens/heads"]})
    for vid, params in views.items():
        check = {"head": _check_head_view, "model": _check_model_view, "neuron": _check_neuron_view}[params["_kind"]]
        if interact:
            report.bertviz.append(check(page, vid, params))
    report.copy_buttons = page.evaluate("""() => {
        const blocks = Array.from(document.querySelectorAll('article div.highlight'))
            .filter(h => h.closest('div.cell_input') || !h.closest('div.cell_output'));
        return {code_blocks: blocks.length,
                without_button: blocks.filter(h => !h.querySelector('button.copybtn')).length};
    }""")
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.evaluate("() => window.scrollTo(0, 0)")
        page.screenshot(path=str(screenshot), full_page=True)
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(300)
    phone = page.evaluate(_INLINE_MATH_JS)
    report.inline_math.update(phone_blocks=phone["blocks"], phone_display_scrolling=phone["display_scrolling"])
    report.overflow_px = page.evaluate(
        "() => Math.max(0, document.documentElement.scrollWidth - document.documentElement.clientWidth)")
    if phone_screenshot is not None:
        page.evaluate("() => window.scrollTo(0, 0)")
        page.screenshot(path=str(phone_screenshot), full_page=True)
    return report


def check_site(site: Path, pages: list[Path] | None = None, *, screenshots: Path | None = None,
               chromium: Any = None) -> dict[str, PageReport]:
    """Check every page of ``site``; returns the reports by page path (relative, posix).

    ``chromium`` is a running Playwright browser (Playwright allows one per thread); by default
    one is started for this call.
    """
    pages = site_pages(site) if pages is None else pages
    reports = {}
    with contextlib.ExitStack() as stack:
        base = stack.enter_context(serve(site))
        b = chromium if chromium is not None else stack.enter_context(browser())
        for p in pages:
            rel = p.relative_to(site).as_posix()
            stem = rel.removesuffix(".html").replace("/", "__")
            context = b.new_context()
            page = context.new_page()
            try:
                reports[rel] = check_page(
                    page, base + rel, p.read_text(encoding="utf-8", errors="replace"),
                    screenshot=screenshots / f"{stem}.png" if screenshots else None,
                    phone_screenshot=screenshots / f"{stem}.390px.png" if screenshots else None)
            finally:
                context.close()
    return reports


def toc_files(root: Path = BOOK) -> list[str]:
    """The documents of the book's ``_toc.yml`` (root first), without suffix (``scripts/book_toc.py``)."""
    return book_toc.toc_files(root)


def chapter_notebooks(root: Path = BOOK) -> list[str]:
    """The book's chapters that are notebooks, as ``chapters/NN_name`` (``scripts/book_toc.py``)."""
    return book_toc.chapter_notebooks(root)
