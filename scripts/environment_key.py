"""Print a short key of the installed environment (Python and every distribution's version).

``scripts/build_site.sh`` stores it beside the book's execution cache: jupyter-cache keys an
execution on the notebook's code only, so after a library upgrade the build would otherwise
serve outputs computed with the old versions. A different key drops the cache.
"""
from __future__ import annotations

import hashlib
import importlib.metadata as md
import sys
from collections.abc import Iterable


def environment_key(distributions: Iterable[tuple[str, str]], python: str = sys.version) -> str:
    """16 hex digits that change when Python or any (name, version) pair changes, in any order."""
    lines = sorted(f"{name.lower()}=={version}" for name, version in distributions)
    return hashlib.sha256("\n".join([python, *lines]).encode()).hexdigest()[:16]


def installed() -> list[tuple[str, str]]:
    return [(d.metadata["Name"], d.version) for d in md.distributions()]


if __name__ == "__main__":
    print(environment_key(installed()))
