"""Decoding from scratch: the warpers, greedy, sampling and beam search of Chapter 4.

Chapter 4 (Sampling and decoding) writes each of these step by step in the notebook and
checks them against ``transformers``; they live here too so that tests, exercise checkers and
later chapters use one definition. Every function reproduces the semantics of
``transformers``' ``generate`` (5.x; read from ``generation/utils.py`` and
``generation/logits_process.py``), so that:

* the processed next-token scores are *equal* (``torch.equal``) to those of the library's
  logits processors for any temperature / top-k / top-p / repetition-penalty / n-gram setting;
* greedy decoding and beam search give the same token ids as ``model.generate``;
* sampling draws with ``torch.multinomial`` on the softmax of the processed scores, one draw
  per step, exactly like ``generate(do_sample=True)``, so the same seed gives the same tokens.

Order of processing inside ``generate`` (the order matters: temperature before top-p changes
which tokens survive): repetition penalty -> no-repeat-n-gram -> temperature -> top-k -> top-p.
Shapes: B batch, T time, V vocabulary.
"""
from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from transformers import LogitsProcessorList

FILTER_VALUE = float("-inf")  #: what the library writes into removed tokens' scores

__all__ = [
    "FILTER_VALUE", "cache_kwarg", "next_token_logits", "apply_temperature", "top_k_filter", "top_p_filter",
    "apply_repetition_penalty", "ban_repeated_ngrams", "process_logits", "library_processors",
    "decode", "greedy_decode", "sample_decode", "beam_candidates", "beam_search",
    "distinct_n", "repetition_rate", "continuation_logprob", "token_labels", "plot_distributions",
]


# --------------------------------------------------------------------------------------------
# The model call (plumbing): one forward step with the KV cache of Chapter 3.
# --------------------------------------------------------------------------------------------
def cache_kwarg(model: torch.nn.Module) -> str:
    """The name of ``model.forward``'s cache argument in the installed ``transformers``."""
    # transformers 5.x renamed `past_key_values` to `cache` (the old name warns, then goes in 5.40).
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


@torch.no_grad()
def next_token_logits(model: torch.nn.Module, input_ids: torch.Tensor, cache: Any = None) -> tuple[torch.Tensor, Any]:
    """Run ``model`` on the tokens not yet in ``cache``; return (last-position logits, cache).

    ``input_ids`` (B, T) is the whole sequence so far; with a cache, only the new last token
    is fed (the keys and values of earlier positions are reused). Logits come back as float32
    of shape (B, V). ``logits_to_keep=1`` computes the LM head on the last position only, as
    ``generate`` does -- which also makes the logits bit-for-bit those ``generate`` sees.
    """
    new_ids = input_ids if cache is None else input_ids[:, -1:]
    out = model(input_ids=new_ids, use_cache=True, logits_to_keep=1, **{cache_kwarg(model): cache})
    new_cache = out.get("cache", None)
    if new_cache is None:
        new_cache = out.past_key_values
    return out.logits[:, -1].to(torch.float32), new_cache  # (B, V)


# --------------------------------------------------------------------------------------------
# Logits processors and warpers: scores (B, V) -> scores (B, V).
# --------------------------------------------------------------------------------------------
def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide the scores by ``temperature`` (> 0): below 1 sharpens, above 1 flattens."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}; for the argmax use greedy decoding.")
    return logits / temperature


def top_k_filter(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Keep the ``top_k`` highest scores of each row (ties with the k-th are kept too)."""
    if not isinstance(top_k, int) or top_k <= 0:
        raise ValueError(f"top_k must be a positive int, got {top_k!r} (0 means 'off': don't call the filter).")
    top_k = min(top_k, logits.size(-1))
    kth_best = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth_best, FILTER_VALUE)


def top_p_filter(logits: torch.Tensor, top_p: float, min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of most likely tokens whose mass reaches ``top_p``.

    A token is kept when the probability mass of the tokens *more* likely than it is still
    below ``top_p`` -- so the token that crosses the threshold is kept (the classic off-by-one),
    and the most likely token always is. Equivalently (this is how it is computed, and how the
    library computes it): sort from the *least* likely token up, and remove a token when its
    mass plus that of every less likely token is at most ``1 - top_p``. Both say the same in
    exact arithmetic; summing in the library's order makes the float32 rounding agree too, so
    the result is identical even for a token that sits exactly at the boundary.
    """
    if not 0.0 <= top_p <= 1.0:
        raise ValueError(f"top_p must be in [0, 1], got {top_p!r}")
    sorted_logits, order = logits.sort(dim=-1, descending=False)  # (B, V): least likely first
    tail_mass = sorted_logits.softmax(dim=-1).cumsum(dim=-1)  # this token + all less likely ones
    remove_sorted = tail_mass <= 1 - top_p  # i.e. the mass above it already reaches top_p
    remove_sorted[..., -min_tokens_to_keep:] = False  # the most likely tokens always stay
    remove = remove_sorted.scatter(-1, order, remove_sorted)  # back to vocabulary order
    return logits.masked_fill(remove, FILTER_VALUE)


def apply_repetition_penalty(input_ids: torch.Tensor, logits: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty: every token already in ``input_ids`` (prompt included) is
    made less likely -- positive scores are divided by ``penalty``, negative ones multiplied."""
    if not penalty > 0:
        raise ValueError(f"repetition penalty must be > 0 (1.0 = off), got {penalty!r}")
    seen = logits.gather(-1, input_ids)  # (B, T): the scores of tokens already present
    seen = torch.where(seen < 0, seen * penalty, seen / penalty)
    return logits.scatter(-1, input_ids, seen)


def ban_repeated_ngrams(input_ids: torch.Tensor, logits: torch.Tensor, n: int) -> torch.Tensor:
    """Forbid every token that would complete an n-gram already present (prompt included)."""
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"no_repeat_ngram_size must be a positive int, got {n!r}")
    logits = logits.clone()
    for b, seq in enumerate(input_ids.tolist()):
        if len(seq) < n:
            continue
        prefix = seq[len(seq) - n + 1:]  # the last n-1 tokens: what a new n-gram would start with
        for i in range(len(seq) - n + 1):
            if seq[i:i + n - 1] == prefix:
                logits[b, seq[i + n - 1]] = FILTER_VALUE
    return logits


def process_logits(input_ids: torch.Tensor, logits: torch.Tensor, *, temperature: float = 1.0,
                   top_k: int | None = 0, top_p: float = 1.0, repetition_penalty: float = 1.0,
                   no_repeat_ngram_size: int = 0, do_sample: bool = True) -> torch.Tensor:
    """All processing in ``generate``'s order; the warpers only when ``do_sample``.

    ``top_k=0`` (or None) and ``top_p=1.0`` mean "off" (``generate`` skips them too).
    """
    if repetition_penalty != 1.0:
        logits = apply_repetition_penalty(input_ids, logits, repetition_penalty)
    if no_repeat_ngram_size:
        logits = ban_repeated_ngrams(input_ids, logits, no_repeat_ngram_size)
    if do_sample:
        if temperature != 1.0:
            logits = apply_temperature(logits, temperature)
        if top_k:
            logits = top_k_filter(logits, top_k)
        if top_p < 1.0:
            logits = top_p_filter(logits, top_p)
    return logits


def library_processors(*, temperature: float = 1.0, top_k: int | None = 0, top_p: float = 1.0,
                       repetition_penalty: float = 1.0, no_repeat_ngram_size: int = 0,
                       do_sample: bool = True) -> LogitsProcessorList:
    """The ``transformers`` ``LogitsProcessorList`` that ``generate`` builds for these settings
    (same classes, same order, ``min_tokens_to_keep=1``): the reference for the from-scratch code."""
    from transformers import (
        LogitsProcessorList,
        NoRepeatNGramLogitsProcessor,
        RepetitionPenaltyLogitsProcessor,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    procs = LogitsProcessorList()
    if repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(float(repetition_penalty)))
    if no_repeat_ngram_size:
        procs.append(NoRepeatNGramLogitsProcessor(no_repeat_ngram_size))
    if do_sample:
        if temperature != 1.0:
            procs.append(TemperatureLogitsWarper(float(temperature)))
        if top_k:
            procs.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            procs.append(TopPLogitsWarper(top_p))
    return procs


# --------------------------------------------------------------------------------------------
# Greedy decoding and sampling
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def decode(model: torch.nn.Module, input_ids: torch.Tensor, max_new_tokens: int, *, do_sample: bool = False,
           eos_token_id: int | None = None, pad_token_id: int | None = None, **processing: Any) -> torch.Tensor:
    """Greedy decoding (``do_sample=False``) or sampling, token by token, like ``generate``.

    ``input_ids`` (B, T) (no padding); ``processing`` goes to :func:`process_logits`
    (temperature, top_k, top_p, repetition_penalty, no_repeat_ngram_size). With an
    ``eos_token_id``, a finished row is padded with ``pad_token_id`` (default: the EOS id) and
    decoding stops when every row has finished. Sampling uses the global torch RNG with one
    ``torch.multinomial`` call per step, as ``generate`` does: seed with ``torch.manual_seed``.
    Returns (B, T + generated).
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (B, T), got shape {tuple(input_ids.shape)}")
    # the padding of finished rows (used only with an EOS)
    pad = pad_token_id if pad_token_id is not None else eos_token_id if eos_token_id is not None else 0
    unfinished = torch.ones(input_ids.size(0), dtype=torch.long, device=input_ids.device)  # (B,)
    cache = None
    for _ in range(max_new_tokens):
        logits, cache = next_token_logits(model, input_ids, cache)  # (B, V)
        scores = process_logits(input_ids, logits, do_sample=do_sample, **processing)
        if do_sample:
            probs = scores.softmax(dim=-1)  # (B, V)
            next_ids = torch.multinomial(probs, num_samples=1).squeeze(1)  # (B,)
        else:
            next_ids = scores.argmax(dim=-1)  # (B,)
        if eos_token_id is not None:
            next_ids = next_ids * unfinished + pad * (1 - unfinished)  # finished rows get padding
        input_ids = torch.cat([input_ids, next_ids[:, None]], dim=-1)  # (B, T+1)
        if eos_token_id is not None:
            unfinished = unfinished & (next_ids != eos_token_id).long()
            if not unfinished.any():
                break
    return input_ids


def greedy_decode(model: torch.nn.Module, input_ids: torch.Tensor, max_new_tokens: int, **kwargs: Any) -> torch.Tensor:
    """:func:`decode` with ``do_sample=False`` (argmax at every step)."""
    return decode(model, input_ids, max_new_tokens, do_sample=False, **kwargs)


def sample_decode(model: torch.nn.Module, input_ids: torch.Tensor, max_new_tokens: int, **kwargs: Any) -> torch.Tensor:
    """:func:`decode` with ``do_sample=True`` (a draw from the processed distribution at every step)."""
    return decode(model, input_ids, max_new_tokens, do_sample=True, **kwargs)


# --------------------------------------------------------------------------------------------
# Beam search
# --------------------------------------------------------------------------------------------
def beam_candidates(beam_scores: torch.Tensor, log_probs: torch.Tensor,
                    k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One beam-search expansion: the ``k`` best (beam, token) continuations over all beams.

    ``beam_scores`` (nb,) are the running beams' summed log-probabilities, ``log_probs``
    (nb, V) the next-token log-probabilities of each beam. Returns (scores, beam index, token
    id), each (k,), best first; a continuation's score is its beam's score plus the token's
    log-probability.
    """
    V = log_probs.size(-1)
    total = (log_probs + beam_scores[:, None]).reshape(-1)  # (nb * V,)
    scores, flat = torch.topk(total, k)
    return scores, flat // V, flat % V


@torch.no_grad()
def beam_search(model: torch.nn.Module, input_ids: torch.Tensor, *, num_beams: int, max_new_tokens: int,
                length_penalty: float = 1.0, early_stopping: bool | str = False, eos_token_id: int | None = None,
                pad_token_id: int | None = None, num_return_sequences: int = 1, repetition_penalty: float = 1.0,
                no_repeat_ngram_size: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Beam search for one prompt, with ``generate``'s exact semantics (``do_sample=False``).

    * Each step expands the running beams into the ``2 * num_beams`` best continuations.
    * Among the first ``num_beams`` of them, those that end (EOS, or the length limit) become
      finished hypotheses, scored ``sum of log-probs / generated_length ** length_penalty``
      (``length_penalty`` > 0 favours longer outputs, < 0 shorter ones); the best
      ``num_beams`` finished hypotheses are kept. The best ``num_beams`` continuations that did
      not end keep running.
    * Stopping: ``early_stopping=True`` stops as soon as ``num_beams`` hypotheses are finished;
      ``False`` (the default) also stops then, unless the best running beam -- scored as if it
      ended at the current length -- would still beat the worst finished one; ``"never"`` with
      ``length_penalty > 0`` scores it as if it ended at the maximum length (the canonical,
      exact stopping rule).

    Returns (sequences (num_return_sequences, T'), scores (num_return_sequences,)), best first;
    shorter sequences are padded with ``pad_token_id`` (default: the EOS id).
    """
    if input_ids.dim() != 2 or input_ids.size(0) != 1:
        raise ValueError(f"beam_search takes one prompt of shape (1, T), got {tuple(input_ids.shape)}")
    if not 1 <= num_return_sequences <= num_beams:
        raise ValueError(f"num_return_sequences must be between 1 and num_beams={num_beams}")
    prompt_len = input_ids.size(1)
    max_length = prompt_len + max_new_tokens
    k = 2 * num_beams  # enough candidates that num_beams survive even if num_beams of them end
    running = input_ids.repeat(num_beams, 1)  # (nb, T)
    # Only beam 0 is "real" at the start; the copies get -1e9 so the first step does not pick
    # the same token num_beams times.
    running_scores = torch.full((num_beams,), -1e9, dtype=torch.float32, device=input_ids.device)
    running_scores[0] = 0.0
    finished: list[tuple[float, torch.Tensor]] = []  # (length-normalised score, sequence)
    improvable = True
    cache = None
    cur_len = prompt_len
    while True:
        logits, cache = next_token_logits(model, running, cache)  # (nb, V)
        log_probs = process_logits(running, F.log_softmax(logits, dim=-1), do_sample=False,
                                   repetition_penalty=repetition_penalty,
                                   no_repeat_ngram_size=no_repeat_ngram_size)
        scores, beam_idx, token_ids = beam_candidates(running_scores, log_probs, k)  # (k,) each
        candidates = torch.cat([running[beam_idx], token_ids[:, None]], dim=-1)  # (k, cur_len+1)
        ends = token_ids == eos_token_id if eos_token_id is not None else torch.zeros_like(token_ids, dtype=torch.bool)
        if cur_len + 1 >= max_length:
            ends = torch.ones_like(ends)
        # Finished hypotheses: only the top num_beams candidates may finish.
        for i in range(num_beams):
            if ends[i]:
                length = cur_len + 1 - prompt_len
                finished.append(((scores[i] / (length ** length_penalty)).item(), candidates[i]))
        finished = sorted(finished, key=lambda h: -h[0])[:num_beams]
        # Running beams for the next step: the best continuations that did not end.
        alive_scores = scores + ends.float() * -1e9
        keep = torch.topk(alive_scores, num_beams).indices
        running, running_scores = candidates[keep], alive_scores[keep]
        cache.reorder_cache(beam_idx[keep])  # each new beam continues its parent's keys and values
        cur_len += 1
        # Can a running beam still beat the worst finished hypothesis?
        full = len(finished) == num_beams
        best_len = (max_length if early_stopping == "never" and length_penalty > 0 else cur_len) - prompt_len
        best_possible = (running_scores[0] / (best_len ** length_penalty)).item()
        improvable = improvable and (not full or best_possible > min(s for s, _ in finished))
        if not improvable or (full and early_stopping is True) or bool(ends.all()):
            break
    best = finished[:num_return_sequences]
    fill = pad_token_id if pad_token_id is not None else (eos_token_id if eos_token_id is not None else -1)
    length = max(seq.numel() for _, seq in best)
    out = torch.full((len(best), length), fill, dtype=torch.long, device=input_ids.device)
    for row, (_, seq) in enumerate(best):
        out[row, :seq.numel()] = seq
    return out, torch.tensor([s for s, _ in best])


# --------------------------------------------------------------------------------------------
# Measuring samples
# --------------------------------------------------------------------------------------------
def _ngrams(seq: Sequence[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]


def distinct_n(samples: Iterable[Sequence[int]], n: int) -> float:
    """Distinct-n (Li et al., 2016): distinct n-grams / all n-grams, over a set of samples."""
    grams = [g for s in samples for g in _ngrams(list(s), n)]
    if not grams:
        raise ValueError(f"no {n}-grams: the samples are shorter than {n} tokens")
    return len(set(grams)) / len(grams)


def repetition_rate(samples: Iterable[Sequence[int]], n: int = 4) -> float:
    """Mean, over samples, of the fraction of a sample's n-grams that repeat an earlier n-gram of
    the same sample (0: never repeats itself; near 1: loops)."""
    rates = []
    for s in samples:
        grams = _ngrams(list(s), n)
        if grams:
            rates.append(1 - len(set(grams)) / len(grams))
    if not rates:
        raise ValueError(f"no {n}-grams: the samples are shorter than {n} tokens")
    return sum(rates) / len(rates)


@torch.no_grad()
def continuation_logprob(model: torch.nn.Module, sequences: torch.Tensor, prompt_len: int) -> torch.Tensor:
    """Mean log-probability per token, under the model's *raw* distribution (temperature 1, no
    filtering), of each row's tokens after the first ``prompt_len``: (B,) nats per token."""
    n_new = sequences.size(1) - prompt_len
    if n_new < 1 or prompt_len < 1:
        raise ValueError(f"need 1 <= prompt_len < sequence length, got prompt_len={prompt_len} "
                         f"for sequences of length {sequences.size(1)}")
    # The LM head only on the positions that predict the new tokens: (B, n_new + 1, V).
    logits = model(input_ids=sequences, logits_to_keep=n_new + 1).logits.float()
    logp = F.log_softmax(logits[:, :-1], dim=-1)  # predictions of tokens prompt_len..T-1
    target = sequences[:, prompt_len:]  # (B, T - prompt_len)
    return logp.gather(-1, target[..., None]).squeeze(-1).mean(dim=-1)


# --------------------------------------------------------------------------------------------
# Plotting (plumbing for the chapter's figures)
# --------------------------------------------------------------------------------------------
def token_labels(tokenizer: Any, ids: Iterable[int]) -> list[str]:
    """Readable labels of token ids: the decoded text, with a leading space shown as '␣'."""
    return [tokenizer.decode([int(i)]).replace(" ", "␣").replace("\n", "\\n") for i in ids]


def plot_distributions(ax: Any, tokenizer: Any, named_logits: dict[str, torch.Tensor], *, top: int = 15,
                       title: str = "") -> None:
    """Grouped bars of next-token probabilities, one group per distribution in ``named_logits``
    (name -> scores of shape (V,)), over the ``top`` most likely tokens of the *first* one."""
    import numpy as np

    first = next(iter(named_logits.values()))
    ids = torch.topk(first.float(), top).indices
    width = 0.8 / len(named_logits)
    x = np.arange(top)
    for j, (name, logits) in enumerate(named_logits.items()):
        probs = logits.float().softmax(-1)[ids].cpu().numpy()
        ax.bar(x + (j - (len(named_logits) - 1) / 2) * width, probs, width, label=name)
    ax.set_xticks(x, token_labels(tokenizer, ids.tolist()), rotation=60, ha="right")
    ax.set_ylabel("probability")
    ax.set_xlabel("next token (the most likely under the first distribution)")
    ax.set_title(title)
    ax.legend()
