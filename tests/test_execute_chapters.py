"""scripts/execute_chapters.py: notebooks executed in parallel lanes land in jupyter-cache exactly
where myst-nb's ``execute_notebooks: cache`` looks for them, each lane has one torch thread, a
failing notebook fails the run with its traceback, and the zoo models a notebook names run first."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "execute_chapters.py"
_spec = importlib.util.spec_from_file_location("execute_chapters", SCRIPT)
ec = importlib.util.module_from_spec(_spec)
sys.modules["execute_chapters"] = ec  # dataclasses look their module up there
_spec.loader.exec_module(ec)


def _notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def _run(*args: str, env: dict[str, str], drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    full = {k: v for k, v in {**os.environ, **env}.items() if k not in drop}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600,
                          env={**full, "PYTHONPATH": str(REPO / "src")})


@pytest.mark.slow
def test_lanes_fill_the_cache_myst_nb_reads(tmp_path: Path, offline_environ) -> None:
    from jupyter_cache import get_cache

    # torch reads OMP_NUM_THREADS at import (importing it here would only make the test slower)
    threads = "import os\nprint('threads', repr(os.environ.get('OMP_NUM_THREADS')))"
    a = _notebook(tmp_path / "a.ipynb", threads, "x = 6 * 7\nprint(x)")
    b = _notebook(tmp_path / "b.ipynb", "print('b ran in', __import__('os').getcwd())")
    cache_dir = tmp_path / "cache"
    run = _run("--jobs", "2", "--cache", str(cache_dir), str(a), str(b), env=offline_environ)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{a}: executed in" in run.stdout and f"{b}: executed in" in run.stdout
    assert "SUMMARY " in run.stdout and "on 2 lane(s)" in run.stdout

    cache = get_cache(str(cache_dir))
    # myst-nb matches the notebook as read from disk (nbformat, v4) against the cache: the same call here
    record = cache.match_cache_notebook(nbformat.read(a, as_version=4))
    executed = cache.get_cache_bundle(record.pk).nb
    assert executed.cells[0].outputs[0]["text"].strip() == "threads '1'"  # one torch thread a lane
    assert executed.cells[1].outputs[0]["text"].strip() == "42"
    assert record.data["execution_seconds"] > 0
    b_out = cache.get_cache_bundle(cache.match_cache_notebook(nbformat.read(b, as_version=4)).pk).nb
    assert b_out.cells[0].outputs[0]["text"].strip() == f"b ran in {tmp_path}"  # the notebook's folder, as myst-nb

    again = _run("--jobs", "2", "--cache", str(cache_dir), str(a), env=offline_environ)
    assert again.returncode == 0 and f"{a}: in the cache (same code), not executed" in again.stdout

    # --jobs 1: one lane, and torch keeps its default thread count (nothing forced)
    one = _run("--jobs", "1", "--cache", str(tmp_path / "cache1"), str(a), env=offline_environ,
               drop=("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"))
    assert one.returncode == 0, one.stdout + one.stderr
    cache1 = get_cache(str(tmp_path / "cache1"))
    executed1 = cache1.get_cache_bundle(cache1.match_cache_notebook(nbformat.read(a, as_version=4)).pk).nb
    assert executed1.cells[0].outputs[0]["text"].split()[1] == "None", executed1.cells[0].outputs


@pytest.mark.slow
def test_a_failing_notebook_fails_the_run_with_its_traceback(tmp_path: Path, offline_environ) -> None:
    from jupyter_cache import get_cache

    bad = _notebook(tmp_path / "bad.ipynb", "raise ValueError('the chapter is wrong here')")
    good = _notebook(tmp_path / "good.ipynb", "print('fine')")
    run = _run("--jobs", "2", "--cache", str(tmp_path / "cache"), str(bad), str(good), env=offline_environ)
    assert run.returncode == 1
    assert f"{bad}: FAILED" in run.stdout and "the chapter is wrong here" in run.stdout
    assert f"failed: {bad}" in run.stdout
    cache = get_cache(str(tmp_path / "cache"))
    with pytest.raises(KeyError):  # nothing cached for it: the build would execute it and fail too
        cache.match_cache_notebook(nbformat.read(bad, as_version=4))
    cache.match_cache_notebook(nbformat.read(good, as_version=4))  # the other lane still finished


def test_zoo_models_a_notebook_names_come_first(tmp_path: Path) -> None:
    from jupyter_cache import get_cache

    uses = _notebook(tmp_path / "uses.ipynb", 'from course_utils import zoo\nm = zoo.load("bert-course")')
    plain = _notebook(tmp_path / "plain.ipynb", "print(1)")
    tasks = ec.make_tasks([uses, plain], get_cache(str(tmp_path / "cache")), tmp_path, all_zoo=False)
    names = [t.name for t in tasks]
    assert names[0] == "zoo:bert-course" and "zoo:gpt2-course" not in names  # only what is named
    by_name = {t.name: t for t in tasks}
    assert by_name[str(uses)].needs == {"zoo:bert-course"} and by_name[str(plain)].needs == set()
    every = ec.make_tasks([plain], get_cache(str(tmp_path / "cache")), tmp_path, all_zoo=True)
    assert {t.name for t in every if t.notebook is None} == {"zoo:gpt2-course", "zoo:bert-course"}


def test_bad_arguments_say_what_to_do(tmp_path: Path) -> None:
    run = _run("--jobs", "0", env={})
    assert run.returncode == 2 and "--jobs must be at least 1" in run.stderr
    run = _run(str(tmp_path / "missing.ipynb"), env={})
    assert run.returncode == 2 and "is not a notebook" in run.stderr
