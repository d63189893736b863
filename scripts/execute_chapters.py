#!/usr/bin/env python
"""Train the zoo and execute the book's notebooks in parallel lanes, into the build's execution cache.

``jupyter-book build`` executes the notebooks one after the other, each kernel with torch on every
core. On a small CPU that wastes most of the machine: the course's models are small, and torch's
second thread adds little to one matrix product of theirs, while two kernels with two threads
each oversubscribe the cores (measured: the 13 notebooks took 950 s instead of 611 s). So this
script runs lanes of **one** torch thread each (``OMP_NUM_THREADS=1``, inherited by every kernel):

* the zoo's lane: ``python -m course_utils.zoo train --all``, then the notebooks that use the zoo
  (a code cell names ``zoo``; one that reached it only through another module would wait on the
  zoo's file lock, or train the model itself: correct, only slower);
* beside it, from the start, the other notebooks.

Each lane is jupyter-cache's own executor (``jcache notebook execute``), on the build's cache, where
myst-nb's ``execute_notebooks: cache`` looks (the same project records, hashes and bundles), so the
build that follows finds every chapter in the cache and only renders. A notebook already in the
cache with the same code is not executed again.

    python scripts/execute_chapters.py                    # every notebook of _toc.yml
    python scripts/execute_chapters.py --jobs 1           # one lane, torch on every core
    python scripts/execute_chapters.py chapters/04_sampling.ipynb

Prints each lane's progress, then one line per notebook (its execution time) and a summary.
Exit status 1 if the zoo or a notebook failed; a failed notebook's traceback is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = REPO / "_build" / ".jupyter_cache"
TIMEOUT_S = yaml.safe_load((REPO / "_config.yml").read_text())["execute"]["timeout"]  # per cell
ZOO_TRAIN = [sys.executable, "-m", "course_utils.zoo", "train", "--all", "--quiet"]


def needs_zoo(notebook: Path) -> bool:
    """Whether a code cell of ``notebook`` names the zoo (``from course_utils import zoo``, ``zoo.load``)."""
    nb = nbformat.read(str(notebook), as_version=4)
    return any(re.search(r"\bzoo\b", c.source) for c in nb.cells if c.cell_type == "code")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook of _toc.yml")
    parser.add_argument("--jobs", type=int, default=int(os.environ.get("COURSE_JOBS") or min(os.cpu_count() or 1, 4)),
                        help="1: one lane, torch on every core; 2: the zoo's lane and one other; more: the zoo's "
                             "lane and jupyter-cache's parallel executor (one process per core) "
                             "(default: $COURSE_JOBS, else one per core, at most 4)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="jupyter-cache folder of the build")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    from book_toc import chapter_notebooks  # scripts/: this script's own folder
    from jupyter_cache import get_cache

    notebooks = [p.resolve() for p in args.notebooks] or [REPO / f"{c}.ipynb" for c in chapter_notebooks(REPO)]
    for p in notebooks:
        if not p.exists() or p.suffix != ".ipynb":
            parser.error(f"{p} is not a notebook (.ipynb)")
    cache = get_cache(str(args.cache))
    todo = []
    for nb in notebooks:
        if cache.get_cached_project_nb(cache.add_nb_to_project(str(nb)).pk) is None:
            todo.append(nb)
        else:
            print(f"  {nb}: in the cache (same code), not executed")
    zoo_nbs = [nb for nb in todo if needs_zoo(nb)]
    others = [nb for nb in todo if nb not in zoo_nbs]
    env = dict(os.environ)
    if args.jobs > 1:
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    jcache = str(Path(sys.executable).with_name("jcache"))
    lanes: list[subprocess.Popen] = []

    def start(executor: str, lane: list[Path]) -> None:
        if lane:
            lanes.append(subprocess.Popen([jcache, "notebook", "-p", str(args.cache), "execute", "--no-force",
                                           "-e", executor, "-t", str(TIMEOUT_S), *map(str, lane)], env=env))

    n_lanes = 1 if args.jobs == 1 else 1 + ((os.cpu_count() or 1) if args.jobs > 2 else 1)
    print(f"{len(todo)} notebook(s), {len(zoo_nbs)} of them after the zoo, on {n_lanes} lane(s)"
          + (", one torch thread each" if args.jobs > 1 else ""), flush=True)
    t0 = time.perf_counter()
    try:
        if args.jobs > 1:  # beside the zoo's training
            start("local-parallel" if args.jobs > 2 else "local-serial", others)
        train = bool(zoo_nbs) or not args.notebooks  # the whole book: the zoo for the unit tests too
        zoo_ok = not train or subprocess.run(ZOO_TRAIN, env=env).returncode == 0
        zoo_s = time.perf_counter() - t0
        start("local-serial", (zoo_nbs if zoo_ok else []) + (others if args.jobs == 1 else []))
        for lane in lanes:
            lane.wait()
    finally:  # interrupted (Ctrl-C) or failed here: stop the lanes
        for lane in lanes:
            lane.terminate()
    wall = time.perf_counter() - t0

    failed = [] if zoo_ok else ["the zoo (python -m course_utils.zoo train --all)"]
    nb_s = 0.0
    for nb in todo:
        record = cache.get_cached_project_nb(str(nb))
        if record is not None:
            nb_s += record.data["execution_seconds"]
            print(f"  {nb}: executed in {record.data['execution_seconds']:.0f} s")
            continue
        failed.append(str(nb))
        if nb in zoo_nbs and not zoo_ok:
            print(f"  {nb}: not run (the zoo did not train)")
        else:
            print(f"  {nb}: FAILED\n" + (cache.get_project_record(str(nb)).traceback or "(its lane's log is above)"))
    print(f"zoo training {zoo_s:.0f} s and execution {nb_s:.0f} s of lane time in {wall:.0f} s on {n_lanes} lane(s)"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    print("SUMMARY " + json.dumps({"wall_seconds": round(wall, 1), "zoo_seconds": round(zoo_s, 1),
                                   "notebook_seconds": round(nb_s, 1), "lanes": n_lanes, "failed": failed}),
          flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
