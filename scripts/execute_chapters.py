#!/usr/bin/env python
"""Train the zoo and execute the book's notebooks in parallel lanes, into the build's execution cache.

``jupyter-book build`` executes the notebooks one after the other, each kernel with torch on every
core. On a small CPU that wastes most of the machine: the course's models are small, and torch's
second thread adds little to one matrix product of theirs, while two kernels with two threads
each oversubscribe the cores (measured: the 13 notebooks took 950 s instead of 611 s). So this
script runs ``--jobs`` lanes (default: one per core, at most 4), each a process with **one** torch
thread, and hands them tasks in a fixed order:

* the zoo's models first (``course_utils.zoo``), one lane each (all of them for the whole book; for
  named notebooks, those they name);
* then the notebooks, longest first, each as soon as the zoo models it names are trained.

Each executed notebook is stored in jupyter-cache exactly as myst-nb's ``execute_notebooks: cache``
stores it (same hash of the code cells, same record), so the build that follows finds every
chapter in the cache and only renders. A notebook already in the cache with the same code is
skipped. The parent process is the cache's only writer.

    python scripts/execute_chapters.py                    # every notebook of _toc.yml
    python scripts/execute_chapters.py --jobs 1           # one lane, torch on every core
    python scripts/execute_chapters.py chapters/04_sampling.ipynb
    python scripts/execute_chapters.py --zoo-only         # only train the zoo (e.g. before the unit tests alone)

Prints one line per task and a summary (per-lane busy time, the zoo's and the notebooks' share).
Exit status 1 if any task failed; its traceback is printed.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = REPO / "_build" / ".jupyter_cache"
TIMEOUT_S = 900  # _config.yml's execute.timeout (per cell)

#: Expected seconds at one thread, only to order the notebooks longest first (a wrong guess costs
#: at most the imbalance of one notebook): lane times of the fresh-clone CI run of 051b3f0 on 2
#: cores (2026-12-06); Chapter 9 from its regeneration (537 s, one thread, 2026-12-07).
EXPECTED_S = {"04_sampling": 725, "05_mlm_training": 370, "07_encoder_decoders_positions_families": 199,
              "03_gpt2_internals": 75, "01_architectures": 67, "02_attention_from_scratch": 55,
              "06_efficient_attention": 48, "08_modern_decoder": 158, "08_exercises": 20,
              "09_finetuning": 540}


@dataclass
class Task:
    name: str                       #: "zoo:gpt2-course" or the notebook's path relative to the repo
    command: list[str]
    needs: set[str] = field(default_factory=set)   #: names of zoo tasks that must finish first
    notebook: Path | None = None
    output: Path | None = None      #: where the worker writes the executed notebook
    start: float = 0.0
    seconds: float = 0.0
    ok: bool | None = None
    log: Path | None = None


def toc_notebooks() -> list[Path]:
    """The notebooks of ``_toc.yml``, in book order (``book_toc``: the one reader of the table of contents)."""
    from book_toc import chapter_notebooks  # scripts/: this script's own folder

    return [REPO / f"{c}.ipynb" for c in chapter_notebooks(REPO)]


def lane_env(jobs: int) -> dict[str, str]:
    """The environment of a lane: one torch/BLAS thread when lanes share the cores."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH", "")) if p)
    if jobs > 1:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[var] = "1"
    return env


# ---------------------------------------------------------------------------------------------
# Worker: execute one notebook the way myst-nb's cache mode does, write the result to a file
# ---------------------------------------------------------------------------------------------

def run_worker(notebook: Path, output: Path) -> int:
    import nbformat
    from jupyter_cache.executors.utils import single_nb_execution

    nb = nbformat.read(str(notebook), as_version=4)
    result = single_nb_execution(nb, cwd=str(notebook.parent), timeout=TIMEOUT_S, allow_errors=False,
                                 meta_override=True, record_timing=True)
    if result.err is not None:
        print(result.exc_string, file=sys.stderr)
        return 1
    # Where the time went (nbclient's timestamps), then drop them: jupyter-cache hashes cell metadata,
    # and myst-nb looks notebooks up by the hash of the committed cells, which have none.
    cells = []
    for i, cell in enumerate(result.nb.cells):
        timing = cell.metadata.pop("execution", None)
        if timing and "iopub.execute_input" in timing and "shell.execute_reply" in timing:
            start, end = (datetime.fromisoformat(timing[k].replace("Z", "+00:00"))
                          for k in ("iopub.execute_input", "shell.execute_reply"))
            cells.append((round((end - start).total_seconds(), 1), i))
    nbformat.write(result.nb, str(output))
    output.with_suffix(".json").write_text(json.dumps({"seconds": result.time,
                                                       "slowest": sorted(cells, reverse=True)[:3]}))
    return 0


# ---------------------------------------------------------------------------------------------
# Parent: schedule the lanes, store results in the cache
# ---------------------------------------------------------------------------------------------

def zoo_names() -> list[str]:
    sys.path.insert(0, str(REPO / "src"))
    from course_utils import zoo

    return list(zoo.ZOO)


def make_tasks(notebooks: list[Path], cache, tmp: Path, all_zoo: bool) -> list[Task]:
    import nbformat

    names = zoo_names()
    tasks: list[Task] = []
    needed: set[str] = set()
    for nb_path in notebooks:
        nb = nbformat.read(str(nb_path), as_version=4)
        rel = str(nb_path.relative_to(REPO)) if nb_path.is_relative_to(REPO) else str(nb_path)
        try:
            cache.match_cache_notebook(nb)
            print(f"  {rel}: in the cache (same code), not executed")
            continue
        except KeyError:
            pass
        code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        needs = {f"zoo:{n}" for n in names if f'"{n}"' in code or f"'{n}'" in code}
        needed |= needs
        out = tmp / (nb_path.stem + ".executed.ipynb")
        tasks.append(Task(rel, [sys.executable, __file__, "--worker", str(nb_path), str(out)], needs,
                          nb_path, out))
    tasks.sort(key=lambda t: -EXPECTED_S.get(Path(t.name).stem, 30))
    zoo_tasks = [Task(f"zoo:{n}", [sys.executable, "-m", "course_utils.zoo", "train", n, "--quiet"]) for n in names
                 if all_zoo or f"zoo:{n}" in needed]
    return zoo_tasks + tasks


def store(cache, task: Task) -> None:
    import nbformat
    from jupyter_cache.base import CacheBundleIn

    executed = nbformat.read(str(task.output), as_version=4)
    seconds = json.loads(task.output.with_suffix(".json").read_text())["seconds"]
    record = cache.add_nb_to_project(str(task.notebook))
    cache.cache_notebook_bundle(CacheBundleIn(executed, record.uri, data={"execution_seconds": seconds}),
                                check_validity=False, overwrite=True)
    try:  # the build must find it: matched by the hash of the notebook as committed
        cache.match_cache_notebook(nbformat.read(str(task.notebook), as_version=4))
    except KeyError:
        raise RuntimeError(f"{task.name}: its execution was stored under another hash than the notebook's; "
                           "the build would execute it again (did the worker change cell metadata?)") from None


# Complexity allowed (C901): the lanes' scheduler, one loop read top to bottom: start what may start, skip
# what waits on a failed model, reap what finished (store it, report it), stop every lane when interrupted.
def main() -> int:  # noqa: C901
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook of _toc.yml")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("COURSE_JOBS") or min(os.cpu_count() or 1, 4)),
                        help="parallel lanes (default: $COURSE_JOBS, else one per core, at most 4); "
                             "1: torch on every core")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="jupyter-cache folder of the build")
    parser.add_argument("--zoo-only", action="store_true",
                        help="train the zoo's models (in parallel lanes), execute nothing")
    parser.add_argument("--worker", nargs=2, type=Path, metavar=("NOTEBOOK", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return run_worker(*args.worker)
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")

    from jupyter_cache import get_cache

    notebooks = [] if args.zoo_only else ([p.resolve() for p in args.notebooks] or toc_notebooks())
    for p in notebooks:
        if not p.exists() or p.suffix != ".ipynb":
            parser.error(f"{p} is not a notebook (.ipynb)")
    cache = get_cache(str(args.cache))
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="course-exec-") as tmp_name:
        tmp = Path(tmp_name)
        pending = make_tasks(notebooks, cache, tmp, all_zoo=args.zoo_only or not args.notebooks)
        print(f"{len(pending)} task(s) on {args.jobs} lane(s)"
              + (", one torch thread each" if args.jobs > 1 else ""), flush=True)
        env = lane_env(args.jobs)
        running: dict[subprocess.Popen, Task] = {}
        done: list[Task] = []
        failed: set[str] = set()
        try:
            while pending or running:
                finished = {t.name for t in done if t.ok}
                # Start what may start: a task whose zoo models are trained; skip one whose model failed.
                for task in list(pending):
                    if len(running) >= args.jobs:
                        break
                    if task.needs & failed:
                        pending.remove(task)
                        task.ok = False
                        failed.add(task.name)
                        print(f"  {task.name}: not run ({', '.join(sorted(task.needs & failed))} failed)", flush=True)
                        continue
                    if task.needs <= finished:
                        pending.remove(task)
                        task.log = tmp / (task.name.replace("/", "_").replace(":", "_") + ".log")
                        task.start = time.perf_counter()
                        proc = subprocess.Popen(task.command, cwd=REPO, env=env, stdout=task.log.open("w"),
                                                stderr=subprocess.STDOUT, start_new_session=True)
                        running[proc] = task
                if not running and pending:  # everything left waits on something that can never finish
                    for task in pending:
                        print(f"  {task.name}: not run (needs {', '.join(sorted(task.needs))})", flush=True)
                        failed.add(task.name)
                    break
                time.sleep(0.5)
                for proc in [p for p in running if p.poll() is not None]:
                    task = running.pop(proc)
                    task.seconds = time.perf_counter() - task.start
                    task.ok = proc.returncode == 0
                    if task.ok and task.notebook is not None:
                        try:
                            store(cache, task)
                        except RuntimeError as err:
                            task.ok = False
                            task.log.write_text(str(err))
                    if not task.ok:
                        failed.add(task.name)
                        print(f"  {task.name}: FAILED after {task.seconds:.0f} s; its output:\n"
                              + task.log.read_text()[-6000:], flush=True)
                    else:
                        what = "trained" if task.notebook is None else "executed"
                        slow = ""
                        if task.output is not None:
                            top = json.loads(task.output.with_suffix(".json").read_text())["slowest"]
                            slow = " (slowest cells: " + ", ".join(f"#{i} {t:.0f} s" for t, i in top) + ")"
                        print(f"  {task.name}: {what} in {task.seconds:.0f} s{slow}", flush=True)
                    done.append(task)
        finally:  # interrupted (Ctrl-C) or failed here: stop the lanes and their kernels too
            for proc in running:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
    wall = time.perf_counter() - t0
    zoo_s = sum(t.seconds for t in done if t.notebook is None)
    nb_s = sum(t.seconds for t in done if t.notebook is not None)
    summary = {"wall_seconds": round(wall, 1), "zoo_seconds": round(zoo_s, 1), "notebook_seconds": round(nb_s, 1),
               "lanes": args.jobs, "failed": sorted(failed)}
    print(f"zoo training {zoo_s:.0f} s and execution {nb_s:.0f} s of lane time in {wall:.0f} s on "
          f"{args.jobs} lane(s)" + (f"; failed: {', '.join(sorted(failed))}" if failed else ""))
    print("SUMMARY " + json.dumps(summary), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
