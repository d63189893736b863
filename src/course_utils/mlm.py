"""Masked-language-model training, two ways (introduced in Chapter 5, "Training a BERT with MLM").

* :func:`train_seed_recipe` — the recipe the course started from, faithfully: a small BERT,
  the ``Trainer``, every line padded to 128 tokens, the default learning rate, batch 32.
* :func:`train_efficient` — the same model trained by a plain loop with the changes the chapter
  measures one by one (:class:`Recipe`): packed blocks, a learning rate with warm-up and decay,
  larger batches, the MLM head only at masked positions, bf16 autocast, ``torch.compile``.
  It runs unchanged under ``torchrun --nproc_per_node=N`` (DDP through Accelerate).

Both share one validation set (:func:`make_validation_set`: fixed masks, so losses are
comparable) and one clock: training time only, evaluation excluded. Helpers: :func:`mask_tokens`
(the 80/10/10 rule), :func:`sparse_mlm_loss`, :func:`flops_per_token` and :func:`peak_flops`
(model FLOPs utilisation).

Command line (``--help`` for all options)::

    python -m course_utils.mlm --recipe efficient --budget-seconds 60
    torchrun --nproc_per_node=2 -m course_utils.mlm --recipe efficient --max-steps 20
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

#: The seed's model: hidden 128, 2 layers, 4 heads, intermediate 512, 128 positions, the
#: bert-base-uncased vocabulary (30,522 WordPieces).
SEED_CONFIG: dict[str, int] = dict(vocab_size=30522, hidden_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, intermediate_size=512,
                                   max_position_embeddings=128)
MAX_LENGTH = 128
IGNORE = -100  #: label of positions that are not predicted (PyTorch's cross-entropy default)


# ---------------------------------------------------------------------------------------------
# Model and masking
# ---------------------------------------------------------------------------------------------

def build_model(seed: int = 0, **overrides: Any):
    """A freshly initialised ``BertForMaskedLM`` with :data:`SEED_CONFIG` (plus ``overrides``).

    The output projection is tied to the input embeddings (``tie_word_embeddings``, the
    library's default): one 30,522 x 128 matrix serves both.
    """
    from transformers import BertConfig, BertForMaskedLM

    cfg = BertConfig(**{**SEED_CONFIG, **overrides})
    torch.manual_seed(seed)
    return BertForMaskedLM(cfg)


def mask_tokens(input_ids: torch.Tensor, *, mask_token_id: int, vocab_size: int,
                special_ids: Sequence[int], mlm_probability: float = 0.15,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking rule: select ``mlm_probability`` of the ordinary tokens; of those, 80 %
    become ``[MASK]``, 10 % a random token, 10 % stay as they are.

    Returns ``(inputs, labels)``, both ``(B, T)``: ``labels`` holds the original id at the
    selected positions and :data:`IGNORE` elsewhere. Tokens in ``special_ids`` ([CLS], [SEP],
    [PAD], ...) are never selected. Same rule as ``DataCollatorForLanguageModeling``.
    """
    if not 0.0 < mlm_probability < 1.0:
        raise ValueError(f"mlm_probability must be in (0, 1), got {mlm_probability}")
    if input_ids.dtype != torch.long:
        raise TypeError(f"input_ids must be a LongTensor of token ids, got {input_ids.dtype}")
    device = input_ids.device
    special = torch.isin(input_ids, torch.tensor(list(special_ids), device=device))  # (B, T)
    prob = torch.full(input_ids.shape, mlm_probability).masked_fill(special.cpu(), 0.0)
    selected = torch.bernoulli(prob, generator=generator).bool().to(device)          # (B, T)
    labels = input_ids.masked_fill(~selected, IGNORE)
    # Of the selected positions: 80 % -> [MASK]; half of the remaining 20 % -> random token.
    replace_mask = torch.bernoulli(torch.full(input_ids.shape, 0.8), generator=generator).bool().to(device) & selected
    randomize = (torch.bernoulli(torch.full(input_ids.shape, 0.5), generator=generator).bool().to(device)
                 & selected & ~replace_mask)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator).to(device)
    inputs = input_ids.masked_fill(replace_mask, mask_token_id)
    inputs = torch.where(randomize, random_ids, inputs)
    return inputs, labels


def sparse_mlm_loss(hidden: torch.Tensor, labels: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor],
                    reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of the MLM head applied **only at the masked positions**.

    ``hidden``: the encoder's output ``(B, T, C)``; ``labels``: ``(B, T)`` with :data:`IGNORE`
    at unpredicted positions; ``head``: maps ``(N, C)`` to logits ``(N, V)``. Equals the usual
    loss (head at all ``B*T`` positions, ignored ones dropped) at about 15 % of the head's cost.
    """
    selected = labels != IGNORE                          # (B, T)
    logits = head(hidden[selected])                      # (N, V), N = number of masked tokens
    return F.cross_entropy(logits.float(), labels[selected], reduction=reduction)


class MLMObjective(torch.nn.Module):
    """Wraps a ``BertForMaskedLM``: ``forward`` returns ``(sum of token losses, n masked)``.

    ``sparse=True`` applies the head only where a token is predicted; ``sparse=False`` computes
    logits at every position as ``BertForMaskedLM.forward`` does. Returning a *sum* lets the
    caller divide by the masked-token count of the whole (global) batch, so that DDP's gradient
    average equals the single-process gradient exactly.
    """

    def __init__(self, model: torch.nn.Module, sparse: bool = True):
        super().__init__()
        self.model, self.sparse = model, sparse

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = (labels != IGNORE).sum()
        hidden = self.model.bert(input_ids=input_ids, attention_mask=attention_mask)[0]  # (B, T, C)
        if self.sparse:
            return sparse_mlm_loss(hidden, labels, self.model.cls, reduction="sum"), n
        logits = self.model.cls(hidden)                                                 # (B, T, V)
        loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="sum")
        return loss, n


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

@dataclass
class Blocks:
    """Training rows: ``input_ids`` and ``attention_mask``, both ``(N, T)``."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    def __len__(self) -> int:
        return self.input_ids.size(0)

    @property
    def real_tokens(self) -> int:
        return int(self.attention_mask.sum())


def padded_lines(tokenizer: Any, texts: Sequence[str], max_length: int = MAX_LENGTH) -> Blocks:
    """The seed's data: every line tokenised and padded (or truncated) to ``max_length``."""
    enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_length,
                    return_tensors="pt")
    return Blocks(enc["input_ids"], enc["attention_mask"])


def packed_blocks(tokenizer: Any, texts: Sequence[str], block_size: int = MAX_LENGTH) -> Blocks:
    """Concatenate-and-pack: ``[CLS] line [SEP] [CLS] line [SEP] ...`` cut into full blocks.

    (The same grouping as the library's ``run_mlm.py``; :func:`course_utils.data.pack_ids` does
    the cutting.) No position is padding; nothing is truncated except the incomplete last block.
    """
    from .data import pack_ids

    ids = tokenizer([t for t in texts if t.strip()], add_special_tokens=True)["input_ids"]
    blocks = pack_ids(ids, block_size)                                               # (N, T)
    return Blocks(blocks, torch.ones_like(blocks))


@dataclass(frozen=True)
class Waste:
    """What the seed's ``padding="max_length"`` costs on a list of lines."""

    lines: int
    empty_lines: int           #: lines with no text at all (wikitext-2 has many)
    real_tokens: int           #: tokens kept (with [CLS]/[SEP])
    positions: int             #: lines x max_length
    truncated_tokens: int      #: tokens cut off lines longer than max_length
    truncated_lines: int

    @property
    def padding_fraction(self) -> float:
        return 1 - self.real_tokens / self.positions

    @property
    def empty_fraction(self) -> float:
        return self.empty_lines / self.lines

    @property
    def truncated_fraction(self) -> float:
        """Fraction of all tokens that truncation throws away."""
        return self.truncated_tokens / (self.real_tokens + self.truncated_tokens)


def measure_waste(tokenizer: Any, texts: Sequence[str], max_length: int = MAX_LENGTH) -> Waste:
    """Padding, empty lines and truncation of padding every line to ``max_length``."""
    lengths = [len(ids) for ids in tokenizer(list(texts), add_special_tokens=True)["input_ids"]]
    kept = [min(n, max_length) for n in lengths]
    return Waste(lines=len(texts), empty_lines=sum(1 for t in texts if not t.strip()),
                 real_tokens=sum(kept), positions=len(texts) * max_length,
                 truncated_tokens=sum(n - k for n, k in zip(lengths, kept)),
                 truncated_lines=sum(1 for n in lengths if n > max_length))


@dataclass
class ValidationSet:
    """A fixed, pre-masked held-out set: the same tokens and the same masks for every model."""

    batches: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  #: (ids, attention, labels)
    n_texts: int
    n_masked: int


def make_validation_set(tokenizer: Any, texts: Sequence[str], *, max_texts: int = 400,
                        max_length: int = MAX_LENGTH, batch_size: int = 64, seed: int = 1234) -> ValidationSet:
    """Up to ``max_texts`` non-empty held-out lines, each ``[CLS] line [SEP]`` (truncated to
    ``max_length``), sorted by length and dynamically padded, masked once with ``seed``."""
    from .data import pad_batch

    texts = [t for t in texts if t.strip()][:max_texts]
    if not texts:
        raise ValueError("make_validation_set needs at least one non-empty text")
    ids = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=max_length)["input_ids"]
    ids.sort(key=len)
    gen = torch.Generator().manual_seed(seed)
    batches, n_masked = [], 0
    for i in range(0, len(ids), batch_size):
        x, att = pad_batch(ids[i:i + batch_size], tokenizer.pad_token_id)                # (B, T)
        inputs, labels = mask_tokens(x, mask_token_id=tokenizer.mask_token_id, vocab_size=len(tokenizer),
                                     special_ids=tokenizer.all_special_ids, generator=gen)
        batches.append((inputs, att, labels))
        n_masked += int((labels != IGNORE).sum())
    return ValidationSet(batches, len(texts), n_masked)


@torch.no_grad()
def evaluate(model: torch.nn.Module, val: ValidationSet) -> float:
    """Mean cross-entropy (nats) over every masked token of ``val``."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    objective = MLMObjective(model, sparse=True)
    total, count = 0.0, 0
    for ids, att, labels in val.batches:
        loss_sum, n = objective(ids.to(device), att.to(device), labels.to(device))
        total, count = total + float(loss_sum), count + int(n)
    model.train(was_training)
    return total / max(count, 1)


def unigram_entropy(tokenizer: Any, texts: Sequence[str]) -> float:
    """Entropy (nats) of the corpus's token frequencies: the loss of a model that predicts every
    masked token from counts alone, ignoring the context."""
    counts = torch.zeros(len(tokenizer))
    for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]:
        counts += torch.bincount(torch.tensor(ids, dtype=torch.long), minlength=len(tokenizer)).float()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log()).sum())


# ---------------------------------------------------------------------------------------------
# Clock, curve and throughput
# ---------------------------------------------------------------------------------------------

@dataclass
class Point:
    """One evaluation: training seconds so far (evaluation excluded), steps, tokens, losses."""

    seconds: float
    step: int
    tokens: int
    train_loss: float
    val_loss: float


@dataclass
class RunResult:
    """What one training run measured."""

    recipe: str
    curve: list[Point] = field(default_factory=list)
    steps: int = 0
    train_seconds: float = 0.0      #: training time only (evaluation excluded)
    real_tokens: int = 0            #: non-padding tokens seen
    positions: int = 0              #: positions computed (padding included)
    target: float | None = None
    time_to_target: float | None = None  #: training seconds when val loss first <= target
    flops_per_token: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        """Real (non-padding) tokens per training second."""
        return self.real_tokens / self.train_seconds if self.train_seconds else 0.0

    @property
    def final_val_loss(self) -> float:
        return self.curve[-1].val_loss if self.curve else math.nan

    def mfu(self, peak: float) -> float:
        """Model FLOPs utilisation: useful FLOPs per second / the hardware's peak."""
        return self.tokens_per_second * self.flops_per_token / peak if peak else math.nan

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tokens_per_second"] = self.tokens_per_second
        d["final_val_loss"] = self.final_val_loss
        return d


class Clock:
    """Training time with evaluation excluded: ``pause()`` / ``resume()`` around evaluations."""

    def __init__(self, sync: Callable[[], None] = lambda: None):
        self._sync, self._total, self._start = sync, 0.0, None

    def resume(self) -> None:
        self._sync()
        self._start = time.perf_counter()

    def pause(self) -> None:
        self._sync()
        if self._start is not None:
            self._total += time.perf_counter() - self._start
            self._start = None

    @property
    def running(self) -> bool:
        return self._start is not None

    @property
    def seconds(self) -> float:
        running = time.perf_counter() - self._start if self._start is not None else 0.0
        return self._total + running


def _sync_for(device: torch.device) -> Callable[[], None]:
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def flops_per_token(config: Any, seq_len: int = MAX_LENGTH, predicted_fraction: float = 0.15) -> float:
    """Training FLOPs per token (forward + backward = 3 x forward, 2 FLOPs per multiply-add).

    Counts the useful work only: the encoder's matrix products and attention at every token,
    and the MLM head (a C x C transform and the C x V output projection) at the
    ``predicted_fraction`` of tokens that are predicted. Embedding look-ups are free.
    """
    C, L, I, V = config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.vocab_size
    per_layer = 2 * (4 * C * C + 2 * C * I) + 2 * 2 * seq_len * C  # QKV+out, MLP; QK^T and AV
    head = 2 * (C * C + C * V)
    return 3.0 * (L * per_layer + predicted_fraction * head)


#: Dense peak FLOP/s of common accelerators (vendor data sheets; bf16/fp16 tensor cores, fp32).
_GPU_PEAKS = {"H200": (989e12, 67e12), "H100": (989e12, 67e12), "A100": (312e12, 19.5e12),
              "L4": (121e12, 30e12), "A10": (125e12, 31e12), "T4": (65e12, 8.1e12),
              "V100": (125e12, 15.7e12), "L40": (181e12, 90e12), "RTX 4090": (165e12, 82e12)}


def peak_flops(device: torch.device, bf16: bool, *, seconds: float = 1.0) -> tuple[float, str]:
    """(peak FLOP/s, how it was obtained) for MFU.

    CUDA: the data-sheet number of the GPU (dense, no sparsity). CPU: no data sheet is known
    for an arbitrary (virtual) CPU, so we **measure** the best rate of a large matrix product in
    the same precision (an achievable peak; the theoretical one is higher).
    """
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, (half, single) in _GPU_PEAKS.items():
            if key in name:
                return (half if bf16 else single), f"{name} data sheet, {'bf16' if bf16 else 'fp32'} dense"
        return math.nan, f"{name}: peak unknown"
    dtype = torch.bfloat16 if bf16 else torch.float32
    n = 1024
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    best, t_end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        a @ b
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t0))
    return best, f"measured {n}x{n} {dtype} matmul on {torch.get_num_threads()} CPU threads"


def machine_description() -> str:
    """One line: CPU model and cores, or the GPU, plus torch's version."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    desc = f"{cpu}, {os.cpu_count()} CPU cores ({torch.get_num_threads()} torch threads)"
    if torch.cuda.is_available():
        desc = f"{torch.cuda.get_device_name(0)}; " + desc
    return f"{desc}; torch {torch.__version__}"


# ---------------------------------------------------------------------------------------------
# The seed recipe: the Trainer, padded lines, default learning rate
# ---------------------------------------------------------------------------------------------

def train_seed_recipe(tokenizer: Any, train_texts: Sequence[str], val: ValidationSet, *,
                      budget_seconds: float, eval_every_seconds: float, output_dir: str,
                      seed: int = 0, batch_size: int = 32, max_steps: int = -1,
                      progress: bool = True) -> tuple[Any, RunResult]:
    """The seed's recipe with the ``Trainer``, stopped after ``budget_seconds`` of training.

    Faithful to the seed: ``padding="max_length"`` to 128, ``DataCollatorForLanguageModeling``
    (15 %, 80/10/10), batch 32, ``TrainingArguments``' defaults (learning rate 5e-5, linear
    decay over 3 epochs, AdamW). A callback evaluates on ``val`` every ``eval_every_seconds``
    of training and stops at the budget; evaluation time is excluded from the clock.
    Returns ``(model, result)``.
    """
    from datasets import Dataset
    from transformers import (DataCollatorForLanguageModeling, Trainer, TrainerCallback,
                              TrainingArguments)

    model = build_model(seed)
    device_is_cuda = torch.cuda.is_available()
    ds = Dataset.from_dict({"text": list(train_texts)})
    ds = ds.map(lambda b: tokenizer(b["text"], padding="max_length", truncation=True,
                                    max_length=MAX_LENGTH, return_special_tokens_mask=True),
                batched=True, remove_columns=["text"])
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    result = RunResult("seed (Trainer, padded to 128, lr 5e-5, batch 32)",
                       flops_per_token=flops_per_token(model.config),
                       settings=dict(engine="Trainer", padding="max_length", lr=5e-5, batch_size=batch_size))
    clock = Clock(_sync_for(torch.device("cuda" if device_is_cuda else "cpu")))
    state = {"next_eval": eval_every_seconds, "losses": []}

    class BudgetCallback(TrainerCallback):
        def on_step_begin(self, args, st, control, **kw):
            if not clock.running:
                clock.resume()

        def on_step_end(self, args, st, control, **kw):
            result.steps = st.global_step
            done = clock.seconds >= budget_seconds or (max_steps > 0 and st.global_step >= max_steps)
            if clock.seconds >= state["next_eval"] or done:
                clock.pause()
                m = kw["model"]
                val_loss = evaluate(m, val)
                train_loss = (sum(state["losses"]) / len(state["losses"])) if state["losses"] else math.nan
                state["losses"].clear()
                result.curve.append(Point(clock.seconds, st.global_step, result.real_tokens, train_loss, val_loss))
                state["next_eval"] = clock.seconds + eval_every_seconds
                if done:
                    control.should_training_stop = True
                else:
                    clock.resume()

        def on_log(self, args, st, control, logs=None, **kw):
            if logs and "loss" in logs:
                state["losses"].append(float(logs["loss"]))

    class CountingTrainer(Trainer):
        """The stock Trainer; only counts the real tokens and positions each step sees."""

        def training_step(self, model, inputs, num_items_in_batch=None):
            result.real_tokens += int(inputs["attention_mask"].sum())
            result.positions += inputs["attention_mask"].numel()
            return super().training_step(model, inputs, num_items_in_batch)

    args = TrainingArguments(output_dir=output_dir, per_device_train_batch_size=batch_size,
                             logging_steps=10, save_strategy="no", report_to=[], seed=seed,
                             use_cpu=not device_is_cuda, disable_tqdm=not progress,
                             dataloader_num_workers=0, max_steps=-1)
    trainer = CountingTrainer(model=model, args=args, train_dataset=ds, data_collator=collator,
                              callbacks=[BudgetCallback()])
    if progress:  # a plain tqdm bar, also in Jupyter (the HTML one does not survive a static site)
        from transformers.trainer_callback import ProgressCallback
        from transformers.utils.notebook import NotebookProgressCallback

        trainer.remove_callback(NotebookProgressCallback)
        if not any(isinstance(cb, ProgressCallback) for cb in trainer.callback_handler.callbacks):
            trainer.add_callback(ProgressCallback)
    trainer.train()
    clock.pause()
    result.train_seconds = clock.seconds
    if not result.curve or result.curve[-1].step != result.steps:  # stopped by the epochs running out
        result.curve.append(Point(clock.seconds, result.steps, result.real_tokens, math.nan, evaluate(model, val)))
    model.eval()
    return model, result


# ---------------------------------------------------------------------------------------------
# The efficient recipe: a plain loop, each change a switch
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Recipe:
    """The switches of the efficient recipe (defaults: all of them on, "auto" = if supported)."""

    packed: bool = True               #: concatenate-and-pack lines into full 128-token blocks
    lr: float = 1e-3                  #: peak learning rate (a small model tolerates a large one)
    warmup_steps: int = 20            #: linear warm-up, then 1/sqrt(step) decay
    schedule: bool = True             #: False: constant ``lr`` (the seed's, in effect)
    batch_size: int | str = "auto"    #: global batch in rows of 128 tokens ("auto": 64 CPU, 256 GPU)
    sparse_head: bool = True          #: the MLM head only at masked positions
    bf16: bool | str = "auto"         #: bf16 autocast
    compile: bool | str = "auto"      #: ``torch.compile`` the encoder
    weight_decay: float = 0.01
    grad_clip: float = 1.0

    @staticmethod
    def seed_like() -> "Recipe":
        """The seed's settings in this loop: padded lines, lr 5e-5 constant, batch 32, full head."""
        return Recipe(packed=False, lr=5e-5, schedule=False, warmup_steps=0, batch_size=32,
                      sparse_head=False, bf16=False, compile=False, weight_decay=0.0)

    def resolved(self, device: torch.device) -> "Recipe":
        """``"auto"`` switches decided for ``device``: bf16 where the hardware computes it
        natively (CUDA with bf16, a CPU with AVX-512-BF16/AMX); compile on CUDA only (on a
        few CPU cores the compile time exceeds what it saves in a short run); batch 64 rows on
        a CPU (8,192 tokens: a step stays under a second), 256 on a GPU (to fill it)."""
        bf16, comp, batch = self.bf16, self.compile, self.batch_size
        if batch == "auto":
            batch = 256 if device.type == "cuda" else 64
        if bf16 == "auto":
            bf16 = (torch.cuda.is_bf16_supported() if device.type == "cuda"
                    else bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()))
        if comp == "auto":
            comp = device.type == "cuda"
        return replace(self, bf16=bool(bf16), compile=bool(comp), batch_size=int(batch))


def ablation_rows(device: torch.device, *, include_compile: bool = True) -> list[tuple[str, Recipe]]:
    """The ablation: cumulative changes from the seed's settings (in this loop) to :class:`Recipe`.

    Returns ``(name, recipe)`` rows; the bf16 row only where the hardware has bf16, the
    ``torch.compile`` row only if ``include_compile``; the last row is ``Recipe()`` resolved.
    """
    seed_like = Recipe.seed_like()
    packed = replace(seed_like, packed=True)
    full = Recipe().resolved(device)
    lr = replace(packed, lr=full.lr, schedule=True, warmup_steps=full.warmup_steps, weight_decay=full.weight_decay)
    batch = replace(lr, batch_size=full.batch_size)
    sparse = replace(batch, sparse_head=True)
    bf16 = replace(sparse, bf16=True)
    rows = [("seed settings, our loop", seed_like), ("+ packed blocks", packed),
            (f"+ lr {full.lr:g}, warm-up, 1/sqrt decay", lr), (f"+ batch {full.batch_size}", batch),
            ("+ MLM head at masked positions only", sparse)]
    bf16_ok = Recipe(bf16="auto").resolved(device).bf16
    if bf16_ok:
        rows.append(("+ bf16 autocast", bf16))
    if include_compile:
        rows.append((f"+ torch.compile{' (forced on)' if not full.compile else ''}", replace(rows[-1][1], compile=True)))
    rows.append(("efficient recipe (Recipe(), auto switches)", full))
    return rows


def lr_at(step: int, recipe: Recipe) -> float:
    """Linear warm-up to ``recipe.lr``, then decay as 1/sqrt(step) (no end step needed, which
    suits training to a *time* budget or a target loss)."""
    if not recipe.schedule:
        return recipe.lr
    w = max(1, recipe.warmup_steps)
    s = step + 1
    return recipe.lr * min(s / w, math.sqrt(w / s))


def _batch_indices(n_rows: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Row indices of global batch ``step``: a seeded permutation per epoch, identical on
    every process (so a DDP run sees exactly the single-process batches)."""
    per_epoch = max(1, n_rows // batch_size)
    epoch, i = divmod(step, per_epoch)
    perm = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return perm[i * batch_size:(i + 1) * batch_size]


def train_efficient(tokenizer: Any, data: Blocks, val: ValidationSet | None, recipe: Recipe = Recipe(), *,
                    budget_seconds: float = math.inf, max_steps: int | None = None,
                    target: float | None = None, stop_at_target: bool = True,
                    eval_every_seconds: float = 10.0,
                    seed: int = 0, name: str = "efficient", progress: bool = True,
                    accelerator: Any = None, model: torch.nn.Module | None = None,
                    log_every: int = 1) -> tuple[torch.nn.Module, RunResult]:
    """Train :func:`build_model` on ``data`` with ``recipe``; stop at ``budget_seconds`` of
    training, after ``max_steps``, or when the validation loss first reaches ``target`` (with
    ``stop_at_target=False`` it only records when that happened and trains on).

    Runs on one device, or under ``torchrun`` (DDP through Accelerate): every process builds
    the same global batch and masks, and takes its share of the rows; the loss is the sum over
    the process's masked tokens divided by the global count, times the number of processes, so
    that DDP's gradient *average* is exactly the single-process gradient.
    Returns ``(model, result)`` (the unwrapped ``BertForMaskedLM``, in eval mode).
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from .training import param_groups

    acc = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    device, world, rank = acc.device, acc.num_processes, acc.process_index
    recipe = recipe.resolved(device)
    if recipe.batch_size % world:
        raise ValueError(f"batch_size {recipe.batch_size} must be divisible by the {world} processes")
    if max_steps is None and not math.isfinite(budget_seconds) and target is None:
        raise ValueError("give budget_seconds, max_steps or target, or the run never ends")
    model = model if model is not None else build_model(seed)
    model.to(device).train()
    objective = MLMObjective(model, sparse=recipe.sparse_head)
    opt = torch.optim.AdamW(param_groups(model, recipe.weight_decay), lr=recipe.lr, betas=(0.9, 0.98), eps=1e-6)
    if recipe.compile:
        model.bert.compile()  # in place: the state dict keeps its names
    ddp_objective, opt = acc.prepare(objective, opt)
    result = RunResult(name, target=target, flops_per_token=flops_per_token(model.config),
                       settings={**asdict(recipe), "processes": world, "device": str(device)})
    clock = Clock(_sync_for(device))
    local = slice(rank * recipe.batch_size // world, (rank + 1) * recipe.batch_size // world)
    gen = torch.Generator().manual_seed(seed + 17)
    special = tokenizer.all_special_ids
    next_eval, running = eval_every_seconds, []
    bar = tqdm(total=max_steps, desc=name, disable=not progress or rank != 0, mininterval=1.0)
    step = 0
    clock.resume()
    while True:
        idx = _batch_indices(len(data), recipe.batch_size, step, seed)
        ids, att = data.input_ids[idx], data.attention_mask[idx]                       # (B, T)
        inputs, labels = mask_tokens(ids, mask_token_id=tokenizer.mask_token_id, vocab_size=len(tokenizer),
                                     special_ids=special, generator=gen)
        n_global = int((labels != IGNORE).sum())
        for g in opt.param_groups:
            g["lr"] = lr_at(step, recipe)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=recipe.bf16):
            loss_sum, _ = ddp_objective(inputs[local].to(device), att[local].to(device), labels[local].to(device))
        loss = loss_sum * world / max(n_global, 1)
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        if recipe.grad_clip:
            acc.clip_grad_norm_(model.parameters(), recipe.grad_clip)
        opt.step()
        step += 1
        result.real_tokens += int(att.sum())
        result.positions += att.numel()
        if log_every and step % log_every == 0:
            total = acc.reduce(loss_sum.detach().float(), reduction="sum") if world > 1 else loss_sum.detach()
            running.append(float(total) / max(n_global, 1))
            bar.set_postfix(loss=f"{running[-1]:.3f}", refresh=False)
        bar.update(1)
        done = (clock.seconds >= budget_seconds) or (max_steps is not None and step >= max_steps)
        if val is not None and (clock.seconds >= next_eval or done):
            clock.pause()
            val_loss = evaluate(model, val) if rank == 0 else math.nan
            if world > 1:  # every process must agree on stopping
                val_loss = float(acc.reduce(torch.tensor(val_loss if rank == 0 else 0.0, device=device), "sum"))
            train_loss = sum(running) / len(running) if running else math.nan
            running.clear()
            result.curve.append(Point(clock.seconds, step, result.real_tokens, train_loss, val_loss))
            next_eval = clock.seconds + eval_every_seconds
            if target is not None and val_loss <= target and result.time_to_target is None:
                result.time_to_target = clock.seconds
                done = done or stop_at_target
            if not done:
                clock.resume()
        if done:
            break
    clock.pause()
    bar.close()
    result.steps, result.train_seconds = step, clock.seconds
    result.settings["losses"] = running if val is None else None
    model.eval()
    return model, result


# ---------------------------------------------------------------------------------------------
# Probes
# ---------------------------------------------------------------------------------------------

def single_token_probes(tokenizer: Any, probes: Sequence[Any]) -> list[Any]:
    """The probes whose answer is one WordPiece (one [MASK] can then stand for it)."""
    return [p for p in probes if len(tokenizer.tokenize(p.answer)) == 1]


def probe_accuracy(fill_mask: Any, probes: Sequence[Any], mask_token: str = "[MASK]") -> float:
    """Fraction of ``probes`` whose answer is ``fill_mask``'s top prediction for the answer slot."""
    if not probes:
        raise ValueError("no probes given")
    texts = [p.masked(mask_token) for p in probes]
    outs = fill_mask(texts, top_k=1)
    hits = sum(o[0]["token_str"].strip().lower() == p.answer.lower() for o, p in zip(outs, probes))
    return hits / len(probes)


# ---------------------------------------------------------------------------------------------
# Command line (also the torchrun entry point)
# ---------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    """``python -m course_utils.mlm`` / ``torchrun --nproc_per_node=N -m course_utils.mlm``."""
    p = argparse.ArgumentParser(description="Train the chapter-5 BERT with one of the two recipes.")
    p.add_argument("--recipe", choices=["efficient", "seed"], default="efficient")
    p.add_argument("--budget-seconds", type=float, default=60.0, help="training seconds (evaluation excluded)")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="global batch (rows of 128 tokens)")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--n-words", type=int, default=200_000, help="offline corpus size (training words)")
    p.add_argument("--no-bf16", action="store_true")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--eval-every-seconds", type=float, default=10.0)
    p.add_argument("--no-eval", action="store_true", help="skip validation (e.g. the DDP check)")
    p.add_argument("--dropout", type=float, default=0.1,
                   help="dropout of the model (0 makes runs with different process counts comparable exactly)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the result (and per-step losses) here")
    p.add_argument("--save", default=None, help="save_pretrained the model into this folder")
    args = p.parse_args(argv)

    from .assets import load_tokenizer
    from .data import load_corpus

    tok = load_tokenizer("bert-base-uncased")
    corpus = load_corpus(n_words=args.n_words, seed=args.seed)
    val = None if args.no_eval else make_validation_set(tok, corpus["validation"])
    if args.recipe == "seed":
        model, res = train_seed_recipe(tok, corpus["train"], val, budget_seconds=args.budget_seconds,
                                       eval_every_seconds=args.eval_every_seconds, seed=args.seed,
                                       output_dir=os.path.join(args.save or "/tmp", "mlm-seed-trainer"),
                                       max_steps=args.max_steps or -1)
        rank = 0
    else:
        from accelerate import Accelerator

        acc = Accelerator(cpu=not torch.cuda.is_available())
        recipe = Recipe()
        overrides = {k: v for k, v in (("batch_size", args.batch_size), ("lr", args.lr)) if v is not None}
        if args.no_bf16:
            overrides["bf16"] = False
        if args.no_compile:
            overrides["compile"] = False
        recipe = replace(recipe, **overrides)
        model, res = train_efficient(tok, packed_blocks(tok, corpus["train"]), val, recipe,
                                     budget_seconds=args.budget_seconds, max_steps=args.max_steps,
                                     eval_every_seconds=args.eval_every_seconds, seed=args.seed,
                                     accelerator=acc, log_every=1,
                                     model=build_model(args.seed, hidden_dropout_prob=args.dropout,
                                                       attention_probs_dropout_prob=args.dropout))
        rank = acc.process_index
    if rank == 0:
        print(f"{res.recipe}: {res.steps} steps in {res.train_seconds:.1f} s, "
              f"{res.tokens_per_second:,.0f} tokens/s, final validation loss {res.final_val_loss:.3f}")
        if args.json:
            with open(args.json, "w") as fh:
                json.dump({**res.to_dict(), "machine": machine_description()}, fh, indent=1)
        if args.save:
            model.save_pretrained(args.save)
            tok.save_pretrained(args.save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
