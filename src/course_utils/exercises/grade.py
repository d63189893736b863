"""Deprecated: moved to :mod:`course_grading.grade`; run ``python -m course_grading.grade``.

``python -m course_utils.exercises.grade ...`` still works: it says so and runs the new module
with the same arguments. (Forwarded by name, so that course_utils imports nothing of the
grading package: ``.importlinter``.)
"""
from __future__ import annotations

import runpy
import sys

NEW = "course_grading.grade"

if __name__ == "__main__":
    print(f"python -m {__spec__.name if __spec__ else __name__} is deprecated: use python -m {NEW}",
          file=sys.stderr)
    runpy.run_module(NEW, run_name="__main__", alter_sys=True)
