"""Grade a folder of submitted notebooks into a CSV and one feedback file per student.

Usage::

    python -m course_utils.exercises.grade SUBMISSIONS_DIR --out results.csv

Every file in ``SUBMISSIONS_DIR`` is one student's submission; the student is the file
name without its extension (``alice.ipynb`` -> ``alice``). Each notebook runs in its own
subprocess and Jupyter kernel (nbclient), in its own empty working directory, with a time
limit per cell and per notebook and a cap on output; every ``check.<name>(...)`` call in it
is recorded (the last call of a check counts). The CSV has one row per student and expected
exercise, columns ``student, exercise, passed, feedback`` (``passed`` is 1 or 0). A file
that cannot be graded (not JSON, not a notebook, too large, a missing exercise, an infinite
loop, a crashing kernel, an enormous output) becomes rows with the reason; it never stops
the run or affects another submission.

The expected exercises are, in order of preference: ``--exercises a,b``; the check cells
of ``--assignment NOTEBOOK`` (e.g. the student-edition notebook you handed out); the
exercises listed in the submissions' metadata (written by the student-edition tool) or
found in their check cells.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .core import FAIL_MARK, PASS_MARK, RECORD_ENV, STRICT_ENV

COLUMNS = ["student", "exercise", "passed", "feedback"]
NOTEBOOK_ROW = "(notebook)"  #: the exercise column when no exercise list is known


@dataclass
class Limits:
    cell_timeout: float = 120.0        #: seconds per cell (the cell is interrupted, grading goes on)
    notebook_timeout: float = 600.0    #: seconds per notebook in all
    max_output_mb: float = 5.0         #: output a notebook may print before it is stopped
    max_file_mb: float = 20.0          #: larger submitted files are not run
    kernel: str = "python3"


@dataclass
class Row:
    student: str
    exercise: str
    passed: bool
    feedback: str

    def as_csv(self) -> list[str]:
        return [self.student, self.exercise, "1" if self.passed else "0", self.feedback]


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

    from .student import CHECK_CALL, _source

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
    found = [n for c in nb.cells if c.cell_type == "code" for n in CHECK_CALL.findall(_source(c))]
    sub.exercises = list(dict.fromkeys(sub.declared + found))
    return sub


def _read_records(path: Path) -> dict[str, dict[str, Any]]:
    last: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return last
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and isinstance(record.get("exercise"), str):
            last[record["exercise"]] = record
    return last


def run_submission(sub: Submission, limits: Limits) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Execute one notebook in a subprocess; returns (records by exercise, status)."""
    import nbformat

    with tempfile.TemporaryDirectory(prefix="grade-") as tmp:
        tmp_path = Path(tmp)
        workdir = tmp_path / "work"
        workdir.mkdir()
        notebook = tmp_path / "submission.ipynb"
        nbformat.write(sub.notebook, notebook)
        records = tmp_path / "records.jsonl"
        env = dict(os.environ)
        env.update({RECORD_ENV: str(records), STRICT_ENV: "0", "MPLBACKEND": "Agg",
                    "PYTHONHASHSEED": "0", "TOKENIZERS_PARALLELISM": "false"})
        command = [sys.executable, "-m", "course_utils.exercises._grade_worker", str(notebook), str(workdir),
                   "--cell-timeout", str(limits.cell_timeout), "--deadline", str(limits.notebook_timeout),
                   "--max-output-bytes", str(int(limits.max_output_mb * 1e6)), "--kernel", limits.kernel]
        proc = subprocess.Popen(command, cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        killed = False
        try:
            # The worker stops itself at the deadline; the margin covers kernel start-up and shut-down.
            _, err = proc.communicate(timeout=limits.notebook_timeout + 30)
        except subprocess.TimeoutExpired:
            killed = True
            _kill_group(proc.pid)
            _, err = proc.communicate()
        status = _read_status(tmp_path / "status.json")
        if status.get("kernel_pid"):
            _kill_group(int(status["kernel_pid"]))  # normally gone already; never leave one running
        if killed:
            status.update(status="killed", message=f"the notebook did not finish within "
                                                   f"{limits.notebook_timeout:g} s and was stopped while running "
                                                   f"cell {status.get('cell')} (an infinite loop that ignores "
                                                   "interrupts?)")
        elif status.get("status") in (None, "running"):
            tail = _one_line((err or b"").decode("utf-8", "replace"))[-200:]
            status.update(status="error", message=f"grading this notebook failed ({tail or 'no message'})")
        return _read_records(records), status


def _read_status(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, OSError):
            pass


def _reason_missing(exercise: str, status: dict[str, Any]) -> str:
    """Why a notebook that ran has no result for ``exercise``."""
    cell = status.get("check_cells", {}).get(exercise)
    stopped = status.get("status") not in ("ok", None)
    if cell is None:
        text = (f"missing: the notebook has no check.{exercise}(...) call — was the exercise's check cell "
                "deleted? Restore it and run it.")
    elif str(cell) in status.get("cell_errors", {}):
        text = f"the check cell (cell {cell}) raised {status['cell_errors'][str(cell)]}"
        if cell in status.get("stopped_cells", []):
            text += " (it was stopped: it ran too long)"
    elif stopped:
        text = f"not graded: {status.get('message')}"
        return text
    else:
        text = f"the check cell (cell {cell}) did not run to the check"
    parts = [text.rstrip(".") + "."]
    stopped_cells = [c for c in status.get("stopped_cells", []) if c != cell]
    if stopped_cells:
        parts.append(f"Note: cell {stopped_cells[0]} was stopped at the per-cell time limit (an infinite loop?).")
    if stopped:
        parts.append(f"Then {status.get('message')}.")
    return " ".join(parts)


def grade_submission(sub: Submission, expected: list[str], limits: Limits) -> list[Row]:
    exercises = expected or sub.exercises
    if sub.problem is not None:
        return [Row(sub.student, ex, False, sub.problem) for ex in (exercises or [NOTEBOOK_ROW])]
    records, status = run_submission(sub, limits)
    if not exercises:
        exercises = list(records) or [NOTEBOOK_ROW]
    rows = []
    for ex in exercises:
        record = records.get(ex)
        if record is not None:
            rows.append(Row(sub.student, ex, bool(record.get("passed")), _strip_mark(str(record.get("message", "")))))
        elif ex == NOTEBOOK_ROW:
            rows.append(Row(sub.student, ex, False, status.get("message") or "no check ran in this notebook"))
        else:
            rows.append(Row(sub.student, ex, False, _reason_missing(ex, status)))
    return rows


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


def student_names(paths: list[Path]) -> dict[Path, str]:
    """``alice.ipynb`` -> ``alice``; the full file name where two files share a stem."""
    stems = [p.stem for p in paths]
    return {p: (p.stem if stems.count(p.stem) == 1 else p.name) for p in paths}


def write_feedback(folder: Path, student: str, source: str, rows: list[Row]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    passed = sum(r.passed for r in rows)
    lines = [f"# Feedback: {student}", "", f"Submission: `{source}` — {passed} of {len(rows)} exercises passed.", ""]
    for row in rows:
        lines += [f"## {row.exercise}: {'passed' if row.passed else 'not passed'}", "", row.feedback, ""]
    path = folder / f"{student}.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def grade_folder(folder: Path, out: Path, feedback_dir: Path | None = None, *, exercises: str | None = None,
                 assignment: Path | None = None, limits: Limits | None = None,
                 progress: bool = True, jobs: int = 1) -> list[Row]:
    """Grade every file in ``folder``; write the CSV ``out`` and the feedback files."""
    limits = limits or Limits()
    if not folder.is_dir():
        raise SystemExit(f"{folder} is not a folder of submissions")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    names = student_names(paths)
    subs = [load_submission(p, names[p], limits) for p in paths]
    expected = expected_exercises(subs, exercises, assignment, limits)
    feedback_dir = feedback_dir or out.parent / "feedback"

    def one(sub: Submission) -> list[Row]:
        t0 = time.monotonic()
        try:
            sub_rows = grade_submission(sub, expected, limits)
        except Exception as exc:  # noqa: BLE001 - one submission must never stop the run
            sub_rows = [Row(sub.student, ex, False, f"grading failed: {type(exc).__name__}: {_one_line(str(exc))[:200]}")
                        for ex in (expected or sub.exercises or [NOTEBOOK_ROW])]
        write_feedback(feedback_dir, sub.student, sub.path.name, sub_rows)
        if progress:
            print(f"{sub.student}: {sum(r.passed for r in sub_rows)}/{len(sub_rows)} passed "
                  f"({time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)
        return sub_rows

    # Each submission runs in its own process and kernel; threads only wait for them.
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        rows = [row for sub_rows in pool.map(one, subs) for row in sub_rows]
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(COLUMNS)
        writer.writerows(r.as_csv() for r in rows)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_utils.exercises.grade",
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
    parser.add_argument("--jobs", type=int, default=1, help="submissions graded at the same time")
    args = parser.parse_args(argv)
    limits = Limits(args.cell_timeout, args.timeout, args.max_output_mb, args.max_file_mb, args.kernel)
    rows = grade_folder(args.submissions, args.out, args.feedback_dir, exercises=args.exercises,
                        assignment=args.assignment, limits=limits, jobs=args.jobs)
    students = len({r.student for r in rows})
    print(f"{len(rows)} rows for {students} students ({sum(r.passed for r in rows)} passed) -> {args.out}; "
          f"feedback in {args.feedback_dir or args.out.parent / 'feedback'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
