"""A zoo model's card (``card.json`` beside its weights): where it comes from, what it was trained
on and how long, its losses against the baselines, its held-out probes and its loss curve."""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..modelinfo import count_parameters
from .recipes import Fit, Recipe
from .specs import ZooSpec

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

CARD = "card.json"


def source(recipe: Recipe, n_params: int) -> str:
    """What the model is, in one line (the card's and the model's ``course_asset`` source)."""
    return recipe.source.format(n=f"{n_params:,}")


def write_card(out: Path, *, name: str, s: ZooSpec, k: str, recipe: Recipe, fit: Fit,
               probes: dict[str, float], tok: PreTrainedTokenizerBase, device: torch.device,
               t_start: float, cpu_start: float) -> dict[str, Any]:
    """Write the card of a model just trained (``t_start``, ``cpu_start``: when the work began)."""
    model, hist = fit.model, fit.hist
    n_params = count_parameters(model)
    tokens_per_step = s.batch_size * s.block_size
    extra = {"train_seconds": None if fit.train_seconds is None else round(fit.train_seconds, 1),
             "curve": fit.curve, "validation": fit.validation}
    info = {
        "name": name,
        "source": source(recipe, n_params),
        "architecture": type(model).__name__,
        "tokenizer": f"real {s.tokenizer} tokenizer ({len(tok):,} ids)",
        "key": k,
        "spec": asdict(s),
        "parameters": n_params,
        "vocab_used_in_training": fit.used,
        "tokens_seen": s.steps * tokens_per_step,
        "train_wall_time_s": round(hist.wall_time_s, 1),
        "train_cpu_time_s": round(hist.cpu_time_s, 1),
        "total_wall_time_s": round(time.perf_counter() - t_start, 1),
        "cpu_time_s": round(time.process_time() - cpu_start, 1),  # all threads; ~2x wall on 2 idle cores
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "final_train_loss": hist.train_loss[-1],
        "final_val_loss": fit.val_loss,
        **{field: value for field, value in extra.items() if value is not None},  # a recipe's own numbers
        "val_loss_note": f"{recipe.loss_task} cross-entropy (nats) of the saved full-vocabulary model on "
                         "validation blocks",
        "baselines": {"uniform": math.log(len(tok)), "unigram": fit.unigram},
        "probes": probes,
        "loss_curve": hist.as_dict(),
        "corpus": fit.corpus,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
    }
    (out / CARD).write_text(json.dumps(info, indent=1))
    return info


def read_card(folder: Path) -> dict[str, Any]:
    """The card saved in model folder ``folder``."""
    return dict(json.loads((folder / CARD).read_text()))
