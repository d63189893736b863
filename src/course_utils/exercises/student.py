"""Deprecated: moved to :mod:`course_grading.student`; run ``python -m course_grading.student``.

``python -m course_utils.exercises.student ...`` still works (:mod:`._moved`).
"""
from __future__ import annotations

if __name__ == "__main__":
    from ._moved import run_moved

    run_moved(__spec__.name if __spec__ else __name__, "course_grading.student")
