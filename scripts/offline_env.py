"""The offline environment (``scripts/offline.env``) for Python: regen_notebooks.py and the tests.

The shell scripts source the same file and Python reads it with python-dotenv, so the variables
have one definition.
"""
from __future__ import annotations

from pathlib import Path

from dotenv import dotenv_values
from dotenv.parser import parse_stream

ENV_FILE = Path(__file__).resolve().with_name("offline.env")


def offline_env(path: Path = ENV_FILE) -> dict[str, str]:
    """``{name: value}`` of every ``NAME=value`` line of ``path``; a line python-dotenv cannot parse
    (which it would skip with a logged warning) is an error that names it."""
    with open(path, encoding="utf-8") as stream:
        for binding in parse_stream(stream):
            if binding.error:
                line = binding.original
                raise ValueError(f"{path}:{line.line}: expected NAME=value, got {line.string.strip()!r}")
    return {name: value for name, value in dotenv_values(path).items() if value is not None}
