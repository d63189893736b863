"""Exercises: checkers that say what is wrong (the instructor tools are in course_grading).

In a notebook::

    from course_utils.exercises import check
    check.count_parameters(count_parameters)

How to write a checker: see :mod:`course_utils.exercises.core`. Instructor tools:
``python -m course_grading.student`` (student edition) and
``python -m course_grading.grade`` (grade a folder of submissions).
"""
from .core import Case, Checker, CheckResult, ExerciseFailed, Mistake, check, get_checker, register, registered_names

__all__ = ["Case", "Checker", "CheckResult", "ExerciseFailed", "Mistake", "check", "get_checker",
           "register", "registered_names"]
