"""course_utils.runtime: outputs fit a page (no bars when no one watches, no doubled banner,
quiet libraries) and the chapter's budget is measured and glued."""
from __future__ import annotations

import nbclient
import nbformat
import pytest

from course_utils import runtime


def test_interactive_can_be_forced(monkeypatch) -> None:
    monkeypatch.setenv("COURSE_INTERACTIVE", "0")
    assert runtime.is_interactive() is False
    assert runtime.progress_bar(range(3)).disable is True
    monkeypatch.setenv("COURSE_INTERACTIVE", "1")
    assert runtime.is_interactive() is True
    assert runtime.progress_bar(range(3)).disable is False
    monkeypatch.setenv("COURSE_INTERACTIVE", "maybe")
    with pytest.raises(ValueError, match="COURSE_INTERACTIVE"):
        runtime.is_interactive()


def test_chapter_budget_needs_the_banner(monkeypatch) -> None:
    monkeypatch.setattr(runtime, "_started", None)
    with pytest.raises(RuntimeError, match="call banner"):
        runtime.chapter_budget(glue=False)


def test_chapter_budget_measures_from_the_banner(monkeypatch, capsys) -> None:
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    runtime.banner()
    budget = runtime.chapter_budget(glue=False)
    assert 0 <= budget.seconds < 60
    assert 0.01 < budget.peak_rss_gb < 1000  # this process holds torch: tens of MB at least
    assert budget.device == str(runtime.get_device()) and budget.cpus >= 1
    assert capsys.readouterr().out.splitlines()[-1].startswith("This run: ")


def test_a_headless_kernel_shows_a_clean_page() -> None:
    """Run as the site build runs a chapter (nbclient): no bars, one banner, no library chatter,
    and the budget glued."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in [
        "import os; os.environ['COURSE_OFFLINE'] = '1'\nfrom course_utils import banner, runtime\nbanner()",
        "print(runtime.is_interactive())",
        "import datasets\nds = datasets.Dataset.from_dict({'a': list(range(2000))}).map(lambda x: {'b': 2 * x['a']})",
        "for _ in runtime.progress_bar(range(3), desc='steps'): pass",
        "from transformers.utils import logging\nlogging.get_logger('transformers.foo').warning('advisory')",
        "_ = runtime.chapter_budget()",
    ]]
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    outputs = [c.outputs for c in nb.cells]
    assert [o.output_type for o in outputs[0]] == ["stream"]  # printed once, not echoed as a result
    assert outputs[1][0].text.strip() == "False"
    assert outputs[2] == [] and outputs[3] == [] and outputs[4] == []
    glued = [o for o in outputs[5] if o.output_type == "display_data"]
    assert len(glued) == 5 and outputs[5][0].text.startswith("This run: ")  # minutes, GB, device, cores, threads
