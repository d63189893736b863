"""Shared test set-up: unit tests see checkers as students do.

scripts/test.sh sets COURSE_EXERCISES_STRICT=1 so that a wrong *solution* in a chapter fails
nbval and the book build; the unit tests of the checkers need the student behaviour (a failed
check returns a result instead of raising), and must not append to a grader's record file.
"""
import pytest


@pytest.fixture(autouse=True)
def _student_mode_checkers(monkeypatch):
    monkeypatch.delenv("COURSE_EXERCISES_STRICT", raising=False)
    monkeypatch.delenv("COURSE_EXERCISES_RECORD", raising=False)
