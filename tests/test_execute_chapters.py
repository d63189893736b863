"""scripts/execute_chapters.py: notebooks executed by jupyter-cache's executor in parallel lanes land
in the cache where myst-nb's ``execute_notebooks: cache`` looks for them, each lane has one torch
thread, a failing notebook fails the run with its traceback, and the notebooks that use the zoo wait
for it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from execute_chapters import needs_zoo  # scripts/: pytest's pythonpath (pyproject.toml)

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "execute_chapters.py"


def _notebook(path: Path, *sources: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def _run(*args: str, env: dict[str, str], drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    full = {k: v for k, v in {**os.environ, **env}.items() if k not in drop}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=600,
                          env=full)


def _executed(cache_dir: Path, notebook: Path) -> nbformat.NotebookNode:
    """The execution myst-nb would render: matched by the notebook as read from disk, as myst-nb does."""
    from jupyter_cache import get_cache

    cache = get_cache(str(cache_dir))
    return cache.get_cache_bundle(cache.match_cache_notebook(nbformat.read(notebook, as_version=4)).pk).nb


@pytest.mark.slow
def test_lanes_fill_the_cache_myst_nb_reads(tmp_path: Path, offline_environ) -> None:
    from jupyter_cache import get_cache

    # torch reads OMP_NUM_THREADS at import (importing it here would only make the test slower)
    threads = "import os\nprint('threads', repr(os.environ.get('OMP_NUM_THREADS')))"
    a = _notebook(tmp_path / "a.ipynb", threads, "x = 6 * 7\nprint(x)")
    (tmp_path / "sub").mkdir()
    b = _notebook(tmp_path / "sub" / "b.ipynb", "print('b ran in', __import__('os').getcwd())")
    cache_dir = tmp_path / "cache"
    run = _run("--jobs", "2", "--cache", str(cache_dir), str(a), str(b), env=offline_environ)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{a}: executed in" in run.stdout and f"{b}: executed in" in run.stdout
    assert "SUMMARY " in run.stdout and "on 2 lane(s)" in run.stdout

    executed = _executed(cache_dir, a)
    assert executed.cells[0].outputs[0]["text"].strip() == "threads '1'"  # one torch thread a lane
    assert executed.cells[1].outputs[0]["text"].strip() == "42"
    record = get_cache(str(cache_dir)).match_cache_notebook(nbformat.read(a, as_version=4))
    assert record.data["execution_seconds"] > 0  # what myst-nb shows as the page's run time
    b_out = _executed(cache_dir, b)
    assert b_out.cells[0].outputs[0]["text"].strip() == f"b ran in {tmp_path / 'sub'}"  # its folder, as myst-nb

    again = _run("--jobs", "2", "--cache", str(cache_dir), str(a), env=offline_environ)
    assert again.returncode == 0 and f"{a}: in the cache (same code), not executed" in again.stdout
    assert "0 notebook(s)" in again.stdout

    # --jobs 1: one lane, and torch keeps its default thread count (nothing forced)
    one = _run("--jobs", "1", "--cache", str(tmp_path / "cache1"), str(a), env=offline_environ,
               drop=("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"))
    assert one.returncode == 0, one.stdout + one.stderr
    assert _executed(tmp_path / "cache1", a).cells[0].outputs[0]["text"].split()[1] == "None"


@pytest.mark.slow
def test_a_failing_notebook_fails_the_run_with_its_traceback(tmp_path: Path, offline_environ) -> None:
    from jupyter_cache import get_cache

    bad = _notebook(tmp_path / "bad.ipynb", "raise ValueError('the chapter is wrong here')")
    good = _notebook(tmp_path / "good.ipynb", "print('fine')")
    run = _run("--jobs", "2", "--cache", str(tmp_path / "cache"), str(bad), str(good), env=offline_environ)
    assert run.returncode == 1
    report = run.stdout[run.stdout.index(f"{bad}: FAILED"):]  # the summary, after the lanes' own logs
    assert "ValueError" in report and "the chapter is wrong here" in report
    assert f"failed: {bad}" in run.stdout and '"failed": ["' in run.stdout
    cache = get_cache(str(tmp_path / "cache"))
    with pytest.raises(KeyError):  # nothing cached for it: the build would execute it and fail too
        cache.match_cache_notebook(nbformat.read(bad, as_version=4))
    cache.match_cache_notebook(nbformat.read(good, as_version=4))  # the rest of the lane still ran


@pytest.mark.slow
def test_the_zoo_trains_beside_the_other_notebooks_and_before_its_own(tmp_path: Path, offline_environ,
                                                                      monkeypatch, capsys) -> None:
    import execute_chapters

    # A stand-in for the zoo's training that finishes only once the other lane has run a notebook
    # (so the lanes overlap) and leaves a mark that the zoo's notebook reads (so it ran after).
    other_ran, trained = tmp_path / "other_ran", tmp_path / "trained"
    fake_train = (f"import pathlib, time\nfor _ in range(600):\n"
                  f"    if pathlib.Path({str(other_ran)!r}).exists(): break\n    time.sleep(0.1)\n"
                  f"else: raise SystemExit('the other lane never ran')\n"
                  f"pathlib.Path({str(trained)!r}).write_text('yes')")
    monkeypatch.setattr(execute_chapters, "ZOO_TRAIN", [sys.executable, "-c", fake_train])
    for name, value in offline_environ.items():
        monkeypatch.setenv(name, value)
    other = _notebook(tmp_path / "other.ipynb", f"open({str(other_ran)!r}, 'w').close()")
    uses = _notebook(tmp_path / "uses.ipynb", f"zoo = open({str(trained)!r}).read()\nprint(zoo)")
    cache_dir = tmp_path / "cache"
    monkeypatch.setattr(sys, "argv", ["execute_chapters.py", "--jobs", "2", "--cache", str(cache_dir),
                                      str(uses), str(other)])
    assert execute_chapters.main() == 0, capsys.readouterr()
    assert "2 notebook(s), 1 of them after the zoo" in capsys.readouterr().out
    assert _executed(cache_dir, uses).cells[0].outputs[0]["text"].strip() == "yes"

    # the zoo fails: its notebooks are not run, the run fails, the other lane still finishes
    monkeypatch.setattr(execute_chapters, "ZOO_TRAIN", [sys.executable, "-c", "raise SystemExit(3)"])
    for path, code in ((other, "print('changed')"), (uses, "print('changed')")):  # new code: executed again
        nb = nbformat.read(path, as_version=4)
        nb.cells.append(nbformat.v4.new_code_cell(code))
        nbformat.write(nb, path)
    trained.unlink()
    assert execute_chapters.main() == 1
    out = capsys.readouterr().out
    assert f"{uses}: not run (the zoo did not train)" in out and f"{other}: executed in" in out


def test_the_notebooks_that_use_the_zoo_are_found(tmp_path: Path) -> None:
    uses = _notebook(tmp_path / "uses.ipynb", "from course_utils import get_device, zoo", 'm = zoo.load("bert-course")')
    plain = _notebook(tmp_path / "plain.ipynb", "print('zookeeper', 'zoology')")
    nb = nbformat.read(plain, as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("The zoo's models are trained first."))  # prose is not code
    nbformat.write(nb, plain)
    assert needs_zoo(uses) and not needs_zoo(plain)
    # the book's chapters: exactly those that load a zoo model (Chapters 3 and 5 today)
    chapters = {p.stem for p in (REPO / "chapters").glob("*.ipynb") if needs_zoo(p)}
    assert chapters == {p.stem for p in (REPO / "chapters").glob("*.ipynb") if "zoo.load(" in p.read_text()}
    assert {"03_gpt2_internals", "05_mlm_training"} <= chapters


def test_bad_arguments_say_what_to_do(tmp_path: Path) -> None:
    run = _run("--jobs", "0", env={})
    assert run.returncode == 2 and "--jobs must be at least 1" in run.stderr
    run = _run(str(tmp_path / "missing.ipynb"), env={})
    assert run.returncode == 2 and "is not a notebook" in run.stderr
