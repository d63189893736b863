"""Results files of the benchmarks: one JSON record a line, appended (``benchmarks/results/``)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def append_record(path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Append ``record`` to ``path`` as one JSON line (the folder made if needed); return it."""
    path.parent.mkdir(exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(record) + "\n")
    return record
