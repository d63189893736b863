"""The package's modules import on their own, and the import boundaries hold: the contracts in
.importlinter, checked by import-linter (no cycles; the runtime imports neither the grader nor the
site's extensions; the sandbox imports nothing of the course).

A cycle (``a`` imports ``b``, which imports ``a``) works or breaks depending on which module a
reader imports first; a deferred import inside a function hides it until that function runs.
import-linter counts every import, at the top of a module or inside a function (those under
``if TYPE_CHECKING:`` excepted: they never run).
"""
import os
import re
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "course_utils"
PACKAGES = (PACKAGE, "course_book", "course_grading")  # the runtime, the site's Sphinx extensions, the grader


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for package in PACKAGES for p in sorted((SRC / package).rglob("*.py"))}


ROOT = SRC.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(cwd: Path, *args: str, pythonpath: Path = SRC) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(pythonpath))
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_import_contracts_hold():
    """.importlinter: no import cycle (imports inside functions count), the runtime a notebook
    imports does not import the grader, the sandbox imports nothing of the course."""
    run = _lint_imports(ROOT)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "0 broken" in run.stdout or "broken" not in run.stdout.split("Contracts:")[-1]


def _lint_demo(tmp_path: Path, contract: str, settings: str = "", **modules: str) -> subprocess.CompletedProcess:
    """lint-imports on ``tmp_path/demo_pkg`` with ``modules`` (name -> source; a module already
    written keeps its source unless given again) and one contract ``c``."""
    package = tmp_path / "demo_pkg"
    package.mkdir(exist_ok=True)
    for name, source in {"__init__": "", **modules}.items():
        (package / f"{name}.py").write_text(source)
    config = tmp_path / "contracts.ini"
    config.write_text(f"[importlinter]\nroot_package = demo_pkg\n{settings}\n[importlinter:contract:c]\n{contract}")
    return _lint_imports(tmp_path, "--config", str(config), pythonpath=tmp_path)


def test_the_cycle_contract_finds_a_deferred_cycle(tmp_path):
    # the shape of the cycle the hand-written finder was written for: runtime imported assets inside banner()
    contract = "name = no cycles\ntype = acyclic_siblings\nancestors =\n    demo_pkg\n"
    run = _lint_demo(tmp_path, contract, runtime="import os\n\ndef banner():\n    from . import assets\n",
                     assets="from .runtime import banner\n", online="import socket\n")
    assert run.returncode == 1 and "BROKEN" in run.stdout, run.stdout + run.stderr
    assert "- .runtime -> .assets (1 import)" in run.stdout, run.stdout
    run = _lint_demo(tmp_path, contract, assets="from .online import socket\n")
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_forbidden_contract_finds_a_deferred_import_and_skips_type_checking(tmp_path):
    # The shape of the boundaries course_utils keeps (no course_grading, no course_book): an
    # import inside a function breaks the contract; one under `if TYPE_CHECKING:` does not.
    contract = ("name = the runtime does not import the grader\ntype = forbidden\n"
                "source_modules =\n    demo_pkg.runtime\nforbidden_modules =\n    demo_pkg.grader\n")
    settings = "exclude_type_checking_imports = True\n"
    run = _lint_demo(tmp_path, contract, settings, grader="", runtime="def banner():\n    from . import grader\n")
    assert run.returncode == 1 and "BROKEN" in run.stdout, run.stdout + run.stderr
    assert "demo_pkg.runtime -> demo_pkg.grader" in run.stdout, run.stdout
    run = _lint_demo(tmp_path, contract, settings,
                     runtime="from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from . import grader\n")
    assert run.returncode == 0, run.stdout + run.stderr


#: Runs in one interpreter: imports the heavy third-party libraries once, then forks a child per
#: package module, which imports that module alone (no other module of the packages is loaded in
#: the parent, so each child starts as a fresh interpreter would, as far as the packages go) and
#: exits 1 with the traceback on failure. One torch import instead of one per module: seconds,
#: where an interpreter per module took 49 s.
_FORK_EACH = """
import os, sys, traceback
import numpy, torch, transformers  # the expensive part, shared by every child
assert not [m for m in sys.modules if m.split(".")[0] in {packages!r}], "a package module is already loaded"
failed = []
for module in {modules!r}:
    pid = os.fork()
    if pid == 0:
        try:
            __import__(module)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    if os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0:
        failed.append(module)
print("FAILED:" + ",".join(failed))
"""


def _import_each(modules: list[str], *, path: list[Path] = ()) -> subprocess.CompletedProcess:
    """Run :data:`_FORK_EACH` on ``modules``, with ``path`` in front of the packages' ``src``."""
    code = _FORK_EACH.format(packages=PACKAGES, modules=modules)
    pythonpath = os.pathsep.join(str(p) for p in [*path, SRC])
    return subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=pythonpath),
                          capture_output=True, text=True, timeout=600)


def test_each_module_imports_in_a_fresh_interpreter():
    # One child per module, so that no module leans on another having been imported first.
    run = _import_each(sorted(MODULES))
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith("FAILED:"), run.stdout[-500:] + run.stderr[-3000:]


def test_import_each_reports_a_module_that_fails_alone(tmp_path):
    # The check can fail: a module that uses a name only another module's import would define.
    (tmp_path / "leaning.py").write_text("import course_utils.data\nprint(course_utils.zoo)\n")
    run = _import_each(["course_utils.data", "leaning"], path=[tmp_path])
    assert run.stdout.strip().endswith("FAILED:leaning"), run.stdout + run.stderr[-2000:]
    assert "has no attribute 'zoo'" in run.stderr


def test_no_module_runs_a_repository_script():
    # No module builds a path into the repository's scripts/ folder to run it (what a student
    # installs has no scripts/; that course_utils imports neither course_book nor course_grading
    # is a contract of .importlinter, checked above).
    runs_scripts = [name for name, path in MODULES.items() if re.search(r"""["']scripts["']""", path.read_text())]
    assert not runs_scripts


def test_the_old_grader_commands_forward_to_course_grading():
    # `python -m course_utils.exercises.grade|student` (the commands before course_grading) still
    # work: they say where the tool is now and run it with the same arguments.
    for tool in ("grade", "student"):
        run = subprocess.run([sys.executable, "-m", f"course_utils.exercises.{tool}", "--help"],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        assert f"is deprecated: use python -m course_grading.{tool}" in run.stderr
        assert run.stdout.startswith(f"usage: python -m course_grading.{tool}"), run.stdout[:300]
