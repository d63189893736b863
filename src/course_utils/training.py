"""The learning-rate schedule, AdamW groups and evaluation mode every training loop of the
course uses, and the zoo's GPT-2 loop.

* :func:`lr_at` (linear warm-up, then cosine decay) and :func:`param_groups` (weight decay on
  matrices only) are shared by :func:`train` and by Chapter 5's MLM loop,
  :func:`course_utils.mlm.train_mlm` (which trains the zoo's ``bert-course``).
* :func:`train` knows nothing about the model: the caller passes ``loss_fn(step) -> loss`` (which
  draws its own batch) and the loop does the rest: AdamW, the schedule, gradient clipping, a
  ``tqdm`` bar with the running loss, and a periodic evaluation. It returns the loss curve and
  timings. The zoo trains ``gpt2-course`` with it.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from .runtime import progress_bar


@dataclass
class TrainHistory:
    """What a run of :func:`train` recorded."""

    steps: list[int] = field(default_factory=list)        #: steps at which train loss was logged
    train_loss: list[float] = field(default_factory=list)  #: mean train loss since the last log
    eval_steps: list[int] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)
    wall_time_s: float = 0.0
    cpu_time_s: float = 0.0   #: process CPU time (all threads): about 2x wall time on 2 idle cores

    def as_dict(self) -> dict:
        return {"steps": self.steps, "train_loss": self.train_loss,
                "eval_steps": self.eval_steps, "eval_loss": self.eval_loss}


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on weight matrices, none on biases, LayerNorms and embeddings'
    one-dimensional parameters (the usual GPT-2/BERT recipe)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    seen: set[int] = set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:  # tied weights appear once
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@contextmanager
def evaluation_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Inside: eval mode (no dropout) and no gradients. After: the mode the model had before.
    Every evaluation of the package runs in it (:func:`train`'s, Chapter 5's, the zoo's)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def lr_at(step: int, *, lr: float, warmup: int, steps: int, min_ratio: float = 0.1) -> float:
    """Linear warm-up to ``lr`` over ``warmup`` steps, then cosine decay to ``min_ratio * lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def train(model: torch.nn.Module, loss_fn: Callable[[int], torch.Tensor], *, steps: int, lr: float,
          warmup: int = 100, weight_decay: float = 0.01, grad_clip: float = 1.0,
          eval_fn: Callable[[], float] | None = None, eval_every: int = 0, log_every: int = 25,
          desc: str = "training", progress: bool = True) -> TrainHistory:
    """Train ``model`` for ``steps`` optimiser steps; ``loss_fn(step)`` returns the batch loss.

    ``eval_fn()`` (run every ``eval_every`` steps and at the end, in ``torch.no_grad`` and eval
    mode) returns a validation loss. The model is left in eval mode.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    opt = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.95), eps=1e-8)
    hist = TrainHistory()
    t0, c0 = time.perf_counter(), time.process_time()
    running, count = 0.0, 0

    def evaluate(step: int) -> None:
        assert eval_fn is not None  # called only when one was given
        with evaluation_mode(model):
            hist.eval_steps.append(step)
            hist.eval_loss.append(float(eval_fn()))

    model.train()
    bar = progress_bar(range(steps), desc=desc, disable=not progress)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, lr=lr, warmup=warmup, steps=steps)
        loss = loss_fn(step)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower the learning rate")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        opt.step()
        running += loss.item()
        count += 1
        if (step + 1) % log_every == 0 or step + 1 == steps:
            hist.steps.append(step + 1)
            hist.train_loss.append(running / count)
            bar.set_postfix(loss=f"{running / count:.3f}")
            running, count = 0.0, 0
        if eval_fn is not None and eval_every and (step + 1) % eval_every == 0 and step + 1 != steps:
            evaluate(step + 1)
    if eval_fn is not None:
        evaluate(steps)
    bar.close()
    model.eval()
    hist.wall_time_s = time.perf_counter() - t0
    hist.cpu_time_s = time.process_time() - c0
    return hist
