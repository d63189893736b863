"""Sphinx extension that makes the built course site work with no network at all.

Listed in ``_config.yml`` under ``sphinx.extra_extensions``. It

* adds ``site/static`` (filled by ``scripts/prepare_static.sh`` from pinned npm packages) to the
  site's static files, so that ``_static/vendor/`` holds MathJax 3, require.js, d3 and jQuery;
* points Sphinx's MathJax at the local copy (``mathjax_path``) instead of the jsDelivr CDN;
* rewrites the CDN URLs in bertviz's notebook outputs (the require.js ``<script>`` tag and the
  d3 / jQuery paths of its ``require.config``) to those local copies, page by page;
* drops sphinx-thebe's scripts when no thebe launch button is wanted: Jupyter Book always loads
  sphinx-thebe, whose config script is added twice and so raises
  "Identifier 'THEBE_JS_URL' has already been declared" on every page;
* warns (an error under ``-W``) when a page still loads a script, stylesheet or image from
  the network, naming the page and the URL.

The course's launch buttons (Colab, download) need none of thebe's code.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

from sphinx.application import Sphinx
from sphinx.errors import ExtensionError
from sphinx.util import logging

logger = logging.getLogger(__name__)

#: The MathJax bundle Sphinx loads by default, under ``_static/``.
LOCAL_MATHJAX = "vendor/mathjax/tex-mml-chtml.js"

#: CDN URLs found in notebook outputs -> local file under ``_static/`` (without ``.js``: the
#: matched URL's own ``.js`` suffix, present in a ``<script src>`` but not in a require.js
#: path, is kept as it was).
CDN_REWRITES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"https?://cdnjs\.cloudflare\.com/ajax/libs/require\.js/2\.[0-9.]+/require(?:\.min)?(\.js)?"),
     "vendor/requirejs/require"),
    (re.compile(r"https?://(?:cdnjs\.cloudflare\.com/ajax/libs|cdn\.jsdelivr\.net/npm)/d3@?/?5\.[0-9.]+/(?:dist/)?d3(?:\.min)?(\.js)?"),
     "vendor/d3/d3.min"),
    (re.compile(r"https?://(?:cdnjs\.cloudflare\.com/ajax/libs|ajax\.googleapis\.com/ajax/libs)/jquery/2\.[0-9.]+/jquery(?:\.min)?(\.js)?"),
     "vendor/jquery/jquery.min"),
]

#: What a page must not load from the network (links <a href> to other sites are fine).
_REMOTE_RESOURCE = re.compile(
    r"""<(?:script|img|iframe|source|audio|video)\b[^>]*?\bsrc\s*=\s*["']?(https?:)?//[^"'\s>]+"""
    r"""|<link\b[^>]*?\bhref\s*=\s*["']?(https?:)?//[^"'\s>]+[^>]*>""",
    re.IGNORECASE,
)
_URL = re.compile(r"""(?:src|href)\s*=\s*["']?((?:https?:)?//[^"'\s>]+)""", re.IGNORECASE)


def rewrite_cdn_urls(html: str, to_static: Callable[[str], str]) -> tuple[str, int]:
    """Replace the known CDN URLs in ``html`` by local ones.

    ``to_static("vendor/d3/d3.min")`` must return that file's URL relative to the page (the
    page's ``pathto``). Returns the new HTML and the number of URLs replaced.
    """
    count = 0
    for pattern, local in CDN_REWRITES:
        def repl(m: re.Match[str], local: str = local) -> str:
            return to_static(local) + (m.group(1) or "")
        html, n = pattern.subn(repl, html)
        count += n
    return html, count


def remote_resources(html: str) -> list[str]:
    """The URLs of scripts, stylesheets, images and frames that ``html`` loads from the network."""
    found = []
    for m in _REMOTE_RESOURCE.finditer(html):
        tag = m.group(0)
        if tag.lower().startswith("<link") and not re.search(
            r"""rel\s*=\s*["']?(?:stylesheet|preload|modulepreload|icon|shortcut icon)""", tag, re.I
        ):
            continue  # <link rel="canonical"> and the like are not fetched by the browser
        url = _URL.search(tag)
        if url:
            found.append(url.group(1))
    return found


def _static_dir(app: Sphinx) -> Path:
    configured = app.config.course_offline_static
    path = Path(configured)
    if not path.is_absolute():
        path = Path(app.srcdir) / path
    return path


def _on_config_inited(app: Sphinx, config: Any) -> None:
    static = _static_dir(app)
    mathjax = static / LOCAL_MATHJAX
    # The libraries are installed by the build script (scripts/build_site.sh runs
    # prepare_static.sh first), not from here: an extension does not run the repository's scripts.
    if not mathjax.is_file():
        raise ExtensionError(
            f"course_book.sphinx_offline: {mathjax} is missing. Run `bash scripts/prepare_static.sh` "
            "(it installs the pinned MathJax/require.js/d3/jQuery npm packages into site/static)."
        )
    if str(static) not in [str(p) for p in config.html_static_path]:
        config.html_static_path.append(str(static))
    if str(config.mathjax_path).startswith(("http://", "https://", "//")):
        config.mathjax_path = LOCAL_MATHJAX


def _thebe_wanted(app: Sphinx) -> bool:
    options = app.config.html_theme_options or {}
    launch = options.get("launch_buttons", {}) or {}
    thebe_config = app.config.thebe_config if "thebe_config" in app.config else {}
    return bool(launch.get("thebe")) or bool(isinstance(thebe_config, dict) and thebe_config.get("always_load"))


def _is_thebe_asset(asset: Any) -> bool:
    filename = str(getattr(asset, "filename", asset) or "")
    body = str(getattr(asset, "attributes", {}).get("body", "") if hasattr(asset, "attributes") else "")
    return "sphinx-thebe" in filename or "THEBE_JS_URL" in body or "unpkg.com/thebe" in filename


def _on_page_context(app: Sphinx, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    pathto = context.get("pathto")
    if pathto is not None and isinstance(context.get("body"), str):
        def to_static(local: str) -> str:
            return pathto("_static/" + local, 1)
        context["body"], _ = rewrite_cdn_urls(context["body"], to_static)
    if not app.config.course_offline_keep_thebe and not _thebe_wanted(app):
        for key in ("script_files", "css_files"):
            if isinstance(context.get(key), list):
                # In place: the builder restores its own lists after each page.
                context[key][:] = [a for a in context[key] if not _is_thebe_asset(a)]
    # Anything still fetched from the network is an error under -W, named precisely.
    remote = remote_resources(context.get("body") or "")
    for asset in context.get("script_files", []) + context.get("css_files", []):
        name = str(getattr(asset, "filename", asset) or "")
        if name.startswith(("http://", "https://", "//")):
            remote.append(name)
    for url in dict.fromkeys(remote):
        logger.warning(
            "[course] page %r loads %s from the network; the site must work offline: serve a "
            "pinned local copy from _static (see scripts/prepare_static.sh and "
            "course_book.sphinx_offline.CDN_REWRITES)",
            pagename, url, type="course", subtype="remote_asset", location=pagename,
        )


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the extension (Sphinx entry point)."""
    app.add_config_value("course_offline_static", "site/static", "html")
    app.add_config_value("course_offline_keep_thebe", False, "html")
    app.connect("config-inited", _on_config_inited)
    # After the other extensions (sphinx-thebe, MathJax) have added their assets.
    app.connect("html-page-context", _on_page_context, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
