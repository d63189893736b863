"""Time to a loss that means the model uses context: the seed MLM recipe against Chapter 5's.

    python benchmarks/mlm_recipe.py                       # seed capped at 60 min, then the ablation
    python benchmarks/mlm_recipe.py --cap-minutes 20      # a shorter cap (the ratio is then a lower bound)
    python benchmarks/mlm_recipe.py --quick               # smoke test (about a minute): tiny caps, 1 repeat
    python benchmarks/mlm_recipe.py --device cuda         # the same table on a GPU

* **Target**: the unigram loss of the training text on Chapter 5's fixed validation set (the same
  texts and masks for every run, softmax over all 30,522 ids), minus 1 nat. A model below it
  predicts masked words from their context, not from word frequencies alone.
* **Seed recipe** (the ``Trainer``, seed config, padding to 128, lr 5e-5, batch 32): trains until
  it reaches the target or ``--cap-minutes`` of training (default 60 on a CPU). If it never gets
  there, its time is only known to exceed the cap, and the ratio below is a lower bound.
* **Ablation**: Chapter 5's loop (:func:`course_utils.mlm.train_mlm`), each row adding one change,
  from the seed's settings to the recipe that trains the zoo's ``bert-course`` (the chapter's
  model). Each row trains until the target or ``--row-cap-seconds``; a row that reaches the target
  is repeated ``--repeats`` times (seeds 0, 1, 2, ...) and reports the median and the range of the
  time to target; a row whose first run does not reach it within the cap is not repeated.
  Tokens/s counts real (non-padding) tokens per training second; MFU divides the useful FLOPs
  per second (:func:`course_utils.mlm.flops_per_token`) by one peak per precision
  (:func:`course_utils.mlm.peak_flops`).
* ``ratio`` = seed time / the efficient recipe's median time to target.

The clock counts training only (evaluation excluded); the thread count is fixed (``--threads``).
Results go to ``--json`` (default ``benchmarks/results/mlm_recipe.json``, which Chapter 5 reads),
with the machine and its load average, which say how quiet the machine was.
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

from course_utils import data, mlm, zoo
from course_utils.assets import load_tokenizer

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "mlm_recipe.json"


@dataclass(frozen=True)
class Row:
    """One setting of Chapter 5's loop (the fields the ablation changes)."""

    layers: int = 2
    dropout: float = 0.1
    block: int = 128
    packed: bool = False
    batch_size: int = 32
    lr: float = 5e-5
    schedule: bool = False          #: False: constant lr (the seed's, in effect); True: warm-up + cosine
    sparse: bool = False            #: the MLM head only at masked positions
    restricted: bool = False        #: softmax over the corpus's ids only
    entity: bool = False            #: the zoo's entity + whole-word masking
    bf16: bool = False


def ablation(device: torch.device) -> list[tuple[str, Row]]:
    """Cumulative rows from the seed's settings (in Chapter 5's loop) to ``bert-course``'s recipe,
    then bf16 autocast where the hardware computes in bf16."""
    s = zoo.spec("bert-course")
    rows = [("seed settings in our loop (padded to 128, lr 5e-5, batch 32)", Row())]

    def add(name: str, **change: Any) -> None:
        rows.append((name, replace(rows[-1][1], **change)))

    add("+ packed 128-token blocks", packed=True)
    add("+ MLM head at masked positions only", sparse=True)
    add("+ softmax over the corpus's token ids only", restricted=True)
    add(f"+ lr {s.lr:g}, warm-up {s.warmup}, cosine decay", lr=s.lr, schedule=True)
    add(f"+ {s.block_size}-token blocks", block=s.block_size)
    add(f"+ {s.n_layer} layers", layers=s.n_layer)
    add("+ no dropout", dropout=0.0)
    add("+ entity and whole-word masking (bert-course's recipe)", entity=True)
    bf16_ok = (torch.cuda.is_bf16_supported() if device.type == "cuda"
               else bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()))
    if bf16_ok:
        add("+ bf16 autocast", bf16=True)
    return rows


EFFICIENT = "+ entity and whole-word masking (bert-course's recipe)"


@dataclass
class Prepared:
    """Everything the runs share: tokenizer, corpus, validation set, data layouts."""

    tok: Any
    corpus: Any
    val: mlm.ValidationSet
    unigram: float
    target: float
    vocab: torch.Tensor
    layouts: dict[str, Any] = field(default_factory=dict)


def prepare(n_words: int) -> Prepared:
    tok = load_tokenizer("bert-base-uncased")
    corpus = data.generate_corpus(n_words, 0)
    val = mlm.make_validation_set(tok, corpus["validation"])
    unigram = mlm.unigram_loss(tok, corpus["train"], val)
    s = zoo.spec("bert-course", corpus_words=n_words)
    b64, words, entity, sents = zoo._bert_blocks(corpus["train"], tok, s)
    packed128 = mlm.packed_blocks(tok, corpus["train"], 128)
    padded = mlm.padded_lines(tok, corpus["train"], 128)
    vocab = torch.unique(torch.cat([packed128.input_ids.flatten(), torch.tensor(tok.all_special_ids)]))
    return Prepared(tok, corpus, val, unigram, unigram - 1.0, vocab,
                    {"padded": padded, "packed128": packed128, "packed64": (b64, words, entity, sents)})


def run_row(p: Prepared, row: Row, *, seed: int, cap_seconds: float, device: torch.device,
            eval_interval: float) -> mlm.RunResult:
    """Chapter 5's loop with ``row``'s settings until the target or ``cap_seconds`` of training."""
    s = zoo.spec("bert-course")
    tok = p.tok
    model = mlm.build_model(seed, num_hidden_layers=row.layers, hidden_dropout_prob=row.dropout,
                            attention_probs_dropout_prob=row.dropout, pad_token_id=tok.pad_token_id).to(device)
    masker, attention = None, None
    if not row.packed:
        blocks, attention = p.layouts["padded"].input_ids, p.layouts["padded"].attention_mask
        real_per_row = float(attention.sum()) / len(attention)
    elif row.block == 128:
        blocks, real_per_row = p.layouts["packed128"].input_ids, 128.0
    else:
        blocks, words, entity, sents = p.layouts["packed64"]
        real_per_row = float(blocks.size(1))
        if row.entity:
            special = torch.tensor(tok.all_special_ids)
            spec = zoo.spec("bert-course")

            def masker(rows: torch.Tensor, gen: torch.Generator):
                x = blocks[rows]
                inputs, chosen = zoo._mask_words(x, words[rows], entity[rows], sents[rows], tok, spec, gen, special)
                return inputs, x.masked_fill(~chosen, mlm.IGNORE)
    result = mlm.RunResult("", target=p.target, settings={"seed": seed})
    last = {"eval_at": -math.inf}

    def callback(step: int, seconds: float) -> bool:
        done = seconds >= cap_seconds
        if seconds - last["eval_at"] < eval_interval and not done:
            return False
        last["eval_at"] = seconds
        loss = mlm.evaluate(model, p.val)
        result.curve.append(mlm.Point(seconds, step, int(step * row.batch_size * real_per_row), loss))
        if loss <= p.target and result.time_to_target is None:
            result.time_to_target = seconds
            return True
        return done

    schedule = dict(warmup=s.warmup, min_lr_ratio=0.1) if row.schedule else dict(warmup=0, min_lr_ratio=1.0)
    losses, seconds = mlm.train_mlm(model, tok, blocks, attention_mask=attention, steps=s.steps if row.schedule else 10**7,
                                    lr=row.lr, batch_size=row.batch_size, sparse=row.sparse,
                                    vocab=p.vocab if row.restricted else None, masker=masker, bf16=row.bf16,
                                    seed=seed, callback=callback, every=1, **schedule)
    if result.time_to_target is None and (not result.curve or result.curve[-1].step != len(losses)):
        result.curve.append(mlm.Point(seconds, len(losses), int(len(losses) * row.batch_size * real_per_row),
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
                           flops_per_token=mlm.flops_per_token(
                               model.config, seq_len=blocks.size(1),
                               predicted_fraction=float((labels != mlm.IGNORE).sum() / real),
                               head_rows=len(p.vocab) if row.restricted else None))
    return result


def _load() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cap-minutes", type=float, default=None,
                   help="training minutes the seed recipe gets to reach the target (default 60 on a CPU, 20 on a GPU)")
    p.add_argument("--row-cap-seconds", type=float, default=None,
                   help="training seconds an ablation row gets to reach the target (default 120 on a CPU, 60 on a GPU)")
    p.add_argument("--repeats", type=int, default=3, help="runs (seeds) of each ablation row that reaches the target")
    p.add_argument("--threads", type=int, default=None, help="torch threads on a CPU (default: all cores)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--no-ablation", action="store_true", help="only the seed and the efficient recipe")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 0.3-minute cap, 30-s rows, 1 repeat, small corpus; writes to a temporary file")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    on_gpu = device.type == "cuda"
    n_words = zoo.spec("bert-course").corpus_words
    if args.quick:
        args.cap_minutes = args.cap_minutes or 0.3
        args.row_cap_seconds = args.row_cap_seconds or 30.0
        args.repeats, n_words = 1, 100_000
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

    prep = prepare(n_words)
    print(f"Machine: {mlm.machine_description()}; device {device}; load average {load_start}")
    print(f"Data: {prep.corpus.source}, {n_words:,} training words; validation: {prep.val.n_texts} texts, "
          f"{prep.val.n_masked:,} masked tokens (fixed), softmax over {len(prep.tok):,} ids")
    print(f"Unigram loss {prep.unigram:.3f} -> target {prep.target:.3f} nats "
          f"(uniform {math.log(len(prep.tok)):.3f})", flush=True)

    # 1. The seed recipe, until the target or the cap.
    with tempfile.TemporaryDirectory() as out:
        _, seed = mlm.train_seed_recipe(prep.tok, prep.corpus["train"], prep.val, budget_seconds=cap,
                                        eval_every_seconds=max(2.0, cap / 60), output_dir=out, target=prep.target)
    seed_time = seed.time_to_target if seed.time_to_target is not None else seed.train_seconds
    lower_bound = seed.time_to_target is None
    print(f"seed recipe: {seed.steps} steps, {seed.tokens_per_second:,.0f} real tokens/s, validation loss "
          f"{seed.final_val_loss:.3f}; " + (f"target reached after {seed.time_to_target:.1f} s" if not lower_bound
                                              else f"target not reached in {seed.train_seconds:.0f} s"), flush=True)

    # 2. The ablation in Chapter 5's loop.
    rows = ablation(device)
    if args.no_ablation:
        rows = [r for r in rows if r[0] == EFFICIENT]
    peaks = {b: mlm.peak_flops(device, b) for b in (False, True)}
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

    eff = next(r for r in results if r["name"] == EFFICIENT)
    eff_time = eff["time_to_target_median"]
    ratio = seed_time / eff_time if eff_time else None
    seed_flops = mlm.flops_per_token(mlm.build_model().config)
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
    else:
        print(f"The efficient recipe did not reach the target {prep.target:.3f} within {row_cap:.0f} s.")

    report = {
        "machine": mlm.machine_description(), "device": str(device), "threads": threads,
        "load_average_at_start": load_start, "load_average_at_end": _load(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["python benchmarks/mlm_recipe.py", *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick, "corpus": prep.corpus.source, "n_words": n_words,
        "validation": {"texts": prep.val.n_texts, "masked_tokens": prep.val.n_masked},
        "uniform_loss": math.log(len(prep.tok)), "unigram_loss": prep.unigram, "target": prep.target,
        "cap_seconds": cap, "row_cap_seconds": row_cap, "repeats": args.repeats,
        "ratio": ratio, "ratio_is_lower_bound": lower_bound, "efficient_row": EFFICIENT,
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
