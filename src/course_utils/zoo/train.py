"""Training a zoo model into a folder: the recipe's fit, its probes, the checkpoint, card and manifest."""
from __future__ import annotations

import time
from pathlib import Path

from ..assets import load_tokenizer
from ..runtime import get_device
from .cache import write_manifest
from .card import write_card
from .recipes import recipe_for
from .specs import ZooSpec


def train_and_save(name: str, s: ZooSpec, k: str, out: Path, *, progress: bool = True) -> None:
    """Train model ``name`` of spec ``s`` (cache key ``k``) and save it into ``out`` (a new folder):
    ``save_pretrained``'s files, the tokenizer's, the card, and last the manifest of checksums."""
    t_start, cpu_start = time.perf_counter(), time.process_time()
    tok = load_tokenizer(s.tokenizer)
    device = get_device()
    recipe = recipe_for(s)
    print(f"Training the course's {name} ({s.arch}, {s.n_layer} layers, d={s.n_embd}) on {recipe.trains_on} "
          f"on {device}; it is cached afterwards (key {k}).", flush=True)
    fit = recipe.fit(name, s, tok, device, progress)
    probes = recipe.report(fit.model, tok, s)

    out.mkdir(parents=True)
    fit.model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    write_card(out, name=name, s=s, k=k, recipe=recipe, fit=fit, probes=probes, tok=tok, device=device,
               t_start=t_start, cpu_start=cpu_start)
    write_manifest(out)  # last: marks completeness
