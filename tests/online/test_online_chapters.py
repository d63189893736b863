"""Every chapter's online path (the one Colab takes), executed against a stand-in hub.

CI and this project's machines are offline, so without this test the ``if is_online():`` branches
would reach students unexecuted. Here each chapter runs with the course's switch forced online
(``COURSE_OFFLINE=0``), the libraries' hub switches offline (every hub name resolves from the
stand-in cache that :mod:`standin_hub` builds), and the endpoint pointed at a closed port.

What it proves: every online cell runs without error against the current library versions --
the calls, argument names, pipeline outputs, dataset schema and splits the chapters use -- and
the banner and labels say online and name the hub model that was asked for. What it cannot
prove: anything about the real models' outputs (the stand-ins have random weights and tiny
widths). Those properties are checked in :func:`test_real_gpt2_fewshot_rises`, which runs only
where the real hub answers.
"""
from __future__ import annotations

import socket
from pathlib import Path

import nbformat
import pytest
import standin_hub  # tests/online is on sys.path (pytest prepends a test file's folder)

pytestmark = [pytest.mark.online, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CHAPTERS = ROOT / "chapters"

#: For each chapter, text that only the online branch prints (labels name the hub model).
ONLINE_MARKERS: dict[str, list[str]] = {
    "01_architectures": ["BART-large-CNN summary:", "Sentiment (1-5 stars):", "GPT-2:",
                         "hub: sentence-transformers/all-MiniLM-L6-v2"],
    "02_attention_from_scratch": ["hub: bert-base-uncased"],
    "03_gpt2_internals": ["hub: gpt2", "OpenAI's pretrained gpt2"],
    "04_sampling": ["hub: HuggingFaceTB/SmolLM2-135M-Instruct", "[test stand-in]"],
    "05_mlm_training": ["hub: wikitext / wikitext-2-raw-v1"],
    "06_efficient_attention": [],
    "07_encoder_decoders_positions_families": ["facebook/bart-base", "facebook/bart-large-cnn:"],
    "08_modern_decoder": ["the hub checkpoint 'HuggingFaceTB/SmolLM2-135M-Instruct'",
                          "hub: wikitext / wikitext-2-raw-v1"],
    "08_exercises": [],
    "09_finetuning": ["hub: rotten_tomatoes"],
}
#: What the offline branches print instead: none of it may appear in an online run.
OFFLINE_MARKERS = ["Offline:", "World:    offline", "gpt2-course (the course's small model, not GPT-2)",
                   "RANDOM weights"]

#: Sizes this run shrinks: ``chapter -> [(source text, replacement)]``, each text found exactly once
#: in the chapter's code cells. Every cell still runs; only how many samples, seeds and prompts a
#: measurement loop draws changes. Against random stand-ins those measurements mean nothing, and
#: the book build (scripts/test.sh) already executes every chapter at its full sizes offline -- the
#: same code with other numbers. Per-cell timings of this run showed where its 560 s went: Chapter 4's
#: sampling and few-shot loops (Chapter 4 alone: 54 s at these sizes) and Chapter 7's fifteen
#: position-scheme models (83 s at full size).
SMOKE_SIZES: dict[str, list[tuple[str, str]]] = {
    "04_sampling": [("N_GROUPS, N_PER_GROUP, N_NEW = 5, 18, 32", "N_GROUPS, N_PER_GROUP, N_NEW = 2, 6, 8"),
                    ("N_LONG = 64", "N_LONG = 8"),
                    ("N_PER_TASK, SHOTS = 50, [0, 1, 2, 4, 8]", "N_PER_TASK, SHOTS = 3, [0, 1, 2, 4, 8]"),
                    ("R, N_REP = 50, 8", "R, N_REP = 50, 2")],
    # fifteen tiny models (5 schemes x 3 seeds) trained from scratch on the generated corpus (no hub model)
    "07_encoder_decoders_positions_families": [("L_TRAIN, STEPS, SEEDS, BATCH = 32, 250, (0, 1, 2), 32",
                                                "L_TRAIN, STEPS, SEEDS, BATCH = 32, 10, (0, 1), 32")],
    # three ways to fine-tune the real MiniLM, 3 seeds each: 2 seeds on the stand-in's few sentences
    "09_finetuning": [("SEEDS = (0, 1, 2, 3, 4) if BIG else (0, 1, 2)", "SEEDS = (0, 1)")],
}


@pytest.fixture(scope="session")
def standin_home(tmp_path_factory) -> Path:
    return standin_hub.build(tmp_path_factory.mktemp("standin-hf-home"))


def _texts(nb) -> list[str]:
    """The text of every output of every code cell, in order (stdout, results, errors)."""
    out = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for o in cell.get("outputs", []):
            if o.get("output_type") == "stream":
                out.append(o.get("text", ""))
            elif "data" in o:
                out.append(o["data"].get("text/plain", "") + o["data"].get("text/markdown", ""))
    return out


def shrink(nb: nbformat.NotebookNode, edits: list[tuple[str, str]], name: str) -> None:
    """Apply :data:`SMOKE_SIZES` edits to ``nb``'s code cells; a text that is not there exactly once
    (the chapter changed) fails with what to update, rather than running the full size silently."""
    code = [c for c in nb.cells if c.cell_type == "code"]
    for old, new in edits:
        found = [c for c in code if old in c.source]
        n = sum(c.source.count(old) for c in found)
        if n != 1:
            raise AssertionError(f"{name}: {old!r} occurs {n} times in its code cells (expected once); "
                                 "update SMOKE_SIZES in tests/online/test_online_chapters.py")
        found[0].source = found[0].source.replace(old, new)


def _execute(path: Path, env: dict[str, str], monkeypatch) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    for name, value in env.items():
        monkeypatch.setenv(name, value)  # the kernel inherits this process's environment
    nb = nbformat.read(path, as_version=4)
    shrink(nb, SMOKE_SIZES.get(path.stem, []), path.stem)
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


@pytest.mark.parametrize("chapter", sorted(ONLINE_MARKERS))
def test_chapter_runs_online(chapter: str, standin_home: Path, monkeypatch) -> None:
    nb = _execute(CHAPTERS / f"{chapter}.ipynb", standin_hub.environ(standin_home), monkeypatch)
    texts = _texts(nb)
    assert texts, f"{chapter} printed nothing"
    first = next(t for t in texts if t.strip())
    assert "World:    online" in first, f"{chapter}'s first output does not say online:\n{first[:400]}"
    assert "forced by COURSE_OFFLINE" in first, "the banner must say the online world was forced, not detected"
    joined = "\n".join(texts)
    missing = [m for m in ONLINE_MARKERS[chapter] if m not in joined]
    assert not missing, f"{chapter}: the online branch did not print {missing}"
    wrong = [m for m in OFFLINE_MARKERS if m in joined]
    assert not wrong, f"{chapter}: an offline branch ran in the online world: {wrong}"


def test_standin_hub_resolves_every_name(standin_home: Path, monkeypatch) -> None:
    """The same calls as the chapters', against the stand-in: right classes, shapes and schema."""
    for name, value in standin_hub.environ(standin_home).items():
        monkeypatch.setenv(name, value)
    from course_utils import online
    online.is_online.cache_clear()
    import importlib

    import datasets.config
    import huggingface_hub.constants
    importlib.reload(huggingface_hub.constants)  # HF_HUB_CACHE/OFFLINE are read at import
    importlib.reload(datasets.config)
    try:
        from datasets import load_dataset
        from transformers import AutoModel, AutoTokenizer, GPT2LMHeadModel, pipeline

        tok = AutoTokenizer.from_pretrained("gpt2")
        assert tok("Hello world")["input_ids"] == [15496, 995]  # the real GPT-2 ids
        lm = GPT2LMHeadModel.from_pretrained("gpt2")
        assert lm.config.n_layer == 12 and lm.config.n_head == 12 and lm.config.course_standin
        bert = AutoModel.from_pretrained("bert-base-uncased")
        assert type(bert).__name__ == "BertModel"
        assert AutoTokenizer.from_pretrained("bert-base-uncased")("hello")["input_ids"] == [101, 7592, 102]
        stars = pipeline("sentiment-analysis", model="nlptown/bert-base-multilingual-uncased-sentiment")
        assert stars("I loved it")[0]["label"] in {"1 star", "2 stars", "3 stars", "4 stars", "5 stars"}
        from transformers import AutoModelForSeq2SeqLM
        cnn_tok = AutoTokenizer.from_pretrained("facebook/bart-large-cnn")
        cnn = AutoModelForSeq2SeqLM.from_pretrained("facebook/bart-large-cnn")
        out = cnn.generate(**cnn_tok("A long text. " * 20, return_tensors="pt"), max_length=12, min_length=4)
        assert type(cnn).__name__ == "BartForConditionalGeneration" and 4 <= out.shape[1] <= 12
        assert isinstance(cnn_tok.decode(out[0], skip_special_tokens=True), str)
        ds = load_dataset("wikitext", "wikitext-2-raw-v1")
        assert set(ds) == {"train", "validation", "test"} and ds["train"].column_names == ["text"]
        assert "" in ds["train"]["text"]  # wikitext's blank lines, which Chapter 5 counts
    finally:
        online.is_online.cache_clear()
        importlib.reload(huggingface_hub.constants)
        importlib.reload(datasets.config)


def _real_hub_reachable() -> bool:
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=2):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _real_hub_reachable(), reason="needs the real hub: few-shot accuracy rising with shots "
                    "is a property of the real GPT-2, which no stand-in has (run where the network is open)")
def test_real_gpt2_fewshot_rises() -> None:
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel

    tok = AutoTokenizer.from_pretrained("gpt2")
    lm = GPT2LMHeadModel.from_pretrained("gpt2").eval()
    pairs = [("France", "Paris"), ("Italy", "Rome"), ("Japan", "Tokyo"), ("Egypt", "Cairo"), ("Spain", "Madrid"),
             ("Germany", "Berlin"), ("Russia", "Moscow"), ("Greece", "Athens"), ("Poland", "Warsaw")]

    def accuracy(k: int) -> float:
        hits = 0
        for i, (country, capital) in enumerate(pairs):
            shots = [p for p in pairs if p[0] != country][i % 3:i % 3 + k]
            prompt = "".join(f"Q: What is the capital of {c}?\nA: {a}\n\n" for c, a in shots)
            ids = tok(prompt + f"Q: What is the capital of {country}?\nA:", return_tensors="pt")["input_ids"]
            with torch.no_grad():
                nxt = lm(ids).logits[0, -1].argmax().item()
            hits += tok.decode(nxt).strip() == capital
        return hits / len(pairs)

    assert accuracy(3) >= accuracy(0) + 0.3


@pytest.mark.parametrize("chapter", sorted(SMOKE_SIZES))
def test_smoke_sizes_apply_to_the_current_chapter(chapter: str) -> None:
    nb = nbformat.read(CHAPTERS / f"{chapter}.ipynb", as_version=4)
    shrink(nb, SMOKE_SIZES[chapter], chapter)  # each text found exactly once
    joined = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert all(new in joined and old not in joined for old, new in SMOKE_SIZES[chapter])


def test_shrink_fails_when_a_size_is_missing_or_ambiguous() -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("N = 480\nprint(N)"),
                                         nbformat.v4.new_markdown_cell("N = 480 in prose is not code")])
    shrink(nb, [("N = 480", "N = 4")], "toy")
    assert nb.cells[0].source == "N = 4\nprint(N)" and nb.cells[1].source == "N = 480 in prose is not code"
    with pytest.raises(AssertionError, match="occurs 0 times"):
        shrink(nb, [("N = 480", "N = 4")], "toy")
    nb.cells.append(nbformat.v4.new_code_cell("M = 1; M = 1"))
    with pytest.raises(AssertionError, match="occurs 2 times"):
        shrink(nb, [("M = 1", "M = 2")], "toy")
