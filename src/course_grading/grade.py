"""Grade a folder of submitted notebooks into a CSV and one feedback file per student.

Usage::

    python -m course_grading.grade SUBMISSIONS_DIR --out results.csv

Every file in ``SUBMISSIONS_DIR`` is one student's submission; the student is the file
name without its extension (``alice.ipynb`` -> ``alice``). The CSV has one row per student
and expected exercise, columns ``student, exercise, passed, feedback`` (``passed`` is 1 or 0).

How a verdict is made (see :mod:`._grade_worker`): each notebook runs in a fresh Jupyter
kernel, sandboxed where the OS allows (:mod:`._sandbox`: no network, read-only files, the
other submissions and the grader's folders out of sight), with a time limit per cell and per
notebook and a cap on output. In that kernel ``check.<name>(f)`` only hands ``f`` over. The
grader then calls ``f`` from outside on inputs it generated (under ``--seed``, random by
default), receives the outputs as plain data, and compares them with the reference in its
own process, with the checkers' diagnosing hints. What a notebook prints, writes or patches
is never a verdict. A file that cannot be graded (not JSON, not a notebook, too large, a
missing exercise, an infinite loop, a crashing kernel, an enormous output) becomes rows with
the reason; it never stops the run or affects another submission.

The expected exercises are, in order of preference: ``--exercises a,b``; the check cells
of ``--assignment NOTEBOOK`` (e.g. the student-edition notebook you handed out); the
exercises listed in the submissions' metadata (written by the student-edition tool) or
found in their check cells. Checkers come from course_utils (``chNN_*.py``) and from the
modules given with ``--checkers`` (a module name or a ``.py`` file), never from a notebook.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import queue
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import course_utils
from course_utils.exercises.core import FAIL_MARK, PASS_MARK

COLUMNS = ["student", "exercise", "passed", "feedback"]
NOTEBOOK_ROW = "(notebook)"  #: the exercise column when no exercise list is known


@dataclass
class Limits:
    cell_timeout: float = 120.0        #: seconds per cell (the cell is interrupted, grading goes on)
    notebook_timeout: float = 600.0    #: seconds per notebook in all
    max_output_mb: float = 5.0         #: output a notebook may print before it is stopped
    max_file_mb: float = 20.0          #: larger submitted files are not run
    kernel: str = "python3"
    memory_gb: float = 4.0             #: address space of each kernel (RLIMIT_AS); 0: no limit
    max_disk_mb: float = 500.0         #: what a kernel may write in its folders (and the largest file)

    def for_worker(self) -> dict[str, Any]:
        return {"cell_timeout": self.cell_timeout, "notebook_timeout": self.notebook_timeout,
                "max_output_bytes": int(self.max_output_mb * 1e6), "kernel": self.kernel,
                "memory_bytes": int(self.memory_gb * 2**30), "max_disk_bytes": int(self.max_disk_mb * 1e6)}


@dataclass
class Row:
    student: str
    exercise: str
    passed: bool
    feedback: str

    def as_csv(self) -> list[str]:
        return [safe_cell(self.student), safe_cell(self.exercise), "1" if self.passed else "0",
                safe_cell(_one_line(self.feedback))]


#: A spreadsheet reads a cell that starts with one of these as a formula.
FORMULA_START = ("=", "+", "-", "@")


def safe_cell(text: str) -> str:
    """``text`` as a spreadsheet shows it, never runs it: one line, and a leading ``'`` where it
    would start a formula (``=HYPERLINK(...)``, ``+``, ``-``, ``@``)."""
    text = "".join(ch if ch.isprintable() else " " for ch in str(text))
    return "'" + text if text.startswith(FORMULA_START) else text


@dataclass
class Submission:
    path: Path
    student: str
    notebook: Any = None          #: the parsed notebook, or None
    problem: str | None = None    #: why it cannot be run
    exercises: list[str] = field(default_factory=list)  #: its check calls and declared exercises
    declared: list[str] = field(default_factory=list)   #: ``metadata.course.exercises`` (student edition)


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def _strip_mark(message: str) -> str:
    for mark in (PASS_MARK, FAIL_MARK):
        message = message.replace(mark, "")
    return _one_line(message)


def load_submission(path: Path, student: str, limits: Limits) -> Submission:
    """Read and validate one file; ``problem`` says why it cannot be graded."""
    import nbformat

    from .student import CHECK_CALL, cell_source

    sub = Submission(path, student)
    size = path.stat().st_size
    if size > limits.max_file_mb * 1e6:
        sub.problem = (f"the file is {size / 1e6:.1f} MB, over the {limits.max_file_mb:g} MB limit "
                       "(clear the outputs before submitting: Edit > Clear All Outputs)")
        return sub
    if path.suffix.lower() != ".ipynb":
        sub.problem = f"not a notebook file: {path.name} (submit the .ipynb file)"
        return sub
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        sub.problem = "not a notebook: the file is not text (UTF-8 JSON); was the right file submitted?"
        return sub
    except json.JSONDecodeError as exc:
        sub.problem = f"not a notebook: the file is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        return sub
    if not isinstance(raw, dict) or "cells" not in raw or "nbformat" not in raw:
        sub.problem = "not a notebook: the JSON has no 'cells'/'nbformat' (is it a Jupyter notebook?)"
        return sub
    try:
        nb = nbformat.reads(json.dumps(raw), as_version=4)
        nbformat.validate(nb)
    except Exception as exc:  # noqa: BLE001 - nbformat raises several kinds
        sub.problem = f"not a valid notebook: {_one_line(str(exc))[:200]}"
        return sub
    sub.notebook = nb
    course = nb.metadata.get("course")
    declared = course.get("exercises", []) if isinstance(course, dict) else []
    sub.declared = [n for n in declared if isinstance(n, str)] if isinstance(declared, list) else []
    found = [n for c in nb.cells if c.cell_type == "code" for n in CHECK_CALL.findall(cell_source(c))]
    sub.exercises = list(dict.fromkeys(sub.declared + found))
    return sub


class Worker:
    """One ``_grade_worker`` process; it grades the submissions it is given, one at a time.

    Answers come back on its stdout, tagged with a secret it read on stdin (a kernel cannot
    write to that pipe: the worker gives kernels no stdout). If a submission runs past its
    deadline, the worker and that kernel are killed and a fresh worker takes the next one.
    """

    def __init__(self, log: Path, home: Path | None = None) -> None:
        self.log = log
        self.home = home or log.parent  #: its working folder: nothing of the instructor's there
        self.proc: subprocess.Popen[str] | None = None
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.nonce = secrets.token_hex(16)

    def _start(self) -> subprocess.Popen[str]:
        self.lines = queue.Queue()
        self.home.mkdir(parents=True, exist_ok=True)
        # -P (Python 3.11+): the working folder is not an import path, so it cannot reach the kernels'.
        safe_path = ["-P"] if sys.version_info >= (3, 11) else []
        env = dict(os.environ, COURSE_GRADER_PID=str(os.getpid()))
        if env.get("PYTHONPATH"):  # the worker runs elsewhere: relative entries are made absolute here
            env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p) for p in env["PYTHONPATH"].split(os.pathsep) if p)
        with open(self.log, "ab") as log:
            proc = subprocess.Popen([sys.executable, *safe_path, "-m", "course_grading._grade_worker"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, cwd=self.home,
                                    env=env, start_new_session=True, text=True, bufsize=1)
        _RUNNING.add(proc)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(self.nonce + "\n")
        proc.stdin.flush()
        lines, stdout = self.lines, proc.stdout

        def read() -> None:
            for line in stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        return proc

    def grade(self, task: dict[str, Any], timeout: float) -> dict[str, Any] | None:
        """The worker's answer, or None if it did not answer within ``timeout`` seconds."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(task) + "\n")
            self.proc.stdin.flush()
        except OSError:
            self.stop()
            return None
        end = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.1, end - time.monotonic()))
            except queue.Empty:
                self.stop()
                return None
            if line is None:  # the worker died
                self.stop()
                return None
            prefix = f"RESULT {self.nonce} "
            if line.startswith(prefix):
                try:
                    answer = json.loads(line[len(prefix):])
                except json.JSONDecodeError:
                    return None
                return answer if isinstance(answer, dict) else None

    def stop(self, graceful: bool = False) -> None:
        """Stop the worker: killed (after a time-out) or, when ``graceful``, asked to finish."""
        if self.proc is None:
            return
        if graceful and self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()  # the worker's loop ends
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if self.proc.poll() is None:
            _kill_group(self.proc.pid)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        _RUNNING.discard(self.proc)
        self.proc = None


def run_submission(sub: Submission, expected: list[str], limits: Limits, worker: Worker, folder: Path,
                   options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Grade one notebook with ``worker``; returns (verdicts by exercise, status)."""
    import nbformat

    folder.mkdir(parents=True)
    nbformat.write(sub.notebook, folder / "submission.ipynb")
    task = {"dir": str(folder), "exercises": expected, "limits": limits.for_worker(), **options}
    answer = worker.grade(task, limits.notebook_timeout + 90)
    pid_file = folder / "kernel.pid"
    if pid_file.is_file():
        try:
            _kill_group(int(pid_file.read_text()))  # normally gone already; never leave one running
        except ValueError:
            pass
    if answer is None:
        return {}, {"status": "killed", "message": f"the notebook timed out after {limits.notebook_timeout:g} s "
                                                    "and was stopped (an infinite loop that ignores interrupts?)"}
    return answer.get("verdicts", {}), answer.get("status", {})


#: Every worker process now running, and the grading folders, for the signal handler.
_RUNNING: set[subprocess.Popen[str]] = set()
_ROOTS: list[Path] = []


def _stop_everything(signum: int, frame: Any) -> None:
    """SIGINT/SIGTERM: kill every worker and kernel, remove the grading folders, exit."""
    for proc in list(_RUNNING):
        _kill_group(proc.pid)
    for root in _ROOTS:
        for pid_file in root.glob("*/kernel.pid"):
            try:
                _kill_group(int(pid_file.read_text()))
            except (OSError, ValueError):
                pass
        shutil.rmtree(root, ignore_errors=True)
    print(f"grading stopped (signal {signum}); workers and kernels ended", file=sys.stderr, flush=True)
    os._exit(128 + signum)


def _kill_group(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, OSError):
            pass


def _reason_missing(exercise: str, status: dict[str, Any]) -> str:
    """Why a notebook that ran has no result for ``exercise``."""
    cell = status.get("check_cells", {}).get(exercise)
    stopped = status.get("status") not in ("ok", None)
    if cell is None and "check_cells" not in status:  # the notebook was never looked at (killed, failed)
        return f"not graded: {status.get('message') or 'the grader could not run the notebook'}"
    if cell is None:
        text = (f"missing: the notebook has no check.{exercise}(...) call — was the exercise's check cell "
                "deleted? Restore it and run it.")
    elif str(cell) in status.get("cell_errors", {}):
        text = f"the check cell (cell {cell}) raised {status['cell_errors'][str(cell)]}"
        if cell in status.get("stopped_cells", []):
            text += f" (it timed out after {status.get('stopped_after', '?')} s and was stopped)"
    elif stopped:
        text = f"not graded: {status.get('message')}"
        return text
    else:
        text = (f"the check cell (cell {cell}) ran, but check.{exercise} handed nothing to the grader (was `check` "
                "replaced or redefined in the notebook?)")
    parts = [text.rstrip(".") + "."]
    stopped_cells = [c for c in status.get("stopped_cells", []) if c != cell]
    if stopped_cells:
        parts.append(f"Note: cell {stopped_cells[0]} timed out after {status.get('stopped_after', '?')} s (the "
                     "per-cell limit) and was stopped (an infinite loop?).")
    if stopped:
        parts.append(f"Then {status.get('message')}.")
    return " ".join(parts)


def grade_submission(sub: Submission, expected: list[str], limits: Limits, worker: Worker, folder: Path,
                     options: dict[str, Any]) -> tuple[list[Row], dict[str, Any]]:
    exercises = expected or sub.exercises
    if sub.problem is not None:
        return [Row(sub.student, ex, False, sub.problem) for ex in (exercises or [NOTEBOOK_ROW])], {}
    if not exercises:
        return [Row(sub.student, NOTEBOOK_ROW, False, "no exercise to grade: the notebook has no check.<name>(...) "
                                                      "call and none was given with --exercises")], {}
    verdicts, status = run_submission(sub, exercises, limits, worker, folder, options)
    rows = []
    for ex in exercises:
        verdict = verdicts.get(ex)
        if verdict is not None:
            rows.append(Row(sub.student, ex, bool(verdict.get("passed")), _strip_mark(str(verdict.get("message", "")))))
        elif ex == NOTEBOOK_ROW:
            rows.append(Row(sub.student, ex, False, status.get("message") or "no check ran in this notebook"))
        else:
            rows.append(Row(sub.student, ex, False, _reason_missing(ex, status)))
    return rows, status


def expected_exercises(submissions: Iterable[Submission], exercises: str | None = None,
                       assignment: Path | None = None, limits: Limits | None = None) -> list[str]:
    if exercises:
        return [e.strip() for e in exercises.split(",") if e.strip()]
    if assignment is not None:
        sub = load_submission(assignment, "assignment", limits or Limits())
        if sub.problem:
            raise SystemExit(f"--assignment {assignment}: {sub.problem}")
        return sub.exercises
    # The handed-out notebook's metadata is the assignment; a check call a student added is not.
    subs = list(submissions)
    declared = any(sub.declared for sub in subs)
    union: list[str] = []
    for sub in subs:
        union.extend(e for e in (sub.declared if declared else sub.exercises) if e not in union)
    return union


def _printable(name: str) -> str:
    return "".join(ch if ch.isprintable() and ch not in "/\\" else "_" for ch in name)


def student_names(paths: list[Path]) -> dict[Path, str]:
    """``alice.ipynb`` -> ``alice``; the full file name where two files share a stem. A name
    comes only from the file's name, on one line (a newline or other control character
    becomes ``_``), and is unique (``~2`` ... where two would be the same)."""
    stems = [_printable(p.stem) for p in paths]
    names: dict[Path, str] = {}
    taken: set[str] = set()
    for path, stem in zip(paths, stems):
        name = stem if stems.count(stem) == 1 else _printable(path.name)
        base, k = name or "_", 2
        name = base
        while name in taken:
            name, k = f"{base}~{k}", k + 1
        taken.add(name)
        names[path] = name
    return names


def write_feedback(folder: Path, student: str, source: str, rows: list[Row]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    passed = sum(r.passed for r in rows)
    lines = [f"# Feedback: {student}", "", f"Submission: `{source}` — {passed} of {len(rows)} exercises passed.", ""]
    for row in rows:
        lines += [f"## {row.exercise}: {'passed' if row.passed else 'not passed'}", "", row.feedback, ""]
    stem = student.lstrip(".") or "_"
    path = folder / f"{stem}.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _isolation_line(report: dict[str, Any] | None) -> str:
    if not report:
        return "isolation: unknown (no kernel started)"
    if report.get("isolation"):
        return "isolation: " + "; ".join(report["isolation"])
    return "isolation: NONE — " + "; ".join(report.get("problems", [])) + \
        " (kernels run as your user and could read or change your files)"


def checkout_root() -> Path | None:
    """The source checkout course_utils is imported from (chapters with solutions), if it is one."""
    here = Path(course_utils.__file__).resolve().parents[1]  # src/ for a checkout, else site-packages
    for candidate in (here.parent, here):
        if (candidate / "pyproject.toml").is_file() and (candidate / "chapters").is_dir():
            return candidate
    return None


def hidden_folders(submissions: Path, feedback: Path, out: Path, root: Path) -> list[str]:
    """What a kernel must not see even where the rest of the file system shows: the
    submissions, the feedback and results folders, the grading folder, the grader's working
    folder and the checkout the grader runs from."""
    folders = [submissions.resolve(), feedback.resolve(), out.resolve().parent, root.resolve(), Path.cwd().resolve()]
    checkout = checkout_root()
    if checkout is not None:
        folders.append(checkout)
    return list(dict.fromkeys(str(f) for f in folders))


def grade_folder(folder: Path, out: Path, feedback_dir: Path | None = None, *, exercises: str | None = None,
                 assignment: Path | None = None, limits: Limits | None = None,
                 progress: bool = True, jobs: int = 1, seed: int | None = None, isolation: str = "auto",
                 checkers: Iterable[str] = ()) -> list[Row]:
    """Grade every file in ``folder``; write the CSV ``out`` and the feedback files.

    ``seed``: of the inputs the grader makes (random when None; printed, to rerun alike).
    ``isolation``: ``auto`` (sandbox where the OS allows), ``required`` (refuse without),
    ``off``. ``checkers``: extra checker modules (names or ``.py`` files).
    """
    limits = limits or Limits()
    if not folder.is_dir():
        raise SystemExit(f"{folder} is not a folder of submissions")
    if isolation not in ("auto", "required", "off"):
        raise SystemExit(f"--isolation must be auto, required or off, not {isolation!r}")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    names = student_names(paths)
    subs = [load_submission(p, names[p], limits) for p in paths]
    expected = expected_exercises(subs, exercises, assignment, limits)
    feedback_dir = (feedback_dir or out.parent / "feedback").resolve()
    seed = secrets.randbelow(2**31) if seed is None else int(seed)
    if progress:
        print(f"inputs made with seed {seed} (--seed {seed} makes the same ones again)", file=sys.stderr, flush=True)
    root = Path(tempfile.mkdtemp(prefix="grade-"))
    _ROOTS.append(root)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _stop_everything)
    feedback_dir.mkdir(parents=True, exist_ok=True)  # exists from the start, so that kernels never see it
    out.resolve().parent.mkdir(parents=True, exist_ok=True)
    checker_specs = [str(Path(c).resolve()) if c.endswith(".py") else c for c in checkers]
    options = {"seed": seed, "isolation": isolation, "checkers": checker_specs,
               "hide": hidden_folders(folder, feedback_dir, out, root)}
    workers: queue.Queue[Worker] = queue.Queue()
    for k in range(max(1, jobs)):
        workers.put(Worker(root / f"worker-{k}.log", root / f"worker-{k}"))
    reports: list[dict[str, Any]] = []

    def one(item: tuple[int, Submission]) -> list[Row]:
        index, sub = item
        t0 = time.monotonic()
        worker = workers.get()
        try:
            sub_rows, status = grade_submission(sub, expected, limits, worker, root / f"{index:04d}", options)
            if status.get("isolation"):
                reports.append(status["isolation"])
        except Exception as exc:  # noqa: BLE001 - one submission must never stop the run
            why = f"grading failed: {type(exc).__name__}: {_one_line(str(exc))[:200]}"
            sub_rows = [Row(sub.student, ex, False, why)
                        for ex in (expected or sub.exercises or [NOTEBOOK_ROW])]
        finally:
            workers.put(worker)
            shutil.rmtree(root / f"{index:04d}", ignore_errors=True)
        write_feedback(feedback_dir, sub.student, sub.path.name, sub_rows)
        if progress:
            print(f"{sub.student}: {sum(r.passed for r in sub_rows)}/{len(sub_rows)} passed "
                  f"({time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)
        return sub_rows

    try:
        # Each submission runs in a worker process and its own kernel; threads only wait for them.
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            rows = [row for sub_rows in pool.map(one, enumerate(subs)) for row in sub_rows]
    finally:
        while not workers.empty():
            workers.get().stop(graceful=True)
        shutil.rmtree(root, ignore_errors=True)
    if progress:
        print(_isolation_line(reports[0] if reports else None), file=sys.stderr, flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        writer.writerows(r.as_csv() for r in rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_grading.grade",
                                     description="Grade a folder of submitted notebooks into a CSV "
                                                 "(student, exercise, passed, feedback) and feedback files.")
    parser.add_argument("submissions", type=Path, help="folder with one file per student (alice.ipynb, ...)")
    parser.add_argument("--out", type=Path, default=Path("results.csv"), help="the CSV to write")
    parser.add_argument("--feedback-dir", type=Path, default=None,
                        help="per-student feedback files (default: feedback/ next to the CSV)")
    parser.add_argument("--exercises", default=None, help="comma-separated expected exercises (checker names)")
    parser.add_argument("--assignment", type=Path, default=None,
                        help="the notebook handed out; its check cells list the expected exercises")
    parser.add_argument("--cell-timeout", type=float, default=Limits.cell_timeout, help="seconds per cell")
    parser.add_argument("--timeout", type=float, default=Limits.notebook_timeout, help="seconds per notebook")
    parser.add_argument("--max-output-mb", type=float, default=Limits.max_output_mb)
    parser.add_argument("--max-file-mb", type=float, default=Limits.max_file_mb)
    parser.add_argument("--kernel", default=Limits.kernel, help="Jupyter kernel name")
    parser.add_argument("--memory-gb", type=float, default=Limits.memory_gb,
                        help="address space of each kernel in GiB (0: no limit)")
    parser.add_argument("--max-disk-mb", type=float, default=Limits.max_disk_mb,
                        help="what a kernel may write in its own folders")
    parser.add_argument("--jobs", type=int, default=1, help="submissions graded at the same time")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the inputs the grader makes (default: a random one, printed)")
    parser.add_argument("--isolation", default="auto", choices=["auto", "required", "off"],
                        help="sandbox the kernels (Linux namespaces): where possible, always, or never")
    parser.add_argument("--checkers", action="append", default=[],
                        help="an extra checker module (name or .py file); repeat for more")
    args = parser.parse_args(argv)
    limits = Limits(args.cell_timeout, args.timeout, args.max_output_mb, args.max_file_mb, args.kernel,
                    args.memory_gb, args.max_disk_mb)
    rows = grade_folder(args.submissions, args.out, args.feedback_dir, exercises=args.exercises,
                        assignment=args.assignment, limits=limits, jobs=args.jobs, seed=args.seed,
                        isolation=args.isolation, checkers=args.checkers)
    students = len({r.student for r in rows})
    print(f"{len(rows)} rows for {students} students ({sum(r.passed for r in rows)} passed) -> {args.out}; "
          f"feedback in {args.feedback_dir or args.out.parent / 'feedback'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
