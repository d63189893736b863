"""The offline environment (``scripts/offline.env``) for Python: regen_notebooks.py and the tests.

The shell scripts source the same file; this module only reads it, so the variables have one
definition.
"""
from __future__ import annotations

from pathlib import Path

ENV_FILE = Path(__file__).resolve().with_name("offline.env")


def offline_env(path: Path = ENV_FILE) -> dict[str, str]:
    """``{name: value}`` of every ``NAME=value`` line of ``path`` (comments and blank lines skipped)."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.isidentifier():
            raise ValueError(f"{path}:{number}: expected NAME=value, got {line!r}")
        values[name] = value
    return values
