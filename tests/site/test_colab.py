"""Launch and download: every chapter opens in Colab and downloads as .ipynb; its set-up cell
installs this repository's course_utils (checked against the local checkout, offline)."""
from __future__ import annotations

import html
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import sitecheck
import sync_colab  # scripts/: pytest's pythonpath (pyproject.toml)
import yaml

REPO = sitecheck.REPO
CODE_COLUMN = 88  # chapters/ruff.toml's line-length (its E501 lets a line that ends in a URL pass)


def _repository(book: Path = REPO) -> dict:
    return yaml.safe_load((book / "_config.yml").read_text(encoding="utf-8"))["repository"]


def colab_url(chapter: str, book: Path = REPO) -> str:
    """The Colab URL of a chapter, from _config.yml's repository (what the rocket button links)."""
    repo = _repository(book)
    owner_repo = repo["url"].split("github.com/")[1].strip("/").removesuffix(".git")
    prefix = str(repo.get("path_to_book") or "").strip("/")
    path = f"{prefix}/{chapter}.ipynb" if prefix else f"{chapter}.ipynb"
    return f"https://colab.research.google.com/github/{owner_repo}/blob/{repo['branch']}/{path}"


def _project() -> dict:
    """pyproject.toml's [project] name and version (tomllib is Python 3.11+)."""
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        return {k: re.search(rf'^{k} = "([^"]+)"', text, re.M).group(1) for k in ("name", "version")}
    return tomllib.loads(text)["project"]


def test_config_names_a_github_repository() -> None:
    repo = _repository()
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", repo["url"]), repo["url"]
    assert repo["branch"]
    assert colab_url("chapters/01_architectures") == (
        "https://colab.research.google.com/github/" + repo["url"].split("github.com/")[1]
        + f"/blob/{repo['branch']}/chapters/01_architectures.ipynb")


@pytest.mark.browser  # needs the built site
def test_chapter_pages_have_colab_and_download_links(site: Path) -> None:
    chapters = sitecheck.chapter_notebooks()
    assert chapters, "no chapter notebooks in _toc.yml"
    for chapter in chapters:
        page = site / f"{chapter}.html"
        text = page.read_text(encoding="utf-8")
        hrefs = [html.unescape(h) for h in re.findall(r'<a href="([^"]+)"', text)]
        expected = colab_url(chapter, sitecheck.BOOK)
        assert expected in hrefs, f"{chapter}: no Colab link {expected}"
        downloads = [h for h in hrefs if h.endswith(f"{Path(chapter).name}.ipynb") and not h.startswith("http")]
        assert downloads, f"{chapter}: no download link of its .ipynb"
        target = (page.parent / downloads[0]).resolve()
        assert target.is_file(), f"{chapter}: download link {downloads[0]} points at nothing"
        assert target.read_bytes() == (sitecheck.BOOK / f"{chapter}.ipynb").read_bytes(), \
            f"{chapter}: the downloadable notebook is not the repository's"
        nb = nbformat.read(target, as_version=4)
        assert sync_colab.COLAB_MARKER in nb.cells[1].source


def test_every_chapter_installs_the_configured_repository() -> None:
    """`python scripts/sync_colab.py --check` passes: set-up cells agree with _config.yml."""
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "sync_colab.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _fake_book(tmp_path: Path, install_line: str, *, second: bool = True) -> Path:
    (tmp_path / "chapters").mkdir()
    shutil.copy(REPO / "_config.yml", tmp_path / "_config.yml")
    setup = ('# Set-up: on Colab, install the course\'s helper package (a no-op anywhere else).\n'
             'import sys\nif "google.colab" in sys.modules:\n    ' + install_line)
    cells = [nbformat.v4.new_markdown_cell("# Chapter 9 — Test"), nbformat.v4.new_code_cell(setup),
             nbformat.v4.new_code_cell("x = 1")]
    if not second:
        cells.insert(1, nbformat.v4.new_code_cell("y = 2"))
    nb = nbformat.v4.new_notebook(cells=cells)
    nbformat.write(nb, tmp_path / "chapters" / "09_test.ipynb")
    return tmp_path


def test_sync_colab_rewrites_only_the_url(tmp_path: Path) -> None:
    book = _fake_book(tmp_path, '!pip install -q "course-utils @ git+https://github.com/someone/old"')
    script = [sys.executable, str(REPO / "scripts" / "sync_colab.py"), "--root", str(book)]
    check = subprocess.run(script + ["--check"], capture_output=True, text=True)
    assert check.returncode == 1 and "someone/old" in check.stdout, check.stdout
    assert subprocess.run(script, capture_output=True, text=True).returncode == 0
    nb = nbformat.read(book / "chapters" / "09_test.ipynb", as_version=4)
    repo = _repository()
    assert nb.cells[1].source.endswith(f'!pip install -q "git+{repo["url"]}@{repo["branch"]}"')
    assert nb.cells[2].source == "x = 1"
    assert subprocess.run(script + ["--check"], capture_output=True, text=True).returncode == 0


def test_sync_colab_rejects_a_misplaced_setup_cell(tmp_path: Path) -> None:
    book = _fake_book(tmp_path, f'!pip install -q "{sync_colab.install_spec()}"', second=False)
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "sync_colab.py"), "--root", str(book)],
                            capture_output=True, text=True)
    assert result.returncode == 1 and "must be the second cell" in result.stdout, result.stdout


def test_first_cell_installs_this_checkout(tmp_path: Path) -> None:
    """Run each chapter's Colab install command with the git URL replaced by this checkout.

    Offline there is no GitHub: the requirement's URL is checked against _config.yml, then the
    same pip command installs a copy of this checkout (--no-deps, --no-build-isolation: nothing
    downloaded) into a folder, where pip must have named it as pyproject.toml does, and
    course_utils is imported from there. The set-up cell's lines fit the book's code column.
    """
    project = _project()
    commands = set()
    for chapter in sitecheck.chapter_notebooks():
        cell = nbformat.read(REPO / f"{chapter}.ipynb", as_version=4).cells[1].source
        too_long = [ln for ln in cell.splitlines() if len(ln) > CODE_COLUMN]
        assert not too_long, f"{chapter}: set-up lines over {CODE_COLUMN} characters: {too_long}"
        lines = [ln.strip() for ln in cell.splitlines() if ln.strip().startswith("!pip install")]
        assert len(lines) == 1, f"{chapter}: set-up cell needs one `!pip install` line"
        commands.add(lines[0])
    assert len(commands) == 1, f"chapters install different things: {commands}"
    argv = shlex.split(commands.pop().lstrip("!"))
    spec = argv[-1]
    # (the exact URL and branch are test_every_chapter_installs_the_configured_repository's job)
    assert spec.startswith("git+" + _repository()["url"]), spec

    source = tmp_path / "checkout"  # a copy: building in place would leave build/ in the repo
    source.mkdir()
    for item in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / item).exists():
            shutil.copy(REPO / item, source / item)
    shutil.copytree(REPO / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build"))
    target = tmp_path / "target"
    local_spec = source.as_uri()  # like the git+ URL, no name: pip reads it from pyproject.toml
    assert argv[:2] == ["pip", "install"], argv
    cmd = [sys.executable, "-m", *argv[:-1], "--no-deps", "--no-build-isolation", "--no-index",
           "--target", str(target), local_spec]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    probe = subprocess.run(
        [sys.executable, "-c", "import course_utils; print(course_utils.__file__); print(course_utils.__version__)"],
        capture_output=True, text=True, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr
    where, version = probe.stdout.split()
    assert Path(where).is_relative_to(target), where
    assert version == project["version"]
    dist = project["name"].replace("-", "_")
    assert (target / f"{dist}-{project['version']}.dist-info").is_dir(), sorted(p.name for p in target.iterdir())
