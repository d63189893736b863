"""The seed MLM recipe versus the efficient one, side by side on the same data and machine.

    python benchmarks/mlm_recipe.py                    # seed gets 300 s of training, then the ablation
    python benchmarks/mlm_recipe.py --quick            # a smoke test (seconds)
    python benchmarks/mlm_recipe.py --no-ablation      # only the two recipes

1. The seed recipe (Trainer, every line padded to 128, lr 5e-5, batch 32) trains for
   ``--budget-seconds`` of training time (evaluation excluded from the clock). Its validation
   loss at the end is the **target**.
2. Each row of the ablation adds one change in the course's own loop and trains until its
   validation loss first reaches the target (or the same budget runs out): time to target,
   tokens/s, MFU. The row "efficient recipe" is :class:`course_utils.mlm.Recipe` as the chapter
   uses it (``"auto"`` switches resolved for this machine).
3. Prints the time-to-target ratio (seed / efficient) and writes everything, with the machine's
   description, to ``--json`` (default ``benchmarks/results/mlm_recipe.json``), which Chapter 5
   reads and quotes.

Same validation set (fixed masks) for every run; same corpus (wikitext-2 online, the course's
generated corpus offline); one process, the threads torch picks.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from course_utils import get_device, seed_everything
from course_utils.assets import load_tokenizer
from course_utils.data import load_corpus
from course_utils.mlm import (Recipe, ablation_rows, make_validation_set, machine_description, measure_waste,
                              packed_blocks, padded_lines, peak_flops, train_efficient,
                              train_seed_recipe)

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "mlm_recipe.json"


def _load() -> list[float] | None:
    """The 1/5/15-minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget-seconds", type=float, default=None,
                   help="training seconds of the seed recipe (default 300; at least 300 on 2 CPU cores "
                        "for it to make visible progress; --quick: 20)")
    p.add_argument("--quick", action="store_true", help="smoke test: 20 s budget, small corpus, no ablation")
    p.add_argument("--no-ablation", action="store_true", help="only the seed and the efficient recipe")
    p.add_argument("--n-words", type=int, default=1_000_000, help="offline corpus size (training words)")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = p.parse_args(argv)
    if args.budget_seconds is None:
        args.budget_seconds = 20.0 if args.quick else 300.0
    if args.quick:
        args.n_words, args.no_ablation = 100_000, True
        if args.json == DEFAULT_JSON:  # a smoke test must not overwrite the real measurement
            args.json = Path(tempfile.gettempdir()) / "mlm_recipe_quick.json"
    if args.budget_seconds <= 0:
        p.error("--budget-seconds must be positive")

    device = get_device()
    load_start = _load()
    seed_everything(0)
    t_start = time.time()
    tok = load_tokenizer("bert-base-uncased")
    corpus = load_corpus(n_words=args.n_words, seed=0)
    val = make_validation_set(tok, corpus["validation"])
    waste = measure_waste(tok, corpus["train"])
    eval_every = max(0.5, args.budget_seconds / 100)
    print(f"Machine: {machine_description()}; device {device}; load average {load_start}")
    print(f"Data: {corpus.source}; {waste.lines:,} training lines; validation: {val.n_texts} texts, "
          f"{val.n_masked:,} masked tokens (fixed)")
    print(f"Seed padding: {waste.padding_fraction:.1%} of positions are padding, "
          f"{waste.empty_fraction:.1%} of lines empty, {waste.truncated_fraction:.2%} of tokens truncated")

    with tempfile.TemporaryDirectory() as out:
        _, seed = train_seed_recipe(tok, corpus["train"], val, budget_seconds=args.budget_seconds,
                                    eval_every_seconds=eval_every, output_dir=out, progress=False)
    target = seed.final_val_loss
    print(f"seed recipe: {seed.steps} steps in {seed.train_seconds:.0f} s, {seed.tokens_per_second:,.0f} tokens/s "
          f"-> validation loss {target:.3f} (the target)")

    padded, packed = padded_lines(tok, corpus["train"]), packed_blocks(tok, corpus["train"])
    rows = [] if args.no_ablation else ablation_rows(device)
    if args.no_ablation:
        rows = [("efficient recipe (Recipe(), auto switches)", Recipe().resolved(device))]
    results = []
    for name, recipe in rows:
        try:
            # The efficient recipe may run up to 3 budgets (it should need a fraction of one);
            # the intermediate ablation rows stop at one budget.
            cap = args.budget_seconds * (3 if name.startswith("efficient recipe") else 1)
            _, r = train_efficient(tok, packed if recipe.packed else padded, val, recipe,
                                   budget_seconds=cap, target=target,
                                   eval_every_seconds=eval_every, name=name, progress=False)
        except Exception as exc:  # e.g. torch.compile without a working compiler: report, go on
            print(f"{name}: failed ({type(exc).__name__}: {str(exc).splitlines()[0][:120]})")
            results.append({"name": name, "error": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        results.append({"name": name, **r.to_dict()})
        ttt = f"{r.time_to_target:.1f} s" if r.time_to_target is not None else f"not reached in {r.train_seconds:.0f} s"
        print(f"{name}: time to target {ttt}, {r.tokens_per_second:,.0f} tokens/s")

    peaks = {b: peak_flops(device, b) for b in (False, True)}
    for row in results:
        if "error" in row:
            continue
        peak, _ = peaks[bool(row["settings"]["bf16"])]
        row["mfu"] = row["tokens_per_second"] * row["flops_per_token"] / peak
    seed_peak, _ = peaks[False]
    seed_mfu = seed.tokens_per_second * seed.flops_per_token / seed_peak
    eff = next(r for r in results if r["name"].startswith("efficient recipe"))
    ratio = (seed.train_seconds / eff["time_to_target"]) if eff.get("time_to_target") else None

    print()
    print(f"{'run':48s} {'time to target':>15s} {'tokens/s':>10s} {'MFU':>7s}")
    print(f"{'seed recipe (Trainer)':48s} {seed.train_seconds:14.1f}s {seed.tokens_per_second:10,.0f} {seed_mfu:7.2%}")
    for row in results:
        if "error" in row:
            print(f"{row['name']:48s} {'failed':>15s}")
            continue
        ttt = f"{row['time_to_target']:.1f}s" if row["time_to_target"] is not None else "> budget"
        print(f"{row['name']:48s} {ttt:>15s} {row['tokens_per_second']:10,.0f} {row['mfu']:7.2%}")
    print()
    if ratio is not None:
        print(f"Time-to-target ratio (seed / efficient): {ratio:.1f}x "
              f"(target validation loss {target:.3f}; tokens/s {seed.tokens_per_second:,.0f} -> "
              f"{eff['tokens_per_second']:,.0f})")
    else:
        print(f"The efficient recipe did not reach the target {target:.3f} within the budget.")

    report = {
        "machine": machine_description(), "device": str(device),
        # Wall-clock timings on a shared machine: the load average says how shared it was.
        "load_average_at_start": load_start, "load_average_at_end": _load(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": " ".join(["python benchmarks/mlm_recipe.py", *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick, "budget_seconds": args.budget_seconds, "corpus": corpus.source,
        "n_words": args.n_words if corpus.generated else None,
        "waste": {"padding_fraction": waste.padding_fraction, "empty_fraction": waste.empty_fraction,
                  "truncated_fraction": waste.truncated_fraction},
        "target": target, "ratio": ratio,
        "peak_flops": {("bf16" if b else "fp32"): {"flops": v, "how": how} for b, (v, how) in peaks.items()},
        "seed": {**seed.to_dict(), "mfu": seed_mfu},
        "rows": results, "wall_seconds": time.time() - t_start,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1, default=lambda o: None if isinstance(o, float) and math.isnan(o) else str(o)))
    print(f"Results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
