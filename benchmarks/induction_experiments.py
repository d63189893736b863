"""Does gpt2-course grow an induction head if its in-context data change? (issue #20)

Trains ``gpt2-course``'s template recipe (``zoo.TEMPLATES``: the generated corpus plus in-context
documents, what ``gpt2-course`` trained on until issue 30 moved it to real prose) with a changed
mix of in-context documents (not saved to the zoo) and
prints, during training and at the end, the repeated-random-tokens test of Chapter 4: the loss on
the first and the second copy of 25 random tokens and the best head's prefix-matching score (0.03
is what a head that attends evenly gets; an induction head scores over 0.5), then the held-out
few-shot accuracy (0 and 4 shots, 240 prompts) and the held-out facts. One JSON line per run is
appended to ``benchmarks/results/induction_experiments.jsonl``.

    python benchmarks/induction_experiments.py base                       # the template recipe
    python benchmarks/induction_experiments.py more-repeats rep=0.5 rule=0.5 market=0 frac=1.0 steps=1500

keys: steps, frac (incontext_fraction), rule / rep / market (weights of the three document kinds),
seqlo / seqhi (length of the repeated sequence), gaphi (longest gap), times (copies of it),
n_layer, lr, warmup, eval (steps between the scores during training). One torch thread, so two
runs fit side by side on two cores.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

try:
    import course_utils  # noqa: F401
except ImportError:  # run from a checkout where the package is not installed: use its src/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _records import append_record  # benchmarks/: this script's own folder

from course_utils import data, induction, zoo
from course_utils import training as course_training
from course_utils.assets import load_tokenizer

RESULTS = Path(__file__).resolve().parent / "results" / "induction_experiments.jsonl"
R = 25  # tokens in the random half, as in Chapter 4


def main(argv: list[str]) -> dict:
    if not argv:
        sys.exit(__doc__)
    name, kv = argv[0], dict(a.split("=", 1) for a in argv[1:])

    def arg(key, default):
        return type(default)(kv.get(key, default))

    torch.set_num_threads(1)
    seqlo, seqhi, gaphi, times = arg("seqlo", 8), arg("seqhi", 30), arg("gaphi", 10), arg("times", 2)

    def repeat_document(rng):  # data._repeat_document, with its lengths and number of copies as settings
        seq = [rng.choice(data._RANDOM_TOKENS) for _ in range(rng.randint(seqlo, seqhi))]
        out = list(seq)
        for _ in range(times - 1):
            out += [rng.choice(data._RANDOM_TOKENS) for _ in range(rng.randint(0, gaphi))] + seq
        return " ".join(out)

    data._INCONTEXT[:] = [(data._rule_document, arg("rule", 0.6)), (repeat_document, arg("rep", 0.25)),
                          (data._market_sentence, arg("market", 0.15))]
    recipe = zoo.spec("gpt2-course", **zoo.TEMPLATES)  # the template corpus, asked for explicitly
    over = {**zoo.TEMPLATES, "steps": arg("steps", recipe.steps),
            "incontext_fraction": arg("frac", recipe.incontext_fraction)}
    for key in ("n_layer", "warmup"):
        if key in kv:
            over[key] = int(kv[key])
    if "lr" in kv:
        over["lr"] = float(kv["lr"])
    s = zoo.spec("gpt2-course", **over)
    tok = load_tokenizer("gpt2")
    ids = induction.repeated_tokens(induction.token_pool(tok), 32, R, bos_id=tok.eos_token_id)

    def scores(model) -> tuple[float, float, torch.Tensor]:
        was = model.training
        model.eval()
        losses = induction.token_losses(model, ids)
        prefix = induction.prefix_matching_scores(induction.attention_maps(model, ids), R)
        model.train(was)
        return float(losses[:, 1:R].mean()), float(losses[:, R + 1:].mean()), prefix

    log, every, train = [], arg("eval", 150), course_training.train

    def train_with_scores(model, loss_fn, **kw):  # the recipe's loop, scored every `every` steps
        def scored(step):
            if step and step % every == 0:
                first, second, prefix = scores(model)  # unused ids not yet pinned: losses over all 50,257
                log.append([step, round(first, 2), round(second, 2), round(float(prefix.max()), 3)])
                print(name, "step", *log[-1], flush=True)
            return loss_fn(step)
        return train(model, scored, **kw)

    course_training.train = train_with_scores
    t0 = time.time()
    out = zoo.recipe_for(s).fit("gpt2-course", s, tok, torch.device("cpu"), progress=False)
    wall = time.time() - t0
    model = out.model.eval()
    first, second, prefix = scores(model)

    def fewshot(k: int, n: int = 240) -> float:
        prompts = data.fewshot_prompts(n, k, prefix=tok.bos_token)
        return sum(zoo.causal_probe_correct(model, tok, prompts)) / n

    res = {"name": name, "settings": kv, "train_seconds_1_thread": round(wall), "val_loss": round(out.val_loss, 3),
           "first_copy": round(first, 2), "second_copy": round(second, 2), "best_prefix": round(float(prefix.max()), 3),
           "best_head": list(divmod(int(prefix.argmax()), prefix.size(1))), "fewshot_0": round(fewshot(0), 3),
           "fewshot_4": round(fewshot(4), 3),
           "facts": round(zoo.causal_probe_accuracy(model, tok, data.heldout_probes()), 3), "during": log}
    print(json.dumps(res), flush=True)
    return append_record(RESULTS, res)


if __name__ == "__main__":
    main(sys.argv[1:])
