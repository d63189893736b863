"""The grader's worker: runs submissions in sandboxed kernels and judges them in its own process.

``python -m course_utils.exercises._grade_worker`` reads, on stdin, a first line with a
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
import builtins
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from . import _plain
from ._limits import Outcome
from .core import Case, Checker, CheckResult, get_checker

GRADING_ENV = "COURSE_EXERCISES_GRADING"
SANDBOX = str(Path(__file__).with_name("_sandbox.py"))
_COURSE_ROOT = os.path.realpath(Path(__file__).resolve().parents[1]) + os.sep


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

    def hook(frame, event, arg):
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
            exam.expected = [_plain.roundtrip(checker._seeded(checker.reference))]
            keys |= _direct_callees(checker, lambda: checker._seeded(checker.reference))
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


def _rebuild_error(info: dict[str, Any]) -> BaseException:
    name = str(info.get("type", "Exception"))[:60]
    message = str(info.get("message", ""))[:2000]
    if info.get("builtin") and name in ("NotImplementedError", "SystemExit", "KeyboardInterrupt"):
        return getattr(builtins, name)(message)
    cls = type(_plain._safe_name(name) or "Exception", (RemoteError,), {})
    return cls(message)


def _used_keys(calls: Any, exam: Exam, submitted_name: str) -> list[str]:
    if not isinstance(calls, list):
        return []
    names = {exam.checker.name, submitted_name} - {""}
    allowed = {qualname(fn) for fn in exam.checker.allowed}
    out = []
    for call in calls:
        call = str(call)[:200]
        if call in allowed:
            continue
        if call in exam.keys or call.rsplit(".", 1)[-1] in names:
            out.append(call)
    return out


def not_own_work(checker: Checker, used: list[str], how: str) -> CheckResult:
    shown = ", ".join(f"`{u}`" for u in sorted(set(used))[:3])
    return checker._fail("reference", f"not graded as your own work: {how} course_utils' own implementation "
                                      f"({shown}). Write the computation yourself; the chapter's code is there "
                                      "to read, not to call.")


def judge(exam: Exam, document: dict[str, Any], tensors: dict[str, torch.Tensor],
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
    if status == "misuse":
        shown = str(submitted.get("describe", ""))[:60]
        kind = str(submitted.get("type", "object"))[:60]
        text = ("expected your function, got None — pass the function itself "
                f"(e.g. `check.{checker.name}(my_function)`), and run the cell that defines it first."
                if kind == "NoneType" else
                f"expected your function, got {_article(kind)} ({shown}) — pass the function itself, "
                "not the result of calling it.")
        return checker._fail("misuse", text)
    if status != "ok":
        return checker._fail("internal", f"the grader could not call your function in your notebook "
                                         f"({str(document.get('message', status))[:200]}) — was course_utils "
                                         "changed or replaced in the notebook?")
    if checker.kind == "value":
        if submitted.get("callable") and submitted.get("type") not in ("torch.Tensor", "Module"):
            return checker._fail("misuse", "expected the value you computed, not a function "
                                           "— call your function and pass its result.")
        value = _plain.decode(document.get("value"), tensors)
        if value is None:
            return checker._fail("type", "the value is None — not done yet? Compute it in the cell above "
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
                    mutated = checker._mutated(before_case, after_case)
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


def course_names_used(sources: list[str]) -> set[str]:
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

def _sandbox_km(sandbox_args: list[str]):
    from jupyter_client.manager import AsyncKernelManager

    class SandboxKernelManager(AsyncKernelManager):  # async, as nbclient drives it (interrupts included)
        def format_kernel_cmd(self, extra_arguments=None):
            cmd = super().format_kernel_cmd(extra_arguments)
            return [sys.executable, "-I", SANDBOX, *sandbox_args, "--", *cmd]

    return SandboxKernelManager


def _import_paths(env: dict[str, str]) -> list[str]:
    """Folders the kernel needs to see even under an emptied /tmp: Python's paths and caches."""
    paths = [p for p in sys.path if p]
    paths += env.get("PYTHONPATH", "").split(os.pathsep)
    paths += [sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))]
    paths += [env[k] for k in ("COURSE_CACHE", "HF_HOME", "HF_HUB_CACHE", "TORCH_HOME", "XDG_CACHE_HOME") if env.get(k)]
    out: list[str] = []
    for p in paths:
        real = os.path.realpath(p) if p else ""
        if real and os.path.isdir(real) and real not in out:
            out.append(real)
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def grade_notebook(task: dict[str, Any], exams: dict[str, Exam | str]) -> dict[str, Any]:
    """Run one submission; returns ``{"verdicts": {exercise: {passed, message}}, "status": ...}``."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, DeadKernelError

    from .student import CHECK_CALL, _source

    folder = Path(task["dir"])
    limits = task["limits"]
    box, io_dir, run = folder / "box", folder / "io", folder / "run"
    for d in (box, io_dir, run, run / "home", run / "tmp"):
        d.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(folder / "submission.ipynb", as_version=4)
    status: dict[str, Any] = {"status": "running", "cell": None, "cell_errors": {}, "stopped_cells": [],
                              "check_cells": {}, "message": "", "isolation": None}
    check_after: dict[int, list[str]] = {}
    sources = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None  # stored outputs are never trusted or kept
            sources.append(_source(cell))
            for name in CHECK_CALL.findall(_source(cell)):
                status["check_cells"].setdefault(name, index)
                check_after.setdefault(index, [])
                if name not in check_after[index]:
                    check_after[index].append(name)
    shutil.copy(folder / "submission.ipynb", box / "notebook.ipynb")
    used_names = course_names_used(sources)
    exercises: list[str] = list(task["exercises"])
    verdicts: dict[str, dict[str, Any]] = {}
    for name in exercises:
        exam = exams.get(name)
        if isinstance(exam, str):
            verdicts[name] = {"passed": False, "message": exam, "final": True}
        elif exam is not None:
            (io_dir / f"in-{name}.pt").write_bytes(exam.inputs)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("JPY_", "JUPYTER_"))}
    env.update({GRADING_ENV: "1", "COURSE_EXERCISES_STRICT": "0", "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0",
                "TOKENIZERS_PARALLELISM": "false", "HOME": str(run / "home"), "IPYTHONDIR": str(run / "ipython"),
                "MPLCONFIGDIR": str(run / "mpl"), "JUPYTER_RUNTIME_DIR": str(run / "rt"), "TMPDIR": str(run / "tmp"),
                "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "1"), "PYTHONDONTWRITEBYTECODE": "1"})
    report = folder / "sandbox.json"
    sandbox_args = ["--report", str(report), "--cwd", str(box), "--rw", str(box), "--rw", str(io_dir),
                    "--rw", str(run)]
    for hidden in task.get("hide", []):
        sandbox_args += ["--hide", hidden]
    for keep in _import_paths(env):
        sandbox_args += ["--ro", keep]
    if task.get("isolation") == "off":
        sandbox_args.append("--off")
    elif task.get("isolation") == "required":
        sandbox_args.append("--require")

    start = time.monotonic()
    deadline = float(limits["notebook_timeout"])
    limit = int(limits["max_output_bytes"])
    cell_timeout = int(max(1, limits["cell_timeout"]))

    class Client(NotebookClient):
        """Keeps at most ``limit`` bytes of output, and notes cells stopped for time."""

        output_bytes = 0
        overflow_cell: int | None = None

        def output(self, outs, msg, display_id, cell_index):
            self.output_bytes += len(json.dumps(msg.get("content", {}), default=str))
            if self.output_bytes > limit:
                if self.overflow_cell is None:
                    self.overflow_cell = cell_index
                    asyncio.ensure_future(self._interrupt())
                return None  # drop it: memory stays bounded
            if cell_index == scratch and msg.get("header", {}).get("msg_type") != "error":
                return None  # the grader's own cells: only an error is kept (to say why)
            return super().output(outs, msg, display_id, cell_index)

        async def _interrupt(self) -> None:
            try:
                from jupyter_core.utils import ensure_async
                if self.km is not None:
                    await ensure_async(self.km.interrupt_kernel())
            except Exception:  # noqa: BLE001 - the kernel may be gone already
                pass

        async def _async_handle_timeout(self, timeout, cell=None):
            if status.get("driving") is None:
                status["stopped_cells"].append(status["cell"])
            return await super()._async_handle_timeout(timeout, cell)

    # nbclient stores each executed cell at its index: the driver cells use one extra slot.
    scratch = len(nb.cells)
    nb.cells.append(nbformat.v4.new_code_cell(""))
    km = _sandbox_km(sandbox_args)(kernel_name=limits["kernel"], transport="ipc", ip=str(run / "k"))
    km.connection_file = str(run / "kernel.json")
    client = Client(nb, km=km, timeout=cell_timeout, interrupt_on_timeout=True, allow_errors=True,
                    record_timing=False, startup_timeout=120, resources={"metadata": {"path": str(box)}})

    def drive(name: str) -> None:
        exam = exams.get(name)
        if not isinstance(exam, Exam):
            return
        remaining = deadline - (time.monotonic() - start)
        if remaining < 1:
            return
        out = io_dir / f"out-{name}"
        for suffix in (".json", ".safetensors"):
            out.with_suffix(suffix).unlink(missing_ok=True)
        budget = max(1, len(exam.cases)) * (exam.checker.timeout * 1.5 + 1) + 15
        cell = nbformat.v4.new_code_cell(
            "import course_utils.exercises._driver as _grader_driver\n"
            f"_grader_driver.serve({name!r}, {str(io_dir / f'in-{name}.pt')!r}, {str(out)!r})")
        client.timeout = int(max(1, min(budget, remaining)))
        status["driving"] = name
        try:
            client.execute_cell(cell, scratch)
        except CellExecutionError:
            pass
        finally:
            client.timeout = cell_timeout
            status["driving"] = None
        try:
            document, tensors = _plain.load(out)
        except _plain.PlainError as exc:
            errors = [f"{o.get('ename')}: {str(o.get('evalue', ''))[:200]}" for o in cell.outputs
                      if o.get("output_type") == "error"]
            why = (f"the grader's call raised {errors[0]}" if errors
                   else "the grader's call was stopped or the kernel failed")
            verdicts[name] = {"passed": False, "final": False,
                              "message": exam.checker._fail("internal", f"your function's answer did not reach the "
                                                                        f"grader ({exc}; {why})").message}
            return
        static = sorted(used_names & exam.keys)
        try:
            result = judge(exam, document, tensors, static)
        except _plain.PlainError as exc:
            verdicts[name] = {"passed": False, "final": False,
                              "message": exam.checker._fail("internal", f"your function's answer could not be "
                                                                        f"read ({exc}).").message}
            return
        if result is not None:
            verdicts[name] = {"passed": result.passed, "message": result.message, "stage": result.stage}

    driven: set[str] = set()
    try:
        with client.setup_kernel(env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL):
            status["isolation"] = _read_json(report)
            pid = getattr(getattr(km, "provisioner", None), "pid", None)
            if pid:
                (folder / "kernel.pid").write_text(str(pid))  # the grader kills it if this worker is stopped
            for index, cell in enumerate(nb.cells[:scratch]):
                if cell.cell_type != "code":
                    continue
                if time.monotonic() - start > deadline:
                    status.update(status="deadline", message=f"the notebook ran out of time ({deadline:g} s in "
                                                             f"all) before cell {index}")
                    break
                status["cell"] = index
                try:
                    client.execute_cell(cell, index)
                except CellExecutionError:
                    pass
                for out in cell.outputs:
                    if out.get("output_type") == "error":
                        status["cell_errors"][str(index)] = f"{out.get('ename')}: {out.get('evalue', '')}"[:300]
                if client.overflow_cell is not None:
                    status.update(status="output", message=f"cell {client.overflow_cell} printed more than "
                                                           f"{limit / 1e6:g} MB of output; grading stopped there")
                    break
                for name in check_after.get(index, []):
                    if name in exercises and str(index) not in status["cell_errors"]:
                        drive(name)
                        driven.add(name)
            else:
                status["status"] = "ok"
                for name in exercises:  # checks called in a way no cell shows (the last call counts)
                    if name not in driven:
                        drive(name)
    except DeadKernelError:
        status.update(status="dead", message=f"the kernel died while running cell {status['cell']} "
                                             "(a crash, running out of memory, or os._exit/exit of the process)")
    except Exception as exc:  # noqa: BLE001 - a kernel that will not start, a broken notebook ...
        status.update(status="error", message=f"the notebook could not be executed: {type(exc).__name__}: "
                                              f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}")
    if status["isolation"] is None:
        status["isolation"] = _read_json(report)
    status.pop("driving", None)
    return {"verdicts": verdicts, "status": status}


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


def main() -> int:
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
