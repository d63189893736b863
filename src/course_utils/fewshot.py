"""Few-shot prompts for a real language model (Chapter 4, "In-context learning").

Six tasks whose bare query does not say which task is meant: ``"cat:"`` may ask for the plural,
the upper-case form or the first letter, ``"hot:"`` for the opposite, ``"17:"`` for anything, so
only the solved examples before it tell the model what to do. A seventh task, reversing the
letters of a word, is one a small model cannot do from examples: it shows where in-context
learning stops.

Every prompt is one line per example, ``input<sep> answer``, and then the query, ``input<sep>``;
the answer the model should write is ``" " + answer``. The separator is drawn per prompt from
:data:`SEPARATORS`, so no single format is measured. The word lists are the course's own.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

_CAPITALS = """France Paris|Spain Madrid|Italy Rome|Germany Berlin|Japan Tokyo|Russia Moscow|Egypt Cairo
|Greece Athens|Portugal Lisbon|Austria Vienna|Poland Warsaw|Norway Oslo|Sweden Stockholm|Finland Helsinki
|Denmark Copenhagen|Ireland Dublin|Hungary Budapest|Belgium Brussels|Kenya Nairobi|Peru Lima|Chile Santiago
|Cuba Havana|Thailand Bangkok|Vietnam Hanoi|Iran Tehran|Iraq Baghdad|China Beijing|Canada Ottawa
|Australia Canberra|Turkey Ankara|Venezuela Caracas|Nigeria Abuja|Morocco Rabat|Syria Damascus
|Lebanon Beirut|Afghanistan Kabul|Pakistan Islamabad|Philippines Manila|Indonesia Jakarta|Scotland Edinburgh"""
_OPPOSITES = """hot cold|tall short|open closed|early late|rich poor|strong weak|wet dry|full empty
|high low|loud quiet|thick thin|heavy light|good bad|true false|win lose|push pull|buy sell|day night
|black white|north south|east west|left right|first last|inside outside|above below|before after
|love hate|alive dead|clean dirty|happy sad|fast slow|big small|up down|cheap expensive|safe dangerous
|asleep awake|shallow deep|narrow wide|question answer|friend enemy"""
_PLURALS = """cat cats|dog dogs|book books|box boxes|child children|mouse mice|man men|woman women
|foot feet|tooth teeth|city cities|baby babies|knife knives|leaf leaves|bus buses|church churches
|glass glasses|house houses|car cars|tree trees|apple apples|horse horses|bird birds|goose geese
|person people|wolf wolves|party parties|story stories|key keys|potato potatoes|hero heroes
|watch watches|dish dishes|class classes|toy toys|boy boys|girl girls|egg eggs|river rivers|star stars"""


def _pairs(table: str) -> tuple[tuple[str, str], ...]:
    return tuple((x, y) for x, y in (item.split() for item in table.replace("\n", "").split("|")))


_NOUNS = [x for x, _ in _pairs(_PLURALS)]
_WORDS = _NOUNS + [x for x, _ in _pairs(_OPPOSITES)]

#: task name -> its (input, answer) pairs.
TASKS: dict[str, tuple[tuple[str, str], ...]] = {
    "capital": _pairs(_CAPITALS),
    "opposite": _pairs(_OPPOSITES),
    "plural": _pairs(_PLURALS),
    "upper-case": tuple((w, w.upper()) for w in _WORDS),
    "first letter": tuple((w, w[0]) for w in _WORDS),
    "next number": tuple((str(n), str(n + 1)) for n in range(2, 98)),
}
#: A task small models do not learn from a few examples: the letters of a word, reversed.
HARD_TASKS: dict[str, tuple[tuple[str, str], ...]] = {
    "reversed": tuple((w, w[::-1]) for w in _NOUNS if len(w) <= 5),
}
SEPARATORS = (":", " ->", " =", " |")


@dataclass(frozen=True)
class Prompt:
    """One few-shot prompt: ``text`` ends with the query's separator; the model should go on with
    ``answer`` (which starts with a space)."""

    task: str
    n_shots: int
    text: str
    answer: str
    sep: str


def make_prompts(task: str, n_shots: int, n: int, *, seed: int = 0,
                 random_labels: bool = False) -> list[Prompt]:
    """``n`` prompts of ``task`` (a key of :data:`TASKS` or :data:`HARD_TASKS`) with ``n_shots``
    solved examples each, all distinct from the query. With ``random_labels=True`` the examples'
    answers are shuffled among them (each example gets another example's answer: the right format
    and the right kind of answer, the wrong mapping), the control of Min et al. (2022)."""
    pairs = {**TASKS, **HARD_TASKS}.get(task)
    if pairs is None:
        raise ValueError(f"unknown task {task!r}; tasks: {sorted(TASKS) + sorted(HARD_TASKS)}")
    if not 0 <= n_shots < len(pairs):
        raise ValueError(f"n_shots={n_shots}: task {task!r} has {len(pairs)} pairs (query included)")
    if random_labels and n_shots < 2:
        raise ValueError("random_labels needs at least 2 shots: the answers are shuffled among them")
    rng = random.Random(f"course-fewshot/{task}/{n_shots}/{seed}/{random_labels}")
    prompts: list[Prompt] = []
    while len(prompts) < n:
        chosen = rng.sample(pairs, n_shots + 1)
        shots, (query, answer) = chosen[:-1], chosen[-1]
        answers = [y for _, y in shots]
        if random_labels:  # a derangement: no example keeps its own answer
            for _ in range(100):
                rng.shuffle(answers)
                if all(a != y for a, (_, y) in zip(answers, shots)):
                    break
            else:  # repeated answers (two words with one first letter) left no derangement: redraw
                continue
        sep = rng.choice(SEPARATORS)
        lines = [f"{x}{sep} {y}" for (x, _), y in zip(shots, answers)]
        prompts.append(Prompt(task, n_shots, "\n".join(lines + [f"{query}{sep}"]), " " + answer, sep))
    return prompts
