"""Grading for instructors: the grader, its worker and sandbox, and the student-edition builder.

``python -m course_grading.grade SUBMISSIONS_DIR --out results.csv`` grades a folder of
submitted notebooks; ``python -m course_grading.student`` writes the student edition (see
docs/GRADING.md). It is installed with course_utils (``pip install .``) and uses its checkers,
references and comparisons, while nothing in course_utils imports it (``.importlinter``): a
notebook never needs it, and in a graded kernel its folder is hidden, so
``import course_grading`` fails there.
"""
