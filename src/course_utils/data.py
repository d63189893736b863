"""Corpora in both worlds: the course's own generated English offline, wikitext online.

Online the course reads ``wikitext-2-raw-v1`` through ``datasets``. Offline it writes its own
English: :func:`generate_corpus` builds passages from templates over small real-world fact
tables (countries with their capitals, languages and continents; animals; colours; numbers)
and short stories with named characters. Everything is produced by this module, deterministic
by seed; no third-party text is copied in.

Every fact can be said in several phrasings (templates). For each fact one phrasing is
*held out*: it never occurs in the train, validation or test splits, only in the ``heldout``
split and in :func:`heldout_probes`. A model that completes a held-out phrasing correctly has
learned the fact in a form it never saw, not memorised a sentence.

The fact tables are public: :data:`FACTS` (relation -> list of ``(subject, object)``) and
:data:`TEMPLATES` (relation -> phrasings). Probes for chapters:

>>> from course_utils import data
>>> p = data.heldout_probes(relations=["capital"])[0]
>>> p.prompt, p.answer            # GPT-2 style: greedy continuation of the prompt
('The capital of Italy is', 'Rome')
>>> p.masked("[MASK]", slot="subject")   # BERT style
'The capital of [MASK] is Rome.'

Turning texts into batches (packing, padding) is :mod:`course_utils.batching`'s job.
"""
from __future__ import annotations

import math
import random
import re
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable, Sequence

if TYPE_CHECKING:
    from datasets import DatasetDict

# ---------------------------------------------------------------------------------------------
# Fact tables (real-world facts, written for the course)
# ---------------------------------------------------------------------------------------------

#: (country, capital, main language, continent)
COUNTRIES: list[tuple[str, str, str, str]] = [
    ("Italy", "Rome", "Italian", "Europe"),
    ("France", "Paris", "French", "Europe"),
    ("Spain", "Madrid", "Spanish", "Europe"),
    ("Germany", "Berlin", "German", "Europe"),
    ("Portugal", "Lisbon", "Portuguese", "Europe"),
    ("Greece", "Athens", "Greek", "Europe"),
    ("Poland", "Warsaw", "Polish", "Europe"),
    ("Sweden", "Stockholm", "Swedish", "Europe"),
    ("Norway", "Oslo", "Norwegian", "Europe"),
    ("Finland", "Helsinki", "Finnish", "Europe"),
    ("Denmark", "Copenhagen", "Danish", "Europe"),
    ("Ireland", "Dublin", "English", "Europe"),
    ("Austria", "Vienna", "German", "Europe"),
    ("Hungary", "Budapest", "Hungarian", "Europe"),
    ("Romania", "Bucharest", "Romanian", "Europe"),
    ("Bulgaria", "Sofia", "Bulgarian", "Europe"),
    ("Serbia", "Belgrade", "Serbian", "Europe"),
    ("Croatia", "Zagreb", "Croatian", "Europe"),
    ("Ukraine", "Kyiv", "Ukrainian", "Europe"),
    ("Iceland", "Reykjavik", "Icelandic", "Europe"),
    ("Estonia", "Tallinn", "Estonian", "Europe"),
    ("Japan", "Tokyo", "Japanese", "Asia"),
    ("China", "Beijing", "Chinese", "Asia"),
    ("India", "New Delhi", "Hindi", "Asia"),
    ("Thailand", "Bangkok", "Thai", "Asia"),
    ("Vietnam", "Hanoi", "Vietnamese", "Asia"),
    ("Indonesia", "Jakarta", "Indonesian", "Asia"),
    ("Iran", "Tehran", "Persian", "Asia"),
    ("Iraq", "Baghdad", "Arabic", "Asia"),
    ("Nepal", "Kathmandu", "Nepali", "Asia"),
    ("Mongolia", "Ulaanbaatar", "Mongolian", "Asia"),
    ("Pakistan", "Islamabad", "Urdu", "Asia"),
    ("Bangladesh", "Dhaka", "Bengali", "Asia"),
    ("Egypt", "Cairo", "Arabic", "Africa"),
    ("Kenya", "Nairobi", "Swahili", "Africa"),
    ("Nigeria", "Abuja", "English", "Africa"),
    ("Morocco", "Rabat", "Arabic", "Africa"),
    ("Ethiopia", "Addis Ababa", "Amharic", "Africa"),
    ("Ghana", "Accra", "English", "Africa"),
    ("Senegal", "Dakar", "French", "Africa"),
    ("Algeria", "Algiers", "Arabic", "Africa"),
    ("Tunisia", "Tunis", "Arabic", "Africa"),
    ("Brazil", "Brasilia", "Portuguese", "South America"),
    ("Argentina", "Buenos Aires", "Spanish", "South America"),
    ("Peru", "Lima", "Spanish", "South America"),
    ("Chile", "Santiago", "Spanish", "South America"),
    ("Colombia", "Bogota", "Spanish", "South America"),
    ("Venezuela", "Caracas", "Spanish", "South America"),
    ("Ecuador", "Quito", "Spanish", "South America"),
    ("Uruguay", "Montevideo", "Spanish", "South America"),
    ("Canada", "Ottawa", "English", "North America"),
    ("Mexico", "Mexico City", "Spanish", "North America"),
    ("Cuba", "Havana", "Spanish", "North America"),
    ("Jamaica", "Kingston", "English", "North America"),
    ("Australia", "Canberra", "English", "Oceania"),
]

#: (animal, sound, number of legs, name of its baby)
ANIMALS: list[tuple[str, str, str, str]] = [
    ("cow", "moo", "four", "calf"),
    ("dog", "woof", "four", "puppy"),
    ("cat", "meow", "four", "kitten"),
    ("sheep", "baa", "four", "lamb"),
    ("horse", "neigh", "four", "foal"),
    ("duck", "quack", "two", "duckling"),
    ("pig", "oink", "four", "piglet"),
    ("lion", "roar", "four", "cub"),
    ("frog", "croak", "four", "tadpole"),
    ("owl", "hoot", "two", "owlet"),
    ("hen", "cluck", "two", "chick"),
    ("goat", "bleat", "four", "kid"),
    ("bee", "buzz", "six", "larva"),
    ("snake", "hiss", "zero", "snakelet"),
    ("wolf", "howl", "four", "pup"),
]

#: (thing, its usual colour)
COLOURS: list[tuple[str, str]] = [
    ("sky", "blue"), ("sea", "blue"), ("grass", "green"), ("leaf", "green"),
    ("banana", "yellow"), ("lemon", "yellow"), ("sun", "yellow"), ("strawberry", "red"),
    ("tomato", "red"), ("cherry", "red"), ("carrot", "orange"), ("pumpkin", "orange"),
    ("snow", "white"), ("milk", "white"), ("cloud", "white"), ("coal", "black"),
    ("crow", "black"), ("chocolate", "brown"), ("grape", "purple"), ("plum", "purple"),
]

NUMBER_WORDS: list[str] = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
    "eighteen", "nineteen", "twenty",
]

#: relation -> list of (subject, object): the facts a model can learn and be probed on.
FACTS: dict[str, list[tuple[str, str]]] = {
    "capital": [(c, cap) for c, cap, _, _ in COUNTRIES],
    "language": [(c, lang) for c, _, lang, _ in COUNTRIES],
    "continent": [(c, cont) for c, _, _, cont in COUNTRIES],
    "sound": [(a, s) for a, s, _, _ in ANIMALS],
    "legs": [(a, n) for a, _, n, _ in ANIMALS],
    "baby": [(a, b) for a, _, _, b in ANIMALS],
    "colour": list(COLOURS),
    "successor": [(NUMBER_WORDS[i], NUMBER_WORDS[i + 1]) for i in range(1, 20)],
}

#: relation -> phrasings. ``{s}`` is the subject, ``{o}`` the object. Every phrasing ends with
#: a slot followed by ".", so a causal model can be probed by the text before that slot.
#: Phrasings that end with ``{s}`` are only used where the object names a unique subject.
TEMPLATES: dict[str, list[str]] = {
    "capital": [
        "The capital of {s} is {o}.",
        "{s}'s capital is {o}.",
        "The capital city of {s} is {o}.",
        "In {s}, the capital is {o}.",
        "The government of {s} sits in {o}.",
        "{o} is the capital of {s}.",
        "{o} is the capital city of {s}.",
    ],
    "language": [
        "People in {s} speak {o}.",
        "The language of {s} is {o}.",
        "In {s}, most people speak {o}.",
        "The main language spoken in {s} is {o}.",
        "If you travel to {s}, you will hear {o}.",
    ],
    "continent": [
        "{s} is a country in {o}.",
        "{s} is in {o}.",
        "{s} lies in {o}.",
        "You can find {s} in {o}.",
        "{s} is part of {o}.",
    ],
    "sound": [
        "A {s} says {o}.",
        "The {s} goes {o}.",
        "The sound a {s} makes is {o}.",
        "When a {s} is happy, it says {o}.",
    ],
    "legs": [
        "The number of legs a {s} has is {o}.",
        "How many legs does a {s} have? It has {o}.",
        "Count the legs of a {s} and you get {o}.",
    ],
    "baby": [
        "A baby {s} is called a {o}.",
        "The young of a {s} is a {o}.",
        "When a {s} has a baby, the baby is a {o}.",
    ],
    "colour": [
        "The colour of the {s} is {o}.",
        "The {s} is {o}.",
        "What colour is the {s}? It is {o}.",
        "Look at the {s}: it is {o}.",
    ],
    "successor": [
        "After {s} comes {o}.",
        "The number after {s} is {o}.",
        "{s} plus one is {o}.",
        "Count on from {s} and you get {o}.",
    ],
}

# Relation offsets spread the held-out phrasing of consecutive facts across templates.
_RELATIONS = list(TEMPLATES)


def heldout_template(relation: str, fact_index: int) -> int:
    """Index of the phrasing of fact ``fact_index`` of ``relation`` that training never sees."""
    return (fact_index + _RELATIONS.index(relation)) % len(TEMPLATES[relation])


def _render(template: str, s: str, o: str) -> str:
    text = _ARTICLE.sub(r"\1n ", template.format(s=s, o=o))  # "a owl" -> "an owl"
    return text[0].upper() + text[1:]


# "a" directly before a word that starts with a vowel letter (every such word in the tables is
# said with a vowel sound: owl, owlet); "[MASK]" and other non-letters are left alone.
_ARTICLE = re.compile(r"\b([Aa]) (?=[aeiouAEIOU])")


@dataclass(frozen=True)
class Probe:
    """One held-out fact–phrasing pair: ``prompt + " " + answer + "."`` is the full sentence."""

    relation: str
    subject: str
    answer: str        #: the text that fills the last slot (what a causal model should continue with)
    prompt: str        #: the sentence up to (not including) the answer, no trailing space
    text: str          #: the full sentence
    template: int      #: index into TEMPLATES[relation]
    answer_slot: str   #: "object" or "subject": which slot ends the sentence

    def masked(self, mask_token: str = "[MASK]", slot: str = "answer") -> str:
        """The sentence with one slot replaced by ``mask_token`` (``"answer"``, ``"subject"``
        or ``"object"``)."""
        if slot == "answer":
            slot = self.answer_slot
        if slot not in ("subject", "object"):
            raise ValueError(f"slot must be 'answer', 'subject' or 'object', got {slot!r}")
        s, o = self.fact
        tpl = TEMPLATES[self.relation][self.template]
        return _render(tpl, mask_token if slot == "subject" else s, mask_token if slot == "object" else o)

    @property
    def fact(self) -> tuple[str, str]:
        """``(subject, object)``."""
        return FACTS[self.relation][[f[0] for f in FACTS[self.relation]].index(self.subject)]


def _probe(relation: str, i: int, t: int) -> Probe:
    s, o = FACTS[relation][i]
    tpl = TEMPLATES[relation][t]
    last = "subject" if tpl.rstrip(".").endswith("{s}") else "object"
    answer = s if last == "subject" else o
    text = _render(tpl, s, o)
    prompt = text[: len(text) - len(answer) - 1].rstrip()  # drop "<answer>."
    return Probe(relation, s, answer, prompt, text, t, last)


def heldout_probes(relations: Iterable[str] | None = None) -> list[Probe]:
    """Every held-out fact–phrasing pair as a :class:`Probe` (a fixed list, seed-independent).

    ``relations`` restricts the list (default: all of :data:`FACTS`). The phrasing of each
    probe never occurs in the train/validation/test splits of :func:`generate_corpus`; the fact
    itself does, in the relation's other phrasings.
    """
    names = list(FACTS) if relations is None else list(relations)
    unknown = [r for r in names if r not in FACTS]
    if unknown:
        raise ValueError(f"Unknown relation(s) {unknown}; known: {', '.join(FACTS)}")
    return [_probe(r, i, heldout_template(r, i)) for r in names for i in range(len(FACTS[r]))]


def training_probes(relations: Iterable[str] | None = None) -> list[Probe]:
    """The fact–phrasing pairs that *do* occur in training (for memorisation vs generalisation)."""
    names = list(FACTS) if relations is None else list(relations)
    return [_probe(r, i, t) for r in names for i in range(len(FACTS[r]))
            for t in range(len(TEMPLATES[r])) if t != heldout_template(r, i)]


# ---------------------------------------------------------------------------------------------
# Passages
# ---------------------------------------------------------------------------------------------

_NAMES = [("Anna", "she"), ("Ben", "he"), ("Lily", "she"), ("Tom", "he"), ("Mia", "she"),
          ("Sam", "he"), ("Lucy", "she"), ("Max", "he"), ("Emma", "she"), ("Jack", "he"),
          ("Zoe", "she"), ("Leo", "he"), ("Ella", "she"), ("Noah", "he"), ("Ruby", "she"),
          ("Oscar", "he"), ("Grace", "she"), ("Finn", "he")]
_ADJECTIVES = ["little", "happy", "brave", "curious", "kind", "small", "clever", "shy", "friendly"]
_PLACES = ["park", "forest", "beach", "garden", "river", "market", "school", "village", "farm"]
_OBJECTS = ["ball", "kite", "hat", "box", "book", "cup", "flower", "shell", "stone", "key"]
_FOODS = ["apples", "bread", "soup", "cake", "rice", "cheese", "carrots", "honey"]
_WEATHER = ["sunny", "rainy", "windy", "cold", "warm", "cloudy"]


def _fact_sentence(rng: random.Random, relation: str, i: int, heldout: bool = False) -> str:
    m = len(TEMPLATES[relation])
    held = heldout_template(relation, i)
    if heldout:
        t = held
    else:
        t = rng.randrange(m - 1)
        t += t >= held  # uniform over the phrasings other than the held-out one
    s, o = FACTS[relation][i]
    return _render(TEMPLATES[relation][t], s, o)


def _country_passage(rng: random.Random) -> str:
    i = rng.randrange(len(COUNTRIES))
    rels = ["capital", "language", "continent"]
    rng.shuffle(rels)
    k = rng.randint(1, 3)
    sentences = [_fact_sentence(rng, r, i) for r in rels[:k]]
    if rng.random() < 0.3:  # a second country, so the model must bind facts to the right name
        j = rng.randrange(len(COUNTRIES))
        sentences.append(_fact_sentence(rng, rng.choice(["capital", "language", "continent"]), j))
    return " ".join(sentences)


def _animal_passage(rng: random.Random) -> str:
    i = rng.randrange(len(ANIMALS))
    rels = ["sound", "legs", "baby"]
    rng.shuffle(rels)
    return " ".join(_fact_sentence(rng, r, i) for r in rels[: rng.randint(1, 3)])


def _colour_passage(rng: random.Random) -> str:
    return " ".join(_fact_sentence(rng, "colour", rng.randrange(len(COLOURS)))
                    for _ in range(rng.randint(1, 3)))


def _number_passage(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.4:
        start = rng.randint(0, 14)
        n = rng.randint(3, 6)
        words = NUMBER_WORDS[start:start + n]
        return (", ".join(words) + ".").capitalize()
    if kind < 0.7:
        a, b = rng.randint(0, 10), rng.choice([0, 2, 3, 4, 5, 6, 7, 8, 9, 10])  # "plus one" is a fact phrasing
        return f"{NUMBER_WORDS[a]} plus {NUMBER_WORDS[b]} is {NUMBER_WORDS[a + b]}.".capitalize()
    return " ".join(_fact_sentence(rng, "successor", rng.randrange(19)) for _ in range(rng.randint(1, 3)))


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _story(rng: random.Random) -> str:
    (name, pron), (friend, _) = rng.sample(_NAMES, 2)
    animal = rng.choice(ANIMALS)
    place, obj, colour = rng.choice(_PLACES), rng.choice(_OBJECTS), rng.choice(COLOURS)[1]
    adj = rng.choice(_ADJECTIVES)
    poss = "her" if pron == "she" else "his"
    Pron = pron.capitalize()
    opening = rng.choice([
        f"Once upon a time, there was a {adj} {animal[0]} named {name}.",
        f"{name} was a {adj} {animal[0]} who lived near the {place}.",
        f"Once upon a time, a {adj} {animal[0]} called {name} lived on a hill.",
    ])
    middle = [
        f"One {rng.choice(_WEATHER)} day, {name} went to the {place} with {poss} friend {friend}.",
        f"There, {pron} found {_a(colour)} {colour} {obj}.",
        rng.choice([f"{name} gave the {obj} to {friend}.", f"{name} showed the {obj} to {friend}.",
                    f"{name} put the {obj} in {poss} bag."]),
        rng.choice([f'{friend} said, "Thank you, {name}!"', f"{friend} smiled at {name}.",
                    f'"What a nice {obj}!" said {friend}.']),
        rng.choice([f"{Pron} was very happy.", f"Then they ate {rng.choice(_FOODS)} together.",
                    f"{name} said {animal[1]} because {pron} was so happy."]),
    ]
    n = rng.randint(2, len(middle))
    ending = rng.choice(["They played together until the sun went down.", "The end.",
                         f"{name} and {friend} became best friends.", f"Then {name} went home."])
    return " ".join([opening, *middle[:n], ending])


_PASSAGES = [(_country_passage, 0.40), (_story, 0.25), (_animal_passage, 0.14),
             (_colour_passage, 0.09), (_number_passage, 0.12)]


def _passages(rng: random.Random, n_words: int, table: Sequence[tuple[Any, float]] | None = None) -> list[str]:
    """Passages drawn from ``table`` ((maker, weight) pairs; the corpus's by default) until ``n_words``."""
    makers, weights = zip(*(_PASSAGES if table is None else table))
    out, words = [], 0
    while words < n_words:
        text = rng.choices(makers, weights)[0](rng)
        out.append(text)
        words += text.count(" ") + 1
    return out


# ---------------------------------------------------------------------------------------------
# Documents for in-context learning (mixed into the training of gpt2-course's template recipe,
# zoo.TEMPLATES, only)
# ---------------------------------------------------------------------------------------------
# These generators never touch the random stream of :func:`generate_corpus`: the corpus BERT
# trains on stays byte-identical, and :func:`generate_incontext` draws from its own seeds.

#: Rules the in-context documents apply: name -> (input, output) pairs. The facts are those of
#: :data:`FACTS` (the ordinary text teaches them); ``copy`` and ``predecessor`` are rules a
#: document shows by example.
RULES: dict[str, list[tuple[str, str]]] = {
    "capital": FACTS["capital"],
    "language": FACTS["language"],
    "continent": FACTS["continent"],
    "sound": FACTS["sound"],
    "baby": FACTS["baby"],
    "legs": FACTS["legs"],
    "colour": FACTS["colour"],
    "successor": [(NUMBER_WORDS[i], NUMBER_WORDS[i + 1]) for i in range(20)],
    "predecessor": [(NUMBER_WORDS[i + 1], NUMBER_WORDS[i]) for i in range(20)],
    "copy": sorted({(x, x) for rel in ("capital", "sound", "colour") for x, _ in FACTS[rel]}
                   | {(w, w) for w in NUMBER_WORDS}),
}

#: Things bought at the market, most popular first: a long-tailed (Zipf) list, so that the next
#: word after "... went to the market and bought" has an entropy of a few nats.
MARKET_ITEMS: list[str] = (
    "apples bread soup cake rice cheese carrots honey eggs milk fish beans nuts grapes tomatoes "
    "potatoes onions oranges bananas butter sugar salt tea coffee jam flour oil corn peas cookies "
    "pies candles socks hats shoes books cups plates toys flowers pens beads buttons rope soap "
    "paper shells stones balls boxes keys bells pots baskets blankets mushrooms nails").split()
_MARKET_WEIGHTS = [1 / (i + 1) for i in range(len(MARKET_ITEMS))]  # Zipf: p(rank r) ~ 1/r

_SYMBOLS = [":", "->", "=", "|", "#", "@", "*", "+", "~", "/", ">", ";", "&", "%", "$", "^", "<", "[",
            "]", "{", "}", "=>", "::", "--", "||", ">>", "<<", "**", "##", "`", "!", "?"]
_WORDS = sorted(set(_ADJECTIVES + _PLACES + _OBJECTS + _FOODS + _WEATHER + MARKET_ITEMS + (
    "the of is a and went to with found gave said very then they there once upon time day friend "
    "home together named called lived near on hill was who market many good old new big red blue "
    "under over after before again every some".split()))
    # no rule words; one token each
    - {w for pairs in RULES.values() for pair in pairs for w in pair} - {"kite", "windy"})

#: Tokens that can separate an input from its output, or one pair from the next, in a
#: document's made-up format (symbols and ordinary words, each with its leading space). There are
#: many, so that a model cannot learn *which* tokens are separators, only to read the format from
#: the document. Every fourth one is *held out*: it never separates anything in training (it
#: does occur as an ordinary token), so a format made of held-out tokens is new to the model.
FORMAT_TOKENS: list[str] = [" " + t for t in _SYMBOLS] + [" " + w for w in _WORDS]
HELDOUT_FORMAT_TOKENS: list[str] = FORMAT_TOKENS[3::4]
TRAIN_FORMAT_TOKENS: list[str] = [t for t in FORMAT_TOKENS if t not in HELDOUT_FORMAT_TOKENS]


def heldout_format(sep: str, delim: str) -> bool:
    """Whether the format ``(sep, delim)`` is held out: no training document uses it. One ordered
    pair in four of :data:`TRAIN_FORMAT_TOKENS` is (a fixed hash decides), so each of those tokens
    separates inputs from outputs, and pairs from each other, in training, but never in these
    combinations: a held-out format is new as a whole, and which of its two tokens plays which
    role can only be read from the examples."""
    return zlib.crc32(f"{sep}\x00{delim}".encode()) % 4 == 0


def fewshot_text(pairs: Sequence[tuple[str, str]], sep: str, delim: str,
                 query: str | None = None) -> str:
    """Pairs written in a made-up format: ``x{sep} y{delim} x{sep} y{delim} ...``; with a
    ``query``, the text ends with ``query{sep}`` (the model should continue with its output).

    >>> fewshot_text([("Italy", "Rome")], " ->", " |", query="France")
    'Italy -> Rome | France ->'
    """
    text = "".join(f"{x}{sep} {y}{delim} " for x, y in pairs)
    return text + f"{query}{sep}" if query is not None else text.rstrip(" ")


#: How often each rule is drawn for a training document: copying, which applies to every kind of
#: input, is the commonest (12 of 21 documents). A model that cannot tell the rule (no example yet)
#: then has no one fact relation to fall back on: with copying at 6 of 15, a trial model
#: (issue #20, in-context fraction 0.75, 900 steps; a script no longer in benchmarks/) answered 0.28 of the
#: zero-shot prompts right by guessing a fact of the query's kind; at 12 of 21, 0.19 (issue #20).
RULE_WEIGHTS: dict[str, float] = {rule: 12.0 if rule == "copy" else 1.0 for rule in RULES}


def _rule_document(rng: random.Random) -> str:
    pairs = RULES[rng.choices(list(RULE_WEIGHTS), list(RULE_WEIGHTS.values()))[0]]
    sep, delim = rng.sample(TRAIN_FORMAT_TOKENS, 2)  # a fresh format in every document ...
    while heldout_format(sep, delim):                 # ... but never a held-out one
        sep, delim = rng.sample(TRAIN_FORMAT_TOKENS, 2)
    return fewshot_text(rng.sample(pairs, min(len(pairs), rng.randint(6, 14))), sep, delim)


_RANDOM_TOKENS = sorted({t.strip() for t in FORMAT_TOKENS} | {c for c, *_ in COUNTRIES if " " not in c}
                        | {a[0] for a in ANIMALS} | set(NUMBER_WORDS) | {n for n, _ in _NAMES})


def _repeat_document(rng: random.Random) -> str:
    """A random sequence of 8 to 30 words and symbols, a random gap of up to 10, then the same
    sequence again, so only copying from earlier in the document predicts the second copy.
    Lengths vary, so the copy is at no fixed offset: position cannot solve it, only looking up
    the earlier occurrence of the current token (what an *induction head* does)."""
    seq = [rng.choice(_RANDOM_TOKENS) for _ in range(rng.randint(8, 30))]
    gap = [rng.choice(_RANDOM_TOKENS) for _ in range(rng.randint(0, 10))]
    return " ".join(seq + gap + seq)


def _market_sentence(rng: random.Random) -> str:
    name = rng.choice(_NAMES)[0]
    items: list[str] = []
    while len(items) < rng.randint(2, 3):
        item = rng.choices(MARKET_ITEMS, _MARKET_WEIGHTS)[0]
        items += [item] if item not in items else []
    listed = ", ".join(items[:-1]) + " and " + items[-1]
    return f"{name} went to the market and bought {listed}."


@dataclass(frozen=True)
class FewShotPrompt:
    """A query of one rule after ``n_shots`` solved examples, in a made-up format."""

    rule: str
    query: str
    answer: str        #: the output a model should continue with (after a space)
    prompt: str        #: the examples, then ``query{sep}``
    n_shots: int
    sep: str
    delim: str
    shots: tuple[tuple[str, str], ...] = ()  #: the solved examples, in order
    prefix: str = ""   #: what the prompt starts with before the first example (e.g. a BOS token)


#: The kinds of format :func:`fewshot_prompts` can draw: ``"heldout"``, a pair of training
#: separators that no training document uses together (:func:`heldout_format`); ``"unseen-tokens"``,
#: two tokens that never separate anything in training (:data:`HELDOUT_FORMAT_TOKENS`, the
#: harder test); ``"train"``, a pair that training documents may use.
FORMAT_KINDS = ("heldout", "unseen-tokens", "train")


def fewshot_prompts(n_prompts: int, n_shots: int, *, formats: str = "heldout", seed: int = 0,
                    rules: Iterable[str] | None = None, prefix: str = "") -> list[FewShotPrompt]:
    """``n_prompts`` few-shot prompts, each a random rule of :data:`RULES` (or of ``rules``), a
    random query and ``n_shots`` examples of the same rule, in a random format of the kind
    ``formats`` (see :data:`FORMAT_KINDS`; by default one that no training document uses).

    For a given ``seed`` the rule, query and format of prompt ``i`` do not depend on
    ``n_shots``, and the examples of a k-shot prompt are the first k of the same eight: the
    prompts for 0...8 shots differ only in how many examples they show. ``prefix`` is put in
    front of every prompt (e.g. the tokenizer's ``bos_token``).
    """
    names = list(RULES) if rules is None else list(rules)
    unknown = [r for r in names if r not in RULES]
    if unknown:
        raise ValueError(f"Unknown rule(s) {unknown}; known: {', '.join(RULES)}")
    if not 0 <= n_shots <= 8:
        raise ValueError(f"n_shots must be between 0 and 8, got {n_shots!r}")
    if formats not in FORMAT_KINDS:
        raise ValueError(f"formats must be one of {FORMAT_KINDS}, got {formats!r}")
    tokens = HELDOUT_FORMAT_TOKENS if formats == "unseen-tokens" else TRAIN_FORMAT_TOKENS
    out = []
    for i in range(n_prompts):
        rng = random.Random(f"course-fewshot/{seed}/{i}")
        rule = rng.choice(names)
        pairs = RULES[rule]
        query, answer = rng.choice(pairs)
        shots = rng.sample([p for p in pairs if p[0] != query], 8)[:n_shots]
        sep, delim = rng.sample(tokens, 2)
        while formats != "unseen-tokens" and heldout_format(sep, delim) != (formats == "heldout"):
            sep, delim = rng.sample(tokens, 2)
        out.append(FewShotPrompt(rule, query, answer, prefix + fewshot_text(shots, sep, delim, query),
                                 n_shots, sep, delim, tuple(shots), prefix))
    return out


_INCONTEXT = [(_rule_document, 0.6), (_repeat_document, 0.25), (_market_sentence, 0.15)]


def generate_incontext(n_words: int, seed: int = 0) -> list[str]:
    """Documents that are predictable only from their own context, about ``n_words`` words,
    deterministic by ``seed`` (``zoo.TEMPLATES``, ``gpt2-course``'s template recipe, trains on them
    mixed with :func:`generate_corpus`):

    * **rule documents**: pairs of one rule of :data:`RULES` (a country and its capital, a number
      and the next ...) in a format made up for the document from :data:`TRAIN_FORMAT_TOKENS`,
      e.g. ``"Peru # Lima ~ Chad # ..."``: which rule, and where an output starts, can only be
      read from the pairs before;
    * **repeated random sequences**, at varied distances: copying what followed the previous
      occurrence of the current token (what an *induction head* does) predicts them;
    * **market sentences** whose items follow a long-tailed distribution (for sampling).
    """
    if not isinstance(n_words, int) or n_words < 0:
        raise ValueError(f"n_words must be a non-negative int, got {n_words!r}")
    return _passages(random.Random(f"course-incontext/{seed}"), n_words, _INCONTEXT)


def mix(texts: Sequence[str], extra: Sequence[str], seed: int = 0) -> list[str]:
    """``texts`` and ``extra`` shuffled together (deterministic by ``seed``)."""
    out = list(texts) + list(extra)
    random.Random(f"course-mix/{seed}").shuffle(out)
    return out


# ---------------------------------------------------------------------------------------------
# The corpus object, in both worlds
# ---------------------------------------------------------------------------------------------

WIKITEXT = "wikitext-2-raw-v1"


@dataclass
class Corpus:
    """Named splits of text (lists of passages or lines) and where they came from.

    ``generated`` is True for the course's own generated corpus (offline) and False for the
    real data set (online); ``source`` says the same in words. Splits: ``train``,
    ``validation``, ``test``, and for the generated corpus also ``heldout`` (one sentence per
    held-out fact–phrasing pair, absent from the other splits).
    """

    name: str
    source: str
    generated: bool
    splits: dict[str, list[str]]
    seed: int | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, split: str) -> list[str]:
        if split not in self.splits:
            raise KeyError(f"No split {split!r} in {self.name}; splits: {', '.join(self.splits)}")
        return self.splits[split]

    def n_words(self, split: str = "train") -> int:
        """Whitespace-separated words in ``split``."""
        return sum(len(t.split()) for t in self[split])

    def text(self, split: str = "train") -> str:
        """The split as one string, one passage (or line) per line."""
        return "\n".join(self[split])

    def to_datasets(self) -> DatasetDict:
        """The splits as a ``datasets.DatasetDict`` with one ``"text"`` column (as wikitext)."""
        from datasets import Dataset, DatasetDict

        return DatasetDict({k: Dataset.from_dict({"text": v}) for k, v in self.splits.items()})

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}: {len(v):,} texts" for k, v in self.splits.items())
        return f"Corpus({self.name!r}, {self.source}; {sizes})"


def generate_corpus(n_words: int = 2_000_000, seed: int = 0, *, val_fraction: float = 0.05,
                    test_fraction: float = 0.05) -> Corpus:
    """The course's generated English corpus: about ``n_words`` training words, deterministic by
    ``seed``; validation and test are ``val_fraction`` / ``test_fraction`` of that size, drawn
    independently from the same distribution. ``heldout`` holds the held-out phrasings.

    About 2 M words (wikitext-2's size) take a few seconds.
    """
    if not isinstance(n_words, int) or n_words < 1:
        raise ValueError(f"n_words must be a positive int, got {n_words!r}")
    if not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= frac < 1:
            raise ValueError(f"{name} must be in [0, 1), got {frac!r}")
    splits = {}
    for split, size in (("train", n_words), ("validation", math.ceil(n_words * val_fraction)),
                        ("test", math.ceil(n_words * test_fraction))):
        # String seeds are hashed with SHA-512 by random.Random: stable across runs and machines.
        splits[split] = _passages(random.Random(f"course-corpus/{seed}/{split}"), size) if size else []
    splits["heldout"] = [p.text for p in heldout_probes()]
    return Corpus("course-generated", f"the course's generated English corpus (seed {seed}, generated offline)",
                  True, splits, seed, {"n_words": n_words})


def load_corpus(name: str = WIKITEXT, *, n_words: int = 2_000_000, seed: int = 0,
                online: bool | None = None) -> Corpus:
    """One loader for both worlds.

    Online: ``datasets.load_dataset("wikitext", "wikitext-2-raw-v1")`` (lines of Wikipedia text).
    Offline: :func:`generate_corpus` (``n_words``, ``seed``). Check ``corpus.generated`` /
    ``corpus.source`` to know which one you have. ``online`` overrides the detection.
    """
    from .runtime import is_online

    if name != WIKITEXT:
        raise ValueError(f"load_corpus knows {WIKITEXT!r}; got {name!r}. For the generated corpus "
                         "alone, call generate_corpus().")
    if online is None:
        online = is_online()
    if online:
        from datasets import load_dataset

        ds = load_dataset("wikitext", WIKITEXT)
        splits = {k: list(ds[k]["text"]) for k in ("train", "validation", "test")}
        return Corpus(WIKITEXT, "hub: wikitext / wikitext-2-raw-v1 (Wikipedia articles)", False, splits)
    return generate_corpus(n_words, seed)
