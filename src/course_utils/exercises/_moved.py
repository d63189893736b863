"""The commands that moved to :mod:`course_grading` still work.

``python -m course_utils.exercises.grade ...`` and ``... .student ...`` (the commands before
course_grading) say where the tool is now and run it with the same arguments. The new module is
run by name, so that course_utils imports nothing of the grading package (``.importlinter``).
"""
from __future__ import annotations

import runpy
import sys


def run_moved(old: str, new: str) -> None:
    """Say that ``python -m old`` is deprecated, then run ``python -m new`` with the same arguments."""
    print(f"python -m {old} is deprecated: use python -m {new}", file=sys.stderr)
    runpy.run_module(new, run_name="__main__", alter_sys=True)
