"""The course's own small models, trained by course code.

Offline there are no pretrained GPT-2 or BERT weights, so the course trains two small models
that have genuinely learned something:

* ``"gpt2-course"``: a :class:`transformers.GPT2LMHeadModel` with the real GPT-2 tokenizer
  (all 50,257 ids are the real ones), trained on real public-domain prose (the books and
  addresses of ``bert-course`` below, split by document alike; issue 30, in the spirit of
  nanoGPT's Shakespeare model), the next-token loss with the softmax over all 50,257 ids. Its
  template recipe (:data:`TEMPLATES`: the course's *generated* corpus of :mod:`course_utils.data`,
  facts with known answers plus in-context documents) remains for the benchmarks that need those
  controlled tasks: ``zoo.spec("gpt2-course", **zoo.TEMPLATES)``;
* ``"bert-course"``: a :class:`transformers.BertForMaskedLM` with the real bert-base-uncased
  WordPiece vocabulary (30,522 ids), trained on real public-domain prose
  (:func:`course_utils.corpus.load_books`: 17 Project Gutenberg books and 233 State of the Union
  addresses, split by document).

They are ordinary checkpoints: ``from_pretrained(zoo.path(name))``,
``pipeline("fill-mask", model=str(zoo.path(name)))`` and ``model.generate`` work exactly as with
the hub's. Each is trained on first use (a ``tqdm`` bar shows it), saved atomically under
``course_utils.assets.cache_dir() / "zoo"`` (set ``COURSE_CACHE`` to move it) in a folder keyed
by a hash of the training config and of the code that trains it, and reused afterwards. A
damaged cache is detected (checksums) and rebuilt with a message. :func:`card` returns the
model's card: parameters, tokens seen, wall time, device, losses, baselines and loss curve.

Why the template recipe is fast on a CPU: its generated corpus uses about a thousand distinct
token ids, so training computes the output softmax over those rows only (a shortcut of the
generated corpus, not used on prose: the model trained is one whose vocabulary is just those
rows, then written into the full 50,257-row matrix: the same weights, bit for bit, without the
full matrix's gradient and AdamW update at every step). The ids the corpus never uses are made
harmless by one hidden channel that ``ln_f`` pins to 1, so that embedding column acts as a
per-token output bias of -30.

``bert-course`` is trained by Chapter 5's loop, :func:`course_utils.mlm.train_mlm` (the chapter's
cells hold the same code, and a test checks that they agree), with BERT's own masking and the
softmax over all 30,522 ids, scored during training on Chapter 5's fixed validation set; its card
keeps that curve and the probes on held-out test texts (top-1 and top-5 against the unigram
baseline).

The package, one job per module (a model name's walk: :func:`path` -> :mod:`.specs` ->
:mod:`.cache` (key) -> :mod:`.recipes` (build, fit: corpus, batching, the loop) -> :mod:`.probes`
-> :mod:`.card` -> the manifest, under :func:`course_utils.assets.store_atomically`):

* :mod:`.specs`: :class:`ZooSpec`, the table :data:`ZOO`, :data:`TEMPLATES`;
* :mod:`.recipes`: one recipe class per (architecture, corpus), chosen from :data:`RECIPES`;
  typed results (:class:`Fit`);
* :mod:`.blocks`, :mod:`.compact`: the GPT-2 recipes' blocks and the template recipe's compact
  softmax;
* :mod:`.probes`: losses, baselines and held-out probes;
* :mod:`.cache`: the key and the checksums; :mod:`.card`: the card; :mod:`.train`: a model
  trained into a folder;
* ``python -m course_utils.zoo train --all`` (:mod:`.__main__`): train the zoo ahead of use.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from ..assets import Asset, store_atomically, tag
from ..mlm import UNUSED_LOGIT
from ..modelinfo import count_parameters
from ..runtime import to_device
from . import train as _train
from .blocks import PROSE_VAL_BLOCKS, gpt2_blocks, prose_blocks
from .cache import code_that_trains, key, model_dir, training_code, verify, zoo_dir
from .card import read_card, source
from .probes import (
    bert_report,
    causal_probe_accuracy,
    causal_probe_correct,
    eval_loss,
    prose_report,
    templates_report,
    unigram_loss,
)
from .recipes import RECIPES, Fit, Recipe, recipe_for
from .specs import TEMPLATES, ZOO, ZooSpec, spec

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["PROSE_VAL_BLOCKS", "RECIPES", "TEMPLATES", "UNUSED_LOGIT", "ZOO", "Fit", "Recipe", "ZooSpec",
           "bert_report", "card", "causal_probe_accuracy", "causal_probe_correct", "code_that_trains",
           "eval_loss", "gpt2_blocks", "key", "load", "load_tokenizer_for", "path",
           "prose_blocks", "prose_report", "recipe_for", "spec", "templates_report", "training_code",
           "unigram_loss", "zoo_dir"]


def path(name: str, *, progress: bool = True, **overrides: Any) -> Path:
    """The folder of model ``name`` (weights, config, tokenizer files, card), trained if needed.

    ``from_pretrained(path)`` and ``pipeline(task, model=str(path))`` accept it.
    """
    k = key(name, **overrides)

    def train(tmp: Path) -> None:
        with torch.enable_grad():  # a chapter may have turned gradients off globally
            _train.train_and_save(name, spec(name, **overrides), k, tmp, progress=progress)

    def damaged(problem: str) -> None:
        print(f"The cached {name} at {final} is damaged ({problem}); deleting it and training again.")

    final = model_dir(name, k)
    return store_atomically(final, train, problem=verify, on_damaged=damaged)


def load(name: str, *, device: str | torch.device | None = None, progress: bool = True,
         **overrides: Any) -> PreTrainedModel:
    """Model ``name`` in eval mode (trained on first use), tagged with ``.course_asset``."""
    folder = path(name, progress=progress, **overrides)
    recipe = recipe_for(spec(name, **overrides))
    model: PreTrainedModel = recipe.model_type().from_pretrained(str(folder))
    model.eval()
    if device is not None:
        to_device(model, device)
    return cast("PreTrainedModel", tag(model, Asset(name, "model", source(recipe, count_parameters(model)),
                                                    pretrained=False)))


def load_tokenizer_for(name: str, **overrides: Any) -> PreTrainedTokenizerBase:
    """The tokenizer saved with model ``name`` (the real GPT-2 / bert-base-uncased one)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path(name, **overrides)))
    hub_name = spec(name, **overrides).tokenizer
    return cast("PreTrainedTokenizerBase",
                tag(tok, Asset(hub_name, "tokenizer", f"real {hub_name} tokenizer (saved with {name})", True)))


def card(name: str, **overrides: Any) -> dict[str, Any]:
    """The card of model ``name``: parameters, tokens seen, wall time, device, final train and
    validation loss, baselines, held-out probe accuracy and the loss curve."""
    return read_card(path(name, **overrides))

