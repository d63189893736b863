"""Checkers of Chapter 3 (GPT-2 internals), handed out in ``chapters/03_exercises.ipynb``.

* ``check.sliding_window_attention_with_cache`` -- sliding-window causal self-attention with a
  rolling KV cache of ``window`` positions (the chapter's cache, carried to Mistral's window);
* ``check.wordpiece_tokenize``   -- BERT's WordPiece tokenizer from scratch, checked against
  ``BertTokenizerFast`` on the real bert-base-uncased vocabulary;
* ``check.left_padded_position_ids`` -- the position ids of a left-padded batch (the course's
  tests run the library's GPT2LMHeadModel: each padded row's logits equal its prompt's alone);
* ``check.byte_level_decode``    -- GPT-2 tokens back to text, from the byte alphabet, checked
  against ``GPT2TokenizerFast.convert_tokens_to_string`` (the real GPT-2 tokenizer).

The known wrong variants (``Mistake``) are the classic errors: a window mask that ignores the
cache or is off by one, a cache that keeps growing, continuation pieces without ``##``, the
shortest match instead of the longest, an unknown piece that does not turn the whole word into
``[UNK]``, positions counted from the left edge of the padded row. Top-level imports stay light (torch only).
"""
from __future__ import annotations

import functools
import math
import unicodedata
from collections.abc import Iterator, Mapping
from typing import Any, Callable, NoReturn

import torch

from .core import Case, Checker, Mistake, draw, random_text, register

# =========================================================================== 1. sliding-window attention + KV cache
# attn: an object with attn.c_attn (C -> 3C), attn.c_proj (C -> C) (nn.Linear modules: call them)
# and attn.n_head; x: (B, T, C), the T *new* positions; window: how many keys a query sees (its own
# included); past_kv: None or (k, v), each (B, nh, P, hs), the P positions just before them (at most
# `window`). Return (y, (k, v)): y (B, T, C) and the cache cut to its last `window` positions.

class AttentionWeights(torch.nn.Module):
    """Holds c_attn, c_proj and n_head -- and deliberately no forward: write it yourself."""

    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.c_attn = torch.nn.Linear(n_embd, 3 * n_embd)
        self.c_proj = torch.nn.Linear(n_embd, n_embd)

    def forward(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise NotImplementedError("this exercise asks you to write the attention; calling "
                                  "attn(...) itself is not the solution. Use attn.c_attn, attn.c_proj.")


def sliding_window_attention_with_cache_reference(
        attn: AttentionWeights, x: torch.Tensor, window: int, past_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Sliding-window causal self-attention over the cached and the new positions; returns
    (y, (k, v)) with the cache cut to its last ``window`` positions (a rolling buffer)."""
    return _window_attention(attn, x, window, past_kv)


def _window_attention(attn, x, window, past_kv=None, *, mask="window", keep="window", offset=True):
    """The reference written out, with one switch per known mistake (``tests/test_exercise_references.py``
    holds the unswitched one to a full recompute with ``F.scaled_dot_product_attention``)."""
    B, T, C = x.shape
    nh = attn.n_head
    hs = C // nh
    q, k, v = attn.c_attn(x).split(C, dim=2)                                  # 3 x (B, T, C)
    q, k, v = (t.view(B, T, nh, hs).transpose(1, 2) for t in (q, k, v))       # (B, nh, T, hs)
    if past_kv is not None:
        k = torch.cat([past_kv[0], k], dim=2)                                 # (B, nh, S, hs)
        v = torch.cat([past_kv[1], v], dim=2)
    S = k.size(2)
    q_pos = torch.arange(S - T, S)[:, None] if offset else torch.arange(T)[:, None]  # relative to the cache
    k_pos = torch.arange(S)[None, :]
    allowed = k_pos <= q_pos                                                  # causal
    if mask == "window":
        allowed = allowed & (k_pos > q_pos - window)                          # the last `window` keys
    elif mask == "one_more":
        allowed = allowed & (k_pos >= q_pos - window)
    att = (q @ k.transpose(-2, -1) / math.sqrt(hs)).masked_fill(~allowed, float("-inf")).softmax(dim=-1)
    y = attn.c_proj((att @ v).transpose(1, 2).reshape(B, T, C))               # (B, T, C)
    kept = {"window": window, "window-1": max(window - 1, 0), "all": S}[keep]
    return y, (k[:, :, S - min(S, kept):], v[:, :, S - min(S, kept):])


def _window_cases() -> list[Case]:
    C, nh = 16, 4
    cases = []
    W = draw(2, 5)
    for name, B, P, T, window in (("no cache, T = 8, window 3", 2, 0, 8, 3),
                                  ("one new token, a full buffer of 4 cached, window 4", 2, 4, 1, 4),
                                  ("3 new tokens, 2 cached, window 4", 1, 2, 3, 4),
                                  ("window larger than everything: plain causal", 2, 2, 3, 16),
                                  (f"random: window {W}, {W} cached, 4 new", 1, W, 4, W)):
        attn = AttentionWeights(C, nh)
        with torch.no_grad():
            for p in attn.parameters():
                p.mul_(4.0)  # sharper attention, so a wrong mask changes the output visibly
        past = None if P == 0 else (torch.randn(B, nh, P, C // nh), torch.randn(B, nh, P, C // nh))
        cases.append(Case(name, (attn, torch.randn(B, T, C), window, past)))
    return cases


sliding_window_attention_with_cache = register(Checker(
    "sliding_window_attention_with_cache", sliding_window_attention_with_cache_reference, _window_cases,
    axes=(("batch", "seq", "channels"), None),
    mistakes=[
        Mistake(lambda a, x, w, p=None: _window_attention(a, x, w, p, mask="causal"),
                "the window is missing: a query at position i may see only keys i − window + 1 ... i "
                "(window keys, itself included), however many the cache holds."),
        Mistake(lambda a, x, w, p=None: _window_attention(a, x, w, p, mask="one_more"),
                "off by one: the window holds `window` keys, the query's own included — key j is "
                "visible when i − window < j <= i, not i − window <= j."),
        Mistake(lambda a, x, w, p=None: _window_attention(a, x, w, p, offset=False),
                "with a cache the T new queries are the *last* T of the S positions: query r sits at "
                "position S − T + r, and both ends of its window count from there."),
        Mistake(lambda a, x, w, p=None: _window_attention(a, x, w, p, keep="all"),
                "the returned cache must stay a rolling buffer: keep only its last `window` positions "
                "(k[:, :, -window:]), or it grows with the text as a full cache does."),
        Mistake(lambda a, x, w, p=None: _window_attention(a, x, w, p, keep="window-1"),
                "keep the last `window` positions in the returned cache, as the exercise asks (a "
                "buffer of window keys, as Mistral's), not window − 1."),
    ],
))



# =========================================================================== 2. WordPiece from scratch
# text: a string; vocab: a read-only mapping token -> id (BERT's vocabulary, a Vocabulary). Return the list of
# tokens BertTokenizerFast.tokenize(text) gives (no [CLS]/[SEP]).

UNK, PREFIX, MAX_CHARS = "[UNK]", "##", 100


class Vocabulary(Mapping):
    """A read-only mapping token -> id. Copying it returns it (each check case would otherwise
    deep-copy 30,522 entries); it pickles like a dict, so it can cross a process boundary."""

    def __init__(self, items: Any) -> None:
        self._ids = dict(items)

    def __getitem__(self, token: str) -> int:
        return self._ids[token]

    def __contains__(self, token: object) -> bool:
        return token in self._ids

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __copy__(self) -> "Vocabulary":
        return self

    def __deepcopy__(self, memo: dict) -> "Vocabulary":
        return self

    def __repr__(self) -> str:
        return f"<vocabulary of {len(self._ids):,} tokens>"


@functools.lru_cache(maxsize=1)
def bert_vocab() -> Vocabulary:
    """The real bert-base-uncased vocabulary (30,522 tokens), read-only; shipped offline."""
    from ..assets import minilm_dir

    lines = (minilm_dir() / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return Vocabulary((token, i) for i, token in enumerate(lines))


_LIBRARY_TOKENIZERS: dict[int, tuple[Any, Any]] = {}


def _library_tokenizer(vocab: Any) -> Any:
    """``tokenizers``' BERT pipeline (the one inside BertTokenizerFast) over ``vocab``, built once
    per vocabulary object (the cases share one read-only :class:`Vocabulary`, never copied)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    cached = _LIBRARY_TOKENIZERS.get(id(vocab))
    if cached is not None and cached[0] is vocab:
        return cached[1]

    tok = Tokenizer(models.WordPiece(dict(vocab), unk_token=UNK, max_input_chars_per_word=MAX_CHARS))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)  # clean text, CJK, strip accents, lower
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()        # whitespace and punctuation
    _LIBRARY_TOKENIZERS[id(vocab)] = (vocab, tok)
    return tok


def wordpiece_tokenize_reference(text: str, vocab: Any) -> list[str]:
    """The library's WordPiece tokenisation of ``text`` with ``vocab``."""
    return _library_tokenizer(vocab).encode(text, add_special_tokens=False).tokens


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True  # every ASCII non-letter, non-digit symbol, as BERT does ($, +, ^ ... too)
    return unicodedata.category(ch).startswith("P")


def _wordpiece(text, vocab, *, prefix=PREFIX, longest=True, whole_unk=True, lower=True, strip=True,
               split_punct=True, max_chars=MAX_CHARS):
    if lower:
        text = text.lower()
    if strip:
        text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    words = []
    for chunk in text.split():
        if not split_punct:
            words.append(chunk)
            continue
        current = ""
        for ch in chunk:
            if _is_punctuation(ch):
                words += [current] if current else []
                words.append(ch)
                current = ""
            else:
                current += ch
        words += [current] if current else []
    out = []
    for word in words:
        if len(word) > max_chars:
            out.append(UNK)
            continue
        pieces: list[str] = []
        start = 0
        while start < len(word):
            ends = range(len(word), start, -1) if longest else range(start + 1, len(word) + 1)
            piece = None
            for end in ends:
                candidate = (prefix if start > 0 else "") + word[start:end]
                if candidate in vocab:
                    piece, start = candidate, end
                    break
            if piece is None:
                pieces = [UNK] if whole_unk else pieces + [UNK]
                break
            pieces.append(piece)
        out += pieces
    return out


def _wordpiece_cases() -> list[Case]:
    vocab = bert_vocab()
    return [
        Case("punctuation and numbers", ("Hello, World! It's 3.14 o'clock.", vocab)),
        Case("words split into several pieces", ("unaffable tokenization of embeddings", vocab)),
        Case("accents and a dash", ("Café déjà vu — naïve façade", vocab)),
        Case("a piece missing from the vocabulary", ("snowman☃ melts", vocab)),
        Case("a word longer than 100 characters", ("a" * 120 + " end", vocab)),
        Case("tabs and newlines", ("line one\tline two\nthree  spaces", vocab)),
        Case("random words", (random_text(draw(4, 12)), vocab)),
    ]


class _TokenListChecker(Checker):
    """Adds the first token that differs when no known mistake explains a wrong token list."""

    def _diagnose(self, case: Case, got: Any, prepare: Callable[[Any], Any] | None = None) -> str | None:
        hint = super()._diagnose(case, got, prepare=prepare)
        if hint is not None or not isinstance(got, list):
            return hint
        expected = self.reference(*case.args, **case.kwargs)
        for i, (e, g) in enumerate(zip(expected, got)):
            if e != g:
                return (f"the first difference is token {i}: yours {g!r}, expected {e!r} "
                        f"(expected tokens {i}-{i + 4}: {expected[i:i + 5]}).")
        if len(got) != len(expected):
            return f"your list is a prefix of the expected one, or the reverse; expected {expected[:12]}."
        return None


wordpiece_tokenize = register(_TokenListChecker(
    "wordpiece_tokenize", wordpiece_tokenize_reference, _wordpiece_cases,
    mistakes=[
        Mistake(lambda t, v: _wordpiece(t, v, lower=False),
                "bert-base-uncased lowercases the text first (`text.lower()`)."),
        Mistake(lambda t, v: _wordpiece(t, v, split_punct=False),
                "split off every punctuation character as its own word (`unicodedata.category(ch)` "
                "starting with 'P', plus ASCII symbols such as $ + ^), before WordPiece."),
        Mistake(lambda t, v: _wordpiece(t, v, prefix=""),
                "a piece that continues a word is looked up (and returned) with the '##' prefix: "
                "'tokenization' -> 'token', '##ization'."),
        Mistake(lambda t, v: _wordpiece(t, v, longest=False),
                "WordPiece is greedy *longest*-match-first: from each position take the longest piece "
                "in the vocabulary, not the shortest."),
        Mistake(lambda t, v: _wordpiece(t, v, strip=False),
                "the uncased tokenizer also strips accents: decompose (`unicodedata.normalize('NFD', t)`) "
                "and drop the combining marks (category 'Mn'): 'café' -> 'cafe'."),
        Mistake(lambda t, v: _wordpiece(t, v, whole_unk=False),
                "when some part of a word matches no piece, the *whole word* becomes a single '[UNK]' "
                "(the pieces found before it are dropped)."),
        Mistake(lambda t, v: _wordpiece(t, v, max_chars=10**9),
                "a word longer than 100 characters becomes '[UNK]' without trying pieces."),
    ],
    timeout=5.0,
    what="your wordpiece_tokenize",
))


# =========================================================================== 3. left padding
# attention_mask: (B, T) 1/0, padding on the left. Return position_ids (B, T) int64: each real
# token's position within its own sequence (0 for its first real token). The values at padding
# positions are never used (the checker ignores them).

def left_padded_position_ids_reference(attention_mask: torch.Tensor) -> torch.Tensor:
    """What ``generate`` computes for GPT-2: cumsum of the mask - 1 (padding: 1, never read)."""
    position_ids = attention_mask.long().cumsum(-1) - 1                   # (B, T)
    return position_ids.masked_fill(attention_mask == 0, 1)


def _real_positions_only(fn: Any, case: Case) -> Any:
    """Call ``fn``; where its output has the right shape, zero the (unused) padding positions."""
    (mask,) = case.args
    out = fn(*case.args, **case.kwargs)
    if isinstance(out, torch.Tensor) and out.shape == mask.shape:
        out = torch.where(mask.bool(), out, torch.zeros((), dtype=out.dtype))
    return out


def _left_mask(lengths: list[int], T: int) -> torch.Tensor:
    return torch.stack([torch.arange(T) >= T - n for n in lengths]).long()  # (B, T), 1 = real token


def _position_cases() -> list[Case]:
    return [
        Case("3 prompts of lengths 5, 2, 4", (_left_mask([5, 2, 4], 5),)),
        Case("no padding at all", (_left_mask([3, 3], 3),)),
        Case("one token after 6 pads", (_left_mask([1, 7], 7),)),
        Case("random lengths", _random_left_mask()),
    ]


def _random_left_mask() -> tuple[torch.Tensor]:
    T = draw(2, 12)
    return (_left_mask([draw(1, T) for _ in range(draw(1, 4))], T),)


left_padded_position_ids = register(Checker(
    "left_padded_position_ids", left_padded_position_ids_reference, _position_cases,
    call=_real_positions_only, axes=("batch", "seq"),
    mistakes=[
        Mistake(lambda m: torch.arange(m.size(1)).expand(m.shape),
                "positions count from each sequence's *first real token*: with left padding, "
                "`arange(T)` gives a short prompt's first token the position of the pads before it "
                "(cumsum of the mask, minus 1)."),
        Mistake(lambda m: m.long().cumsum(-1),
                "off by one: the first real token has position 0 (`cumsum(-1) - 1`)."),
        Mistake(lambda m: (torch.arange(m.size(1)) - (m.size(1) - m.sum(-1, keepdim=True))).flip(-1),
                "positions increase from left to right within the real tokens; nothing is reversed."),
    ],
    what="your left_padded_position_ids",
))


# =========================================================================== 4. byte-level decoding
# tokens: GPT-2 tokens as strings over its 256-character byte alphabet ("Ġworld", "ðŁ" ...).
# Return the text: each character mapped back to its byte, all bytes joined, decoded as UTF-8
# once, invalid sequences replaced by U+FFFD -- what GPT2TokenizerFast.convert_tokens_to_string does.

@functools.lru_cache(maxsize=1)
def _gpt2_tokenizer() -> Any:
    from ..assets import load_tokenizer

    return load_tokenizer("gpt2")


def byte_level_decode_reference(tokens: list[str]) -> str:
    """The library's decoding of GPT-2 tokens (its ByteLevel decoder)."""
    return _gpt2_tokenizer().convert_tokens_to_string(list(tokens))


@functools.lru_cache(maxsize=1)
def _byte_of() -> dict[str, int]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {ch: b for b, ch in bytes_to_unicode().items()}


def _decode(tokens, *, per_token=False, codec="utf-8", errors="replace", only_space=False):
    if only_space:
        return "".join(tokens).replace("Ġ", " ")
    byte_of = _byte_of()
    if per_token:
        return "".join(bytes(byte_of[c] for c in t).decode(codec, errors=errors) for t in tokens)
    return bytes(byte_of[c] for t in tokens for c in t).decode(codec, errors=errors)


def _decode_cases() -> list[Case]:
    tok = _gpt2_tokenizer()
    giraffe_llama = tok.tokenize(" 🦒🦙")  # two 4-byte characters, each split over three tokens
    return [
        Case("plain text", (tok.tokenize("Hello world, it's me."),)),
        Case("accents and a dash", (tok.tokenize("naïve café — déjà vu"),)),
        Case("newline, tab and trailing spaces", (tok.tokenize("Line one\n\tLine two  "),)),
        Case("emoji split across tokens", (tok.tokenize(" 🦒 and 🦙 emoji"),)),
        Case("stopped in the middle of a character", (giraffe_llama[:-1],)),
        Case("random words", (tok.tokenize(" " + random_text(draw(3, 10))),)),
    ]


byte_level_decode = register(_TokenListChecker(
    "byte_level_decode", byte_level_decode_reference, _decode_cases,
    mistakes=[
        Mistake(lambda t: _decode(t, only_space=True),
                "replacing 'Ġ' by a space is not enough: every character stands for one byte "
                "(Ċ is a newline, 'Ã©' the two bytes of é). Map each character back with the inverse "
                "of bytes_to_unicode(), then decode the bytes."),
        Mistake(lambda t: _decode(t, codec="latin-1"),
                "the bytes are UTF-8: `.decode('utf-8', errors='replace')`; decoding them as latin-1 "
                "turns é into 'Ã©'."),
        Mistake(lambda t: _decode(t, per_token=True),
                "a character can be split over several tokens (an emoji is 4 bytes, often 2-3 "
                "tokens): join the bytes of *all* tokens first, then decode once."),
        Mistake(lambda t: _decode(t, errors="ignore"),
                "an incomplete character at the end (generation stopped mid-character) becomes U+FFFD "
                "'�' (errors='replace'), not nothing."),
    ],
    what="your byte_level_decode",
))
