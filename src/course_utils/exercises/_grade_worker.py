"""Execute one submitted notebook (one process, one kernel) for the grader.

``python -m course_utils.exercises._grade_worker NOTEBOOK WORKDIR --cell-timeout S
--deadline S --max-output-bytes N --kernel NAME`` executes the notebook's code cells in
a fresh kernel whose working directory is ``WORKDIR``; every ``check.<name>(...)`` call
appends its result to ``WORKDIR/../records.jsonl`` (through ``COURSE_EXERCISES_RECORD``,
set by the grader). It writes ``status.json`` next to the records: how execution ended,
which cells raised, which cells were stopped, and where each exercise's check cell is.
The grader reads the records even if it had to kill this process.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

STATUS = "status.json"


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("notebook", type=Path)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--cell-timeout", type=float, default=120)
    parser.add_argument("--deadline", type=float, default=600)
    parser.add_argument("--max-output-bytes", type=int, default=5_000_000)
    parser.add_argument("--kernel", default="python3")
    args = parser.parse_args(argv)

    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, DeadKernelError

    from .student import CHECK_CALL, _source

    status_path = args.workdir.parent / STATUS
    status: dict[str, Any] = {"status": "running", "cell": None, "cell_errors": {}, "stopped_cells": [],
                              "check_cells": {}, "message": ""}
    nb = nbformat.read(args.notebook, as_version=4)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None  # stored outputs are never trusted or kept
            for name in CHECK_CALL.findall(_source(cell)):
                status["check_cells"].setdefault(name, index)
    _write(status_path, status)
    start = time.monotonic()
    limit = args.max_output_bytes

    class Client(NotebookClient):
        """Keeps at most ``limit`` bytes of output, and notes cells stopped for time."""

        output_bytes = 0
        overflow_cell: int | None = None

        def output(self, outs, msg, display_id, cell_index):  # noqa: ANN001
            self.output_bytes += len(json.dumps(msg.get("content", {}), default=str))
            if self.output_bytes > limit:
                if self.overflow_cell is None:
                    self.overflow_cell = cell_index
                    asyncio.ensure_future(self._interrupt())
                return None  # drop it: memory stays bounded
            return super().output(outs, msg, display_id, cell_index)

        async def _interrupt(self) -> None:
            try:
                from jupyter_core.utils import ensure_async
                await ensure_async(self.km.interrupt_kernel())
            except Exception:  # noqa: BLE001 - the kernel may be gone already
                pass

        async def _async_handle_timeout(self, timeout, cell=None):  # noqa: ANN001
            status["stopped_cells"].append(status["cell"])
            return await super()._async_handle_timeout(timeout, cell)

    client = Client(nb, kernel_name=args.kernel, timeout=int(max(1, args.cell_timeout)),
                    interrupt_on_timeout=True, allow_errors=True, record_timing=False,
                    startup_timeout=120, resources={"metadata": {"path": str(args.workdir)}})
    try:
        with client.setup_kernel():
            status["kernel_pid"] = getattr(getattr(client.km, "provisioner", None), "pid", None)
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                if time.monotonic() - start > args.deadline:
                    status.update(status="deadline", message=f"the notebook ran out of time ({args.deadline:g} s in "
                                                             f"all) before cell {index}")
                    break
                status["cell"] = index
                _write(status_path, status)
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
            else:
                status["status"] = "ok"
    except DeadKernelError:
        status.update(status="dead", message=f"the kernel died while running cell {status['cell']} "
                                             "(a crash, running out of memory, or os._exit/exit of the process)")
    except Exception as exc:  # noqa: BLE001 - a kernel that will not start, a broken notebook ...
        status.update(status="error", message=f"the notebook could not be executed: {type(exc).__name__}: "
                                              f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}")
    _write(status_path, status)
    return 0


if __name__ == "__main__":
    sys.exit(main())
