"""How each kind of zoo model is built and trained: one recipe class per (architecture, corpus).

:data:`RECIPES` maps a spec's ``(arch, corpus)`` to its recipe; :func:`recipe_for` picks it. A
recipe's :attr:`~Recipe.TRAINING_METHODS` (``build`` and ``fit``) are what makes the weights:
the cache key hashes their code and everything of ``course_utils`` they use
(:func:`course_utils.zoo.cache.training_code`). Its ``report`` (the probes) and its card texts
are not part of the weights, and editing them does not retrain the model.
"""
from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

import torch

from .. import corpus as _corpus
from .. import data as _data
from .. import mlm as _mlm
from .. import training as _training
from ..runtime import to_device
from . import probes as _probes
from .blocks import gpt2_blocks, prose_blocks
from .compact import CompactGPT2
from .probes import eval_loss, unigram_loss
from .specs import ZooSpec

if TYPE_CHECKING:
    from transformers import BertForMaskedLM, GPT2LMHeadModel, PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class Fit:
    """What a recipe's training returns: the model (on the CPU) and its numbers."""

    model: PreTrainedModel
    hist: _training.TrainHistory
    val_loss: float                 #: the saved model's validation loss (nats/token)
    unigram: float                  #: the unigram baseline's loss on the same validation data
    used: int                       #: vocabulary rows used in training
    corpus: str                     #: where the training text comes from
    #: BERT (Chapter 5's loop): seconds in the loop, its validation curve and what that set is
    train_seconds: float | None = None
    curve: list[dict[str, float]] | None = None
    validation: dict[str, Any] | None = None


class Recipe(ABC):
    """How one kind of zoo model is built, trained and probed."""

    #: The methods that make the weights (what the cache key hashes, :func:`~.cache.training_code`).
    TRAINING_METHODS: ClassVar[tuple[str, ...]] = ("build", "fit")
    arch: ClassVar[str]             #: ``ZooSpec.arch``
    corpus: ClassVar[str]           #: ``ZooSpec.corpus``
    model_class: ClassVar[str]      #: the ``transformers`` class of the saved checkpoint
    trains_on: ClassVar[str]        #: the training text, in words
    loss_task: ClassVar[str]        #: what the validation loss predicts
    #: the card's source line (``{n}``: the parameter count)
    source: ClassVar[str]

    @abstractmethod
    def build(self, s: ZooSpec, tok: PreTrainedTokenizerBase) -> PreTrainedModel:
        """A freshly initialized model of spec ``s`` (seeded with ``s.seed``)."""

    @abstractmethod
    def fit(self, name: str, s: ZooSpec, tok: PreTrainedTokenizerBase, device: torch.device,
            progress: bool) -> Fit:
        """Train a model of spec ``s``; return it (on the CPU) with its numbers."""

    @abstractmethod
    def report(self, model: PreTrainedModel, tok: PreTrainedTokenizerBase, s: ZooSpec) -> dict[str, float]:
        """The held-out probes of the card (:mod:`course_utils.zoo.probes`)."""

    def model_type(self) -> type[PreTrainedModel]:
        """The checkpoint's class (``GPT2LMHeadModel`` or ``BertForMaskedLM``)."""
        import transformers

        return cast("type[PreTrainedModel]", getattr(transformers, self.model_class))


class GPT2Recipe(Recipe, ABC):
    """A :class:`transformers.GPT2LMHeadModel` with the real GPT-2 tokenizer, no dropout."""

    arch, model_class, loss_task = "gpt2", "GPT2LMHeadModel", "next-token"

    def build(self, s: ZooSpec, tok: PreTrainedTokenizerBase) -> PreTrainedModel:
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(s.seed)
        cfg = GPT2Config(vocab_size=len(tok), n_positions=s.n_positions, n_embd=s.n_embd, n_layer=s.n_layer,
                         n_head=s.n_head, n_inner=s.n_inner, bos_token_id=tok.eos_token_id,
                         eos_token_id=tok.eos_token_id, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        return GPT2LMHeadModel(cfg)


class GPT2Prose(GPT2Recipe):
    """``gpt2-course`` on real prose: packed blocks of :func:`course_utils.corpus.load_books`'s
    training documents, the next-token loss with the softmax over all 50,257 ids (no shortcut:
    the ids the books never use are pushed down by the softmax like any other)."""

    corpus, trains_on = "prose", "real public-domain prose"
    source = ("the course's own small GPT-2 (GPT2LMHeadModel, {n} parameters) trained by course_utils.zoo "
              "on public-domain books and addresses - not OpenAI's pretrained 'gpt2'")

    def fit(self, name: str, s: ZooSpec, tok: PreTrainedTokenizerBase, device: torch.device,
            progress: bool) -> Fit:
        books = _corpus.load_books()
        train_blocks = prose_blocks(tok, s, "train", books)                 # (N, T+1)
        val_blocks = prose_blocks(tok, s, "validation", books)              # (PROSE_VAL_BLOCKS, T+1)
        model = to_device(cast("GPT2LMHeadModel", self.build(s, tok)), device)
        gen = torch.Generator().manual_seed(s.seed)

        def loss_fn(step: int) -> torch.Tensor:
            b = train_blocks[torch.randint(len(train_blocks), (s.batch_size,), generator=gen)].to(device)
            logits = model(input_ids=b[:, :-1]).logits                      # (B, T, V)
            return torch.nn.functional.cross_entropy(logits.flatten(0, 1), b[:, 1:].flatten())

        def val_fn() -> float:  # a quarter of the validation blocks, during training
            return eval_loss(model, val_blocks[::4], s, tok)

        hist = _training.train(model, loss_fn, steps=s.steps, lr=s.lr, warmup=s.warmup,
                               weight_decay=s.weight_decay, eval_fn=val_fn, eval_every=s.eval_every,
                               desc=f"training {name}", progress=progress)
        model.eval()
        return Fit(model=model.cpu(), hist=hist, val_loss=eval_loss(model, val_blocks, s, tok),
                   unigram=unigram_loss(train_blocks, val_blocks[:, 1:], len(tok)),
                   used=int(len(torch.unique(train_blocks))), corpus=books.source)

    def report(self, model: PreTrainedModel, tok: PreTrainedTokenizerBase, s: ZooSpec) -> dict[str, float]:
        return _probes.prose_report(model, tok, s)


class GPT2Templates(GPT2Recipe):
    """The template recipe (:data:`~course_utils.zoo.specs.TEMPLATES`): the generated corpus (plus
    in-context documents), the compact softmax (:class:`~course_utils.zoo.compact.CompactGPT2`);
    the model returned on the CPU, unused ids made harmless."""

    corpus, trains_on = "templates", "the generated template corpus"
    source = ("the course's own small GPT-2 (GPT2LMHeadModel, {n} parameters) trained by "
              "course_utils.zoo on the course's generated template corpus - not OpenAI's "
              "pretrained 'gpt2'")

    def fit(self, name: str, s: ZooSpec, tok: PreTrainedTokenizerBase, device: torch.device,
            progress: bool) -> Fit:
        corpus = _data.generate_corpus(s.corpus_words, s.seed)
        texts = corpus["train"]
        if s.incontext_fraction > 0:  # documents predictable only from their own context (data.generate_incontext)
            n_words = int(s.incontext_fraction * s.corpus_words)
            texts = _data.mix(texts, _data.generate_incontext(n_words, s.seed), s.seed)
        train_blocks = gpt2_blocks(texts, tok, s)                        # (N, T+1)
        val_blocks = gpt2_blocks(corpus["validation"], tok, s)[:64]
        used = torch.unique(torch.cat([train_blocks.flatten(), val_blocks.flatten(),
                                       torch.tensor(tok.all_special_ids)]))
        compact = CompactGPT2(to_device(cast("GPT2LMHeadModel", self.build(s, tok)), device), s, used)
        train_local, val_local = compact.renumber(train_blocks), compact.renumber(val_blocks)
        gen = torch.Generator().manual_seed(s.seed)

        def loss_fn(step: int) -> torch.Tensor:
            idx = torch.randint(len(train_blocks), (s.batch_size,), generator=gen)
            return compact.loss(train_local[idx.to(train_local.device)])

        def val_fn() -> float:  # the loss over the used ids on fixed validation batches (cheap, during training)
            losses = [float(compact.loss(val_local[i:i + s.batch_size]))
                      for i in range(0, len(val_local), s.batch_size)]
            return sum(losses) / len(losses)

        hist = _training.train(compact.model, loss_fn, steps=s.steps, lr=s.lr, warmup=s.warmup,
                               weight_decay=s.weight_decay, eval_fn=val_fn, eval_every=s.eval_every,
                               desc=f"training {name}", progress=progress)
        model = compact.expand().eval()
        val_full = eval_loss(model, val_blocks, s, tok)
        unigram = unigram_loss(train_blocks, val_blocks[:, 1:], len(tok))
        return Fit(model=model.cpu(), hist=hist, val_loss=val_full, unigram=unigram, used=int(len(used)),
                   corpus=corpus.source)

    def report(self, model: PreTrainedModel, tok: PreTrainedTokenizerBase, s: ZooSpec) -> dict[str, float]:
        return _probes.templates_report(model, tok, s)


class BertProse(Recipe):
    """``bert-course``: Chapter 5's loop (:func:`course_utils.mlm.train_mlm`) on real prose
    (:func:`course_utils.corpus.load_books`, packed blocks), BERT's masking
    (:func:`course_utils.mlm.mask_tokens`) with ``mask_prob``, the softmax over all 30,522 ids.
    Every ``eval_every`` steps: the loss on Chapter 5's fixed validation set
    (:func:`course_utils.mlm.prose_validation_set`)."""

    arch, corpus, model_class, loss_task = "bert", "prose", "BertForMaskedLM", "masked-token"
    trains_on = "real public-domain prose"
    source = ("the course's own small BERT (BertForMaskedLM, {n} parameters) trained by course_utils.zoo "
              "on public-domain books and addresses - not Google's pretrained 'bert-base-uncased'")

    def build(self, s: ZooSpec, tok: PreTrainedTokenizerBase) -> PreTrainedModel:
        from transformers import BertConfig, BertForMaskedLM

        torch.manual_seed(s.seed)
        bert_cfg = BertConfig(vocab_size=len(tok), hidden_size=s.n_embd, num_hidden_layers=s.n_layer,
                         num_attention_heads=s.n_head, intermediate_size=s.n_inner,
                         max_position_embeddings=s.n_positions, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0, pad_token_id=tok.pad_token_id)
        return BertForMaskedLM(bert_cfg)

    def fit(self, name: str, s: ZooSpec, tok: PreTrainedTokenizerBase, device: torch.device,
            progress: bool) -> Fit:
        books = _corpus.load_books()
        blocks = _mlm.packed_blocks(tok, books["train"], s.block_size).input_ids       # (N, T)
        val = _mlm.prose_validation_set(tok, books, max_length=min(_mlm.VAL_MAX_LENGTH, s.n_positions))
        model = to_device(cast("BertForMaskedLM", self.build(s, tok)), device)

        def masker(rows: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
            return _mlm.mask_tokens(blocks[rows], mask_id=tok.mask_token_id, vocab_size=len(tok),
                                    special_ids=tok.all_special_ids, p=s.mask_prob, generator=gen)

        hist, curve = _training.TrainHistory(), []

        def callback(step: int, seconds: float) -> bool:
            val_loss = _mlm.evaluate(model, val)
            curve.append({"step": step, "seconds": round(seconds, 2), "val_loss": val_loss})
            hist.eval_steps.append(step)
            hist.eval_loss.append(val_loss)
            return False

        t0, c0 = time.perf_counter(), time.process_time()
        losses, seconds = _mlm.train_mlm(model, tok, blocks, steps=s.steps, lr=s.lr, batch_size=s.batch_size,
                                         warmup=s.warmup, weight_decay=s.weight_decay, masker=masker,
                                         seed=s.seed, callback=callback, every=s.eval_every,
                                         progress=progress and _mlm.show_progress())
        hist.wall_time_s, hist.cpu_time_s = time.perf_counter() - t0, time.process_time() - c0
        every = 25
        for i in range(0, len(losses), every):
            hist.steps.append(min(i + every, len(losses)))
            hist.train_loss.append(sum(losses[i:i + every]) / len(losses[i:i + every]))
        return Fit(model=model.cpu(), hist=hist, val_loss=curve[-1]["val_loss"],
                   unigram=_mlm.unigram_loss(tok, books["train"], val), used=len(tok),
                   corpus=books.source, train_seconds=seconds, curve=curve,
                   validation={"texts": val.n_texts, "masked_tokens": val.n_masked,
                               "note": "Chapter 5's fixed validation set (mlm.prose_validation_set), "
                                       "full 30,522-id softmax"})

    def report(self, model: PreTrainedModel, tok: PreTrainedTokenizerBase, s: ZooSpec) -> dict[str, float]:
        return _probes.bert_report(model, tok, s)


#: The recipe of each ``(ZooSpec.arch, ZooSpec.corpus)``.
RECIPES: dict[tuple[str, str], Recipe] = {(r.arch, r.corpus): r for r in (GPT2Prose(), GPT2Templates(), BertProse())}


def recipe_for(s: ZooSpec) -> Recipe:
    """The recipe that trains spec ``s`` (:data:`RECIPES`), or a clear error."""
    try:
        return RECIPES[(s.arch, s.corpus)]
    except KeyError:
        known = ", ".join(f"arch={a!r} with corpus={c!r}" for a, c in RECIPES)
        raise ValueError(f"No zoo recipe trains arch={s.arch!r} on corpus={s.corpus!r}; the recipes are: "
                         f"{known}") from None
