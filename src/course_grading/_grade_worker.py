"""The grader's worker: runs submissions in sandboxed kernels and judges them in its own process.

``python -m course_grading._grade_worker`` reads, on stdin, a first line with a
secret (the nonce) and then one JSON task per line; for each it answers one line on stdout,
``RESULT <nonce> <json>``. A task names a submission's folder (its notebook is
``submission.ipynb`` there), the expected exercises, the limits, the seed of the inputs,
the folders to hide and the isolation mode.

For each submission the worker

1. makes the inputs of every expected exercise (the checker's cases under the run's seed)
   and the reference outputs, here, once per worker -- the kernel never sees the outputs;
2. starts a fresh kernel in the sandbox (:mod:`._sandbox`): working folder ``box/`` with
   only the notebook in it, exchange folder ``io/``, no network, nothing else writable,
   the submissions and the grader's folders hidden; its stdout/stderr go nowhere;
3. runs the notebook's code cells with the per-cell time limit, the notebook deadline and
   the output cap; in the kernel ``check.<name>(f)`` only hands ``f`` over
   (``COURSE_EXERCISES_GRADING=1``);
4. after each check cell (and at the end, for checks that were not found in a cell) runs
   one driver cell (:mod:`._driver`) that calls the handed-over function on the inputs and
   writes what it returned as plain data (JSON + safetensors) into ``io/``;
5. decodes that data here and judges it with the checker's own comparisons and hints
   (:meth:`.core.Checker.judge_case`). Nothing the kernel prints, writes, patches or
   returns is taken as a verdict: only as the values its function computed.

It also reports a solution that calls course_utils' own implementation (the reference, a
function the reference calls, or a course_utils function of the exercise's name) -- seen
in the notebook's code and while the function runs -- as not the student's own work.
"""
from __future__ import annotations

import ast
import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

import course_utils
from course_utils.exercises import _plain
from course_utils.exercises._limits import Outcome
from course_utils.exercises.core import Case, Checker, CheckResult, get_checker

if TYPE_CHECKING:
    from jupyter_client.manager import AsyncKernelManager
    from nbformat import NotebookNode

GRADING_ENV = "COURSE_EXERCISES_GRADING"
SANDBOX = str(Path(__file__).with_name("_sandbox.py"))
#: Where the course's code lives (course_utils: the references, the checkers), not the grader's.
_COURSE_ROOT = os.path.realpath(Path(course_utils.__file__).resolve().parent) + os.sep


# --------------------------------------------------------------------------- the exam (trusted)

def qualname(obj: Any) -> str | None:
    code = getattr(obj, "__code__", None)
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None)
    if module and name:
        return f"{module}.{name}"
    if code is not None:
        return f"?.{code.co_qualname if hasattr(code, 'co_qualname') else code.co_name}"
    return None


def _direct_callees(checker: Checker, run: Callable[[], Any]) -> set[str]:
    """course_utils functions called directly by the reference's own module while ``run()``."""
    ref_file = os.path.realpath(getattr(getattr(checker.reference, "__code__", None), "co_filename", "") or "")
    found: set[str] = set()

    def hook(frame: FrameType, event: str, arg: object) -> None:
        if event != "call":
            return
        code = frame.f_code
        if not os.path.realpath(code.co_filename).startswith(_COURSE_ROOT):
            return
        caller = frame.f_back
        if caller is not None and os.path.realpath(caller.f_code.co_filename) == ref_file:
            found.add(f"{frame.f_globals.get('__name__', '?')}.{getattr(code, 'co_qualname', code.co_name)}")

    previous = sys.getprofile()
    sys.setprofile(hook)
    try:
        run()
    except Exception:  # noqa: BLE001 - the reference is tested elsewhere; here we only look
        pass
    finally:
        sys.setprofile(previous)
    return found


@dataclass
class Exam:
    """One exercise as the grader sets it: inputs, expected outputs, answer keys."""

    checker: Checker
    cases: list[Case] = field(default_factory=list)
    expected: list[Any] = field(default_factory=list)       #: plain form (see _plain.roundtrip)
    before: list[Any] = field(default_factory=list)         #: the inputs, plain, to see in-place changes
    keys: set[str] = field(default_factory=set)             #: course_utils functions a solution must not call
    inputs: bytes = b""

    @classmethod
    def build(cls, name: str, seed: int) -> "Exam":
        checker = get_checker(name)
        exam = cls(checker)
        allowed = {qualname(fn) for fn in checker.allowed}
        keys = {qualname(checker.reference)} | {qualname(m.fn) for m in checker.mistakes}
        if checker.kind == "value":
            exam.expected = [_plain.roundtrip(checker.seeded(checker.reference))]
            keys |= _direct_callees(checker, lambda: checker.seeded(checker.reference))
        else:
            exam.cases = checker.make_cases(seed)
            exam.expected = [_plain.roundtrip(checker.expected(case)) for case in exam.cases]
            exam.before = [_plain.roundtrip((tuple(c.args), dict(c.kwargs)), inputs=True) for c in exam.cases]
            if exam.cases:
                first = exam.cases[0]
                keys |= _direct_callees(checker, lambda: checker.expected(first))
            import io
            buffer = io.BytesIO()
            torch.save([(c.name, tuple(c.args), dict(c.kwargs)) for c in exam.cases], buffer)
            exam.inputs = buffer.getvalue()
        exam.keys = {k for k in keys if k and "<lambda>" not in k} - allowed
        return exam


class RemoteError(Exception):
    """An exception raised in the student's kernel, rebuilt from its type name and message."""


#: The built-in exceptions a student's kernel raises that keep their own class (a checker or the
#: grader tells them apart: an exercise left undone, an exit, an interrupt).
_KEPT_BUILTINS: dict[str, type[BaseException]] = {
    "NotImplementedError": NotImplementedError, "SystemExit": SystemExit, "KeyboardInterrupt": KeyboardInterrupt}


def _rebuild_error(info: dict[str, Any]) -> BaseException:
    name = str(info.get("type", "Exception"))[:60]
    message = str(info.get("message", ""))[:2000]
    builtin = _KEPT_BUILTINS.get(name) if info.get("builtin") else None
    if builtin is not None:
        return builtin(message)
    cls: type[RemoteError] = type(_plain.safe_name(name) or "Exception", (RemoteError,), {})
    return cls(message)


CHECKER_MODULES = re.compile(r"course_utils\.exercises\.(ch\d+_\w+|_\w+)(\.|$)")


def _used_keys(calls: Any, exam: Exam, submitted_name: str, reached: bool = False) -> list[str]:
    """The course_utils names in ``calls`` that a solution must not use: the reference, a known
    mistake, a function the reference calls, one of the exercise's (or the function's) name,
    and, for objects the submission *reaches* (``reached``), anything of the checker modules."""
    if not isinstance(calls, list):
        return []
    names = {exam.checker.name, submitted_name} - {""}
    allowed = {qualname(fn) for fn in exam.checker.allowed}
    out = []
    for call in calls[:100]:
        call = str(call)[:200]
        if call in allowed:
            continue
        if call in exam.keys or call.rsplit(".", 1)[-1] in names or (reached and CHECKER_MODULES.match(call)):
            out.append(call)
    return out


def not_own_work(checker: Checker, used: list[str], how: str) -> CheckResult:
    shown = ", ".join(f"`{u}`" for u in sorted(set(used))[:3])
    return checker.fail("reference", f"not graded as your own work: {how} course_utils' own implementation "
                                      f"({shown}). Write the computation yourself; the chapter's code is there "
                                      "to read, not to call.")


# Complexity allowed (C901): the grader's verdict, one early return per verdict (not handed over, not own
# work, misuse, internal, value, each case's outcome) in the order a student should read them.
def judge(exam: Exam, document: dict[str, Any], tensors: dict[str, torch.Tensor],  # noqa: C901
          static_keys: list[str]) -> CheckResult | None:
    """The verdict on what the driver reported; None when nothing was handed over."""
    checker = exam.checker
    status = document.get("status")
    if status == "missing":
        return None
    if static_keys:
        return not_own_work(checker, static_keys, "your notebook uses")
    raw = document.get("submitted")
    submitted: dict[str, Any] = raw if isinstance(raw, dict) else {}
    sub_name = str(submitted.get("name", ""))[:100]
    if checker.kind == "function" and isinstance(submitted.get("course"), str):
        return not_own_work(checker, [submitted["course"][:200]], "you handed over")
    used = _used_keys(document.get("reached"), exam, sub_name, reached=True)
    if used:
        return not_own_work(checker, used, "your function refers to")
    if status == "misuse":
        shown = str(submitted.get("describe", ""))[:60]
        kind = str(submitted.get("type", "object"))[:60]
        text = ("expected your function, got None — pass the function itself "
                f"(e.g. `check.{checker.name}(my_function)`), and run the cell that defines it first."
                if kind == "NoneType" else
                f"expected your function, got {_article(kind)} ({shown}) — pass the function itself, "
                "not the result of calling it.")
        return checker.fail("misuse", text)
    if status != "ok":
        return checker.fail("internal", f"the grader could not call your function in your notebook "
                                         f"({str(document.get('message', status))[:200]}) — was course_utils "
                                         "changed or replaced in the notebook?")
    if checker.kind == "value":
        if submitted.get("callable") and submitted.get("type") not in ("torch.Tensor", "Module"):
            return checker.fail("misuse", "expected the value you computed, not a function "
                                           "— call your function and pass its result.")
        value = _plain.decode(document.get("value"), tensors)
        if value is None:
            return checker.fail("type", "the value is None — not done yet? Compute it in the cell above "
                                         "(and run that cell) before checking.")
        return checker.judge_value(exam.expected[0], value, prepare=_plain.roundtrip)
    entries = document.get("cases")
    if not isinstance(entries, list):
        raise _plain.PlainError("no cases in the answer")
    used = _used_keys(document.get("calls"), exam, sub_name)
    if used:
        return not_own_work(checker, used, "your function calls")
    for i, case in enumerate(exam.cases):
        if i >= len(entries) or not isinstance(entries[i], dict):
            outcome = Outcome(timed_out=True)
            return checker.judge_case(case, exam.expected[i], outcome, None)
        entry = entries[i]
        outcome = Outcome(timed_out=bool(entry.get("timed_out")), printed=str(entry.get("printed", ""))[-4000:])
        mutated = None
        if isinstance(entry.get("error"), dict):
            outcome.error = _rebuild_error(entry["error"])
            outcome.where = str(entry["error"].get("where") or "") or None
            if outcome.where is None:
                outcome.where = ""  # no line of the student's: do not look for one here
        elif not outcome.timed_out:
            outcome.value = _plain.decode(entry.get("value"), tensors)
            if not checker.allow_mutation:
                after = _plain.decode(entry.get("after"), tensors)
                if isinstance(after, tuple) and len(after) == 2 and isinstance(after[0], tuple) \
                        and isinstance(after[1], dict):
                    before_args, before_kwargs = exam.before[i]
                    # An input the grader cannot see into (an Opaque object) is not compared.
                    def seen(b: Any, a: Any) -> tuple[Any, Any]:
                        return (None, None) if isinstance(b, _plain.Opaque) else (b, a)

                    pairs = [seen(b, a) for b, a in zip(before_args, after[0])]
                    kw = {k: seen(v, after[1].get(k)) for k, v in before_kwargs.items()}
                    before_case = Case(case.name, tuple(p[0] for p in pairs), {k: v[0] for k, v in kw.items()})
                    after_case = Case(case.name, tuple(p[1] for p in pairs), {k: v[1] for k, v in kw.items()})
                    mutated = checker.mutated(before_case, after_case)
        failed = checker.judge_case(case, exam.expected[i], outcome, mutated, prepare=_plain.roundtrip)
        if failed is not None:
            return failed
    return checker.passed(exam.cases)


def _article(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


# --------------------------------------------------------------------------- static look at the code

def _code_of(cell_source: str) -> str:
    # IPython magics and shell lines are not Python; blank them so that the rest parses.
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in cell_source.splitlines())


# Complexity allowed (C901): one walk over the code's syntax tree, one branch per way of naming course code
# (import, from-import, alias, attribute chain).
def course_names_used(sources: list[str]) -> set[str]:  # noqa: C901
    """``module.qualname`` of course_utils objects the code imports or reaches by attribute
    (resolved only through modules this process has imported: nothing is run)."""
    found: set[str] = set()
    aliases: dict[str, Any] = {}

    def note(obj: Any) -> None:
        name = qualname(obj)
        if name:
            found.add(name)

    for source in sources:
        try:
            tree = ast.parse(_code_of(source))
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "course_utils":
                        if alias.asname:
                            aliases[alias.asname] = sys.modules.get(alias.name)
                        else:
                            aliases["course_utils"] = sys.modules.get("course_utils")
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                    node.module.split(".")[0] == "course_utils":
                module = sys.modules.get(node.module)
                for alias in node.names:
                    obj = getattr(module, alias.name, None) if module is not None else None
                    if obj is None:
                        obj = sys.modules.get(f"{node.module}.{alias.name}")
                    if obj is not None:
                        aliases[alias.asname or alias.name] = obj
                        note(obj)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                chain = []
                base: ast.AST = node
                while isinstance(base, ast.Attribute):
                    chain.append(base.attr)
                    base = base.value
                if isinstance(base, ast.Name) and aliases.get(base.id) is not None:
                    obj = aliases[base.id]
                    for attr in reversed(chain):
                        nxt = getattr(obj, attr, None)
                        if nxt is None and isinstance(obj, type(sys)):
                            nxt = sys.modules.get(f"{obj.__name__}.{attr}")
                        if nxt is None:
                            break
                        obj = nxt
                        note(obj)
    return found


# --------------------------------------------------------------------------- running one notebook

def _sandbox_km(sandbox_args: list[str]) -> type[AsyncKernelManager]:
    from jupyter_client.manager import AsyncKernelManager

    class SandboxKernelManager(AsyncKernelManager):  # async, as nbclient drives it (interrupts included)
        def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
            cmd = super().format_kernel_cmd(extra_arguments)
            return [sys.executable, "-I", SANDBOX, *sandbox_args, "--", *cmd]

    return SandboxKernelManager


def _above_or_same(path: str, other: str) -> bool:
    return other == path or other.startswith(path.rstrip(os.sep) + os.sep)


def import_paths(env: dict[str, str], hidden: Sequence[str] = ()) -> list[str]:
    """Folders the kernel needs to see: Python's import paths, the interpreter, the installed
    course_utils, the model caches. A path that is, or holds, a ``hidden`` folder (the grader's
    working folder, the checkout with the chapters) is left out: it would show that folder."""
    paths = [p for p in sys.path if p]
    paths += env.get("PYTHONPATH", "").split(os.pathsep)
    paths += [sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable)),
              os.path.dirname(os.path.realpath(course_utils.__file__))]
    paths += [env[k] for k in ("COURSE_CACHE", "HF_HOME", "HF_HUB_CACHE", "TORCH_HOME", "XDG_CACHE_HOME") if env.get(k)]
    hidden_real = [os.path.realpath(h) for h in hidden if h]
    out: list[str] = []
    for p in paths:
        real = os.path.realpath(p) if p else ""
        if not real or not os.path.isdir(real) or real in out:
            continue
        if any(_above_or_same(real, h) for h in hidden_real):
            continue
        out.append(real)
    return out


def grader_folders() -> list[str]:
    """The grading package's own folder: it sits on the kernel's import paths (next to course_utils,
    in site-packages or src/), so the sandbox covers it after bringing those paths back, and
    ``import course_grading`` fails in a graded kernel."""
    return [os.path.dirname(os.path.realpath(__file__))]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def folder_bytes(*folders: Path) -> int:
    """Bytes in the files under ``folders`` (links are not followed)."""
    total = 0
    for folder in folders:
        for base, dirs, files in os.walk(folder, followlinks=False):
            for name in files + dirs:
                try:
                    total += os.lstat(os.path.join(base, name)).st_size
                except OSError:
                    pass
    return total


def memory_note(text: str, memory_bytes: int) -> str:
    """``text`` with the memory limit named, where it says an allocation failed."""
    markers = ("MemoryError", "can't allocate memory", "Cannot allocate memory", "std::bad_alloc",
               "DefaultCPUAllocator")
    if memory_bytes > 0 and any(m in text for m in markers) and "memory limit" not in text:
        return text + f" (the memory limit is {memory_bytes / 2**30:g} GiB per notebook)"
    return text


#: The kernel running now (its launcher's process group), killed if this worker is stopped.
_CURRENT_KERNEL: list[int] = []


def _kill_kernels(*_: Any) -> None:
    for pid in list(_CURRENT_KERNEL):
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except OSError:
                pass


_CLIENT: Any = None


def _client_class() -> Any:
    """nbclient's client, keeping at most ``limit`` bytes of output and noting cells stopped for time."""
    global _CLIENT
    if _CLIENT is not None:
        return _CLIENT
    from jupyter_core.utils import ensure_async
    from nbclient import NotebookClient

    class LimitedClient(NotebookClient):
        run: "NotebookRun"
        output_bytes = 0
        overflow_cell: int | None = None

        def output(self, outs: list[NotebookNode], msg: dict[str, Any], display_id: str | None,
                   cell_index: int) -> NotebookNode | None:
            self.output_bytes += len(json.dumps(msg.get("content", {}), default=str))
            if self.output_bytes > self.run.output_limit:
                if self.overflow_cell is None:
                    self.overflow_cell = cell_index
                    asyncio.ensure_future(self._interrupt())
                return None  # drop it: memory stays bounded
            if cell_index == self.run.scratch and msg.get("header", {}).get("msg_type") != "error":
                return None  # the grader's own cells: only an error is kept (to say why)
            return super().output(outs, msg, display_id, cell_index)

        async def _interrupt(self) -> None:
            try:
                if self.km is not None:
                    await ensure_async(self.km.interrupt_kernel())
            except Exception:  # noqa: BLE001 - the kernel may be gone already
                pass

        async def _async_handle_timeout(self, timeout: int,
                                        cell: NotebookNode | None = None) -> dict[str, Any] | None:
            if self.run.driving is None:
                self.run.status["stopped_cells"].append(self.run.status["cell"])
                self.run.status["stopped_after"] = int(timeout)
            return await super()._async_handle_timeout(timeout, cell)

    _CLIENT = LimitedClient
    return _CLIENT


STARTUP = "import course_utils.exercises.core  # grading mode is fixed before any cell runs\n"


class NotebookRun:
    """One submission, run in a fresh sandboxed kernel and judged here.

    ``run()`` returns ``{"verdicts": {exercise: {passed, message}}, "status": ...}``. The
    kernel's answers are read only from this submission's own exchange folder, only as
    regular files (never through a link) and only if they carry this run's secret token.
    """

    def __init__(self, task: dict[str, Any], exams: dict[str, Exam | str]) -> None:
        self.task, self.exams = task, exams
        self.folder = Path(task["dir"])
        self.limits = task["limits"]
        self.box, self.io, self.work = self.folder / "box", self.folder / "io", self.folder / "run"
        self.exercises: list[str] = list(task["exercises"])
        self.verdicts: dict[str, dict[str, Any]] = {}
        self.status: dict[str, Any] = {"status": "running", "cell": None, "cell_errors": {}, "stopped_cells": [],
                                       "check_cells": {}, "message": "", "isolation": None}
        self.check_after: dict[int, list[str]] = {}
        self.used_names: set[str] = set()
        self.token = secrets.token_hex(16)
        self.driving: str | None = None
        self.deadline = float(self.limits["notebook_timeout"])
        self.output_limit = int(self.limits["max_output_bytes"])
        self.cell_timeout = int(max(1, self.limits["cell_timeout"]))
        self.memory_bytes = int(self.limits.get("memory_bytes", 0))
        self.disk_bytes = int(self.limits.get("max_disk_bytes", 0))
        self.start = time.monotonic()
        self.scratch = 0
        self.client: Any = None

    # -- set-up

    def read_notebook(self) -> Any:
        import nbformat

        from .student import CHECK_CALL, cell_source

        for d in (self.box, self.io, self.work, self.work / "home", self.work / "tmp"):
            d.mkdir(parents=True, exist_ok=True)
        startup = self.work / "ipython" / "profile_default" / "startup"
        startup.mkdir(parents=True, exist_ok=True)
        (startup / "00-course-grading.py").write_text(STARTUP)
        nb = nbformat.read(self.folder / "submission.ipynb", as_version=4)
        sources = []
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            cell.outputs, cell.execution_count = [], None  # stored outputs are never trusted or kept
            source = cell_source(cell)
            sources.append(source)
            for name in CHECK_CALL.findall(source):
                self.status["check_cells"].setdefault(name, index)
                names = self.check_after.setdefault(index, [])
                if name not in names:
                    names.append(name)
        shutil.copy(self.folder / "submission.ipynb", self.box / "notebook.ipynb")
        self.used_names = course_names_used(sources)
        for name in self.exercises:
            exam = self.exams.get(name)
            if isinstance(exam, str):
                self.verdicts[name] = {"passed": False, "message": exam, "final": True}
            elif exam is not None:
                (self.io / f"in-{name}.pt").write_bytes(exam.inputs)
        # nbclient stores each executed cell at its index: the driver cells use one extra slot.
        self.scratch = len(nb.cells)
        nb.cells.append(nbformat.v4.new_code_cell(""))
        return nb

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("JPY_", "JUPYTER_"))}
        run = self.work
        env.update({GRADING_ENV: "1", "COURSE_EXERCISES_STRICT": "0", "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0",
                    "TOKENIZERS_PARALLELISM": "false", "HOME": str(run / "home"), "IPYTHONDIR": str(run / "ipython"),
                    "MPLCONFIGDIR": str(run / "mpl"), "JUPYTER_RUNTIME_DIR": str(run / "rt"),
                    "TMPDIR": str(run / "tmp"), "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"),
                    "PYTHONDONTWRITEBYTECODE": "1", "PYTHONSAFEPATH": "1"})
        return env

    def sandbox_args(self, env: dict[str, str]) -> list[str]:
        args = ["--report", str(self.folder / "sandbox.json"), "--cwd", str(self.box), "--rw", str(self.box),
                "--rw", str(self.io), "--rw", str(self.work)]
        hidden = list(self.task.get("hide", []))
        for path in hidden:
            args += ["--hide", path]
        for keep in import_paths(env, hidden):
            args += ["--ro", keep]
        for path in grader_folders():
            args += ["--mask", path]
        if self.memory_bytes:
            args += ["--memory-bytes", str(self.memory_bytes)]
        if self.disk_bytes:
            args += ["--file-bytes", str(self.disk_bytes)]
        if self.task.get("isolation") == "off":
            args.append("--off")
        elif self.task.get("isolation") == "required":
            args.append("--require")
        return args

    # -- running

    def run(self) -> dict[str, Any]:
        from nbclient.exceptions import DeadKernelError

        nb = self.read_notebook()
        env = self.environment()
        run = self.work
        km = _sandbox_km(self.sandbox_args(env))(kernel_name=self.limits["kernel"], transport="ipc",
                                                  ip=str(run / "k"))
        km.connection_file = str(run / "kernel.json")
        client = _client_class()(nb, km=km, timeout=self.cell_timeout, interrupt_on_timeout=True,
                                 allow_errors=True, record_timing=False, startup_timeout=120,
                                 resources={"metadata": {"path": str(self.box)}})
        client.run = self
        self.client = client
        self.start = time.monotonic()
        try:
            with client.setup_kernel(env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL):
                self.status["isolation"] = _read_json(self.folder / "sandbox.json")
                pid = getattr(getattr(km, "provisioner", None), "pid", None)
                if pid:
                    _CURRENT_KERNEL[:] = [pid]
                    (self.folder / "kernel.pid").write_text(str(pid))  # the grader kills it if this worker is stopped
                self.execute(nb)
        except DeadKernelError:
            limit = f"the memory limit of {self.memory_bytes / 2**30:g} GiB, " if self.memory_bytes else ""
            self.status.update(status="dead", message=f"the kernel died while running cell {self.status['cell']} "
                                                      f"(a crash, {limit or 'running out of memory, '}or "
                                                      "os._exit/exit of the process)")
        except Exception as exc:  # noqa: BLE001 - a kernel that will not start, a broken notebook ...
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            self.status.update(status="error", message=f"the notebook could not be executed: "
                                                       f"{type(exc).__name__}: {first}")
        finally:
            _CURRENT_KERNEL.clear()
        if self.status["isolation"] is None:
            self.status["isolation"] = _read_json(self.folder / "sandbox.json")
        return {"verdicts": self.verdicts, "status": self.status}

    def execute(self, nb: Any) -> None:
        from nbclient.exceptions import CellExecutionError

        client, status = self.client, self.status
        driven: set[str] = set()
        for index, cell in enumerate(nb.cells[:self.scratch]):
            if cell.cell_type != "code":
                continue
            if time.monotonic() - self.start > self.deadline:
                status.update(status="deadline", message=f"the notebook timed out after {self.deadline:g} s (the "
                                                         f"limit for the whole notebook), before cell {index}")
                return
            status["cell"] = index
            try:
                client.execute_cell(cell, index)
            except CellExecutionError:
                pass
            for out in cell.outputs:
                if out.get("output_type") == "error":
                    text = f"{out.get('ename')}: {out.get('evalue', '')}"[:300]
                    status["cell_errors"][str(index)] = memory_note(text, self.memory_bytes)
            if client.overflow_cell is not None:
                status.update(status="output", message=f"cell {client.overflow_cell} printed more than "
                                                       f"{self.output_limit / 1e6:g} MB of output; grading stopped "
                                                       "there")
                return
            if self.disk_bytes and folder_bytes(self.box, self.io, self.work) > self.disk_bytes:
                status.update(status="disk", message=f"after cell {index} the notebook's folders hold more than "
                                                     f"{self.disk_bytes / 1e6:g} MB (the disk limit); grading "
                                                     "stopped there")
                return
            for name in self.check_after.get(index, []):
                if name in self.exercises and str(index) not in status["cell_errors"]:
                    self.drive(name)
                    driven.add(name)
        status["status"] = "ok"
        for name in self.exercises:  # checks called in a way no cell shows (the last call counts)
            if name not in driven:
                self.drive(name)

    def drive(self, name: str) -> None:
        """Run the grader's driver cell for ``name`` in the kernel; judge what it wrote back."""
        import nbformat
        from nbclient.exceptions import CellExecutionError

        exam = self.exams.get(name)
        if not isinstance(exam, Exam):
            return
        remaining = self.deadline - (time.monotonic() - self.start)
        if remaining < 1:
            return
        out = self.io / f"out-{name}"
        for suffix in (".json", ".safetensors"):
            try:
                out.with_suffix(suffix).unlink()
            except FileNotFoundError:
                pass
            except OSError:  # a folder the kernel made there: it will not be read anyway
                pass
        budget = int(max(1, min(max(1, len(exam.cases)) * (exam.checker.timeout * 1.5 + 1) + 15, remaining)))
        cell = nbformat.v4.new_code_cell(
            "import course_utils.exercises._driver as _grader_driver\n"
            f"_grader_driver.serve({name!r}, {str(self.io / f'in-{name}.pt')!r}, {str(out)!r}, {self.token!r})")
        self.client.timeout = budget
        self.driving = name
        timed_out = False
        started = time.monotonic()
        try:
            self.client.execute_cell(cell, self.scratch)
        except CellExecutionError:
            pass
        finally:
            self.client.timeout = self.cell_timeout
            self.driving = None
            timed_out = time.monotonic() - started >= budget - 0.5
        self.verdicts.pop(name, None)
        verdict = self.judge_answer(exam, out, cell, budget if timed_out else None)
        if verdict is not None:
            self.verdicts[name] = verdict

    def judge_answer(self, exam: Exam, out: Path, cell: Any, timed_out_after: int | None) -> dict[str, Any] | None:
        checker = exam.checker
        try:
            document, tensors = _plain.load(out)
            if document.get("token") != self.token:
                raise _plain.PlainError("the answer does not carry this notebook's token")
        except _plain.PlainError as exc:
            errors = [f"{o.get('ename')}: {str(o.get('evalue', ''))[:200]}" for o in cell.outputs
                      if o.get("output_type") == "error"]
            why = (f"the grader's call timed out after {timed_out_after} s (all cases together)"
                   if timed_out_after else f"the grader's call raised {errors[0]}" if errors
                   else "the grader's call was stopped or the kernel failed")
            text = f"your function's answer did not reach the grader ({exc}; {why})"
            return {"passed": False, "final": False, "message": checker.fail("internal", text).message}
        static = sorted(self.used_names & exam.keys)
        try:
            result = judge(exam, document, tensors, static)
        except _plain.PlainError as exc:
            text = f"your function's answer could not be read ({exc})."
            return {"passed": False, "final": False, "message": checker.fail("internal", text).message}
        if result is None:
            return None
        message = memory_note(result.message, self.memory_bytes) if not result.passed else result.message
        return {"passed": result.passed, "message": message, "stage": result.stage}


def grade_notebook(task: dict[str, Any], exams: dict[str, Exam | str]) -> dict[str, Any]:
    """Run one submission; returns ``{"verdicts": {exercise: {passed, message}}, "status": ...}``."""
    return NotebookRun(task, exams).run()


# --------------------------------------------------------------------------- the loop

def _exams_for(names: list[str], seed: int, cache: dict[tuple[str, int], Exam | str]) -> dict[str, Exam | str]:
    out: dict[str, Exam | str] = {}
    for name in names:
        key = (name, seed)
        if key not in cache:
            try:
                cache[key] = Exam.build(name, seed)
            except AttributeError as exc:
                cache[key] = (f"{exc} — no checker of that name is known to the grader (a checker defined in a "
                              "notebook cannot grade: load its module with --checkers)")
            except Exception as exc:  # noqa: BLE001 - a broken checker must not stop the others
                cache[key] = f"the grader could not set this exercise: {type(exc).__name__}: {exc}"[:300]
        out[name] = cache[key]
    return out


def _load_checkers(specs: list[str]) -> None:
    import importlib
    import importlib.util

    for spec in specs:
        if spec.endswith(".py"):
            path = Path(spec).resolve()
            module_name = f"course_grader_extra_{path.stem}"
            if module_name in sys.modules:
                continue
            mspec = importlib.util.spec_from_file_location(module_name, path)
            if mspec is None or mspec.loader is None:
                raise ImportError(f"cannot load checkers from {path}")
            module = importlib.util.module_from_spec(mspec)
            sys.modules[module_name] = module
            mspec.loader.exec_module(module)
        else:
            importlib.import_module(spec)


def _end_with_parent() -> None:
    """Stop (and stop the kernel) when the grader ends, however it ends."""
    def stop(signum: int, frame: Any) -> None:
        _kill_kernels()
        os._exit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    parent = os.environ.get("COURSE_GRADER_PID")
    if parent and str(os.getppid()) != parent:  # the grader was gone before the line above
        os._exit(1)


def main() -> int:
    _end_with_parent()
    torch.set_num_threads(int(os.environ.get("COURSE_GRADER_THREADS", "1")))
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing but answers on the real stdout
    nonce = sys.stdin.readline().strip()
    cache: dict[tuple[str, int], Exam | str] = {}
    loaded: set[str] = set()
    for line in sys.stdin:
        if not line.strip():
            continue
        task = json.loads(line)
        try:
            specs = [s for s in task.get("checkers", []) if s not in loaded]
            _load_checkers(specs)
            loaded.update(specs)
            exams = _exams_for(task["exercises"], int(task["seed"]), cache)
            answer = grade_notebook(task, exams)
        except Exception as exc:  # noqa: BLE001 - report, and stay ready for the next task
            answer = {"verdicts": {}, "status": {"status": "error", "message": f"grading failed: "
                                                                              f"{type(exc).__name__}: {exc}"[:300]}}
        out.write(f"RESULT {nonce} {json.dumps(answer)}\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
