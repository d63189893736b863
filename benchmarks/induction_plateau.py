"""How long does a small GPT-2 take to grow an induction head on repeated random tokens? (issue #20)

``benchmarks/induction_experiments.py`` changes the in-context data of ``gpt2-course``'s template
recipe (``zoo.TEMPLATES``) and finds no
induction head at 900-1500 steps. This script asks the simpler question underneath: with *only*
repeated random sequences to learn from (a random sequence of 8 to 30 ids from Chapter 4's token
pool, a random gap of 0 to 10, the sequence again; rows of 64 tokens), when does a
``GPT2LMHeadModel`` of the zoo's width learn to predict the second copy, and does the head that
does it attend the induction way?

Every 100 steps it prints Chapter 4's repeated-random-tokens test (32 sequences of 25 distinct
ids, twice): the loss on the first and on the second copy over the pool (uniform: ln 271 = 5.60)
and the best head's prefix-matching score (an even spread scores ~0.03, an induction head > 0.5).
One JSON line per run is appended to ``benchmarks/results/induction_plateau.jsonl``.

    python benchmarks/induction_plateau.py lr3e-4 L=2 lr=3e-4 steps=2100

keys: L (layers, 4), d (width, 128), lr (peak, after 100 warm-up steps; constant after), steps,
B (rows per batch, 32), np (how many ids of the pool the sequences use), distinct=1 (no repeated
id inside a sequence), fixed=N (every sequence N ids long, no gap: copying from a fixed offset,
the positional shortcut), alt=F (a fraction F of the text is an alternation a b a b ...),
sin=S (initialise the position embeddings as sinusoids times S). One torch thread, so two runs
fit side by side on two cores.
"""
from __future__ import annotations

import math
import random
import sys
import time
from pathlib import Path

import torch

try:
    import course_utils  # noqa: F401
except ImportError:  # run from a checkout where the package is not installed: use its src/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _records import append_record  # benchmarks/: this script's own folder

from course_utils import induction
from course_utils.assets import load_tokenizer

RESULTS = Path(__file__).resolve().parent / "results" / "induction_plateau.jsonl"
R, T = 25, 64  # the test's repeated half (as in Chapter 4); training rows


def main(argv: list[str]) -> dict:
    if not argv:
        sys.exit(__doc__)
    from transformers import GPT2Config, GPT2LMHeadModel

    name, kv = argv[0], dict(a.split("=", 1) for a in argv[1:])
    n_layer, d, B = int(kv.get("L", 4)), int(kv.get("d", 128)), int(kv.get("B", 32))
    lr, steps = float(kv.get("lr", 3e-3)), int(kv.get("steps", 1500))
    fixed, alt = int(kv.get("fixed", 0)), float(kv.get("alt", 0))
    torch.set_num_threads(1)
    tok = load_tokenizer("gpt2")
    pool = torch.tensor(induction.token_pool(tok))                   # (P,) GPT-2 ids
    P = len(pool)
    n_pool = int(kv.get("np", P))
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=d, n_layer=n_layer, n_head=4,
                                       n_inner=4 * d, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    if "sin" in kv:  # Vaswani et al.'s sinusoids as the starting point of the learned positions
        pos, i = torch.arange(128)[:, None], torch.arange(0, d, 2)
        angle = pos / 10000 ** (i / d)
        pe = torch.zeros(128, d)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)
        with torch.no_grad():
            model.transformer.wpe.weight.copy_(pe * float(kv["sin"]))
    rng = random.Random(0)

    def row() -> list[int]:  # pool indices, T + 1 of them
        out: list[int] = []
        while len(out) < T + 1:
            if rng.random() < alt:
                a, b = rng.randrange(n_pool), rng.randrange(n_pool)
                out += [a, b] * rng.randint(3, 6)
                continue
            n = fixed or rng.randint(8, 30)
            seq = rng.sample(range(n_pool), n) if kv.get("distinct") else [rng.randrange(n_pool) for _ in range(n)]
            gap = [rng.randrange(n_pool) for _ in range(0 if fixed else rng.randint(0, 10))]
            out += seq + gap + seq
        return out[:T + 1]

    test = induction.repeated_tokens(pool.tolist()[:n_pool], 32, R, bos_id=tok.eos_token_id)  # (32, 1 + 2R)
    local = torch.zeros(len(tok), dtype=torch.long)
    local[pool] = torch.arange(P)

    @torch.no_grad()
    def scores() -> tuple[float, float, float]:
        model.eval()
        logits = model(test).logits[:, :-1][..., pool]                 # (32, 2R, P): over the pool
        losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), local[test[:, 1:]], reduction="none")
        prefix = induction.prefix_matching_scores(induction.attention_maps(model, test), R)
        model.train()
        return float(losses[:, 1:R].mean()), float(losses[:, R + 1:].mean()), float(prefix.max())

    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    log, t0 = [], time.time()
    for step in range(steps + 1):
        if step % 100 == 0:
            first, second, prefix = scores()
            log.append([step, round(time.time() - t0), round(first, 2), round(second, 2), round(prefix, 3)])
            print(name, *log[-1], flush=True)
        if step == steps:
            break
        for group in opt.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 100)
        rows = torch.tensor([row() for _ in range(B)])                 # (B, T+1) pool indices
        h = model.transformer(input_ids=pool[rows[:, :-1]]).last_hidden_state   # (B, T, C)
        logits = h @ model.transformer.wte.weight[pool].T              # (B, T, P): softmax over the pool
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    formed = next((s for s, _, _, _, p in log if p > 0.5), None)
    res = {"name": name, "settings": kv, "uniform": round(math.log(n_pool), 2), "first_step_prefix_over_0.5": formed,
           "log_step_seconds_first_second_prefix": log, "torch_threads": 1,
           "measured": time.strftime("%Y-%m-%d")}
    return append_record(RESULTS, res)


if __name__ == "__main__":
    main(sys.argv[1:])
