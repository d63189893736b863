"""Internal links and anchors of the built site resolve; external links are listed, not fetched."""
from __future__ import annotations

from pathlib import Path

import linkcheck
import pytest


@pytest.mark.browser  # needs the built site (scripts/test.sh builds it first)
def test_internal_links_and_anchors_resolve(site: Path, artifacts: Path) -> None:
    report = linkcheck.check_links(site)
    linkcheck.write_external(report, artifacts / "external_links.txt")
    assert report.checked > 50, f"only {report.checked} internal links found in {site}"
    assert report.broken == [], "\n".join(f"{p}: {u} ({why})" for p, u, why in report.broken)


@pytest.mark.browser
def test_external_links_are_listed(site: Path, artifacts: Path) -> None:
    report = linkcheck.check_links(site)
    listed = artifacts / "external_links.txt"
    linkcheck.write_external(report, listed)
    lines = listed.read_text(encoding="utf-8").splitlines()
    assert lines == sorted(set(lines))
    # The Colab buttons are external links of every chapter page.
    assert any(line.startswith("https://colab.research.google.com/github/") for line in lines), lines[:5]


def test_checker_finds_a_broken_link_and_anchor(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text(
        '<html><body><h1 id="top">x</h1><a href="#top">ok</a><a href="other.html#nowhere">bad anchor</a>'
        '<a href="missing.html">missing</a><img src="_images/gone.png" alt="gone">'
        '<a href="https://example.org/x">ext</a></body></html>')
    (tmp_path / "other.html").write_text('<html><body><p id="here">y</p>'
                                         '<a href="index.html#top">back</a></body></html>')
    report = linkcheck.check_links(tmp_path)
    broken = {(p, u) for p, u, _ in report.broken}
    assert broken == {("index.html", "other.html#nowhere"), ("index.html", "missing.html"),
                      ("index.html", "_images/gone.png")}
    assert report.external == [("index.html", "https://example.org/x")]
