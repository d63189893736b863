"""Time to a loss that means the model uses context, on real prose: the seed MLM recipe against Chapter 5's.

    python benchmarks/mlm_recipe.py                       # seed capped at 60 min, then the ablation
    python benchmarks/mlm_recipe.py --cap-minutes 20      # a shorter cap (the ratio is then a lower bound)
    python benchmarks/mlm_recipe.py --quick               # smoke test: a tenth of the text, tiny caps, 1 seed
    python benchmarks/mlm_recipe.py --device cuda         # the same table on a GPU

* **Data**: real public-domain prose (:func:`course_utils.corpus.load_books`: 17 Gutenberg books and
  233 State of the Union addresses, split by document), the text the zoo's ``bert-course`` learns.
* **Target**: the unigram loss of the training text on Chapter 5's fixed validation set
  (:func:`course_utils.mlm.prose_validation_set`: the same texts and masks for every run, softmax
  over all 30,522 ids), minus 0.5 nat. A model below it predicts masked words from their context,
  not from word frequencies alone.
* **Seed recipe** (the ``Trainer``, seed config, padding to 128, lr 5e-5, batch 32): trains until
  it reaches the target or ``--cap-minutes`` of training (default 60 on a CPU). If it never gets
  there, its time is only known to exceed the cap: ``ratio`` is then a lower bound, and
  ``ratio_estimate`` extrapolates the seed's curve to the target
  (:func:`_kit.extrapolate_time_to_target`, a log-time line with a 90 % interval,
  ``ratio_estimate_interval``): an estimate, labelled so.
* **Ablation**: Chapter 5's loop (:func:`course_utils.mlm.train_mlm`). The base row is the recipe
  that trains ``bert-course``; every other row is one change from that base (one thing undone, or
  one thing added), so each change's own effect shows. Each row trains until the target or
  ``--row-cap-seconds``; a row that reaches the target runs ``--repeats`` times (seeds 0, 1, 2,
  ...; at least 3 for a measurement) and reports the median and the range; a row whose first run
  does not reach it within the cap is not repeated. Tokens/s counts real (non-padding) tokens per
  training second; MFU divides the useful FLOPs per second
  (:func:`course_utils.seed_recipe.flops_per_token`) by one peak per precision (:func:`_kit.peak_flops`).
* ``ratio`` = seed time / the base row's median time to target.

The clock counts training only (evaluation excluded); the thread count is fixed (``--threads``).
Results go to ``--json`` (default ``benchmarks/results/mlm_recipe_prose.json``, which Chapter 5
reads), with the machine and its load average, which say how quiet the machine was.
(``benchmarks/results/mlm_recipe.json`` is the earlier run on the course's generated corpus.)
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from _kit import extrapolate_time_to_target, machine_description, peak_flops  # benchmarks/: this script's own folder

from course_utils import corpus, mlm, zoo
from course_utils.assets import load_tokenizer
from course_utils.seed_recipe import Point, RunResult, flops_per_token, train_seed_recipe

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "mlm_recipe_prose.json"
NATS_BELOW_UNIGRAM = 0.5
BASE = "Chapter 5's recipe (bert-course)"


@dataclass(frozen=True)
class Row:
    """One setting of Chapter 5's loop (the fields the ablation changes)."""

    layers: int = 2
    dropout: float = 0.0
    packed: bool = True             #: False: the seed's lines, padded to 128
    batch_size: int = 32
    lr: float = 2e-3
    schedule: bool = True           #: False: constant lr; True: warm-up + cosine
    sparse: bool = True             #: the MLM head only at masked positions
    restricted: bool = False        #: softmax over the training text's ids only (the others pinned at -30)
    whole_word: bool = False        #: whole-word masking (all pieces of a chosen word)
    bf16: bool = False


def base_row() -> Row:
    s = zoo.spec("bert-course")
    return Row(layers=s.n_layer, lr=s.lr, batch_size=s.batch_size)


def ablation(device: torch.device) -> list[tuple[str, Row]]:
    """The base (``bert-course``'s recipe), then single changes from it."""
    base = base_row()
    rows = [(BASE, base)]

    def one(name: str, **change: Any) -> None:
        rows.append((name, replace(base, **change)))

    one("- packing (lines padded to 128, as the seed)", packed=False)
    one("- sparse head (head at every position)", sparse=False)
    one("- warm-up and cosine (constant lr)", schedule=False)
    one("- lr 2e-3 (the seed's 5e-5)", lr=5e-5)
    one("+ dropout 0.1 (the seed's)", dropout=0.1)
    one("+ softmax over the training text's ids only", restricted=True)
    one("+ whole-word masking", whole_word=True)
    one("+ 4 layers", layers=4)
    bf16_ok = (torch.cuda.is_bf16_supported() if device.type == "cuda"
               else bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()))
    if bf16_ok:
        one("+ bf16 autocast", bf16=True)
    return rows


@dataclass
class Prepared:
    """Everything the runs share: tokenizer, text, validation set, data layouts."""

    tok: Any
    train: list[str]
    source: str
    val: mlm.ValidationSet
    unigram: float
    target: float
    vocab: torch.Tensor
    layouts: dict[str, Any] = field(default_factory=dict)


def prepare(quick: bool) -> Prepared:
    tok = load_tokenizer("bert-base-uncased")
    books = corpus.load_books()
    train = corpus.spread(books["train"], 3000) if quick else books["train"]
    val = mlm.prose_validation_set(tok, books)
    unigram = mlm.unigram_loss(tok, train, val)
    packed = mlm.packed_blocks(tok, train, 128)
    padded = mlm.padded_lines(tok, train, 128)
    vocab = torch.unique(torch.cat([packed.input_ids.flatten(), torch.tensor(tok.all_special_ids)]))
    # Whole-word masking: where a token continues the word before it ("##" pieces).
    pieces = torch.tensor([t.startswith("##") for t in tok.convert_ids_to_tokens(list(range(len(tok))))])
    source = books.source + (" (--quick: 3,000 training passages)" if quick else "")
    return Prepared(tok, list(train), source, val, unigram, unigram - NATS_BELOW_UNIGRAM, vocab,
                    {"padded": padded, "packed": packed, "continues": pieces[packed.input_ids]})


def whole_word_masker(blocks: torch.Tensor, continues: torch.Tensor, tok: Any, p: float = 0.15):
    """BERT's masking with one draw per word: a word's pieces are chosen (and replaced 80/10/10)
    together. ``continues``: (N, T), True where a token continues the word before it."""
    special = torch.tensor(tok.all_special_ids)

    def masker(rows: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        x, cont = blocks[rows], continues[rows]                                    # (B, T)
        B, T = x.shape
        pos = torch.arange(T).expand(B, T)
        first = torch.where(cont, torch.zeros_like(pos), pos).cummax(1).values    # (B, T): the word's 1st piece
        u = torch.rand(x.shape, generator=gen).gather(1, first)                   # one draw per word
        selected = (u < p) & ~torch.isin(x, special)
        inputs = mlm.replace_selected(x, selected, u, mask_id=tok.mask_token_id,
                                      random_ids=torch.randint(len(tok), x.shape, generator=gen),
                                      mask_below=0.8 * p, random_below=0.9 * p)
        return inputs, x.masked_fill(~selected, mlm.IGNORE)

    return masker


def run_row(p: Prepared, row: Row, *, seed: int, cap_seconds: float, device: torch.device,
            eval_interval: float) -> RunResult:
    """Chapter 5's loop with ``row``'s settings until the target or ``cap_seconds`` of training."""
    s = zoo.spec("bert-course")
    tok = p.tok
    model = mlm.build_model(seed, num_hidden_layers=row.layers, hidden_dropout_prob=row.dropout,
                            attention_probs_dropout_prob=row.dropout, pad_token_id=tok.pad_token_id).to(device)
    masker, attention = None, None
    if not row.packed:
        blocks, attention = p.layouts["padded"].input_ids, p.layouts["padded"].attention_mask
        real_per_row = float(attention.sum()) / len(attention)
    else:
        blocks, real_per_row = p.layouts["packed"].input_ids, 128.0
        if row.whole_word:
            masker = whole_word_masker(blocks, p.layouts["continues"], tok)
    result = RunResult("", target=p.target, settings={"seed": seed})
    last = {"eval_at": -math.inf}

    def callback(step: int, seconds: float) -> bool:
        done = seconds >= cap_seconds
        if seconds - last["eval_at"] < eval_interval and not done:
            return False
        last["eval_at"] = seconds
        loss = mlm.evaluate(model, p.val)
        result.curve.append(Point(seconds, step, int(step * row.batch_size * real_per_row), loss))
        if loss <= p.target and result.time_to_target is None:
            result.time_to_target = seconds
            return True
        return done

    schedule = dict(warmup=s.warmup, min_lr_ratio=0.1) if row.schedule else dict(warmup=0, min_lr_ratio=1.0)
    losses, seconds = mlm.train_mlm(model, tok, blocks, attention_mask=attention,
                                    steps=s.steps if row.schedule else 10**7, lr=row.lr,
                                    batch_size=row.batch_size, sparse=row.sparse,
                                    vocab=p.vocab if row.restricted else None, masker=masker, bf16=row.bf16,
                                    seed=seed, callback=callback, every=1, **schedule)
    if result.time_to_target is None and (not result.curve or result.curve[-1].step != len(losses)):
        result.curve.append(Point(seconds, len(losses), int(len(losses) * row.batch_size * real_per_row),
                                  mlm.evaluate(model, p.val)))  # the schedule ended before the cap
    result.steps, result.train_seconds = len(losses), seconds
    result.real_tokens = int(len(losses) * row.batch_size * real_per_row)
    result.positions = len(losses) * row.batch_size * blocks.size(1)
    # Fraction of tokens predicted, measured on the masking this row uses (for the FLOPs count).
    gen = torch.Generator().manual_seed(123)
    rows_ = torch.randint(len(blocks), (256,), generator=gen)
    if masker is not None:
        _, labels = masker(rows_, gen)
    else:
        _, labels = mlm.mask_tokens(blocks[rows_], mask_id=tok.mask_token_id, vocab_size=len(tok),
                                    special_ids=tok.all_special_ids, generator=gen)
    real = attention[rows_].sum() if attention is not None else labels.numel()
    result.settings.update(predicted_fraction=float((labels != mlm.IGNORE).sum() / real),
                           flops_per_token=flops_per_token(
                               model.config, seq_len=blocks.size(1),
                               predicted_fraction=float((labels != mlm.IGNORE).sum() / real),
                               head_rows=len(p.vocab) if row.restricted else None))
    return result


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


# Complexity allowed (C901): the benchmark read top to bottom (arguments, the seed recipe, the ablation rows,
# the ratio and its estimate, the table, the report), each step's defaults and guards where they apply.
def main(argv: list[str] | None = None) -> int:  # noqa: C901
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cap-minutes", type=float, default=None,
                   help="training minutes the seed recipe gets to reach the target (default 60 on a CPU, 20 on a GPU)")
    p.add_argument("--row-cap-seconds", type=float, default=None,
                   help="training seconds an ablation row gets to reach the target (default 120 on a CPU, 60 on a GPU)")
    p.add_argument("--repeats", type=int, default=3, help="runs (seeds) of each ablation row that reaches the target")
    p.add_argument("--threads", type=int, default=None, help="torch threads on a CPU (default: all cores)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--no-ablation", action="store_true", help="only the seed and the base row (Chapter 5's recipe)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 0.3-minute cap, 30-s rows, 1 repeat, a tenth of the text; "
                        "writes to a temporary file")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_gpu = device.type == "cuda"
    if args.quick:
        args.cap_minutes = args.cap_minutes or 0.3
        args.row_cap_seconds = args.row_cap_seconds or 30.0
        args.repeats = 1
        if args.json == DEFAULT_JSON:  # a smoke test must not overwrite the real measurement
            args.json = Path(tempfile.gettempdir()) / "mlm_recipe_quick.json"
    cap_minutes = args.cap_minutes if args.cap_minutes is not None else (20.0 if on_gpu else 60.0)
    row_cap = args.row_cap_seconds if args.row_cap_seconds is not None else (60.0 if on_gpu else 120.0)
    if cap_minutes <= 0 or row_cap <= 0 or args.repeats < 1:
        p.error("--cap-minutes, --row-cap-seconds and --repeats must be positive")
    threads = args.threads or os.cpu_count() or 1
    torch.set_num_threads(threads)
    cap = cap_minutes * 60.0
    t_start, load_start = time.time(), _load()

    prep = prepare(args.quick)
    n_words = sum(len(t.split()) for t in prep.train)
    print(f"Machine: {machine_description()}; device {device}; load average {load_start}")
    print(f"Data: {prep.source}, {n_words:,} training words; validation: {prep.val.n_texts} texts, "
          f"{prep.val.n_masked:,} masked tokens (fixed), softmax over {len(prep.tok):,} ids")
    print(f"Unigram loss {prep.unigram:.3f} -> target {prep.target:.3f} nats "
          f"(uniform {math.log(len(prep.tok)):.3f})", flush=True)

    # 1. The seed recipe, until the target or the cap.
    with tempfile.TemporaryDirectory() as out:
        _, seed = train_seed_recipe(prep.tok, prep.train, prep.val, budget_seconds=cap,
                                    eval_every_seconds=max(2.0, cap / 60), output_dir=out, target=prep.target)
    seed_time = seed.time_to_target if seed.time_to_target is not None else seed.train_seconds
    lower_bound = seed.time_to_target is None
    print(f"seed recipe: {seed.steps} steps, {seed.tokens_per_second:,.0f} real tokens/s, validation loss "
          f"{seed.final_val_loss:.3f}; " + (f"target reached after {seed.time_to_target:.1f} s" if not lower_bound
                                              else f"target not reached in {seed.train_seconds:.0f} s"), flush=True)

    # 2. The ablation in Chapter 5's loop.
    rows = ablation(device)
    if args.no_ablation:
        rows = [r for r in rows if r[0] == BASE]
    peaks = {b: peak_flops(device, b) for b in (False, True)}
    results = []
    for name, row in rows:
        runs = []
        for rep in range(args.repeats):
            r = run_row(prep, row, seed=rep, cap_seconds=row_cap, device=device,
                        eval_interval=max(1.0, row_cap / 60))
            runs.append(r)
            if r.time_to_target is None:
                break  # not reached within the cap: another seed would only say the same
        reached = [r.time_to_target for r in runs if r.time_to_target is not None]
        tps = statistics.median(r.tokens_per_second for r in runs)
        peak, _ = peaks[row.bf16]
        entry = {"name": name, "settings": row.__dict__, "runs": [r.to_dict() for r in runs],
                 "reached": len(reached), "repeats": len(runs),
                 "time_to_target_median": statistics.median(reached) if len(reached) == len(runs) else None,
                 "time_to_target_min": min(reached) if reached else None,
                 "time_to_target_max": max(reached) if reached else None,
                 "loss_at_stop": statistics.median(r.final_val_loss for r in runs),
                 "tokens_per_second": tps, "flops_per_token": runs[0].settings["flops_per_token"],
                 "mfu": tps * runs[0].settings["flops_per_token"] / peak, "load_average": _load()}
        results.append(entry)
        if entry["time_to_target_median"] is not None:
            ttt = (f"{entry['time_to_target_median']:.1f} s (range {entry['time_to_target_min']:.1f}-"
                   f"{entry['time_to_target_max']:.1f}, {len(runs)} runs)")
        else:
            ttt = f"> {row_cap:.0f} s (loss {entry['loss_at_stop']:.2f} at the cap)"
        print(f"{name}: time to target {ttt}, {tps:,.0f} tokens/s, MFU {entry['mfu']:.2%}", flush=True)

    eff = next(r for r in results if r["name"] == BASE)
    eff_time = eff["time_to_target_median"]
    ratio = seed_time / eff_time if eff_time else None
    # Where the seed stopped above the target: an estimate of its time, from its own curve.
    estimate = interval = None
    if lower_bound and eff_time and len(seed.curve) >= 3:
        fit = extrapolate_time_to_target([pt.seconds for pt in seed.curve],
                                         [pt.val_loss for pt in seed.curve], prep.target)
        if fit is not None:
            seed_estimate, (low, high) = fit
            estimate = seed_estimate / eff_time
            interval = [low / eff["time_to_target_max"], high / eff["time_to_target_min"]]
    elif not lower_bound and ratio is not None:
        estimate, interval = ratio, [seed_time / eff["time_to_target_max"], seed_time / eff["time_to_target_min"]]
    seed_flops = flops_per_token(mlm.build_model().config)
    print()
    print(f"{'run':58s} {'time to target':>22s} {'tokens/s':>10s} {'MFU':>7s}")
    seed_ttt = f"{seed.time_to_target:.1f} s" if not lower_bound else f"> {seed.train_seconds:.0f} s"
    print(f"{'seed recipe (Trainer)':58s} {seed_ttt:>22s} {seed.tokens_per_second:10,.0f} "
          f"{seed.tokens_per_second * seed_flops / peaks[False][0]:7.2%}")
    for r in results:
        ttt = (f"{r['time_to_target_median']:.1f} s [{r['time_to_target_min']:.1f}, {r['time_to_target_max']:.1f}]"
               if r["time_to_target_median"] is not None else f"> {row_cap:.0f} s")
        print(f"{r['name'][:58]:58s} {ttt:>22s} {r['tokens_per_second']:10,.0f} {r['mfu']:7.2%}")
    print()
    for b, (v, how) in peaks.items():
        print(f"MFU peak ({'bf16' if b else 'fp32'}): {v / 1e12:.3f} TFLOP/s, {how}")
    if ratio is not None:
        print(f"Time-to-target ratio (seed / efficient): {'at least ' if lower_bound else ''}{ratio:.0f}x "
              f"(target {prep.target:.3f} nats; seed {seed_ttt}, efficient median {eff_time:.1f} s)")
        if lower_bound and estimate is not None and interval is not None:
            print(f"Estimated ratio, extrapolating the seed's curve to the target (an estimate, not a "
                  f"measurement): {estimate:.0f}x, 90 % interval {interval[0]:.0f}-{interval[1]:.0f}x")
    else:
        print(f"The efficient recipe did not reach the target {prep.target:.3f} within {row_cap:.0f} s.")

    report = {
        "machine": machine_description(), "device": str(device), "threads": threads,
        "load_average_at_start": load_start, "load_average_at_end": _load(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["python benchmarks/mlm_recipe.py", *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick, "corpus": prep.source, "n_words": n_words,
        "validation": {"texts": prep.val.n_texts, "masked_tokens": prep.val.n_masked},
        "uniform_loss": math.log(len(prep.tok)), "unigram_loss": prep.unigram, "target": prep.target,
        "target_nats_below_unigram": NATS_BELOW_UNIGRAM, "base_row": BASE,
        "cap_seconds": cap, "row_cap_seconds": row_cap, "repeats": args.repeats,
        "ratio": ratio, "ratio_is_lower_bound": lower_bound, "efficient_row": BASE,
        "ratio_estimate": estimate, "ratio_estimate_interval": interval,
        "ratio_estimate_note": "seed time extrapolated to the target: a log-time line fitted to the last "
                               "points of its curve (_kit.extrapolate_time_to_target), 90 % interval",
        "peak_flops": {("bf16" if b else "fp32"): {"flops": v, "how": how} for b, (v, how) in peaks.items()},
        "seed": {**seed.to_dict(), "flops_per_token": seed_flops,
                 "mfu": seed.tokens_per_second * seed_flops / peaks[False][0]},
        "rows": results, "wall_seconds": time.time() - t_start,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(_clean(report), indent=1, default=str))
    print(f"Results written to {args.json}")
    return 0


def _clean(obj: Any) -> Any:
    """NaN/inf -> None, so that the JSON is strict."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


if __name__ == "__main__":
    sys.exit(main())
