"""Execute the book's chapters into its jupyter-cache, several at a time, before the build.

    python scripts/execute_chapters.py --jobs 2

The book build (myst-nb, ``execute_notebooks: cache``) executes each chapter whose code has no
execution in ``_build/.jupyter_cache`` -- one after the other. This script does the same
executions with the same call (``jupyter_cache``'s ``single_nb_execution``: the chapter's own
folder as working directory, the ``execute.timeout`` of ``_config.yml``, errors not allowed)
``--jobs`` at a time, and stores them in that cache as myst-nb does; the build then finds every
chapter executed. A chapter kernel leaves a core idle much of the time (Python, tokenizing,
plotting), so two at a time on two cores finish sooner. CI uses it (``build_site.sh --jobs 2``);
the main job does not, so the budget line each chapter glues is measured with nothing beside it.

A chapter that raises is reported with its traceback and the script exits 1, as the build would.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import sys
import time
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _execute(path: Path, timeout: int) -> tuple[Path, nbformat.NotebookNode, float, str | None]:
    from jupyter_cache.executors.utils import single_nb_execution

    nb = nbformat.read(path, as_version=4)
    result = single_nb_execution(nb, cwd=str(path.parent), allow_errors=False, timeout=timeout,
                                 meta_override=True)  # the arguments myst-nb's cache mode passes
    return path, nb, result.time, result.exc_string if result.err is not None else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="chapters executed at the same time")
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: chapters/*.ipynb")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    timeout = int(config["execute"]["timeout"])
    cache = get_cache(ROOT / "_build" / ".jupyter_cache")
    todo = []
    for path in [p.resolve() for p in args.notebooks] or sorted((ROOT / "chapters").glob("*.ipynb")):
        try:
            cache.match_cache_notebook(nbformat.read(path, as_version=4))
            print(f"cached:   {path.relative_to(ROOT)}")
        except KeyError:
            todo.append(path)
    failed = []
    t0 = time.perf_counter()
    with cf.ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for future in cf.as_completed([pool.submit(_execute, p, timeout) for p in todo]):
            path, nb, seconds, error = future.result()
            if error is not None:
                failed.append(path)
                print(f"FAILED:   {path.relative_to(ROOT)}\n{error}", file=sys.stderr)
                continue
            cache.cache_notebook_bundle(CacheBundleIn(nb, str(path), data={"execution_seconds": seconds}),
                                        check_validity=False, overwrite=True)
            print(f"executed: {path.relative_to(ROOT)} in {seconds:.0f} s")
    print(f"{len(todo)} chapters executed, {args.jobs} at a time, in {time.perf_counter() - t0:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
