"""Shared test set-up: the offline world, and checkers as students see them.

Every test runs in the environment of ``scripts/offline.env`` (the one definition that
scripts/test.sh, scripts/build_site.sh and scripts/regen_notebooks.py use too), whether pytest
was started by scripts/test.sh or by hand; a test that needs the online world sets it itself.

scripts/test.sh sets COURSE_EXERCISES_STRICT=1 so that a wrong *solution* in a chapter fails
nbval and the book build; the unit tests of the checkers need the student behaviour (a failed
check returns a result instead of raising), and must not append to a grader's record file.
"""

import pytest
from offline_env import offline_env

OFFLINE_ENV = offline_env()


@pytest.fixture(scope="session", autouse=True)
def _offline_world():
    from course_utils import runtime

    with pytest.MonkeyPatch.context() as mp:
        for name, value in OFFLINE_ENV.items():
            mp.setenv(name, value)
        runtime.is_online.cache_clear()
        yield
    runtime.is_online.cache_clear()


@pytest.fixture
def offline_environ() -> dict[str, str]:
    """The offline variables, for a test that starts a subprocess with its own environment."""
    return dict(OFFLINE_ENV)


@pytest.fixture(autouse=True)
def _student_mode_checkers(monkeypatch):
    monkeypatch.delenv("COURSE_EXERCISES_STRICT", raising=False)
    monkeypatch.delenv("COURSE_EXERCISES_RECORD", raising=False)
