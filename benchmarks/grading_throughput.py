"""How many students per minute the grader handles for one assignment notebook.

    python benchmarks/grading_throughput.py                                   # the test fixture, 20 students
    python benchmarks/grading_throughput.py --assignment chapters/04_exercises.ipynb --students 20 --jobs 2
    python benchmarks/grading_throughput.py --quick                            # 4 students: a smoke test

It builds a class from the assignment's book edition (solutions inside the gated cells):
half the students hand in the solutions, a quarter the untouched stubs, a quarter functions
that return None (honest but wrong); then it grades the folder exactly as an instructor
would (``python -m course_grading.grade ... --jobs J``) and prints students per
minute (wall clock) and the CPU seconds spent per student (grader, workers, sandboxes and
kernels: every process under the grader, sampled from /proc every 0.1 s), with the load
average before and after. A figure taken while other work shares the cores is only a lower
bound; ``2 cores x 60 s / CPU seconds per student`` is what two idle cores would allow. Writes everything to ``--json``
(default ``benchmarks/results/grading_throughput.json``).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "exercises" / "chapter_demo.ipynb"

try:
    import course_utils  # noqa: F401
except ImportError:  # run from a checkout where the package is not installed: use its src/
    sys.path.insert(0, str(ROOT / "src"))
import nbformat  # noqa: E402

from course_grading import student  # noqa: E402


def _tree_cpu(root: int, seen: dict[int, float]) -> None:
    """Note the CPU seconds so far of ``root`` and every process under it (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    for pid, cpu in times.items():
        p, depth = pid, 0
        while p not in (0, 1, root) and depth < 50:
            p, depth = parents.get(p, 0), depth + 1
        if p == root:
            seen[pid] = max(seen.get(pid, 0.0), cpu)


def make_class(book: Path, folder: Path, n: int) -> dict[str, int]:
    """Write ``n`` submissions into ``folder``; returns how many of each kind."""
    nb = nbformat.read(book, as_version=4)
    layout = student.analyse(nb, str(book))
    handout = student.make_student_notebook(nb, str(book))
    right = copy.deepcopy(nb)  # the book edition: each stub followed by its solution
    for cell in right.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    right.metadata["course"] = {"edition": "student", "exercises": layout.exercises}
    wrong = copy.deepcopy(handout)
    for cell in wrong.cells:
        if student.STUB_TAG in cell.metadata.get("tags", []):
            cell.source = re.sub(r"raise NotImplementedError\(.*\)", "return None", cell.source)
    kinds = {"right": n - 2 * (n // 4), "stub": n // 4, "wrong": n // 4}
    folder.mkdir(parents=True, exist_ok=True)
    i = 0
    for kind, count in kinds.items():
        for _ in range(count):
            nbformat.write({"right": right, "stub": handout, "wrong": wrong}[kind], folder / f"s{i:03d}_{kind}.ipynb")
            i += 1
    return kinds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assignment", type=Path, default=FIXTURE, help="book edition of the assignment notebook")
    parser.add_argument("--students", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--isolation", default="auto", choices=["auto", "required", "off"])
    parser.add_argument("--quick", action="store_true", help="4 students")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "grading_throughput.json")
    args = parser.parse_args(argv)
    n = 4 if args.quick else args.students
    env = dict(os.environ, COURSE_OFFLINE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONHASHSEED="0")
    extra: list[str] = []
    if args.assignment.resolve() == FIXTURE:  # the fixture's checker lives beside it
        env["PYTHONPATH"] = os.pathsep.join([str(FIXTURE.parent), str(ROOT / "src"), env.get("PYTHONPATH", "")])
        extra = ["--checkers", str(FIXTURE.parent / "demo_checkers.py")]
    with tempfile.TemporaryDirectory(prefix="throughput-") as tmp:
        subs = Path(tmp) / "submissions"
        kinds = make_class(args.assignment, subs, n)
        cmd = [sys.executable, "-m", "course_grading.grade", str(subs), "--out", str(Path(tmp) / "r.csv"),
               "--jobs", str(args.jobs), "--isolation", args.isolation, "--seed", "0", *extra]
        load_before = os.getloadavg()
        start = time.perf_counter()
        child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        cpu: dict[int, float] = {}
        while child.poll() is None:
            if sys.platform.startswith("linux"):
                _tree_cpu(child.pid, cpu)
            time.sleep(0.1)
        out, err = child.communicate()
        wall = time.perf_counter() - start
        load_after = os.getloadavg()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.CompletedProcess(cmd, child.returncode, out, err)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return proc.returncode
        cpu_total = max(sum(cpu.values()), usage.ru_utime + usage.ru_stime)
        rows = (Path(tmp) / "r.csv").read_text(encoding="utf-8").splitlines()[1:]
    passed = sum(",1," in r for r in rows)
    result = {
        "assignment": str(args.assignment.relative_to(ROOT) if args.assignment.is_relative_to(ROOT)
                          else args.assignment),
        "students": n, "kinds": kinds, "jobs": args.jobs, "rows": len(rows), "rows_passed": passed,
        "wall_seconds": round(wall, 2), "students_per_minute": round(60 * n / wall, 2),
        "cpu_seconds_per_student": round(cpu_total / n, 2),
        "students_per_minute_on_idle_cores": round(min(args.jobs, os.cpu_count() or 1) * 60 * n / cpu_total, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(), "machine": platform.platform(), "python": platform.python_version(),
        "isolation": next((ln for ln in proc.stderr.splitlines() if ln.startswith("isolation:")), ""),
    }
    print(f"{n} students ({kinds}) graded in {wall:.1f} s with --jobs {args.jobs}: "
          f"{result['students_per_minute']:.1f} students/min; {result['cpu_seconds_per_student']:.1f} CPU s per "
          f"student (so {result['students_per_minute_on_idle_cores']:.0f}/min on idle cores); "
          f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after "
          f"({os.cpu_count()} CPUs)")
    print(result["isolation"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
