"""Output hygiene of the built site (tests/site/outputcheck.py), and the test of that test.

Every page of the built site must be free of progress-bar streams, datasets' ``Map:`` bars,
library warnings and stderr chatter, the Trainer's metrics dicts, unintended tracebacks and a
doubled banner. The checker is also run on a page myst-nb renders from a notebook whose outputs
have each of those faults: it must name every one, and pass the clean cells of that page.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import outputcheck
import pytest


@pytest.mark.browser  # needs the built site (scripts/test.sh builds it first)
def test_page_outputs_are_clean(page: str, site: Path) -> None:
    findings = outputcheck.page_findings(page, (site / page).read_text(encoding="utf-8"))
    assert findings == [], f"{page}: {len(findings)} noisy outputs (fix them at the source: progress bars " \
        "that disable themselves when not interactive, library verbosity; see outputcheck.py):\n  " + \
        "\n  ".join(map(str, findings))


def test_every_allow_list_entry_says_why() -> None:
    assert len(outputcheck.ALLOW) <= 5, "the allow-list is meant to stay short"
    for entry in outputcheck.ALLOW:
        assert entry.page.endswith(".html") and entry.contains and len(entry.why) > 20, entry


def _stream(text: str, name: str = "stdout") -> dict:
    return nbformat.v4.new_output("stream", name=name, text=text)


def _noisy_notebook() -> nbformat.NotebookNode:
    # as ipykernel stores a tqdm bar: one stderr output per update, each starting with \r
    tqdm = [_stream(f"\rtraining:  {p}%|{'#' * (p // 10):<10}| {p}/100 [00:0{p // 20}<00:01, 95.1it/s]", "stderr")
            for p in range(0, 101, 10)] + [_stream("\n", "stderr")]
    maps = "".join(f"Map:  {p}%|          | {p * 10}/1000 [00:00<00:00, 5986.71 examples/s]\n" for p in (0, 50, 100))
    warning = ("/venv/lib/python3.11/site-packages/torch/nn/modules/module.py:12: FutureWarning: "
               "`foo` is deprecated\n  warnings.warn(\n")
    traceback = nbformat.v4.new_output("error", ename="ValueError", evalue="bad shape", traceback=[
        "Traceback (most recent call last)", '  File "<cell>", line 1, in <module>', "ValueError: bad shape"])
    banner = "World:    offline (no hub: packaged and course-trained assets)\nDevice:   cpu\n"
    cells = [
        ("x = banner()", [_stream(banner)], []),
        ("banner()", [nbformat.v4.new_output("execute_result", data={"text/plain": repr(banner)},
                                             execution_count=2)], []),
        ("train(model)", [*tqdm, _stream("final loss 1.23\n")], []),
        ("ds = ds.map(tokenize)", [_stream(maps, "stderr")], []),
        ("model.foo()", [_stream(warning, "stderr")], []),
        ("model = load()", [_stream("[transformers] `loss_type=None` was set in the config\n", "stderr")], []),
        ("trainer.train()", [_stream("{'loss': 2.5, 'grad_norm': 1.0, 'learning_rate': 0.001, 'epoch': 0.1}\n")], []),
        ("attention(q, k)", [traceback], []),
        ("attention(q, k_wrong)  # shows the error", [traceback], ["raises-exception"]),
        ("show(huge_view)", [nbformat.v4.new_output("display_data", data={
            "text/html": "<div>" + "<span>0.123</span>" * 80_000 + "</div>", "text/plain": "<view>"})], []),
        ("print('a clean output')", [_stream("0.5 ± 0.1 (3 seeds), 100%|##########| done\n")], []),
    ]
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
    nb.cells.append(nbformat.v4.new_markdown_cell("# Noisy"))
    for i, (source, outputs, tags) in enumerate(cells, start=1):
        cell = nbformat.v4.new_code_cell(source, execution_count=i, outputs=outputs)
        cell.metadata["tags"] = tags
        nb.cells.append(cell)
    return nb


@pytest.fixture(scope="module")
def noisy_page(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The noisy notebook rendered by myst-nb (as the book's pages are), without executing it."""
    src = tmp_path_factory.mktemp("noisy_book")
    (src / "conf.py").write_text("extensions = ['myst_nb']\nnb_execution_mode = 'off'\nnb_merge_streams = True\n"
                                 "master_doc = 'noisy'\nexclude_patterns = ['_build']\n")
    nbformat.write(_noisy_notebook(), src / "noisy.ipynb")
    out = src / "_build"
    build = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-q", "-E", str(src), str(out)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    return (out / "noisy.html").read_text(encoding="utf-8")


def test_a_noisy_page_fails_for_each_fault(noisy_page: str) -> None:
    findings = outputcheck.check_outputs(noisy_page)
    by_cell = {(f.rule, f.cell) for f in findings}
    assert ("banner", "(page)") in by_cell
    assert ("progress", "train(model)") in by_cell
    assert ("datasets-bar", "ds = ds.map(tokenize)") in by_cell
    assert ("warning", "model.foo()") in by_cell
    assert ("warning", "model = load()") in by_cell
    assert ("trainer-log", "trainer.train()") in by_cell
    assert ("traceback", "attention(q, k)") in by_cell
    assert ("large-output", "show(huge_view)") in by_cell
    # the cell tagged raises-exception may show its error; a clean line with one final bar passes
    assert not any(f.cell.startswith(("attention(q, k_wrong)", "print(")) for f in findings), findings
    progress = next(f for f in findings if f.rule == "progress")
    assert progress.excerpt.startswith("11 progress-bar updates"), progress


def test_the_allow_list_excuses_only_what_it_names(noisy_page: str) -> None:
    allow = [outputcheck.Allowed("noisy.html", "warning", "FutureWarning", "a test: the deprecation is the lesson")]
    left = outputcheck.page_findings("noisy.html", noisy_page, allow)
    assert not any(f.rule == "warning" and "FutureWarning" in f.excerpt for f in left)
    assert any(f.rule == "warning" and "[transformers]" in f.excerpt for f in left)
    assert len(left) == len(outputcheck.check_outputs(noisy_page)) - 1
    assert outputcheck.page_findings("other.html", noisy_page, allow) == outputcheck.check_outputs(noisy_page)
