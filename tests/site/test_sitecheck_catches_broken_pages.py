"""The test of the browser test: a deliberately broken page must fail it, a sound one pass.

A tiny static site is made in tmp_path: one page that does everything right (local MathJax,
local require.js/d3/jQuery for a bertviz head view, an existing image) and one page as a stock
build would make it (bertviz output and MathJax from CDNs, a script from a CDN, an image that
is missing). The same checker the real site tests use must pass the first and report each
fault of the second.
"""
from __future__ import annotations

import base64
import shutil
from pathlib import Path

import linkcheck
import pytest
import sitecheck

pytestmark = pytest.mark.browser

VENDOR = sitecheck.REPO / "site" / "static" / "vendor"
PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
TOKENS = ["[CLS]", "the", "cat", "sat", "[SEP]"]
N_LAYERS, N_HEADS = 2, 3


def _neuron_html() -> str:
    """bertviz's neuron view (course_utils.viz builds bertviz's own BERT from a BertModel)."""
    import torch
    from transformers import BertConfig, BertModel

    from course_utils import viz
    from course_utils.assets import load_tokenizer

    tokenizer = load_tokenizer("bert-base-uncased")
    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=24, num_hidden_layers=N_LAYERS,
                                num_attention_heads=N_HEADS, intermediate_size=32)).eval()
    return viz.neuron_view(bert, tokenizer, "the cat sat", layer=1, head=2).data


def _bertviz_html() -> str:
    import torch
    from bertviz import head_view, model_view

    torch.manual_seed(0)
    attn = tuple(torch.softmax(torch.randn(1, N_HEADS, len(TOKENS), len(TOKENS)), dim=-1) for _ in range(N_LAYERS))
    return (head_view(attn, TOKENS, html_action="return").data
            + model_view(attn, TOKENS, html_action="return").data)


def _page(body: str, head: str = "", *, lang: str = "", article_class: str = "") -> str:
    lang_attr = f" lang='{lang}'" if lang else ""
    cls = f" class='{article_class}'" if article_class else ""
    return (f"<!DOCTYPE html><html{lang_attr}><head><meta charset='utf-8'><title>t</title>{head}</head>"
            f"<body><main><article{cls}>{body}</article></main></body></html>")


# Prose with inline formulas (as MyST writes them: span.math) in a paragraph and a list item, and
# a display formula (div.math) far wider than a 390 px phone.
MATH_PROSE = (
    '<h1>Math</h1>'
    '<p>The rescaling is exact, because <span class="math notranslate nohighlight">\\(e^{x - m} / '
    '\\sum_j e^{x_j - m} = \\mathrm{softmax}(x)\\)</span>. The rest follows.</p>'
    '<ul><li>A head has size <span class="math notranslate nohighlight">\\(h_s = C / n_h\\)</span> here.</li></ul>'
    '<div class="math notranslate nohighlight">\\['
    + " + ".join(f"a_{{{i}}} b_{{{i}}}" for i in range(40)) + '\\]</div>')
OLD_MATH_RULE = ('<style>.bd-article mjx-container[display="true"], .bd-article .math '
                 '{ display: block; max-width: 100%; overflow-x: auto; overflow-y: hidden; }</style>')
MATHJAX = '<script defer src="_static/vendor/mathjax/tex-mml-chtml.js"></script>'
VIEWPORT = '<meta name="viewport" content="width=device-width, initial-scale=1">'
# What axe must catch: an image without alt text, light grey text on white (contrast 1.9:1),
# a button with no name, a page with no language.
INACCESSIBLE = (
    '<h1>Inaccessible</h1><img src="_images/dot.png">'
    '<p style="color:#c0c0c0;background:#ffffff">Grey on white, hard to read.</p>'
    '<button></button>')


@pytest.fixture(scope="module")
def tiny_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from course_book.sphinx_offline import rewrite_cdn_urls

    if not (VENDOR / "mathjax" / "tex-mml-chtml.js").is_file():
        import subprocess
        subprocess.run(["bash", str(sitecheck.REPO / "scripts" / "prepare_static.sh")], check=True)
    site = tmp_path_factory.mktemp("tiny_site")
    shutil.copytree(VENDOR, site / "_static" / "vendor")
    (site / "_images").mkdir()
    (site / "_images" / "dot.png").write_bytes(PNG_1PX)
    view = _bertviz_html()
    math = '<p><span class="math">\\(e^{i\\pi} + 1 = 0\\)</span></p>'
    good_view, n = rewrite_cdn_urls(view + _neuron_html(), lambda local: "_static/" + local)
    assert n == 9  # per view: the require.js tag, and require.config's d3 and jquery paths
    (site / "good.html").write_text(_page(
        math + '<img src="_images/dot.png" alt="a dot">' + good_view,
        head='<script defer src="_static/vendor/mathjax/tex-mml-chtml.js"></script>'))
    (site / "broken.html").write_text(_page(
        math + '<img src="_images/missing.png" alt="a missing figure">'
        '<script src="https://cdn.jsdelivr.net/npm/d3@5.7.0/dist/d3.min.js"></script>' + view,
        head='<script defer src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>'))
    (site / "index.html").write_text(_page('<a href="good.html">good</a> <a href="broken.html">broken</a>'))
    # The site's own stylesheet, then the same page with the old rule that made every formula a block.
    shutil.copy(sitecheck.REPO / "_static" / "custom.css", site / "_static" / "custom.css")
    css = '<link rel="stylesheet" href="_static/custom.css">'
    (site / "math_good.html").write_text(_page(MATH_PROSE, head=VIEWPORT + css + MATHJAX, lang="en",
                                               article_class="bd-article"))
    (site / "math_old_rule.html").write_text(_page(MATH_PROSE, head=VIEWPORT + css + OLD_MATH_RULE + MATHJAX, lang="en",
                                                   article_class="bd-article"))
    (site / "inaccessible.html").write_text(_page(INACCESSIBLE))
    return site


@pytest.fixture(scope="module")
def reports(tiny_site: Path, chromium_browser) -> dict[str, sitecheck.PageReport]:
    return sitecheck.check_site(tiny_site, [tiny_site / "good.html", tiny_site / "broken.html"],
                                chromium=chromium_browser)


def test_a_sound_page_passes(reports: dict[str, sitecheck.PageReport]) -> None:
    good = reports["good.html"]
    assert good.problems() == []
    assert good.math == {"mathjax": True, "elements": 1, "typeset": 1, "errors": []}
    assert [i["ok"] for i in good.images] == [True]
    head, model, neuron = sorted(good.bertviz, key=lambda v: v["kind"])
    assert (head["kind"], head["tokens"], head["heads"], head["layers"]) == ("head", (5, 5), N_HEADS, N_LAYERS)
    assert head["interaction"]["hover_highlighted"] == 1
    assert (model["kind"], model["tokens"], model["heads"], model["layers"]) == ("model", (5, 5), N_HEADS, N_LAYERS)
    assert model["interaction"]["detail_tokens"] == 2 * len(TOKENS)
    # "the cat sat" -> [CLS] the cat sat [SEP]: 5 tokens, the query/key view opens on click
    got = (neuron["kind"], neuron["tokens"], neuron["heads"], neuron["layers"])
    assert got == ("neuron", (5, 5), N_HEADS, N_LAYERS)
    assert neuron["interaction"] == {"hover_highlighted": 1, "expanded": "visible"}


def test_a_broken_page_fails_for_each_fault(reports: dict[str, sitecheck.PageReport]) -> None:
    broken = reports["broken.html"]
    problems = "\n".join(broken.problems())
    # the CDN script (and bertviz's CDN require.js, and MathJax from its CDN) were blocked ...
    assert "request to the network (blocked): https://cdn.jsdelivr.net/npm/d3@5.7.0/dist/d3.min.js" in problems
    require_js = "https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.6/require.min.js"
    assert f"request to the network (blocked): {require_js}" in problems
    # ... the missing image failed to load (HTTP 404) ...
    assert "image did not load: _images/missing.png" in problems
    assert any("missing.png (HTTP 404)" in r for r in broken.failed_requests)
    # ... and so math is not typeset, and the bertviz view draws nothing and throws.
    assert "math not typeset: 0 of 1" in problems
    assert "bertviz head view" in problems and "bertviz model view" in problems
    assert problems.count("drew no SVG: require.js did not load") == 2
    assert any("require" in e for e in broken.console_errors), broken.console_errors


def test_the_link_checker_reports_the_missing_image(tiny_site: Path) -> None:
    report = linkcheck.check_links(tiny_site)
    assert [(p, u) for p, u, _ in report.broken] == [("broken.html", "_images/missing.png")]
    assert ("broken.html", "https://cdn.jsdelivr.net/npm/d3@5.7.0/dist/d3.min.js") in report.external


@pytest.fixture(scope="module")
def readable_reports(tiny_site: Path, chromium_browser) -> dict[str, sitecheck.PageReport]:
    pages = [tiny_site / f for f in ("math_good.html", "math_old_rule.html", "inaccessible.html")]
    return sitecheck.check_site(tiny_site, pages, chromium=chromium_browser)


def test_inline_math_in_the_sites_css_passes(readable_reports: dict[str, sitecheck.PageReport]) -> None:
    good = readable_reports["math_good.html"]
    assert good.problems() == []
    assert good.inline_math["inline"] == 2
    assert good.inline_math_problems() == []
    # the wide display formula scrolls inside its own box; the phone page itself does not
    assert good.inline_math["display"] == 1 and good.inline_math["phone_display_scrolling"] == 1
    assert good.overflow_px == 0
    assert good.accessibility_problems() == []


def test_the_old_math_rule_fails_the_inline_math_check(readable_reports: dict[str, sitecheck.PageReport]) -> None:
    old = readable_reports["math_old_rule.html"]
    problems = old.inline_math_problems()
    # both inline formulas, on the desktop page and at 390 px
    assert len(problems) == 4, problems
    assert all("span.math.notranslate.nohighlight has display: block" in p for p in problems), problems
    assert any("The rescaling is exact, because" in p for p in problems), problems


def test_axe_reports_serious_violations(readable_reports: dict[str, sitecheck.PageReport]) -> None:
    bad = readable_reports["inaccessible.html"]
    found = {v["id"]: v["impact"] for v in bad.axe}
    assert found.get("image-alt") == "critical", found
    assert found.get("color-contrast") == "serious", found
    assert found.get("button-name") == "critical", found
    assert found.get("html-has-lang") == "serious", found
    problems = "\n".join(bad.accessibility_problems())
    assert "axe serious color-contrast" in problems and "axe critical image-alt" in problems
