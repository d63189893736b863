"""Fixtures of the site tests: the built site, a local server, headless Debian Chromium.

The site folder is ``$COURSE_SITE_DIR`` (default ``_build/html``, what scripts/build_site.sh
makes). Tests marked ``browser`` need it built; scripts/test.sh builds it first.
Screenshots (desktop and 390 px wide) go to ``artifacts/screenshots/``.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import sitecheck

REPO = sitecheck.REPO
ARTIFACTS = REPO / "artifacts"


def site_dir() -> Path:
    """The built site to test."""
    path = Path(os.environ.get("COURSE_SITE_DIR", "_build/html"))
    return path if path.is_absolute() else REPO / path


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``page`` parametrises a test over every page of the built site."""
    if "page" in metafunc.fixturenames:
        site = site_dir()
        pages = [p.relative_to(site).as_posix() for p in sitecheck.site_pages(site)] if site.is_dir() else []
        metafunc.parametrize("page", pages or ["<no built site>"])


@pytest.fixture(scope="session")
def site() -> Path:
    path = site_dir()
    if not (path / "index.html").is_file():
        pytest.fail(f"no built site at {path}: run `bash scripts/build_site.sh` first "
                    "(or point COURSE_SITE_DIR at a built _build/html)")
    return path


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def chromium_browser():
    """The one headless Chromium (no network) of the session: Playwright's sync API allows
    one running instance per thread, so every test shares it."""
    with sitecheck.browser() as b:
        yield b


@pytest.fixture(scope="session")
def site_reports(site: Path, artifacts: Path, chromium_browser) -> dict[str, sitecheck.PageReport]:
    """Every page opened once in headless Chromium with the network closed (with screenshots)."""
    shots = artifacts / "screenshots"
    if shots.is_dir():
        for old in shots.glob("*.png"):
            old.unlink()
    return sitecheck.check_site(site, screenshots=shots, chromium=chromium_browser)


@pytest.fixture(scope="session")
def site_url(site: Path):
    with sitecheck.serve(site) as base:
        yield base
