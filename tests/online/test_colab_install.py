"""Install the course the way every chapter's first cell does on Colab, into an environment that
already has its own torch and transformers, and check that they are kept.

Colab preinstalls torch (a CUDA build) and transformers; the first cell runs
``pip install "git+https://github.com/..."``. If the package's ranges excluded
Colab's versions, pip would replace a multi-GB torch in the middle of a lesson, or break it.

* :func:`test_resolver_keeps_preinstalled_torch_and_transformers` -- a fresh virtual environment
  holding *other* allowed versions (torch 2.6.0, transformers 5.0.0). Downloading another torch
  build is too heavy for CI (gigabytes), so these two are metadata-only distributions and the test
  reads pip's resolver report (``pip install --dry-run --report``): neither may be in the list of
  what pip would install.
* :func:`test_install_imports_and_runs_chapter_1` -- a real, non-editable install (the way the
  ``git+`` URL installs) into a fresh environment whose preinstalled libraries are this run's
  (made visible through a ``.pth`` file, like Colab's system packages); ``import course_utils``
  must come from that install, torch must be the preinstalled one, and Chapter 1 must execute.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

pytestmark = [pytest.mark.online, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PREINSTALLED = {"torch": "2.6.0", "transformers": "5.0.0"}  # allowed by pyproject.toml, not the pins


def _venv(path: Path) -> tuple[Path, Path]:
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    python = path / "bin" / "python"
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(subprocess.check_output([str(python), "-c", code], text=True).strip())
    return python, site


def _metadata_only(site: Path, name: str, version: str) -> None:
    """An installed distribution as pip sees it (dist-info), with no code: enough for the resolver."""
    info = site / f"{name}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "INSTALLER").write_text("pip\n")
    (info / "RECORD").write_text("")


def _checkout(tmp_path: Path) -> Path:
    """What ``pip install git+URL`` builds from: the package's tracked files, in a fresh folder
    (pip builds in the source tree; a copy keeps build/ and egg-info out of this checkout)."""
    import shutil

    src = tmp_path / "checkout"
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copyfile(ROOT / name, src / name)
    return src


def _pip(python: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    proc = subprocess.run([str(python), "-m", "pip", *args], capture_output=True, text=True, env=env, timeout=timeout)
    assert proc.returncode == 0, f"pip {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_resolver_keeps_preinstalled_torch_and_transformers(tmp_path: Path) -> None:
    python, site = _venv(tmp_path / "colab")
    for name, version in PREINSTALLED.items():
        _metadata_only(site, name, version)
    report = tmp_path / "report.json"
    _pip(python, "install", "--dry-run", "--quiet", "--report", str(report), str(_checkout(tmp_path)))
    planned = {item["metadata"]["name"].lower(): item["metadata"]["version"]
               for item in json.loads(report.read_text())["install"]}
    assert "course-utils" in planned, f"pip would not install the course: {planned}"
    replaced = {name: planned[name] for name in PREINSTALLED if name in planned}
    assert not replaced, (f"installing the course would replace Colab's preinstalled {replaced} "
                          f"(preinstalled: {PREINSTALLED}); widen the ranges in pyproject.toml")


def test_install_imports_and_runs_chapter_1(tmp_path: Path) -> None:
    python, site = _venv(tmp_path / "colab")
    # This run's libraries play Colab's preinstalled ones (found on sys.path, so pip counts them).
    (site / "preinstalled.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    import torch

    _pip(python, "install", "--quiet", str(_checkout(tmp_path)))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only what the install put there
    probe = subprocess.run(
        [str(python), "-c", "import course_utils, torch; print(course_utils.__file__); print(torch.__file__); "
                            "print(torch.__version__)"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, env=env)
    assert probe.returncode == 0, probe.stderr[-3000:]
    course_file, torch_file, torch_version = probe.stdout.split()
    assert Path(course_file).is_relative_to(site), f"course_utils came from {course_file}, not the install"
    assert torch_file == torch.__file__ and torch_version == torch.__version__, "the preinstalled torch was replaced"
    chapter = ROOT / "chapters" / "01_architectures.ipynb"
    run = subprocess.run(
        [str(python), "-c",
         "import sys, nbformat; from nbclient import NotebookClient; "
         "nb = nbformat.read(sys.argv[1], as_version=4); "
         "NotebookClient(nb, timeout=600, kernel_name='python3', "
         "resources={'metadata': {'path': sys.argv[2]}}).execute(); print('executed')",
         str(chapter), str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=900, env=env)
    assert run.returncode == 0 and "executed" in run.stdout, run.stderr[-4000:]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
