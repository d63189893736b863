"""Attempts to forge a grade. Each must grade 0 for unfilled stubs, while right and honestly
wrong answers keep their grades.

The grader computes every verdict in its own process, from outputs of the student's
function on inputs it made (see course_grading._grade_worker); these submissions try
everything a student's kernel can do about that: forge result files, patch the checkers and
torch, return objects that claim equality, print pass lines, kill processes, call the
course's own implementation, and look at (or into) the other submissions.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import nbformat
import pytest
from test_grading import BOOK_NB, COUNT_OK, SOFTMAX_DIM0, SOFTMAX_OK, new_run, run_grader

from course_grading import student

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
# The reference, reached in ways a reading of the code does not show: by strings, through the
# checker object the notebook holds, wrapped in a partial, a lambda or a closure, and after
# switching grading mode off and reloading the checker modules.
FIND_REFERENCE = ("import importlib, sys, functools\n"
                  "mod = importlib.import_module('course_utils.exercises.' + 'ch01_' + 'architectures')\n"
                  "ref = getattr(mod, 'count_parameters_' + 'reference')\n")
REFERENCE_ROUTES = {
    "ref_by_getattr": FIND_REFERENCE + "count_parameters = ref\n",
    "ref_through_checker": ("import sys\nfrom course_utils.exercises import check\n"
                            "home = sys.modules[check.count_parameters.module]\n"
                            "count_parameters = vars(home)['count_parameters_' + 'reference']\n"),
    "ref_in_partial": FIND_REFERENCE + "count_parameters = functools.partial(ref)\n",
    "ref_in_lambda": FIND_REFERENCE + "count_parameters = lambda model: ref(model) + 0\n",
    "ref_in_closure": FIND_REFERENCE + ("def make(f):\n    def count_parameters(model):\n        return f(model)\n"
                                      "    return count_parameters\ncount_parameters = make(ref)\n"),
    "ref_in_object": FIND_REFERENCE + ("class Counter:\n    def __init__(self, f):\n        self.f = f\n"
                                     "    def __call__(self, model):\n        return self.f(model)\n"
                                     "count_parameters = Counter(ref)\n"),
    "ref_after_reload": ("import os, importlib\nos.environ['COURSE_EXERCISES_GRADING'] = '0'\n"
                         "import course_utils.exercises.core as core\ncore = importlib.reload(core)\n"
                         "import course_utils.exercises.ch01_architectures as ch01\nch01 = importlib.reload(ch01)\n"
                         "full = ch01.count_parameters\ncount_parameters = getattr(full, 'reference', None) or "
                         "getattr(ch01, 'count_parameters_' + 'reference')\n"),
}
# A submission that tries to take more memory than a kernel may have, and one that fills its folders.
MEMORY_HOG = "def count_parameters(model):\n    return int(torch.ones(2**31).sum())  # 8 GiB\n"
DISK_FILLER = ("with open('big1.bin', 'wb') as fh:\n    fh.write(b'x' * 15_000_000)\n"
               "with open('big2.bin', 'wb') as fh:\n    fh.write(b'x' * 15_000_000)\n")
# A student who read the grader's source imports it in the kernel (to build its inputs, or its
# expected outputs, from the seed): the answer turns wrong wherever anything of it is reachable.
USES_GRADER = ("import importlib, os, course_utils\n"
               "found = []\n"
               "for name in ('course_grading', 'course_grading.grade', 'course_grading._grade_worker'):\n"
               "    try:\n"
               "        found.append(importlib.import_module(name).__name__)\n"
               "    except ImportError as exc:\n"
               "        print('ImportError:', exc)\n"
               "beside = os.path.join(os.path.dirname(os.path.dirname(course_utils.__file__)), 'course_grading')\n"
               "found += [f for f in (os.listdir(beside) if os.path.isdir(beside) else []) if f.endswith('.py')\n"
               "          and f != '__init__.py']\n\n"
               "def count_parameters(model):\n"
               "    return -1 if found else sum(p.numel() for p in model.parameters())\n")
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
    **{name: dict(answers=[code, SOFTMAX_OK]) for name, code in REFERENCE_ROUTES.items()},
    "uses_grader": dict(answers=[USES_GRADER, SOFTMAX_OK]),
    "memory_hog": dict(answers=[MEMORY_HOG, SOFTMAX_OK]),
    "disk_filler": dict(answers=[COUNT_OK, SOFTMAX_OK], before_checks=DISK_FILLER),
}


@pytest.fixture(scope="module")
def attacked(tmp_path_factory):
    tmp, subs = new_run(tmp_path_factory, "attacks")
    handout = _handout(tmp)
    for name, spec in SUBMISSIONS.items():
        nbformat.write(_submission(handout, **spec), subs / f"{name}.ipynb")
    out = tmp / "results.csv"
    # No attack here relies on the cell time-out: it is generous, so that a slow import under CI's
    # load (two test processes, each grading with two kernels, on 2 cores) does not stop an
    # honest cell (CI once graded an honest exercise 0 under load, not reproduced since).
    rows, proc = run_grader(subs, out, "--cell-timeout", "120", "--timeout", "240", "--jobs", "2",
                            "--max-disk-mb", "20", timeout=1200)
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
    # Patching Checker does not stop the hand-over (a graded kernel's checks are HandOverCheckers),
    # and the patch itself names the reference: the notebook is reported for using it.
    assert rows["patched_core", CP]["feedback"].startswith(
        "check.count_parameters: not graded as your own work: your notebook uses course_utils' own implementation")
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
    assert "your function refers to course_utils' own implementation (`course_utils.modelinfo.count_parameters`)" \
        in pkg["feedback"]
    assert rows["calls_reference", SM]["passed"] == "1" and rows["calls_package", SM]["passed"] == "1"


@pytest.mark.parametrize("name", sorted(REFERENCE_ROUTES))
def test_the_reference_however_reached_grades_zero(attacked, name):
    """Each route hands over (or wraps) count_parameters_reference; the row says why it is 0,
    and the honest second exercise of the same notebook keeps its grade."""
    rows, _ = attacked
    row = rows[name, CP]
    assert row["passed"] == "0", row
    if name == "ref_after_reload":
        # A reloaded core keeps its hand-overs where the grader's driver does not look: nothing arrives.
        assert "handed nothing to the grader" in row["feedback"], row
        return
    assert "not graded as your own work" in row["feedback"], row
    assert "count_parameters_reference" in row["feedback"], row
    assert rows[name, SM]["passed"] == "1", rows[name, SM]


def test_the_grading_package_is_hidden_from_a_graded_kernel(attacked):
    """``import course_grading`` (and its modules) fails in the kernel and its files are not there,
    so the submission's honest answer is all that is graded: it passes."""
    if not _isolation_available():
        pytest.skip("Linux namespaces are not available here: the grading package is importable in the kernel")
    rows, _ = attacked
    assert rows["uses_grader", CP]["passed"] == "1", rows["uses_grader", CP]
    assert rows["uses_grader", SM]["passed"] == "1", rows["uses_grader", SM]


def test_a_masked_package_fails_to_import(tmp_path):
    """The sandbox's --mask: a package folder on an import path is covered by one whose import
    raises ImportError (an empty folder would import, as a namespace package)."""
    from course_grading import _grade_worker, _sandbox

    if not _isolation_available():
        pytest.skip("Linux namespaces are not available here")
    package = tmp_path / "lib" / "secret_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("ANSWER = 42\n")
    (package / "answers.py").write_text("ANSWER = 42\n")
    code = ("import os, sys\nsys.path.insert(0, sys.argv[1])\ntry:\n    import secret_pkg\n    print('imported')\n"
            "except ImportError as exc:\n    print('ImportError:', exc)\nprint(sorted(os.listdir(sys.argv[2])))\n")
    report = tmp_path / "report.json"
    proc = subprocess.run([sys.executable, "-I", _sandbox.__file__, "--report", str(report), "--cwd", "/",
                           *[a for p in _grade_worker.import_paths(dict(os.environ)) for a in ("--ro", p)],
                           "--ro", str(tmp_path / "lib"), "--mask", str(package), "--",
                           sys.executable, "-I", "-c", code, str(tmp_path / "lib"), str(package)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["ImportError: secret_pkg is not available in a graded kernel",
                                        "['__init__.py']"], proc.stdout + proc.stderr
    assert str(package) in json.loads(report.read_text())["isolation"][1]


def test_memory_limit(attacked):
    rows, _ = attacked
    row = rows["memory_hog", CP]
    assert row["passed"] == "0" and "memory limit is 4 GiB per notebook" in row["feedback"], row
    assert rows["memory_hog", SM]["passed"] == "1"  # the kernel lived on: the next exercise was graded


def test_disk_limit(attacked):
    rows, _ = attacked
    for exercise in (CP, SM):
        row = rows["disk_filler", exercise]
        assert row["passed"] == "0", row
        assert "the notebook's folders hold more than 20 MB (the disk limit); grading stopped there" in row["feedback"]


def test_a_graded_kernel_holds_no_reference():
    """In a graded kernel check.<name> only hands over: no reference, no mistakes, no cases."""
    code = ("import os\nos.environ['COURSE_EXERCISES_GRADING'] = '1'\n"
            "from course_utils.exercises import check\n"
            "c = check.count_parameters\n"
            "os.environ['COURSE_EXERCISES_GRADING'] = '0'  # too late: fixed at import\n"
            "print(type(c).__name__, sorted(n for n in vars(c)), hasattr(c, 'reference'), hasattr(c, 'expected'),\n"
            "      c(len) is None)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == ("HandOverChecker ['allow_mutation', 'call', 'kind', 'module', 'name', "
                                            "'seed', 'timeout', 'what'] False False True")


# --------------------------------------------------------------------------- isolation

def _isolation_available() -> bool:
    from course_grading import _sandbox

    probe = subprocess.run([sys.executable, "-I", _sandbox.__file__, "--report", "/dev/stdout", "--cwd", "/",
                            "--", "true"], capture_output=True, text=True)
    try:
        return bool(json.loads(probe.stdout.splitlines()[0]).get("isolation"))
    except (ValueError, IndexError):
        return False


PROBE = '''
import os, socket, glob
def look(submissions, feedback, port, checkout_files):
    seen = {}
    readable = []
    for path in checkout_files:  # the instructor's chapters (with solutions), README, sources
        try:
            with open(path, "rb") as fh:
                fh.read(1)
            readable.append(path)
        except OSError:
            pass
    seen["checkout"] = readable
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
    """Nor another's, nor the submissions and feedback, nor any file of the checkout it is graded
    from (the chapters with their solutions), nor the grader's working folder."""
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
    checkout = Path(__file__).resolve().parents[1]
    files = sorted(str(p) for p in (checkout / "chapters").glob("*.ipynb"))
    files += [str(checkout / name) for name in ("README.md", "pyproject.toml", "scripts/test.sh", "_toc.yml")]
    files += [str(Path.cwd() / name) for name in os.listdir(Path.cwd()) if (Path.cwd() / name).is_file()][:5]
    assert len(files) > 10 and all(Path(f).is_file() for f in files)
    probe_call = (f"seen = look({str(subs)!r}, {str(feedback)!r}, {port}, {files!r})\n"
                  "check.demo_isolation(seen)\n")
    for name in ("ann", "ben"):
        nbformat.write(_submission(handout, [COUNT_OK, SOFTMAX_OK], after=PROBE + probe_call), subs / f"{name}.ipynb")
    out = tmp_path / "results.csv"
    try:
        rows, proc = run_grader(subs, out, "--exercises", "demo_isolation", "--jobs", "2", "--isolation", "required")
    finally:
        server.close()
    assert [(r["student"], r["passed"]) for r in rows] == [("ann", "1"), ("ben", "1")], rows
    assert "isolation: read-only file system; hidden: " in proc.stderr and "no network" in proc.stderr


# --------------------------------------------------------------------------- two submissions at once

# The thief knows the grader's layout (one folder per submission, numbered in file-name order,
# each with an exchange folder io/): where its own kernel's answer should be written, it leaves
# links to the answers of the submission graded beside it, which the grader could follow.
THIEF = '''
import os, time
import course_utils.exercises._plain as plain

def save(path_stem, document, tensors):
    stem = os.path.basename(str(path_stem))
    for suffix in (".json", ".safetensors"):
        target = str(path_stem) + suffix
        try:
            os.unlink(target)
        except OSError:
            pass
        os.symlink(f"../../0000/io/{stem}{suffix}", target)

plain.save = save
time.sleep(25)  # until the victim's answers are there
'''


def test_a_thief_gets_nothing_and_the_victim_keeps_the_grade(tmp_path):
    handout = _handout(tmp_path)
    subs = tmp_path / "submissions"
    subs.mkdir()
    victim = _submission(handout, [COUNT_OK, SOFTMAX_OK], after="import time\ntime.sleep(45)\n")
    nbformat.write(victim, subs / "alice.ipynb")  # graded in folder 0000
    nbformat.write(_submission(handout, [STUB, STUB], setup=THIEF), subs / "zed.ipynb")
    rows, proc = run_grader(subs, tmp_path / "results.csv", "--jobs", "2", "--timeout", "150")
    grades = {(r["student"], r["exercise"]): r for r in rows}
    assert (grades["alice", CP]["passed"], grades["alice", SM]["passed"]) == ("1", "1"), grades
    for exercise in (CP, SM):
        row = grades["zed", exercise]
        assert row["passed"] == "0", row
        assert "is not a regular file (a link?); it was not read" in row["feedback"], row


# --------------------------------------------------------------------------- stopping the grader

def _marked(mark: str) -> list[int]:
    """Processes whose environment holds ``mark`` (the grader, its workers, sandboxes, kernels)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                if mark.encode() in fh.read():
                    found.append(int(entry))
        except OSError:
            pass
    return found


def _kernels(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if b"ipykernel" in fh.read():
                    out.append(pid)
        except OSError:
            pass
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stopping_the_grader_ends_every_process(tmp_path, signum):
    from test_grading import grade_command

    handout = _handout(tmp_path)
    subs = tmp_path / "submissions"
    subs.mkdir()
    for name in ("ann", "ben", "cid"):
        nbformat.write(_submission(handout, [COUNT_OK, SOFTMAX_OK], setup="import time\ntime.sleep(600)\n"),
                       subs / f"{name}.ipynb")
    cmd, env = grade_command(subs, tmp_path / "results.csv", "--jobs", "2")
    mark = f"COURSE_TEST_MARK_{uuid.uuid4().hex}"
    env[mark] = "1"
    grader = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while len(_kernels(_marked(mark))) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(_kernels(_marked(mark))) >= 2, "two kernels did not start"
        time.sleep(1)
        grader.send_signal(signum)
        grader.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _marked(mark) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _marked(mark)
        assert left == [], [open(f"/proc/{p}/cmdline", "rb").read() for p in left]
        assert grader.returncode == 128 + signum
        assert "workers and kernels ended" in grader.stderr.read()
    finally:
        if grader.poll() is None:
            grader.kill()
        for pid in _marked(mark):
            os.kill(pid, signal.SIGKILL)


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
    rows, proc = run_grader(subs, out, "--cell-timeout", "120", "--timeout", "240", "--jobs", "2",
                            "--isolation", "off", timeout=1200)  # generous, as in `attacked`
    return {(r["student"], r["exercise"]): r for r in rows}, proc


def test_without_isolation_the_attacks_still_grade_zero(attacked_unisolated):
    rows, proc = attacked_unisolated
    assert "isolation: NONE — isolation turned off (--isolation off)" in proc.stderr
    grades = {name: (rows[name, CP]["passed"], rows[name, SM]["passed"]) for name in UNISOLATED}
    feedback = {name: (rows[name, CP]["feedback"], rows[name, SM]["feedback"]) for name in UNISOLATED}
    assert grades == {"right": ("1", "1"), "wrong": ("0", "0"), "forged_records": ("0", "0"),
                      "patched_core": ("0", "0"), "patched_torch": ("0", "0"), "lying_objects": ("0", "0"),
                      "printed_passes": ("0", "0"), "exit_after_faking": ("0", "0"), "kill_parent": ("0", "0"),
                      "calls_reference": ("0", "1")}, feedback


def test_answers_are_read_only_from_regular_files_of_their_own(tmp_path):
    """What a kernel can leave in its exchange folder instead of an answer: a link (to another
    submission's answer), a hard link, a FIFO (which would block the grader), a folder."""
    from course_utils.exercises import _plain

    own, other = tmp_path / "0001" / "io", tmp_path / "0000" / "io"
    own.mkdir(parents=True)
    other.mkdir(parents=True)
    (other / "answer.json").write_text('{"stolen": true}')
    (own / "fine.json").write_text('{"mine": true}')
    assert _plain.read_own_file(own, "fine.json", 100) == b'{"mine": true}'
    (own / "link.json").symlink_to("../../0000/io/answer.json")
    os.link(other / "answer.json", own / "hard.json")
    os.mkfifo(own / "fifo.json")
    (own / "folder.json").mkdir()
    expected = {"link.json": "is not a regular file (a link?)", "hard.json": "has 2 names (a hard link?)",
                "fifo.json": "is not a regular file", "folder.json": "is not a regular file",
                "missing.json": "no answer was written", "../0000/io/answer.json": "bad answer file name"}
    for name, message in expected.items():
        with pytest.raises(_plain.PlainError, match=re.escape(message)):
            _plain.read_own_file(own, name, 100)
    with pytest.raises(_plain.PlainError, match="too large"):
        _plain.read_own_file(own, "fine.json", 5)
    linked_folder = tmp_path / "0002" / "io"
    linked_folder.parent.mkdir()
    linked_folder.symlink_to(other)
    with pytest.raises(_plain.PlainError, match="not the grader's own folder"):
        _plain.read_own_file(linked_folder, "answer.json", 100)


def test_results_csv_is_safe_in_a_spreadsheet(tmp_path):
    """Student names come from file names, on one line; a cell that would start a formula does not."""
    import csv

    from course_grading import grade

    names = ['=HYPERLINK("x","y")', "+1", "-2", "@SUM(A1)", "a,b", 'say "hi"', "two\nlines", "two_lines",
             "plain"]
    paths = [tmp_path / f"{n}.ipynb" for n in names]
    students = grade.student_names(paths)
    # two names the same once on one line: both become their file names, made unique
    assert [students[p] for p in paths] == names[:6] + ["two_lines.ipynb", "two_lines.ipynb~2", "plain"]
    rows = [grade.Row(students[p], "=cmd|' /C calc'!A0", False, "line one\nline two") for p in paths]
    out = tmp_path / "results.csv"
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerows(r.as_csv() for r in rows)
    text = out.read_text(encoding="utf-8")
    assert len(text.splitlines()) == len(names)  # one line per row, whatever the names hold
    with open(out, newline="", encoding="utf-8") as fh:
        back = list(csv.reader(fh))
    assert [r[0] for r in back] == ["'" + n for n in names[:4]] + ["a,b", 'say "hi"', "two_lines.ipynb",
                                                                    "two_lines.ipynb~2", "plain"]
    assert {r[1] for r in back} == {"'=cmd|' /C calc'!A0"}
    assert {r[3] for r in back} == {"line one line two"}
    assert all(not cell.startswith(("=", "+", "-", "@")) for r in back for cell in r)


def test_a_notebook_stopped_for_time_says_so():
    """A notebook the grader had to kill (it ignored interrupts) is not 'missing a check cell'."""
    from course_grading import grade

    killed = {"status": "killed", "message": "the notebook timed out after 150 s and was stopped (an infinite "
                                             "loop that ignores interrupts?)"}
    assert grade._reason_missing(CP, killed) == ("not graded: the notebook timed out after 150 s and was stopped "
                                                 "(an infinite loop that ignores interrupts?)")
    stopped = {"status": "ok", "check_cells": {CP: 4}, "cell_errors": {"4": "KeyboardInterrupt: "},
               "stopped_cells": [4], "stopped_after": 30}
    assert grade._reason_missing(CP, stopped) == ("the check cell (cell 4) raised KeyboardInterrupt:  (it timed out "
                                                  "after 30 s and was stopped).")
