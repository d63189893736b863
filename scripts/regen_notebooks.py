"""Execute chapter notebooks offline and store their outputs (the one way outputs are made).

    python scripts/regen_notebooks.py chapters/01_architectures.ipynb [...]
    python scripts/regen_notebooks.py --all
    python scripts/regen_notebooks.py --from-build chapters/04_sampling.ipynb   # no second execution

``--from-build`` takes the outputs of the site build's own execution of the notebook's current code
(``_build/.jupyter_cache``, filled by scripts/build_site.sh in the same offline environment) instead
of executing it again; a notebook whose code the build did not execute is an error.

Outputs are committed so that GitHub and Colab show results before anyone runs a cell, and so
that nbval can compare the cells marked ``# NBVAL_CHECK_OUTPUT``. Execution is offline
(the environment of scripts/offline.env) and seeded; volatile metadata (timings, kernel details) is stripped so a
re-run changes a file only where an output changed. No output is ever edited by hand.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from offline_env import offline_env  # scripts/ is this script's own folder, first on sys.path

ROOT = Path(__file__).resolve().parent.parent
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def strip_volatile(nb: nbformat.NotebookNode) -> None:
    nb.metadata = {"kernelspec": KERNELSPEC,
                   "language_info": {"name": "python", "pygments_lexer": "ipython3"},
                   **({"colab": nb.metadata["colab"]} if "colab" in nb.metadata else {})}
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        cell.metadata.pop("ExecuteTime", None)
        if cell.cell_type == "code":
            for out in cell.get("outputs", []):
                out.get("metadata", {}).pop("execution", None)


def regenerate(path: Path, timeout: int = 900) -> float:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    env = dict(os.environ, **offline_env())
    old = dict(os.environ)
    os.environ.update(env)
    t0 = time.time()
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    finally:
        os.environ.clear()
        os.environ.update(old)
    strip_volatile(nb)
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return time.time() - t0


def from_build(path: Path, cache_dir: Path = ROOT / "_build" / ".jupyter_cache") -> int:
    """Store the build's execution of ``path``'s current code as its outputs; return the cache record's id."""
    from jupyter_cache import get_cache

    nb = nbformat.read(path, as_version=4)
    if not cache_dir.is_dir():
        raise SystemExit(f"{cache_dir} does not exist: build the site first (bash scripts/build_site.sh)")
    try:
        pk, merged = get_cache(str(cache_dir)).merge_match_into_notebook(nb)
    except KeyError:
        raise SystemExit(f"the build has no execution of {path}'s current code: run bash scripts/build_site.sh "
                         "(or regenerate without --from-build)") from None
    strip_volatile(merged)
    nbformat.validate(merged)
    nbformat.write(merged, path)
    return pk


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--all", action="store_true", help="every chapters/*.ipynb")
    parser.add_argument("--from-build", action="store_true",
                        help="take the outputs of the site build's execution instead of executing again")
    args = parser.parse_args(argv)
    paths = sorted((ROOT / "chapters").glob("*.ipynb")) if args.all else args.notebooks
    if not paths:
        parser.error("name notebooks or pass --all")
    for p in paths:
        if not p.exists():
            parser.error(f"{p} does not exist")
        if args.from_build:
            print(f"{p}: outputs of the build's execution (cache record {from_build(p)})", flush=True)
        else:
            print(f"{p}: executed in {regenerate(p):.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
