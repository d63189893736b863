"""course_book.sphinx_offline: CDN URLs of notebook outputs become local ones (no browser)."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from course_book.sphinx_offline import CDN_REWRITES, LOCAL_MATHJAX, remote_resources, rewrite_cdn_urls

REPO = Path(__file__).resolve().parents[2]


def _views() -> dict[str, str]:
    import torch
    from bertviz import head_view, model_view

    attn = tuple(torch.full((1, 2, 3, 3), 1 / 3) for _ in range(2))
    tokens = ["a", "b", "c"]
    return {"head": head_view(attn, tokens, html_action="return").data,
            "model": model_view(attn, tokens, html_action="return").data}


@pytest.mark.parametrize("kind", ["head", "model"])
def test_bertviz_output_is_rewritten_to_local_copies(kind: str) -> None:
    html = _views()[kind]
    assert remote_resources(html) == ["https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.6/require.min.js"]
    out, n = rewrite_cdn_urls(html, lambda local: "../_static/" + local)
    assert n == 3
    assert '<script src="../_static/vendor/requirejs/require.js"></script>' in out
    assert "d3: '../_static/vendor/d3/d3.min'" in out
    assert "jquery: '../_static/vendor/jquery/jquery.min'" in out
    assert remote_resources(out) == []
    assert not re.search(r"cdnjs|googleapis|jsdelivr", out)


def test_every_rewrite_target_is_shipped() -> None:
    subprocess.run(["bash", str(REPO / "scripts" / "prepare_static.sh")], check=True)
    static = REPO / "site" / "static"
    for _, local in CDN_REWRITES:
        assert (static / f"{local}.js").is_file(), local
    assert (static / LOCAL_MATHJAX).is_file()
    # The pinned versions, as installed from the lock file.
    versions = json.loads((static / "vendor" / "versions.json").read_text())
    assert versions == {"mathjax": "3.2.2", "requirejs": "2.3.6", "d3": "5.7.0", "jquery": "2.1.0",
                        "axe-core": "4.14.1"}
    # axe-core is for the browser tests only: beside the site's static files, not among them
    assert (REPO / "site" / "test-vendor" / "axe-core" / "axe.min.js").is_file()
    assert not (static / "vendor" / "axe-core").exists()
    lock = json.loads((REPO / "site" / "package-lock.json").read_text())
    for name, version in versions.items():
        entry = lock["packages"][f"node_modules/{name}"]
        assert entry["version"] == version and entry["integrity"].startswith("sha512-")


def test_remote_resources_ignores_plain_links() -> None:
    html = ('<a href="https://arxiv.org/abs/1706.03762">paper</a>'
            '<link rel="canonical" href="https://example.org/x">'
            '<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Lato">'
            '<img src="//cdn.example.org/a.png" alt="a">'
            '<script src="_static/local.js"></script>')
    assert remote_resources(html) == ["https://fonts.googleapis.com/css?family=Lato", "//cdn.example.org/a.png"]


def _build(tmp_path: Path, pages: dict[str, str]) -> tuple[Path, str]:
    """Build a tiny Sphinx project with the extension; returns (html dir, warnings)."""
    import io

    from sphinx.application import Sphinx

    src = tmp_path / "src"
    src.mkdir()
    (src / "conf.py").write_text(
        "extensions = ['sphinx.ext.mathjax', 'course_book.sphinx_offline']\n"
        f"course_offline_static = {str(REPO / 'site' / 'static')!r}\n")
    for name, text in pages.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(text)
    out, warnings = tmp_path / "html", io.StringIO()
    app = Sphinx(str(src), str(src), str(out), str(tmp_path / "doctrees"), "html",
                 status=io.StringIO(), warning=warnings, freshenv=True)
    app.build()
    return out, warnings.getvalue()


def _raw(html: str) -> str:
    return ".. raw:: html\n\n" + "".join(f"   {line}\n" for line in html.splitlines()) + "\n"


def test_sphinx_build_serves_math_and_bertviz_locally(tmp_path: Path) -> None:
    subprocess.run(["bash", str(REPO / "scripts" / "prepare_static.sh")], check=True)
    view = _views()["head"]
    out, warnings = _build(tmp_path, {
        "index.rst": "Home\n====\n\n.. toctree::\n\n   sub/page\n\nMath :math:`e^{i\\pi}+1=0`.\n",
        "sub/page.rst": "Page\n====\n\nMath :math:`x^2`.\n\n" + _raw(view),
    })
    assert warnings == "", warnings
    page = (out / "sub" / "page.html").read_text()
    assert 'src="../_static/vendor/mathjax/tex-mml-chtml.js' in page
    assert '<script src="../_static/vendor/requirejs/require.js"></script>' in page
    assert "d3: '../_static/vendor/d3/d3.min'" in page
    assert remote_resources(page) == []
    for local in ("vendor/mathjax/tex-mml-chtml.js", "vendor/requirejs/require.js",
                  "vendor/d3/d3.min.js", "vendor/jquery/jquery.min.js"):
        assert (out / "_static" / local).is_file(), local


def test_sphinx_build_warns_about_a_remote_asset(tmp_path: Path) -> None:
    _, warnings = _build(tmp_path, {
        "index.rst": "Home\n====\n\n" + _raw('<img src="https://example.org/figure.png" alt="remote">'),
    })
    assert "page 'index' loads https://example.org/figure.png from the network" in warnings, warnings
