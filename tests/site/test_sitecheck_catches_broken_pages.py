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

import pytest

import linkcheck
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


def _page(body: str, head: str = "") -> str:
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>t</title>{head}</head>"
            f"<body><article>{body}</article></body></html>")


@pytest.fixture(scope="module")
def tiny_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from course_utils.sphinx_offline import rewrite_cdn_urls

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
    assert (neuron["kind"], neuron["tokens"], neuron["heads"], neuron["layers"]) == ("neuron", (5, 5), N_HEADS, N_LAYERS)
    assert neuron["interaction"] == {"hover_highlighted": 1, "expanded": "visible"}


def test_a_broken_page_fails_for_each_fault(reports: dict[str, sitecheck.PageReport]) -> None:
    broken = reports["broken.html"]
    problems = "\n".join(broken.problems())
    # the CDN script (and bertviz's CDN require.js, and MathJax from its CDN) were blocked ...
    assert "request to the network (blocked): https://cdn.jsdelivr.net/npm/d3@5.7.0/dist/d3.min.js" in problems
    assert "request to the network (blocked): https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.6/require.min.js" in problems
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
