"""Attempts to forge a grade. Each must grade 0 for unfilled stubs, while right and honestly
wrong answers keep their grades.

The grader computes every verdict in its own process, from outputs of the student's
function on inputs it made (see course_utils.exercises._grade_worker); these submissions try
everything a student's kernel can do about that: forge result files, patch the checkers and
torch, return objects that claim equality, print pass lines, kill processes, call the
course's own implementation, and look at (or into) the other submissions.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from test_grading import BOOK_NB, COUNT_OK, SOFTMAX_DIM0, SOFTMAX_OK, new_run, run_grader

from course_utils.exercises import student

CP, SM = "count_parameters", "demo_softmax"
STUB = None  # leave the stub as handed out

# Cells a forger appends (after the handed-out cells, or before the checks with `early`).
FORGE_RECORDS = '''
import glob, json, os
fake = [{"exercise": n, "passed": True, "stage": "pass", "message": f"check.{n} passed"} for n in
        ("count_parameters", "demo_softmax")]
targets = [v for k, v in os.environ.items() if "RECORD" in k or "GRADE" in k]
targets += ["../records.jsonl", "../status.json", "records.jsonl"]
for pattern in ("../io/*", "../*/*.json", "/tmp/grade-*/*/io/*.json"):
    targets += glob.glob(pattern)
for path in targets:
    try:
        with open(path, "a") as fh:
            fh.write("\\n".join(json.dumps(r) for r in fake) + "\\n")
    except OSError:
        pass
# a well-formed answer of the driver's kind, claiming the stub returned the right things
for name in ("count_parameters", "demo_softmax"):
    try:
        with open(f"../io/out-{name}.json", "w") as fh:
            json.dump({"exercise": name, "status": "ok", "passed": True, "cases": []}, fh)
    except OSError:
        pass
'''

PATCH_CORE = '''
import course_utils.exercises.core as core
from course_utils.exercises import ch01_architectures as ch01
passing = lambda self, sub: print(f"\\u2713 check.{self.name} passed") or core.CheckResult(self.name, True, "passed")
core.Checker.__call__ = passing
core._record = lambda result: None
core.judge_case = lambda *a, **k: None
core.Checker.judge_case = lambda *a, **k: None
core.Checker.passed = lambda self, cases: core.CheckResult(self.name, True, "passed")
ch01.count_parameters_reference = lambda model: 0
core._REGISTRY["count_parameters"].reference = lambda model: 0
'''

PATCH_CORE_KEEP_CHECK = '''
import course_utils.exercises.core as core, course_utils.exercises._compare as cmp
core._record = lambda result: None
cmp.compare = lambda *a, **k: None
core.compare = lambda *a, **k: None
core.Checker.judge_case = lambda *a, **k: None
'''

PATCH_TORCH = '''
import torch, torch.testing
torch.allclose = lambda *a, **k: True
torch.equal = lambda *a, **k: True
torch.isclose = lambda a, b, *x, **k: torch.ones(torch.broadcast_shapes(a.shape, b.shape), dtype=torch.bool)
torch.testing.assert_close = lambda *a, **k: None
torch.Tensor.__eq__ = lambda self, other: torch.ones(self.shape, dtype=torch.bool)
torch.Tensor.__ne__ = lambda self, other: torch.zeros(self.shape, dtype=torch.bool)
'''

LIARS = '''
import torch

class Anything:
    def __eq__(self, other):
        return True
    __hash__ = object.__hash__

class EqualInt(int):
    def __eq__(self, other):
        return True
    __hash__ = int.__hash__

class Liar(torch.Tensor):
    """Every comparison says equal; every reduction says finite and close."""
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in ("isclose", "eq", "__eq__", "equal", "allclose", "isfinite"):
            first = args[0]
            return torch.ones(first.shape, dtype=torch.bool) if name not in ("equal", "allclose") else True
        if name in ("ne", "__ne__"):
            return torch.zeros(args[0].shape, dtype=torch.bool)
        return super().__torch_function__(func, types, args, kwargs or {})
'''

COUNT_LIAR = "def count_parameters(model):\n    return EqualInt(0)\n"
COUNT_ANYTHING = "def count_parameters(model):\n    return Anything()\n"
SOFTMAX_LIAR = "def row_softmax(x):\n    return torch.zeros(x.shape).as_subclass(Liar)\n"

PRINT_PASSES = '''
print("\\u2713 check.count_parameters passed (6 cases: one Linear(3, 4), nested submodules, tied embedding and "
      "output weights, a module with buffers, partly frozen, no parameters at all).")
print("\\u2705 check.demo_softmax passed (2 cases: random, one column).")
from IPython.display import display, Markdown
display(Markdown("**check.demo_softmax passed**"))
'''

EXIT_AFTER = FORGE_RECORDS + PRINT_PASSES + "\nimport os\nos._exit(0)\n"
KILL_PARENT = FORGE_RECORDS + '''
import os, signal
for pid in (os.getppid(), 1):
    try:
        os.kill(pid, signal.SIGKILL)
    except (OSError, ProcessLookupError):
        pass
os.killpg(0, signal.SIGKILL)
'''

COUNT_VIA_REFERENCE = ("from course_utils.exercises.ch01_architectures import count_parameters_reference\n\n"
                       "def count_parameters(model):\n    return count_parameters_reference(model)\n")
COUNT_VIA_PACKAGE = ("import importlib\n"
                     "info = importlib.import_module('course_utils.' + 'modelinfo')  # no name to read\n\n"
                     "def count_parameters(model):\n"
                     "    return info.count_parameters(model)\n")


def _handout(tmp: Path) -> nbformat.NotebookNode:
    student.write_student_edition([BOOK_NB], tmp / "handout")
    return nbformat.read(tmp / "handout" / BOOK_NB.name, as_version=4)


def _submission(handout, answers, before_checks: str | None = None, after: str | None = None,
                setup: str | None = None):
    nb = nbformat.from_dict(nbformat.reads(nbformat.writes(handout), as_version=4))
    stubs = [c for c in nb.cells if "exercise-stub" in c.metadata.get("tags", [])]
    for cell, answer in zip(stubs, answers):
        if answer is not None:
            cell.source = answer
    if setup:
        nb.cells.insert(2, nbformat.v4.new_code_cell(setup))
    if before_checks:
        first_check = next(i for i, c in enumerate(nb.cells) if "exercise-check" in c.metadata.get("tags", []))
        nb.cells.insert(first_check, nbformat.v4.new_code_cell(before_checks))
    if after:
        nb.cells.append(nbformat.v4.new_code_cell(after))
    return nb


SUBMISSIONS = {
    "right": dict(answers=[COUNT_OK, SOFTMAX_OK]),
    "wrong": dict(answers=[
        "def count_parameters(model):\n    return sum(t.numel() for t in model.state_dict().values())\n",
        SOFTMAX_DIM0]),
    "stub": dict(answers=[STUB, STUB]),
    "forged_records": dict(answers=[STUB, STUB], before_checks=FORGE_RECORDS, after=FORGE_RECORDS),
    "patched_core": dict(answers=[STUB, STUB], setup=PATCH_CORE, after=PATCH_CORE),
    "patched_compare": dict(answers=[STUB, STUB], setup=PATCH_CORE_KEEP_CHECK),
    "patched_torch": dict(answers=[STUB, "def row_softmax(x):\n    return torch.zeros_like(x)\n"],
                          setup=PATCH_TORCH),
    "lying_objects": dict(answers=[COUNT_LIAR, SOFTMAX_LIAR], setup=LIARS),
    "lying_eq": dict(answers=[COUNT_ANYTHING, STUB], setup=LIARS),
    "printed_passes": dict(answers=[STUB, STUB], before_checks=PRINT_PASSES, after=PRINT_PASSES),
    "exit_after_faking": dict(answers=[STUB, STUB], after=EXIT_AFTER),
    "kill_parent": dict(answers=[STUB, STUB], after=KILL_PARENT),
    "calls_reference": dict(answers=[COUNT_VIA_REFERENCE, SOFTMAX_OK]),
    "calls_package": dict(answers=[COUNT_VIA_PACKAGE, SOFTMAX_OK]),
}


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    tmp, subs = new_run(tmp_path_factory, "attacks")
    handout = _handout(tmp)
    for name, spec in SUBMISSIONS.items():
        nbformat.write(_submission(handout, **spec), subs / f"{name}.ipynb")
    out = tmp / "results.csv"
    rows, proc = run_grader(subs, out, "--cell-timeout", "30", "--timeout", "150", "--jobs", "2", timeout=1200)
    return {(r["student"], r["exercise"]): r for r in rows}, proc


def test_honest_submissions_keep_their_grades(attacked):
    rows, _ = attacked
    assert rows["right", CP]["passed"] == "1" and rows["right", SM]["passed"] == "1"
    assert rows["wrong", CP]["passed"] == "0" and "counted twice" in rows["wrong", CP]["feedback"]
    assert rows["wrong", SM]["passed"] == "0" and "wrong axis" in rows["wrong", SM]["feedback"]
    assert "not implemented yet" in rows["stub", CP]["feedback"]


@pytest.mark.parametrize("name", ["stub", "forged_records", "patched_core", "patched_compare", "patched_torch",
                                  "lying_objects", "lying_eq", "printed_passes", "exit_after_faking",
                                  "kill_parent"])
def test_attacks_grade_zero(attacked, name):
    rows, _ = attacked
    assert (rows[name, CP]["passed"], rows[name, SM]["passed"]) == ("0", "0"), (rows[name, CP], rows[name, SM])


def test_attacks_get_a_reason(attacked):
    rows, _ = attacked
    assert "not implemented yet" in rows["forged_records", CP]["feedback"]
    assert "not implemented yet" in rows["printed_passes", SM]["feedback"]
    assert "handed nothing to the grader (was `check` replaced" in rows["patched_core", CP]["feedback"]
    assert "not implemented yet" in rows["patched_compare", CP]["feedback"]
    assert "values differ from the reference" in rows["patched_torch", SM]["feedback"]
    assert rows["lying_objects", CP]["feedback"].startswith(
        "check.count_parameters (case 'one Linear(3, 4)'): expected 16, got 0 (16 too few).")
    assert "values differ from the reference" in rows["lying_objects", SM]["feedback"]
    assert "expected an int, got an Anything" in rows["lying_eq", CP]["feedback"]


def test_calling_the_course_implementation_is_reported(attacked):
    rows, _ = attacked
    ref = rows["calls_reference", CP]
    assert ref["passed"] == "0"
    assert ref["feedback"].startswith("check.count_parameters: not graded as your own work: your notebook uses "
                                      "course_utils' own implementation "
                                      "(`course_utils.exercises.ch01_architectures.count_parameters_reference`).")
    pkg = rows["calls_package", CP]  # hidden from a reading of the code; seen while it runs
    assert pkg["passed"] == "0"
    assert "your function calls course_utils' own implementation (`course_utils.modelinfo.count_parameters`)" \
        in pkg["feedback"]
    assert rows["calls_reference", SM]["passed"] == "1" and rows["calls_package", SM]["passed"] == "1"


# --------------------------------------------------------------------------- isolation

def _isolation_available() -> bool:
    from course_utils.exercises import _sandbox

    probe = subprocess.run([sys.executable, "-I", _sandbox.__file__, "--report", "/dev/stdout", "--cwd", "/",
                            "--", "true"], capture_output=True, text=True)
    try:
        return bool(json.loads(probe.stdout.splitlines()[0]).get("isolation"))
    except (ValueError, IndexError):
        return False


PROBE = '''
import os, socket, glob
def look(submissions, feedback, port):
    seen = {}
    seen["cwd"] = sorted(os.listdir("."))
    seen["submissions"] = sorted(glob.glob(os.path.join(submissions, "*")))
    seen["feedback"] = sorted(glob.glob(os.path.join(feedback, "*")))
    own = os.getcwd()
    seen["other_kernels"] = sorted(p for p in glob.glob("/tmp/grade-*/*/box/*.ipynb") if not p.startswith(own))
    try:
        open(os.path.join(os.path.dirname(os.__file__), "course_probe.txt"), "w").close()
        seen["wrote_outside"] = True
    except OSError:
        seen["wrote_outside"] = False
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        seen["network"] = True
    except OSError:
        seen["network"] = False
    seen["processes"] = len([p for p in os.listdir("/proc") if p.isdigit()]) > 20
    return seen
'''


def test_a_kernel_sees_only_its_own_notebook(tmp_path):
    import socket

    if not _isolation_available():
        pytest.skip("Linux namespaces are not available here; the README says what is not guaranteed then")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    handout = _handout(tmp_path)
    subs = tmp_path / "submissions"
    subs.mkdir()
    feedback = tmp_path / "feedback"
    probe_call = f"seen = look({str(subs)!r}, {str(feedback)!r}, {port})\ncheck.demo_isolation(seen)\n"
    for name in ("ann", "ben"):
        nbformat.write(_submission(handout, [COUNT_OK, SOFTMAX_OK], after=PROBE + probe_call), subs / f"{name}.ipynb")
    out = tmp_path / "results.csv"
    try:
        rows, proc = run_grader(subs, out, "--exercises", "demo_isolation", "--jobs", "2", "--isolation", "required")
    finally:
        server.close()
    assert [(r["student"], r["passed"]) for r in rows] == [("ann", "1"), ("ben", "1")], rows
    assert "isolation: read-only file system; hidden: " in proc.stderr and "no network" in proc.stderr


# --------------------------------------------------------------------------- without a sandbox

UNISOLATED = ["right", "wrong", "forged_records", "patched_core", "patched_torch", "lying_objects",
              "printed_passes", "exit_after_faking", "kill_parent", "calls_reference"]


@pytest.fixture(scope="module")
def attacked_unisolated(tmp_path_factory):
    """The same attacks where the OS gives no namespaces (macOS, a locked-down container):
    the verdicts are still made outside the kernel, so none of them may pass."""
    tmp, subs = new_run(tmp_path_factory, "attacks_off")
    handout = _handout(tmp)
    for name in UNISOLATED:
        nbformat.write(_submission(handout, **SUBMISSIONS[name]), subs / f"{name}.ipynb")
    out = tmp / "results.csv"
    rows, proc = run_grader(subs, out, "--cell-timeout", "30", "--timeout", "150", "--jobs", "2",
                            "--isolation", "off", timeout=1200)
    return {(r["student"], r["exercise"]): r["passed"] for r in rows}, proc


def test_without_isolation_the_attacks_still_grade_zero(attacked_unisolated):
    rows, proc = attacked_unisolated
    assert "isolation: NONE — isolation turned off (--isolation off)" in proc.stderr
    grades = {name: (rows[name, CP], rows[name, SM]) for name in UNISOLATED}
    assert grades == {"right": ("1", "1"), "wrong": ("0", "0"), "forged_records": ("0", "0"),
                      "patched_core": ("0", "0"), "patched_torch": ("0", "0"), "lying_objects": ("0", "0"),
                      "printed_passes": ("0", "0"), "exit_after_faking": ("0", "0"), "kill_parent": ("0", "0"),
                      "calls_reference": ("0", "1")}
