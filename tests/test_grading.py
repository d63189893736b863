"""The instructor workflow end to end: book notebook -> student edition -> submissions -> CSV.

The fixture chapter (tests/fixtures/exercises/chapter_demo.ipynb) has two exercises: the
real ``check.count_parameters`` (chapter 1) and ``check.demo_softmax``, from the fixture's own
checker module (demo_checkers.py, given to the grader with ``--checkers``). Submissions are
the student edition with the stubs filled in (right, wrong, or sabotaged), plus two malformed
files. Every submission runs in its own kernel; the verdicts are made in the grader's process
(tests/test_grading_attacks.py tries to forge them).
"""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest

from course_grading import grade, student

FIXTURES = Path(__file__).parent / "fixtures" / "exercises"
BOOK_NB = FIXTURES / "chapter_demo.ipynb"
DEMO_CHECKERS = FIXTURES / "demo_checkers.py"


def grade_command(subs: Path, out: Path, *extra: str) -> tuple[list[str], dict[str, str]]:
    """The grader's command line for the fixture (its checker module on the kernels' path too)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(FIXTURES), env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "course_grading.grade", str(subs), "--out", str(out),
           "--checkers", str(DEMO_CHECKERS), "--seed", "0", *extra]
    return cmd, env


def run_grader(subs: Path, out: Path, *extra: str, timeout: int = 900,
               reader: Any = csv.DictReader) -> tuple[list[Any], subprocess.CompletedProcess]:
    """Grade ``subs`` into ``out`` with the fixture's checkers: the CSV's rows (``reader``'s) and the process."""
    cmd, env = grade_command(subs, out, *extra)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr
    with open(out, newline="", encoding="utf-8") as fh:
        return list(reader(fh)), proc


COUNT_OK = "def count_parameters(model):\n    return sum(p.numel() for p in model.parameters())\n"
COUNT_STATE_DICT = "def count_parameters(model):\n    return sum(t.numel() for t in model.state_dict().values())\n"
SOFTMAX_OK = "def row_softmax(x):\n    return x.softmax(dim=-1)\n"
SOFTMAX_DIM0 = "def row_softmax(x):\n    return x.exp() / x.exp().sum(dim=0, keepdim=True)\n"


def _student_edition(tmp: Path) -> nbformat.NotebookNode:
    out = tmp / "handout"
    student.write_student_edition([BOOK_NB], out)
    return nbformat.read(out / BOOK_NB.name, as_version=4)


def _submission(handout: nbformat.NotebookNode, answers: list[str], extra: dict[int, str] | None = None,
                drop_check: str | None = None) -> nbformat.NotebookNode:
    """Fill the stub cells with ``answers`` (in order); ``extra``: code inserted before cell i."""
    nb = nbformat.from_dict(nbformat.reads(nbformat.writes(handout), as_version=4))
    stubs = [c for c in nb.cells if "exercise-stub" in c.metadata.get("tags", [])]
    for cell, answer in zip(stubs, answers):
        cell.source = answer
    if drop_check:
        nb.cells = [c for c in nb.cells if f"check.{drop_check}(" not in c.source]
    for index, code in sorted((extra or {}).items(), reverse=True):
        nb.cells.insert(index, nbformat.v4.new_code_cell(code))
    return nb


def new_run(tmp_path_factory, name: str) -> tuple[Path, Path]:
    """A fresh folder for a grading run, and its (empty) submissions folder."""
    tmp = tmp_path_factory.mktemp(name)
    (tmp / "submissions").mkdir()
    return tmp, tmp / "submissions"


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    tmp, subs = new_run(tmp_path_factory, "grading")
    handout = _student_edition(tmp)
    def write(name, nb):
        nbformat.write(nb, subs / name)

    write("alice.ipynb", _submission(handout, [COUNT_OK, SOFTMAX_OK]))
    write("bob.ipynb", _submission(handout, [COUNT_STATE_DICT, SOFTMAX_DIM0]))
    shutil.copy(FIXTURES / "not_json.ipynb", subs / "carol.ipynb")
    shutil.copy(FIXTURES / "not_a_notebook.ipynb", subs / "dave.ipynb")
    write("erin.ipynb", _submission(handout, [COUNT_OK, SOFTMAX_OK], drop_check="demo_softmax"))
    # frank: an infinite loop at the top of his answer cell; the cell is interrupted, grading goes on
    write("frank.ipynb", _submission(handout, ["while True:\n    pass\n" + COUNT_OK, SOFTMAX_OK]))
    # gina: her kernel dies between the two exercises
    write("gina.ipynb", _submission(handout, [COUNT_OK, "import os\nos._exit(3)\n"]))
    # hank: prints far more than the output cap
    write("hank.ipynb", _submission(handout, [COUNT_OK, "for i in range(10**7):\n    print('x' * 100)\n"]))
    (subs / "ivan.py").write_text("print('my answers')\n")
    # kim: an infinite loop *inside* her function: the checker itself stops it, in the kernel
    write("kim.ipynb", _submission(handout, ["def count_parameters(model):\n    while True:\n        pass\n",
                                             SOFTMAX_OK]))
    out = tmp / "results.csv"
    rows, proc = run_grader(subs, out, "--cell-timeout", "20", "--timeout", "120", "--max-output-mb", "1",
                            "--jobs", "2", reader=csv.reader)
    return rows, tmp / "feedback", proc


CP, SM = "count_parameters", "demo_softmax"


def test_csv_exact(graded):
    rows, _, _ = graded
    expected = [
        ["student", "exercise", "passed", "feedback"],
        ["alice", CP, "1", "check.count_parameters passed (7 cases: one Linear(3, 4), nested submodules, tied "
                           "embedding and output weights, a module with buffers, partly frozen, no parameters at "
                           "all, random layer sizes)."],
        ["alice", SM, "1", "check.demo_softmax passed (2 cases: random, one column)."],
        ["bob", CP, "0", "check.count_parameters (case 'tied embedding and output weights'): expected 78, got 144 "
                         "(66 too many). Hint: the tied weight was counted twice: `state_dict()` and "
                         "`named_parameters(remove_duplicate=False)` list a shared tensor under each of its names "
                         "(`wte.weight` and `lm_head.weight`); `model.parameters()` yields it once."],
        ["bob", SM, "0", None],  # value message checked below (numbers), hint exact
        ["carol", CP, "0", "not a notebook: the file is not valid JSON (Expecting value at line 1, column 13)"],
        ["carol", SM, "0", "not a notebook: the file is not valid JSON (Expecting value at line 1, column 13)"],
        ["dave", CP, "0", "not a notebook: the JSON has no 'cells'/'nbformat' (is it a Jupyter notebook?)"],
        ["dave", SM, "0", "not a notebook: the JSON has no 'cells'/'nbformat' (is it a Jupyter notebook?)"],
        ["erin", CP, "1", None],
        ["erin", SM, "0", "missing: the notebook has no check.demo_softmax(...) call — was the exercise's check "
                          "cell deleted? Restore it and run it."],
        ["frank", CP, "0", "the check cell (cell 4) raised NameError: name 'count_parameters' is not defined. "
                           "Note: cell 3 timed out after 20 s (the per-cell limit) and was stopped (an infinite "
                           "loop?)."],
        ["frank", SM, "1", None],
        ["gina", CP, "1", None],
        ["gina", SM, "0", "not graded: the kernel died while running cell 6 (a crash, the memory limit of 4 GiB, or "
                          "os._exit/exit of the process)"],
        ["hank", CP, "1", None],
        ["hank", SM, "0", "not graded: cell 6 printed more than 1 MB of output; grading stopped there"],
        ["ivan", CP, "0", "not a notebook file: ivan.py (submit the .ipynb file)"],
        ["ivan", SM, "0", "not a notebook file: ivan.py (submit the .ipynb file)"],
        ["kim", CP, "0", "check.count_parameters (case 'one Linear(3, 4)'): your function timed out after "
                         "2 s — an infinite loop (a `while` whose condition never changes)? The check stopped it."],
        ["kim", SM, "1", None],
    ]
    assert [r[:3] for r in rows] == [e[:3] for e in expected]
    for got, want in zip(rows, expected):
        if want[3] is not None:
            assert got[3] == want[3], got
    passed_feedback = {r[3] for r in rows if r[2] == "1" and r[1] == CP}
    assert passed_feedback == {expected[1][3]}  # every passing count_parameters row says the same
    bob_softmax = rows[4][3]
    assert bob_softmax.startswith("check.demo_softmax (case 'random', inputs of shape (3, 4)): values differ "
                                  "from the reference: max |difference| ")
    assert bob_softmax.endswith("Hint: softmax over the wrong axis: normalise each row (dim=-1).")


def test_feedback_files(graded):
    _, feedback, _ = graded
    names = sorted(p.name for p in feedback.iterdir())
    assert names == [f"{s}.md" for s in ["alice", "bob", "carol", "dave", "erin", "frank", "gina", "hank", "ivan",
                                                   "kim"]]
    bob = (feedback / "bob.md").read_text()
    assert bob.startswith("# Feedback: bob\n\nSubmission: `bob.ipynb` — 0 of 2 exercises passed.")
    assert "## count_parameters: not passed" in bob and "counted twice" in bob
    assert "2 of 2 exercises passed" in (feedback / "alice.md").read_text()


def test_progress_is_reported(graded):
    _, _, proc = graded
    assert "alice: 2/2 passed" in proc.stderr
    assert "inputs made with seed 0 (--seed 0 makes the same ones again)" in proc.stderr
    assert "isolation: " in proc.stderr
    assert proc.stdout.startswith("20 rows for 10 students (7 passed) -> ")


def test_expected_exercises_from_option_and_assignment(tmp_path):
    handout_nb = _student_edition(tmp_path)
    assert handout_nb.metadata["course"]["exercises"] == [CP, SM]
    limits = grade.Limits()
    sub = grade.load_submission(tmp_path / "handout" / BOOK_NB.name, "x", limits)
    assert sub.problem is None and sub.exercises == [CP, SM]
    assert grade.expected_exercises([], exercises="a, b") == ["a", "b"]
    extra = grade.Submission(Path("x.ipynb"), "x", exercises=[CP, SM, "count_params_extra"], declared=[CP, SM])
    bare = grade.Submission(Path("y.ipynb"), "y", exercises=["other"])
    assert grade.expected_exercises([extra, bare]) == [CP, SM]  # the handout's list, not a student's extra call
    assert grade.expected_exercises([bare]) == ["other"]  # no metadata anywhere: the check calls found
    assert grade.expected_exercises([], assignment=tmp_path / "handout" / BOOK_NB.name) == [CP, SM]


def test_too_large_file_is_not_run(tmp_path):
    big = tmp_path / "zoe.ipynb"
    big.write_text("x" * 2_100_000)
    sub = grade.load_submission(big, "zoe", grade.Limits(max_file_mb=2))
    assert sub.problem == ("the file is 2.1 MB, over the 2 MB limit (clear the outputs before submitting: "
                           "Edit > Clear All Outputs)")


def test_student_names_from_files(tmp_path):
    paths = [tmp_path / "alice.ipynb", tmp_path / "bob.ipynb", tmp_path / "bob.txt"]
    assert grade.student_names(paths) == {paths[0]: "alice", paths[1]: "bob.ipynb", paths[2]: "bob.txt"}


# --------------------------------------------------------------------------- the student edition


def _book() -> nbformat.NotebookNode:
    nb = nbformat.read(BOOK_NB, as_version=4)
    for cell in nb.cells:  # pretend it was executed, to see the outputs go
        if cell.cell_type == "code":
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="ran\n")]
            cell.execution_count = 7
            cell.metadata["execution"] = {"iopub.status.busy": "2026-01-01T00:00:00Z"}
    return nb


def test_student_notebook_keeps_task_stub_and_check_only():
    nb = student.make_student_notebook(_book(), "chapters/demo.ipynb")
    summary = [(c.cell_type, c.metadata.get("tags", []), c.source.splitlines()[0]) for c in nb.cells]
    assert summary == [
        ("markdown", [], "# A demo chapter with two exercises"),
        ("code", [], "import torch"),
        ("markdown", [], "### Exercise: Count the parameters"),
        ("code", ["exercise-stub"], "def count_parameters(model):"),
        ("code", ["exercise-check"], "check.count_parameters(count_parameters)"),
        ("markdown", [], "### Exercise: Softmax over rows"),
        ("code", ["exercise-stub"], "def row_softmax(x):"),
        ("code", ["exercise-check"], "check.demo_softmax(row_softmax)"),
        ("markdown", [], "```{note}"),
    ]
    assert nb.cells[2].source == ("### Exercise: Count the parameters\n\n**Difficulty** ★☆☆ · **Time** ~10 min\n\n"
                                  "Write `count_parameters(model)`: the number of parameters, each shared tensor "
                                  "once, no buffers.")
    text = nbformat.writes(nb)
    assert "sum(p.numel()" not in text and "Subtract the row maximum" not in text and "solution" not in text
    assert all(c.outputs == [] and c.execution_count is None and "execution" not in c.metadata
               for c in nb.cells if c.cell_type == "code")
    assert nb.metadata["course"] == {"edition": "student", "source": "chapters/demo.ipynb",
                                     "exercises": ["count_parameters", "demo_softmax"]}
    nbformat.validate(nb)


def test_site_notebook_runs_solutions_without_showing_them():
    nb = student.make_site_notebook(_book())
    hidden = [c.source.splitlines()[0] for c in nb.cells if "remove-cell" in c.metadata.get("tags", [])]
    assert hidden == ["def count_parameters(model):", "def row_softmax(x):"]
    assert [c for c in nb.cells if "remove-cell" in c.metadata.get("tags", [])][0].metadata["tags"] == [
        "solution", "remove-cell"]
    text = "".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "solution-start" not in text and "solution-end" not in text and "Subtract the row maximum" not in text
    assert "{exercise-start} Count the parameters" in text  # the book's exercise directives stay
    # The stub raises NotImplementedError on the site: the hidden solution's "passed" is not shown.
    checks = [c for c in nb.cells if "exercise-check" in c.metadata.get("tags", [])]
    assert [c.metadata["tags"] for c in checks] == [["exercise-check", "remove-output"]] * 2
    after = [nb.cells[nb.cells.index(c) + 1].source for c in checks]
    assert after == [student.SITE_CHECK_NOTE] * 2
    assert len(nb.cells) == 18 - 5 + 2  # markers and solution prose removed, a note after each check


def _nb(*cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    for kind, source, *tags in cells:
        cell = nbformat.v4.new_markdown_cell(source) if kind == "md" else nbformat.v4.new_code_cell(source)
        if tags:
            cell.metadata["tags"] = tags
        nb.cells.append(cell)
    return nb


START, END = "```{solution-start} ex-a\n```", "```{solution-end}\n```"


@pytest.mark.parametrize("cells, message", [
    ([("md", START), ("code", "x = 1")],
     "demo.ipynb, cell 0: solution-start is never closed; add a markdown cell with a solution-end directive after "
     "the solution's code."),
    ([("code", "x = 1"), ("md", END)], "demo.ipynb, cell 1: solution-end without a solution-start before it."),
    ([("md", START), ("code", "check.a(a)", "exercise-check"), ("md", END)],
     "demo.ipynb, cell 1: the check cell is inside the solution opened at cell 0; move it after the solution-end "
     "cell (the student edition removes the whole solution)."),
    ([("md", START + "\n\n" + END)],
     "demo.ipynb, cell 0: put solution-start and solution-end in separate markdown cells, with the solution's code "
     "cells between them."),
    ([("md", START), ("md", START), ("md", END)],
     "demo.ipynb, cell 1: solution-start inside the solution opened at cell 0; close it with a solution-end cell "
     "first."),
])
def test_layout_errors_are_specific(cells, message):
    with pytest.raises(student.ExerciseLayoutError) as info:
        student.make_student_notebook(_nb(*cells), "demo.ipynb")
    assert str(info.value) == message


def test_ungated_directives_and_solution_tag():
    nb = _nb(("md", "Intro\n\n:::{exercise}\n:label: ex-b\nDo the thing.\n:::\n\n"
                    "```{solution} ex-b\n:class: dropdown\nThe answer.\n```\n\nAfter."),
             ("code", "answer = 42", "solution"), ("code", "check.b(answer)", "exercise-check"))
    out = student.make_student_notebook(nb)
    assert [c.source for c in out.cells] == ["Intro\n\n### Exercise\n\nDo the thing.\n\n\nAfter.", "check.b(answer)"]
    assert out.metadata["course"]["exercises"] == ["b"]


def test_parse_directives():
    found = student.parse_directives("x\n````{exercise-start} A title\n:label: ex-1\n:class: c\n````\nrest\n"
                                     ":::{solution-end}\n:::")
    assert [(d.name, d.arg, d.options, d.start, d.end) for d in found] == [
        ("exercise-start", "A title", {"label": "ex-1", "class": "c"}, 1, 4),
        ("solution-end", "", {}, 6, 7)]


def _mini_book(root: Path) -> Path:
    (root / "chapters").mkdir(parents=True)
    shutil.copy(BOOK_NB, root / "chapters" / "01_demo.ipynb")
    (root / "_config.yml").write_text("title: Demo\nsphinx:\n  extra_extensions: [sphinx_exercise]\n"
                                      "  config:\n    hide_solutions: false\n")
    (root / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: chapters/01_demo\n")
    (root / "intro.md").write_text("# Intro\n")
    for skipped in (".venv", "_build", "tests", ".git"):
        (root / skipped).mkdir()
        (root / skipped / "big.bin").write_text("not copied")
    return root


def test_student_site_is_staged_with_solutions_hidden(tmp_path):
    import yaml

    root = _mini_book(tmp_path / "book")
    stage = student.stage_student_site(root, root / "_build" / "student_src")
    assert sorted(p.name for p in stage.iterdir()) == ["_config.yml", "_toc.yml", "chapters", "intro.md"]
    config = yaml.safe_load((stage / "_config.yml").read_text())
    assert config == {"title": "Demo (student edition)",
                      "sphinx": {"extra_extensions": ["sphinx_exercise"], "config": {"hide_solutions": True}}}
    staged = nbformat.read(stage / "chapters" / "01_demo.ipynb", as_version=4)
    assert sum("remove-cell" in c.metadata.get("tags", []) for c in staged.cells) == 2
    assert student.build_command(stage, root / "_build" / "student")[1:] == [
        "build", str(stage), "--path-output", str(root / "_build" / "student"), "-W", "-n", "--keep-going"]


def test_student_cli(tmp_path, capsys):
    root = _mini_book(tmp_path / "book")
    out = tmp_path / "student_edition"
    assert student.main(["--book", str(root), "--out", str(out), "--build-site", "--stage-only"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == f"{out / '01_demo.ipynb'}: 2 exercise(s): count_parameters, demo_softmax"
    assert printed[-1].startswith("build with: ") and "--path-output" in printed[-1]
    assert (root / "_build" / "student_src" / "_config.yml").is_file()
    broken = root / "chapters" / "02_broken.ipynb"
    nbformat.write(_nb(("md", START)), broken)
    assert student.main(["--book", str(root), "--out", str(out)]) == 1
    assert "02_broken.ipynb, cell 0: solution-start is never closed" in capsys.readouterr().err


# --------------------------------------------------------------------------- the grader's judging path

def _remote(name: str, fn, tmp: Path, seed: int = 0):
    """What the grader concludes about ``fn`` for ``check.<name>``: the kernel's side (the driver)
    and the grader's side (decode + judge) run here in one process, on the grader's inputs."""
    from course_grading import _grade_worker
    from course_utils.exercises import _driver, _plain, core

    exam = _grade_worker.Exam.build(name, seed)
    inputs = tmp / f"in-{name}.pt"
    inputs.write_bytes(exam.inputs)
    core.hand_over(name, fn)
    try:
        _driver.serve(name, str(inputs), str(tmp / f"out-{name}"))
    finally:
        core.withdraw(name)
    document, tensors = _plain.load(tmp / f"out-{name}")
    # These tests hand over the course's own reference on purpose: what it reaches is not looked at.
    document.pop("reached", None)
    document.get("submitted", {}).pop("course", None)
    return _grade_worker.judge(exam, document, tensors, [])


def _registered():
    from course_utils.exercises import core

    return [core.get_checker(n) for n in core.registered_names()]


@pytest.mark.parametrize("checker", _registered(), ids=lambda c: c.name)
def test_the_grader_agrees_with_the_notebook_check(checker, tmp_path):
    """For every registered checker: the reference passes through the grader's path, and each
    known mistake gets the same hint there as in the notebook."""
    from course_utils.exercises import core

    submit = (lambda fn: checker.seeded(fn)) if checker.kind == "value" else (lambda fn: fn)
    result = _remote(checker.name, submit(checker.reference), tmp_path, checker.seed)
    assert result is not None and result.passed, result
    assert result.message == checker._run(submit(checker.reference)).message
    for mistake in checker.mistakes:  # on the checker's own seed, the grader says what the notebook says
        local = checker._run(submit(mistake.fn))
        remote = _remote(checker.name, submit(mistake.fn), tmp_path, checker.seed)
        assert (remote.passed, remote.stage, remote.hint, remote.message) == (
            local.passed, local.stage, local.hint, local.message)
    assert core.handed_over() == {}
