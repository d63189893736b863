"""The template recipe's compact softmax: a GPT-2 trained over the vocabulary rows its corpus uses."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .. import mlm as _mlm
from ..runtime import to_device
from .specs import ZooSpec

if TYPE_CHECKING:
    from transformers import GPT2LMHeadModel

class CompactGPT2:
    """``gpt2-course`` trained over the vocabulary rows its corpus uses, then written back.

    The model that trains is a ``GPT2LMHeadModel`` whose vocabulary is just the ``used`` ids (about
    a thousand): the same initial weights as the full-vocabulary ``full`` (its rows ``used`` of the
    tied embedding), inputs and targets renumbered ``0 .. U-1``. Its loss is the full model's
    loss with the softmax over ``used``, bit for bit (``tests/test_zoo.py`` checks it): the other
    rows would get a zero gradient, whose AdamW update is zero, and whose weight decay
    :meth:`expand` overwrites anyway. What it saves is the 50,257-row embedding's gradient,
    clipping and AdamW update at every step (a fifth of a step's time on one thread).
    """

    def __init__(self, full: GPT2LMHeadModel, s: ZooSpec, used: torch.Tensor) -> None:
        from transformers import GPT2Config, GPT2LMHeadModel

        self.full, self.s, self.used = full, s, used.to(full.device)
        self.local = torch.full((full.config.vocab_size,), -100, dtype=torch.long, device=full.device)
        self.local[self.used] = torch.arange(len(used), device=full.device)  # GPT-2 id -> compact id
        config = full.config.to_dict()
        config["vocab_size"] = len(used)
        self.model = to_device(GPT2LMHeadModel(GPT2Config.from_dict(config)), full.device)
        weights = dict(full.state_dict())
        weights["transformer.wte.weight"] = weights["lm_head.weight"] = weights["transformer.wte.weight"][self.used]
        self.model.load_state_dict(weights)
        # Pin one channel of ln_f's output to 1, so that embedding column is an output bias.
        ln = self.model.transformer.ln_f
        k = s.n_embd - 1
        with torch.no_grad():
            ln.weight[k], ln.bias[k] = 0.0, 1.0
        keep = torch.ones(s.n_embd, device=ln.weight.device)
        keep[k] = 0.0
        ln.weight.register_hook(lambda g: g * keep)
        ln.bias.register_hook(lambda g: g * keep)

    def renumber(self, blocks: torch.Tensor) -> torch.Tensor:
        """GPT-2 ids -> compact ids (every id of ``blocks`` must be one of ``used``)."""
        return self.local[blocks.to(self.local.device)]

    def loss(self, block: torch.Tensor) -> torch.Tensor:
        """Next-token loss of a renumbered block (B, T+1), over the ``used`` ids."""
        x, y = block[:, :-1], block[:, 1:]                                # (B, T)
        h = self.model.transformer(input_ids=x).last_hidden_state        # (B, T, C)
        logits = h @ self.model.transformer.wte.weight.T                 # (B, T, U)
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())

    def expand(self) -> GPT2LMHeadModel:
        """The trained weights in ``full``; the ids the corpus never uses made harmless (a large
        negative output logit, through the pinned channel)."""
        weights = dict(self.model.state_dict())
        wte = torch.zeros_like(self.full.transformer.wte.weight)          # (V, C)
        wte[:, self.s.n_embd - 1] = _mlm.UNUSED_LOGIT                     # times the pinned channel (= 1)
        wte[self.used] = weights["transformer.wte.weight"]
        weights["transformer.wte.weight"] = weights["lm_head.weight"] = wte
        self.full.load_state_dict(weights)
        return self.full
