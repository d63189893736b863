"""Check the links of a built static site without the network.

Every internal link (``href``/``src`` of pages, scripts, stylesheets, images) must point at a
file of the site, and every ``#anchor`` at an ``id`` (or ``name``) in the target page. External
links are listed (page, URL), never fetched.

    python tests/site/linkcheck.py [_build/html] [--external artifacts/external_links.txt]
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

from sitecheck import site_pages

_LINK_ATTRS = {"a": "href", "link": "href", "img": "src", "script": "src", "iframe": "src",
               "source": "src", "area": "href"}


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for key in ("id", "name"):
            if a.get(key):
                self.ids.add(a[key])
        attr = _LINK_ATTRS.get(tag)
        if attr and a.get(attr):
            self.links.append(a[attr].strip())


@dataclass
class LinkReport:
    """Broken internal links and the external links, each as (page, url)."""

    broken: list[tuple[str, str, str]] = field(default_factory=list)  # page, url, why
    external: list[tuple[str, str]] = field(default_factory=list)
    checked: int = 0


def _parse(path: Path, cache: dict[Path, _PageParser]) -> _PageParser:
    if path not in cache:
        parser = _PageParser()
        parser.feed(path.read_text(encoding="utf-8", errors="replace"))
        cache[path] = parser
    return cache[path]


def check_links(site: Path) -> LinkReport:
    """Check every page of ``site`` (a built HTML folder)."""
    site = site.resolve()
    report = LinkReport()
    cache: dict[Path, _PageParser] = {}
    for page in site_pages(site):
        rel_page = page.relative_to(site).as_posix()
        for url in _parse(page, cache).links:
            parts = urlsplit(url)
            if parts.scheme in ("http", "https") or url.startswith("//"):
                report.external.append((rel_page, url))
                continue
            if parts.scheme in ("mailto", "javascript", "data", "tel"):
                continue
            if parts.scheme:
                report.broken.append((rel_page, url, f"unknown scheme {parts.scheme!r}"))
                continue
            report.checked += 1
            target_path, fragment = urldefrag(url)
            target_path = unquote(urlsplit(target_path).path)
            if target_path.startswith("/"):
                target = site / target_path.lstrip("/")
            elif target_path:
                target = (page.parent / target_path).resolve()
            else:
                target = page
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                report.broken.append((rel_page, url, "no such file in the site"))
                continue
            if fragment and target.suffix == ".html":
                if unquote(fragment) not in _parse(target, cache).ids:
                    where = target.relative_to(site).as_posix()
                    report.broken.append((rel_page, url, f"no id {fragment!r} in {where}"))
    return report


def write_external(report: LinkReport, path: Path) -> None:
    """List the external links, one ``URL<TAB>page`` line each, sorted, de-duplicated."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = sorted({f"{url}\t{page}" for page, url in report.external})
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("site", nargs="?", default="_build/html")
    ap.add_argument("--external", default="artifacts/external_links.txt")
    args = ap.parse_args(argv)
    report = check_links(Path(args.site))
    write_external(report, Path(args.external))
    for page, url, why in report.broken:
        print(f"BROKEN {page}: {url} ({why})")
    print(f"{report.checked} internal links checked, {len(report.broken)} broken; "
          f"{len(report.external)} external links listed in {args.external} (not fetched)")
    return 1 if report.broken else 0


if __name__ == "__main__":
    sys.exit(main())
