"""The committed outputs of chapters 1-3 (made by scripts/regen_notebooks.py) carry no library
warnings: no stderr stream and no warning text in any output, nor an error."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ["01_architectures.ipynb", "02_attention_from_scratch.ipynb", "03_gpt2_internals.ipynb"]
WARNING = re.compile(r"(Warning|warnings\.warn|was set in the config but|is deprecated|will be removed)")


@pytest.mark.parametrize("name", CHAPTERS)
def test_no_warnings_in_committed_outputs(name):
    nb = nbformat.read(ROOT / "chapters" / name, as_version=4)
    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                found.append(f"cell {i}: error {out.ename}")
            elif out.output_type == "stream" and out.name == "stderr":
                found.append(f"cell {i}: stderr {out.text[:120]!r}")
            elif out.output_type == "stream" and WARNING.search(out.text):
                found.append(f"cell {i}: {WARNING.search(out.text).group(0)!r} in {out.text[:120]!r}")
    assert found == [], "\n".join(found)
    assert any(cell.get("outputs") for cell in nb.cells), f"{name} has no outputs: regenerate it"
