"""The seed's recipe, Chapter 5's baseline, and how a recipe's run is measured against it.

Chapter 5 sets its loop (:mod:`course_utils.mlm`) beside the recipe the course started from: the
``Trainer`` with the seed's model, lines padded to 128 and the default learning rate. This module
runs that recipe and records what a run measured; ``benchmarks/mlm_recipe.py`` times both recipes
to a target loss with the same records:

* :class:`Point`, :class:`RunResult` — one evaluation, and one run's curve, tokens and time;
* :class:`Clock` — training time with evaluation excluded;
* :func:`flops_per_token` — the useful FLOPs per real token of an MLM configuration (the
  numerator of MFU; the chapter checks its own count against it);
* :func:`train_seed_recipe` — the seed's recipe with the ``Trainer``, stopped after a time budget,
  and :func:`cached_seed_run`, the same cached on disk like the zoo's models;
* :func:`read_recipe_benchmark` — the benchmark's committed result as Chapter 5's table.

The benchmark's own tools (peak FLOP/s, the machine's description, extrapolating a curve) are in
``benchmarks/_kit.py``.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from .mlm import MAX_LENGTH, ValidationSet, build_model, evaluate, make_validation_set
from .runtime import synchronize

if TYPE_CHECKING:
    from transformers import BertForMaskedLM, TrainerControl, TrainerState, TrainingArguments


# ---------------------------------------------------------------------------------------------
# Runs and their clock
# ---------------------------------------------------------------------------------------------

@dataclass
class Point:
    """One evaluation: training seconds so far (evaluation excluded), steps, tokens, loss."""

    seconds: float
    step: int
    tokens: int
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
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        """Real (non-padding) tokens per training second."""
        return self.real_tokens / self.train_seconds if self.train_seconds else 0.0

    @property
    def final_val_loss(self) -> float:
        return self.curve[-1].val_loss if self.curve else math.nan

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["tokens_per_second"] = self.tokens_per_second
        d["final_val_loss"] = self.final_val_loss
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunResult":
        keep = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        keep["curve"] = [Point(**p) for p in d.get("curve", [])]
        return cls(**keep)


class Clock:
    """Training time with evaluation excluded: ``pause()`` / ``resume()`` around evaluations; the
    device is synchronised at each, so queued GPU work is counted where it was started."""

    def __init__(self, device: torch.device | str = "cpu"):
        self._device, self._total = torch.device(device), 0.0
        self._start: float | None = None

    def resume(self) -> None:
        synchronize(self._device)
        self._start = time.perf_counter()

    def pause(self) -> None:
        synchronize(self._device)
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


def flops_per_token(config: Any, seq_len: int = MAX_LENGTH, predicted_fraction: float = 0.15,
                    head_rows: int | None = None) -> float:
    """Useful training FLOPs per real token (forward + backward = 3 x forward, 2 FLOPs per
    multiply-add): the encoder's matrix products and attention (over ``seq_len`` positions) at
    every token, and the MLM head (the C x C transform and the C x ``head_rows`` output
    projection; default all ``vocab_size`` rows) at the ``predicted_fraction`` of tokens that are
    predicted. Padding and the head at unpredicted positions are not useful work; embedding
    look-ups are free.
    """
    C, L, I = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    V = config.vocab_size if head_rows is None else head_rows
    per_layer = 2 * (4 * C * C + 2 * C * I) + 2 * 2 * seq_len * C  # QKV+out, MLP; QK^T and AV
    head = 2 * (C * C + C * V)
    return 3.0 * (L * per_layer + predicted_fraction * head)


# ---------------------------------------------------------------------------------------------
# The seed recipe: the Trainer, padded lines, default learning rate
# ---------------------------------------------------------------------------------------------

def train_seed_recipe(tokenizer: Any, train_texts: Sequence[str], val: ValidationSet, *,
                      budget_seconds: float, eval_every_seconds: float, output_dir: str,
                      seed: int = 0, batch_size: int = 32, max_steps: int = -1,
                      target: float | None = None, progress: bool = False) -> tuple[BertForMaskedLM, RunResult]:
    """The seed's recipe with the ``Trainer``, stopped after ``budget_seconds`` of training (or
    when the validation loss reaches ``target``).

    Faithful to the seed: :data:`SEED_CONFIG`, ``padding="max_length"`` to 128,
    ``DataCollatorForLanguageModeling`` (15 %, 80/10/10), batch 32, ``TrainingArguments``'
    defaults (learning rate 5e-5, linear decay over 3 epochs, AdamW). A callback evaluates on
    ``val`` every ``eval_every_seconds`` of training (not counted). No log lines are printed; with
    ``progress`` a text bar shows the steps. Returns ``(model, result)``.
    """
    from datasets import Dataset, disable_progress_bars, enable_progress_bars
    from datasets.utils import are_progress_bars_disabled
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback, TrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from transformers.utils.notebook import NotebookProgressCallback

    model = build_model(seed)
    device_is_cuda = torch.cuda.is_available()
    bars_were_off = are_progress_bars_disabled()
    disable_progress_bars()  # the tokenising map's bar
    try:
        ds = Dataset.from_dict({"text": list(train_texts)})
        ds = ds.map(lambda b: tokenizer(b["text"], padding="max_length", truncation=True,
                                        max_length=MAX_LENGTH, return_special_tokens_mask=True),
                    batched=True, remove_columns=["text"])
    finally:
        if not bars_were_off:  # restore, don't force: re-enabling warns when the environment disabled them
            enable_progress_bars()
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    result = RunResult("seed recipe (Trainer, padded to 128, lr 5e-5, batch 32)", target=target,
                       settings=dict(engine="Trainer", padding="max_length", lr=5e-5, batch_size=batch_size))
    clock = Clock("cuda" if device_is_cuda else "cpu")
    next_eval = {"at": eval_every_seconds}  # seconds of training time

    def record(step: int, m: BertForMaskedLM) -> float:
        loss = evaluate(m, val)
        result.curve.append(Point(clock.seconds, step, result.real_tokens, loss))
        if target is not None and loss <= target and result.time_to_target is None:
            result.time_to_target = clock.seconds
        return loss

    class BudgetCallback(TrainerCallback):
        def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                          **kwargs: Any) -> None:
            if not clock.running:
                clock.resume()

        def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                        **kwargs: Any) -> None:
            result.steps = state.global_step
            done = clock.seconds >= budget_seconds or (max_steps > 0 and state.global_step >= max_steps)
            if clock.seconds >= next_eval["at"] or done:
                clock.pause()
                record(state.global_step, kwargs["model"])
                next_eval["at"] = clock.seconds + eval_every_seconds
                if done or result.time_to_target is not None:
                    control.should_training_stop = True
                else:
                    clock.resume()

    class QuietProgress(ProgressCallback):
        """The step bar without the log dictionaries it would print."""

        def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                   logs: dict[str, float] | None = None, **kwargs: Any) -> None:
            pass

    class CountingTrainer(Trainer):
        """The stock Trainer; only counts the real tokens and positions each step sees."""

        def training_step(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor | Any],
                          num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
            result.real_tokens += int(inputs["attention_mask"].sum())
            result.positions += inputs["attention_mask"].numel()
            return super().training_step(model, inputs, num_items_in_batch)

    args = TrainingArguments(output_dir=output_dir, per_device_train_batch_size=batch_size,
                             logging_steps=10, save_strategy="no", report_to=[], seed=seed,
                             use_cpu=not device_is_cuda, disable_tqdm=True,
                             dataloader_num_workers=0, max_steps=-1, log_level="error")
    trainer = CountingTrainer(model=model, args=args, train_dataset=ds, data_collator=collator,
                              callbacks=[BudgetCallback()])
    for cb in (PrinterCallback, ProgressCallback, NotebookProgressCallback):
        trainer.remove_callback(cb)
    if progress:
        trainer.add_callback(QuietProgress)
    trainer.train()
    clock.pause()
    result.train_seconds = clock.seconds
    if not result.curve or result.curve[-1].step != result.steps:  # stopped by the epochs running out
        record(result.steps, model)
    model.eval()
    return model, result


def cached_seed_run(tokenizer: Any, train_texts: Sequence[str], val: ValidationSet, *, budget_seconds: float,
                    eval_every_seconds: float, corpus_id: str, seed: int = 0,
                    progress: bool = False) -> tuple[BertForMaskedLM, RunResult]:
    """:func:`train_seed_recipe` for ``budget_seconds``, cached on disk like the zoo's models
    (``cache_dir() / "mlm-seed"``, keyed by the settings, ``corpus_id``, the validation set and the
    code): a second call loads the model and its curve instead of training again."""
    import tempfile

    from transformers import BertForMaskedLM

    from .assets import cache_dir, store_atomically
    from .zoo.cache import code_key, code_that_trains

    # The zoo's key: the settings, and the code that trains and scores the run (what
    # train_seed_recipe and the validation set's maker call, transitively, and the tables they read,
    # SEED_CONFIG included).
    key = code_key([round(budget_seconds, 1), round(eval_every_seconds, 2), corpus_id, seed,
                    val.n_texts, val.n_masked, len(train_texts)],
                   code_that_trains([train_seed_recipe, make_validation_set]))

    def train(tmp: Path) -> None:
        with tempfile.TemporaryDirectory() as out, torch.enable_grad():
            model, run = train_seed_recipe(tokenizer, train_texts, val, budget_seconds=budget_seconds,
                                           eval_every_seconds=eval_every_seconds, output_dir=out,
                                           seed=seed, progress=progress)
        model.save_pretrained(str(tmp))
        (tmp / "run.json").write_text(json.dumps(run.to_dict(), indent=1))  # written last

    def unfinished(folder: Path) -> str | None:
        return None if (folder / "run.json").is_file() else "run.json is missing"

    final = store_atomically(cache_dir() / "mlm-seed" / f"seed-recipe-{key}", train, problem=unfinished)
    model = BertForMaskedLM.from_pretrained(str(final)).eval()
    return model, RunResult.from_dict(json.loads((final / "run.json").read_text()))


# ---------------------------------------------------------------------------------------------
# The benchmark's result, as Chapter 5 shows it
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RecipeBenchmark:
    """What ``benchmarks/mlm_recipe.py`` measured, ready to show (Chapter 5 reads it)."""

    header: list[str]          #: where and how it was measured: machine, load, target, caps, peaks
    table: Any                 #: a pandas DataFrame: time to target, runs, tokens/s, MFU per recipe
    ratio: str                 #: "at least 48", "52" or "n/a"
    where: str                 #: machine and date
    did_not_help: list[str]    #: additions not faster than the base (cumulative rows: than the row before)


def read_recipe_benchmark(path: str | Path) -> RecipeBenchmark | None:
    """Read ``benchmarks/results/mlm_recipe.json``; ``None`` if there is no committed run."""
    import pandas as pd

    path = Path(path)
    bench = json.loads(path.read_text()) if path.exists() else {}
    if not bench.get("rows") or "ratio_is_lower_bound" not in bench:
        return None
    seed = bench["seed"]
    seed_time = (f"{seed['time_to_target']:.0f}" if seed["time_to_target"]
                 else f"> {seed['train_seconds']:.0f} (loss {seed['final_val_loss']:.2f})")
    rows = [{"change": "seed recipe (Trainer)", "time to target (s)": seed_time, "runs": 1,
             "real tokens/s": f"{seed['tokens_per_second']:,.0f}", "MFU": f"{seed['mfu']:.2%}"}]
    for r in bench["rows"]:
        if r["time_to_target_median"] is not None:
            ttt = f"{r['time_to_target_median']:.1f} [{r['time_to_target_min']:.1f}-{r['time_to_target_max']:.1f}]"
        else:
            ttt = f"> {bench['row_cap_seconds']:.0f} (loss {r['loss_at_stop']:.2f})"
        rows.append({"change": r["name"], "time to target (s)": ttt, "runs": r["repeats"],
                     "real tokens/s": f"{r['tokens_per_second']:,.0f}", "MFU": f"{r['mfu']:.2%}"})
    header = [
        f"benchmarks/mlm_recipe.py, {bench['date_utc']}, {bench['machine']}",
        f"load average (1, 5, 15 min) at start {bench['load_average_at_start']}, at end {bench['load_average_at_end']}"
        + ("  [a --quick smoke test, not a measurement]" if bench.get("quick") else ""),
        f"target {bench['target']:.2f} nats (unigram {bench['unigram_loss']:.2f} - "
        f"{bench.get('target_nats_below_unigram', 1.0):g}); seed cap "
        f"{bench['cap_seconds'] / 60:.0f} min, row cap {bench['row_cap_seconds']:.0f} s",
        *([f"estimated ratio (the seed's curve extrapolated to the target; an estimate): "
           f"{bench['ratio_estimate']:,.0f}, 90 % interval {bench['ratio_estimate_interval'][0]:,.0f}-"
           f"{bench['ratio_estimate_interval'][1]:,.0f}"]
          if bench.get("ratio_estimate") and bench.get("ratio_estimate_interval") else []),
        *(f"MFU peak, {prec}: {peak['flops'] / 1e9:,.0f} GFLOP/s ({peak['how']})"
          for prec, peak in bench["peak_flops"].items()),
    ]
    slower: list[str] = []
    if "base_row" in bench:
        # Single changes from a base: an addition ("+ ...") "did not help" where it is not faster
        # than the base's fastest run (or never reached the target).
        base = next(r for r in bench["rows"] if r["name"] == bench["base_row"])
        for r in bench["rows"]:
            t = r["time_to_target_median"]
            if r["name"].startswith("+") and base["time_to_target_min"] is not None and (
                    t is None or t >= base["time_to_target_min"]):
                slower.append(r["name"])
    else:
        # Cumulative rows (the generated corpus's run): a row "did not help" where the row before
        # it reached the target and it is slower (or never got there).
        before = None
        for r in bench["rows"]:
            t = r["time_to_target_median"]
            if before is not None and (t is None or t > before["time_to_target_max"]):
                slower.append(r["name"])
            before = r if t is not None else None
    ratio = bench["ratio"]
    ratio_text = ("at least " if bench["ratio_is_lower_bound"] else "") + f"{ratio:,.0f}" if ratio else "n/a"
    return RecipeBenchmark(header, pd.DataFrame(rows).set_index("change"), ratio_text,
                           f"{bench['machine']}, {bench['date_utc']}", slower)

