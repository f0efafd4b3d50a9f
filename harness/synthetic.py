"""A small synthetic world, the language that talks about it, and the tasks asked of it.

The world is a set of people, each with one value per attribute: a home city, a profession, a
favourite food and colour, a pet, a friend, a sibling and a birth month. Every document is about
one person, in lowercase words with " ." as its own word. Most documents are short stories of
facts, fillers and feelings:

    lamo lives in paris . the weather was fine . lamo works as a baker . lamo hates the rain .

The others are written in the formats of the downstream tasks, so that a model which learned
the language can answer each task zero-shot:

    claim : lamo lives in rome . verdict : false .                            synthetic_glue
    where does lamo live ?\\nA. rome\\nB. paris\\nC. oslo\\nD. cairo\\nAnswer: B    synthetic_mmlu
    review : lamo loves the sea . sentiment : positive .                      synthetic_sst2
    premise : lamo lives in paris . hypothesis : lamo has a home in paris . entailed : yes .
                                                                              synthetic_rte
    check : lives lamo in paris . acceptable : no .                           synthetic_cola

(synthetic_hellaswag continues a story cut before a fact's value.) `TASKS` maps each task to
its rows; `TASK_SPLITS` gives the seed of each split.

**Known entropy.** Every random decision goes through `Draft.choose`, which records the option
taken and its probability (a `Choice`). The grammar is unambiguous: `parse` finds every sequence
of choices that writes a given text, by replaying the generator and dropping a branch as soon
as it writes text the document does not hold, and insists on exactly one. So
`document_logprob` is exact (natural log), and `entropy_bits_per_byte` is the floor under any
model's bits per byte on the text. `enumerate_documents` lists the whole language of a tiny world.

The world is fixed for a suite: the entropy is that of the documents given the world. Nothing
here depends on numpy or torch.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import math
import random
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import cached_property, lru_cache
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

T = TypeVar("T")

MAX_RICHNESS = 3


@dataclass(frozen=True)
class Attribute:
    """One kind of fact: every person has exactly one value of each attribute.

    `values` is None when the value is another person (a relation). Every template holds
    "{e}" (the person) before "{v}" (the value), which is its last slot, so a sentence cut just
    before "{v}" still names whom it is about. `questions` ask for the value (quiz documents).
    Richness keeps a prefix of `templates` and `questions`.
    """

    name: str
    values: tuple[str, ...] | None
    templates: tuple[str, ...]
    questions: tuple[str, ...] = ()


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        "city",
        ("paris", "london", "rome", "berlin", "madrid", "vienna", "oslo", "lisbon", "dublin",
         "prague", "athens", "cairo"),
        ("{e} lives in {v} .", "{e} has a home in {v} .", "the home of {e} is in {v} .",
         "{e} resides in {v} ."),
        ("where does {e} live ?", "in which city does {e} live ?"),
    ),
    Attribute(
        "profession",
        ("baker", "doctor", "farmer", "teacher", "painter", "singer", "pilot", "lawyer", "nurse",
         "tailor", "miner", "cook"),
        ("{e} works as a {v} .", "{e} is a {v} by trade .", "the job of {e} is {v} .",
         "{e} earns a living as a {v} ."),
        ("what is the job of {e} ?", "what does {e} do for a living ?"),
    ),
    Attribute(
        "food",
        ("bread", "rice", "soup", "cheese", "apples", "pasta", "fish", "beans", "cake", "noodles"),
        ("{e} likes to eat {v} .", "the favourite food of {e} is {v} .",
         "{e} often cooks {v} for dinner .", "{e} eats {v} most days ."),
        ("what does {e} like to eat ?", "what is the favourite food of {e} ?"),
    ),
    Attribute(
        "colour",
        ("red", "blue", "green", "yellow", "purple", "orange", "black", "white"),
        ("the favourite colour of {e} is {v} .", "{e} likes the colour {v} .",
         "{e} wears {v} clothes .", "{e} painted the door {v} ."),
        ("what is the favourite colour of {e} ?", "which colour does {e} like ?"),
    ),
    Attribute(
        "pet",
        ("cat", "dog", "horse", "rabbit", "parrot", "goat"),
        ("{e} has a pet {v} .", "the pet of {e} is a {v} .", "{e} keeps a {v} at home .",
         "{e} feeds the {v} every morning ."),
        ("what pet does {e} have ?", "which animal does {e} keep ?"),
    ),
    Attribute(
        "friend",
        None,
        ("the friend of {e} is {v} .", "{e} is friends with {v} .", "{e} often visits {v} .",
         "{e} meets {v} for lunch ."),
        ("who is the friend of {e} ?", "whom does {e} often visit ?"),
    ),
    Attribute(
        "sibling",
        None,
        ("the sibling of {e} is {v} .", "{e} has a sibling called {v} .", "{e} grew up with {v} .",
         "{e} shares a family with {v} ."),
        ("who is the sibling of {e} ?", "who did {e} grow up with ?"),
    ),
    Attribute(
        "month",
        ("january", "february", "march", "april", "may", "june", "july", "august", "september",
         "october", "november", "december"),
        ("{e} was born in {v} .", "the birthday of {e} is in {v} .",
         "{e} has a birthday in {v} .", "{e} celebrates a birthday in {v} ."),
        ("when was {e} born ?", "in which month was {e} born ?"),
    ),
)
ATTRIBUTE_NAMES = tuple(a.name for a in ATTRIBUTES)

# Sentences that state no fact: they teach grammar and make documents less regular.
FILLERS: tuple[str, ...] = (
    "the weather was fine .",
    "it was a quiet day .",
    "nothing much happened .",
    "the story goes on .",
    "{e} went for a walk .",
    "{e} read a book in the evening .",
    "{e} was happy that day .",
    "{e} took the train to work .",
    "the days grew longer .",
    "{e} wrote a letter .",
)


@dataclass(frozen=True)
class SentimentForm:
    """A sentence with a polarity: "{w}" is a word from `positive` or `negative`, "{o}" an object."""

    template: str
    positive: tuple[str, ...]
    negative: tuple[str, ...]


SENTIMENT_FORMS: tuple[SentimentForm, ...] = (
    SentimentForm("{e} {w} the {o} .", ("loves", "enjoys", "adores", "admires"),
                  ("hates", "dislikes", "dreads", "resents")),
    SentimentForm("{e} thinks the {o} is {w} .", ("wonderful", "lovely", "pleasant", "splendid"),
                  ("awful", "dreary", "terrible", "horrible")),
)
OBJECTS: tuple[str, ...] = ("rain", "sea", "market", "music", "winter", "garden", "theatre", "harbour")

# Document kinds; the last four are the formats of synthetic_mmlu, _sst2, _rte and _cola.
KINDS = ("story", "fact_check", "quiz", "review", "entailment", "check")
# Corruptions of an unacceptable sentence, each invertible: swap the first two words, swap the
# last two before ".", or write the second word twice.
CORRUPTIONS = ("swap_first", "swap_last", "repeat_second")
PLAIN_SENTENCES = ("fact", "filler", "sentiment")
LETTERS = "ABCD"
FORMAT_WORDS = ("claim", "verdict", "true", "false", "review", "sentiment", "positive", "negative",
                "premise", "hypothesis", "entailed", "yes", "no", "check", "acceptable", ":", ".", "?")

CONSONANTS = tuple("bdfgklmnprstvz")
VOWELS = tuple("aeiou")
NAME_SYLLABLES: tuple[int, ...] = (2, 3)
MIN_STORY_SENTENCES = 2
MAX_ITEMS = 4  # claims, questions, reviews, ... in one document of a task format
ASIDE_PROBABILITY = 0.2  # a story sentence is a filler or a feeling rather than a fact
SENTIMENT_PROBABILITY = 0.5  # an aside is a feeling rather than a filler
POSITIVE_PROBABILITY = 0.5
CLAIM_TRUE_PROBABILITY = 0.5
ENTAILED_PROBABILITY = 0.5
CONTRADICTION_PROBABILITY = 0.5  # a hypothesis not entailed contradicts, else is about another fact
ACCEPTABLE_PROBABILITY = 0.5


class WorldConfig(BaseModel):
    """The synthetic world, its language and how much text the corpus holds about it."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    seed: int = Field(default=0, ge=0)
    """Seed of the world: its people, their names and their facts."""
    entities: int = Field(default=40, ge=3, le=100_000)
    """Number of people in the world (at least 3, so that every relation has a wrong value)."""
    documents: int = Field(default=4000, ge=2)
    """Documents in the corpus, training and validation together."""
    fact_check_fraction: float = Field(default=0.1, ge=0.0, le=1.0)
    """Share of documents written as "claim : <sentence> verdict : true ." (or false)."""
    task_fraction: float = Field(default=0.2, ge=0.0, le=1.0)
    """Share of documents in the formats of the other tasks (quiz, review, premise and hypothesis,
    acceptability check), a quarter each: they make those tasks answerable zero-shot."""
    richness: int = Field(default=2, ge=1, le=MAX_RICHNESS)
    """Vocabulary richness, 1 to 3: how many paraphrases of each fact and question, fillers and
    sentiment words the language uses."""
    attributes: tuple[str, ...] = ATTRIBUTE_NAMES
    """The kinds of fact the world holds: some of city, profession, food, colour, pet, friend,
    sibling, month."""
    max_sentences: int = Field(default=8, ge=MIN_STORY_SENTENCES, le=64)
    """Longest story, in sentences (stories hold 2 to this many, uniformly); a document in a task
    format holds 1 to min(4, max_sentences // 2) items."""

    @field_validator("attributes")
    @classmethod
    def _known_attributes(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [n for n in names if n not in ATTRIBUTE_NAMES]
        if unknown or not names or len(set(names)) != len(names):
            raise ValueError(f"expected distinct names among {', '.join(ATTRIBUTE_NAMES)}; got {list(names)}")
        return names

    @model_validator(mode="after")
    def _shares_fit(self) -> WorldConfig:
        if self.fact_check_fraction + self.task_fraction > 1.0:
            raise ValueError("fact_check_fraction + task_fraction must be at most 1")
        return self


# ---------------------------------------------------------------- choices


@dataclass(frozen=True, slots=True)
class Choice:
    """One random decision: which option was taken, and the probability it had."""

    index: int
    probability: float


class Draft:
    """A text being written: it draws every random choice, records it, and collects the text.

    `logprob` sums the natural log of every choice's probability; `trace` (when `record`) keeps
    the choices. The person a document is about (`subject`) is drawn at their first mention, so
    a document that never names them makes no choice that its text does not show.
    """

    def __init__(self, rng: random.Random | None, world: World | None = None, record: bool = False):
        self.rng = rng
        self.world = world
        self.trace: list[Choice] | None = [] if record else None
        self.logprob = 0.0
        self.entity: Entity | None = None
        self._out: list[str] = []
        self._rewrite: _Corruption | None = None

    def choose(self, options: Sequence[T], weights: Sequence[float] | None = None,
               says: Callable[[T], str] | None = None) -> T:
        """One option, uniformly or in proportion to `weights`.

        `says(option)` is text that the draft writes next when it takes `option`: a parse uses it
        to skip options that the document does not continue with. It must hold exactly.
        """
        i, p = self._draw(options, weights, says)
        self.logprob += math.log(p)
        if self.trace is not None:
            self.trace.append(Choice(i, p))
        return options[i]

    def flip(self, probability: float) -> bool:
        return self.choose(_BOOLS, (probability, 1.0 - probability))

    def subject(self) -> Entity:
        """The person the text is about (drawn now, if not named yet)."""
        if self.entity is None:
            self.entity = self.choose(self.world.entities)
        return self.entity

    def name_subject(self) -> None:
        """Write the subject's name, drawing the subject here at their first mention."""
        if self.entity is None:
            self.entity = self.choose(self.world.entities, says=_name)
        self.write(self.entity.name)

    def write(self, text: str) -> None:
        if self._rewrite is not None:
            text = self._rewrite.feed(text)
        if text:
            self._emit(text)

    @contextlib.contextmanager
    def rewritten(self, corruption: str | None) -> Iterator[None]:
        """The sentence written inside comes out corrupted (see CORRUPTIONS)."""
        if corruption is None:
            yield
            return
        self._rewrite = _Corruption(corruption)
        yield
        rewrite, self._rewrite = self._rewrite, None
        self._emit(rewrite.close())

    def text(self) -> str:
        return "".join(self._out)

    def _draw(self, options: Sequence, weights: Sequence[float] | None,
              says: Callable[[T], str] | None) -> tuple[int, float]:
        n = len(options)
        if weights is None:
            return int(self.rng.random() * n), 1.0 / n
        cumulative = list(itertools.accumulate(weights))
        i = bisect.bisect_right(cumulative, self.rng.random() * cumulative[-1])
        return i, weights[i] / cumulative[-1]

    def _emit(self, text: str) -> None:
        self._out.append(text)


_BOOLS = (True, False)


def _name(entity: Entity) -> str:
    return entity.name


def _same(word: str) -> str:
    return word


def _probabilities(n: int, weights: Sequence[float] | None) -> tuple[float, ...]:
    """The probability of each option, computed exactly as `Draft._draw` does."""
    if weights is None:
        return (1.0 / n,) * n
    total = list(itertools.accumulate(weights))[-1]
    return tuple(w / total for w in weights)


def make_rng(world_seed: int, purpose: str, seed: int) -> random.Random:
    """A generator per (world, purpose, seed): the corpus and every task draw from their own
    stream, so evaluation rows never replay the training documents' choices."""
    # A str seed is hashed with SHA-512 by `random`, the same on every run and platform.
    return random.Random(f"{world_seed}/{purpose}/{seed}")


class _Corruption:
    """Rewrites the words of one sentence as they arrive, holding back only the words it has yet
    to move, so a parse can reject a wrong branch early.

    >>> c = _Corruption("swap_last"); c.feed("lamo lives in ") + c.feed("rome .") + c.close()
    'lamo lives rome in .'
    """

    def __init__(self, kind: str):
        self.kind = kind
        self.words: list[str] = []
        self.partial = ""
        self.sent = 0

    def feed(self, text: str) -> str:
        *complete, self.partial = (self.partial + text).split(" ")
        self.words += complete
        return self._release(final=False)

    def close(self) -> str:
        self.words.append(self.partial)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        """The words, not sent yet, whose place in the corrupted sentence is known."""
        n = len(self.words)
        if final:
            out = corrupt(self.kind, self.words)
        elif self.kind == "swap_last":
            out = self.words[:max(0, n - 2)]  # the last two so far may be the last two
        elif n >= 2:
            out = corrupt(self.kind, self.words)  # only the first two words move
        else:
            out = [] if self.kind == "swap_first" else self.words
        new, space = out[self.sent:], " " if self.sent else ""
        self.sent = len(out)
        return space + " ".join(new) if new else ""


def corrupt(kind: str, words: Sequence[str]) -> list[str]:
    """The words of a sentence (ending with ".") under one of CORRUPTIONS."""
    if kind == "swap_first":
        return [words[1], words[0], *words[2:]]
    if kind == "swap_last":
        return [*words[:-3], words[-2], words[-3], words[-1]]
    return [words[0], words[1], *words[1:]]


def uncorrupt(kind: str, words: Sequence[str]) -> list[str] | None:
    """The words that `corrupt(kind, ...)` turns into `words`, or None when there are none."""
    if len(words) < 3 or words[-1] != ".":
        return None
    if kind == "swap_first":
        return [words[1], words[0], *words[2:]]
    if kind == "swap_last":
        return [*words[:-3], words[-2], words[-3], words[-1]]
    if len(words) >= 4 and words[1] == words[2]:
        return [words[0], *words[2:]]
    return None


# ---------------------------------------------------------------- the world


@dataclass(frozen=True)
class Entity:
    name: str
    facts: dict[str, str]
    """attribute name -> value (a word, or another entity's name for a relation)"""


@dataclass(frozen=True)
class Grammar:
    """The language of one world: the config's attributes and the words its richness keeps."""

    attributes: tuple[Attribute, ...]
    quiz_attributes: tuple[Attribute, ...]
    """Attributes with at least four possible values, enough for a four-way question."""
    fillers: tuple[str, ...]
    sentiment_forms: tuple[SentimentForm, ...]
    objects: tuple[str, ...]
    kind_weights: tuple[float, ...]
    """Weight of each of KINDS."""
    max_sentences: int
    max_items: int


@dataclass(frozen=True)
class World:
    seed: int
    entities: tuple[Entity, ...]
    fact_check_fraction: float
    grammar: Grammar

    def entity(self, name: str) -> Entity:
        return self._by_name[name]

    def values(self, attribute: Attribute) -> tuple[str, ...]:
        """Every value `attribute` can take: its words, or the people for a relation."""
        return attribute.values if attribute.values is not None else self.names

    def index(self, attribute: Attribute, value: str) -> int:
        """The position of `value` in `values(attribute)`."""
        if attribute.values is None:
            return self._name_indices[value]
        return self._value_indices[attribute.name][value]

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.entities)

    @cached_property
    def _by_name(self) -> dict[str, Entity]:
        return {e.name: e for e in self.entities}

    @cached_property
    def _name_indices(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.names)}

    @cached_property
    def _value_indices(self) -> dict[str, dict[str, int]]:
        return {a.name: {v: i for i, v in enumerate(a.values)} for a in ATTRIBUTES if a.values}


def build_world(cfg: WorldConfig) -> World:
    draft = Draft(make_rng(cfg.seed, "world", 0))
    names = _entity_names(draft, cfg.entities)
    grammar = _grammar(cfg, len(names))
    entities = tuple(Entity(name, {a.name: _draw_fact(draft, a, i, names) for a in grammar.attributes})
                     for i, name in enumerate(names))
    return World(cfg.seed, entities, cfg.fact_check_fraction, grammar)


def _entity_names(draft: Draft, n: int) -> list[str]:
    taken = vocabulary()
    names: list[str] = []
    while len(names) < n:
        name = "".join(draft.choose(CONSONANTS) + draft.choose(VOWELS)
                       for _ in range(draft.choose(NAME_SYLLABLES)))
        if name not in taken:
            taken.add(name)
            names.append(name)
    return names


def vocabulary() -> set[str]:
    """Every word the language uses besides names, so that no name collides with one."""
    texts = [t for a in ATTRIBUTES for t in a.templates + a.questions] + list(FILLERS)
    texts += [f.template for f in SENTIMENT_FORMS]
    words = {w for t in texts for w in t.split()} | set(FORMAT_WORDS) | set(OBJECTS)
    words |= {w for f in SENTIMENT_FORMS for w in f.positive + f.negative}
    return words | {v for a in ATTRIBUTES for v in a.values or ()}


def _grammar(cfg: WorldConfig, n_entities: int) -> Grammar:
    r = cfg.richness
    attributes = tuple(replace(a, templates=_keep(a.templates, r, 2), questions=_keep(a.questions, r, 1))
                       for a in ATTRIBUTES if a.name in cfg.attributes)
    quiz = tuple(a for a in attributes if len(a.values or range(n_entities - 1)) >= len(LETTERS))
    forms = tuple(replace(f, positive=_keep(f.positive, r, 1), negative=_keep(f.negative, r, 1))
                  for f in _keep(SENTIMENT_FORMS, r, 1))
    share = cfg.task_fraction / 4
    weights = (max(0.0, 1.0 - cfg.fact_check_fraction - cfg.task_fraction), cfg.fact_check_fraction,
               share if quiz else 0.0, share, share, share)
    return Grammar(attributes, quiz, _keep(FILLERS, r, 1), forms, _keep(OBJECTS, r, 2), weights,
                   cfg.max_sentences, min(MAX_ITEMS, max(1, cfg.max_sentences // 2)))


def _keep(items: tuple[T, ...], richness: int, least: int) -> tuple[T, ...]:
    """The first items, a share growing with richness (all of them at MAX_RICHNESS)."""
    return items[:max(least, math.ceil(len(items) * richness / MAX_RICHNESS))]


def _draw_fact(draft: Draft, attribute: Attribute, i: int, names: Sequence[str]) -> str:
    if attribute.values is not None:
        return draft.choose(attribute.values)
    return _pick(draft, names, {i})  # nobody is their own friend or sibling


def _pick(draft: Draft, values: Sequence[str], excluded: set[int]) -> str:
    """A uniform draw from `values` other than the positions in `excluded` (the caller writes
    the value next)."""
    skipped = sorted(excluded)

    def position(j: int) -> int:
        for k in skipped:
            if j < k:
                break
            j += 1
        return j

    j = draft.choose(range(len(values) - len(skipped)), says=lambda j: values[position(j)])
    return values[position(j)]


# ---------------------------------------------------------------- sentences


@lru_cache(maxsize=None)
def _parts(template: str) -> tuple[str, ...]:
    """"{e} thinks the {o} is {w} ." -> ("", "e", " thinks the ", "o", " is ", "w", " ."):
    text at even positions, slot names at odd ones."""
    return tuple(re.split(r"\{(\w+)\}", template))


@lru_cache(maxsize=None)
def _halves(template: str) -> tuple[str, str]:
    """A fact template cut at its value: ("{e} lives in ", " .")."""
    head, tail = template.split("{v}")
    return head, tail


def _say(d: Draft, template: str, **slots: Callable[[], str]) -> None:
    """Write `template`, "{e}" as the subject's name and every other slot from its function."""
    for i, part in enumerate(_parts(template)):
        if i % 2 == 0:
            if part:
                d.write(part)
        elif part == "e":
            d.name_subject()
        else:
            d.write(slots[part]())


def _choose_template(d: Draft, templates: Sequence[str]) -> str:
    """One of `templates`, which the caller then says (`_say`) at once."""
    return d.choose(templates, says=lambda t: _opening(d, t))


def _opening(d: Draft, template: str) -> str:
    """The text `_say(d, template)` writes before its first choice."""
    out = []
    for i, part in enumerate(_parts(template)):
        if i % 2 == 0:
            out.append(part)
        elif part == "e" and d.entity is not None:
            out.append(d.entity.name)
        else:
            break
    return "".join(out)


def _state(d: Draft, attribute: Attribute, template: str, true: bool = True) -> None:
    """A sentence giving the subject's `attribute`: its true value, or a wrong one."""
    head, tail = _halves(template)
    _say(d, head)
    entity = d.subject()
    d.write(entity.facts[attribute.name] if true else _wrong_value(d, attribute, entity))
    d.write(tail)


def _fact(d: Draft, attribute: Attribute) -> None:
    _state(d, attribute, _choose_template(d, attribute.templates))


def _wrong_value(d: Draft, attribute: Attribute, entity: Entity, taken: Collection[int] = ()) -> str:
    """A plausible but false value: another value of the same attribute (and not in `taken`)."""
    world = d.world
    excluded = {world.index(attribute, entity.facts[attribute.name]), *taken}
    if attribute.values is None:
        excluded.add(world.index(attribute, entity.name))
    return _pick(d, world.values(attribute), excluded)


def _sentiment(d: Draft, positive: bool | None = None) -> bool:
    """A sentence with a polarity ("lamo loves the sea ."); returns whether it is positive."""
    g = d.world.grammar
    if positive is None:
        positive = d.flip(POSITIVE_PROBABILITY)
    form = d.choose(g.sentiment_forms, says=lambda f: _opening(d, f.template))
    words = form.positive if positive else form.negative
    _say(d, form.template, w=lambda: d.choose(words, says=_same),
         o=lambda: d.choose(g.objects, says=_same))
    return positive


def _aside(d: Draft) -> None:
    if d.flip(SENTIMENT_PROBABILITY):
        _sentiment(d)
    else:
        _say(d, _choose_template(d, d.world.grammar.fillers))


def _plain_sentence(d: Draft) -> None:
    """Any sentence a story could hold: a true fact, a filler or a feeling."""
    kind = d.choose(PLAIN_SENTENCES)
    if kind == "fact":
        _fact(d, d.choose(d.world.grammar.attributes))
    elif kind == "filler":
        _say(d, _choose_template(d, d.world.grammar.fillers))
    else:
        _sentiment(d)


def _more(d: Draft, k: int, lo: int, hi: int) -> bool:
    """After k items, whether another follows, such that the count is uniform on [lo, hi].

    The count is told one stop-or-go at a time (stop with probability 1 / (hi - k + 1)) rather
    than drawn up front, so that a parse learns it as the text ends instead of guessing it.
    """
    if k < lo:
        return True
    if k >= hi:
        return False
    return not d.flip(1.0 / (hi - k + 1))


# ---------------------------------------------------------------- documents


def _story(d: Draft, attributes: Sequence[Attribute] | None = None, n: int | None = None) -> None:
    """Sentences about the subject: facts, fillers and feelings, each fact stated at most once
    (so a story cut before a fact's value never gave the value away earlier). `n` sentences,
    or 2 to max_sentences uniformly."""
    g = d.world.grammar
    remaining = list(g.attributes if attributes is None else attributes)
    k = 0
    while True:
        if remaining and not d.flip(ASIDE_PROBABILITY):
            attribute = d.choose(remaining)
            remaining.remove(attribute)
            _fact(d, attribute)
        else:
            _aside(d)
        k += 1
        if not (k < n if n is not None else _more(d, k, MIN_STORY_SENTENCES, g.max_sentences)):
            return
        d.write(" ")


def _claim(d: Draft, truth: bool | None = None) -> bool:
    """"claim : <fact sentence> verdict : true ." (or a wrong value and false)."""
    d.write("claim : ")
    if truth is None:
        truth = d.flip(CLAIM_TRUE_PROBABILITY)
    attribute = d.choose(d.world.grammar.attributes)
    _state(d, attribute, _choose_template(d, attribute.templates), truth)
    d.write(" verdict : true ." if truth else " verdict : false .")
    return truth


def _question(d: Draft, answer: int | None = None) -> Attribute:
    """An MMLU-shaped question: "<question>\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer: B", the
    true value at the answer's letter and three distinct wrong values in random order."""
    attribute = d.choose(d.world.grammar.quiz_attributes)
    _say(d, _choose_template(d, attribute.questions))
    if answer is None:
        answer = d.choose(range(len(LETTERS)))
    entity = d.subject()
    taken: set[int] = set()
    for slot, letter in enumerate(LETTERS):
        d.write(f"\n{letter}. ")
        value = entity.facts[attribute.name] if slot == answer else _wrong_value(d, attribute, entity, taken)
        taken.add(d.world.index(attribute, value))
        d.write(value)
    d.write(f"\nAnswer: {LETTERS[answer]}")
    return attribute


def _review(d: Draft, positive: bool | None = None) -> bool:
    d.write("review : ")
    positive = _sentiment(d, positive)
    d.write(" sentiment : positive ." if positive else " sentiment : negative .")
    return positive


def _entailment(d: Draft, entailed: bool | None = None) -> bool:
    """"premise : <true fact> hypothesis : <sentence> entailed : yes .": the hypothesis restates
    the premise in other words (yes), contradicts it, or states another true fact (no)."""
    g = d.world.grammar
    d.write("premise : ")
    attribute = d.choose(g.attributes)
    template = _choose_template(d, attribute.templates)
    _state(d, attribute, template)
    d.write(" hypothesis : ")
    if entailed is None:
        entailed = d.flip(ENTAILED_PROBABILITY)
    if entailed:
        _state(d, attribute, _choose_template(d, [t for t in attribute.templates if t != template]))
    elif len(g.attributes) == 1 or d.flip(CONTRADICTION_PROBABILITY):
        _state(d, attribute, _choose_template(d, attribute.templates), true=False)
    else:
        other = d.choose([a for a in g.attributes if a is not attribute])
        _state(d, other, _choose_template(d, other.templates))
    d.write(" entailed : yes ." if entailed else " entailed : no .")
    return entailed


def _check(d: Draft, acceptable: bool | None = None) -> bool:
    """"check : <sentence> acceptable : yes .", or a corrupted sentence and no."""
    d.write("check : ")
    if acceptable is None:
        acceptable = d.flip(ACCEPTABLE_PROBABILITY)
    with d.rewritten(None if acceptable else d.choose(CORRUPTIONS)):
        _plain_sentence(d)
    d.write(" acceptable : yes ." if acceptable else " acceptable : no .")
    return acceptable


def _items(item: Callable[[Draft], object], separator: str = " ") -> Callable[[Draft], None]:
    """A document of 1 to max_items items."""
    def write(d: Draft) -> None:
        k = 0
        while True:
            item(d)
            k += 1
            if not _more(d, k, 1, d.world.grammar.max_items):
                return
            d.write(separator)
    return write


_WRITERS: dict[str, Callable[[Draft], None]] = {
    "story": _story,
    "fact_check": _items(_claim),
    "quiz": _items(_question, "\n\n"),
    "review": _items(_review),
    "entailment": _items(_entailment),
    "check": _items(_check),
}


def _document(d: Draft) -> None:
    _WRITERS[d.choose(KINDS, d.world.grammar.kind_weights)](d)


def stream(world: World, seed: int, record: bool = False) -> Iterator[Draft]:
    """The corpus's documents without end, each a draft: its `text()`, `logprob` and (when
    `record`) `trace`. `corpus(world, n, seed)` holds the texts of the first n."""
    rng = make_rng(world.seed, "corpus", seed)
    while True:
        draft = Draft(rng, world, record)
        _document(draft)
        yield draft


def documents(world: World, n_documents: int, seed: int, record: bool = False) -> list[Draft]:
    """The first `n_documents` drafts of `stream`."""
    return list(itertools.islice(stream(world, seed, record), n_documents))


def corpus(world: World, n_documents: int, seed: int) -> list[str]:
    return [d.text() for d in documents(world, n_documents, seed)]


def corpus_logprobs(world: World, n_documents: int, seed: int) -> list[tuple[str, float]]:
    """(text, log P(text)) of every corpus document, as written: no parse needed."""
    return [(d.text(), d.logprob) for d in documents(world, n_documents, seed)]


# ---------------------------------------------------------------- parsing and entropy


class _Frontier(Exception):
    """A replay asked for a choice beyond the ones it was given: the probability of each option,
    and which options can continue the target."""

    def __init__(self, probabilities: tuple[float, ...], viable: list[bool]):
        self.probabilities = probabilities
        self.viable = viable


class _Mismatch(Exception):
    """A replay wrote text that the target does not hold at that place."""


class _Replay(Draft):
    """Takes its choices from `indices`, stops at the first one beyond them (`_Frontier`), and,
    given a `target`, stops as soon as it writes text that the target does not hold (`_Mismatch`)."""

    def __init__(self, world: World, indices: tuple[int, ...], target: str | None = None):
        super().__init__(None, world, record=True)
        self.indices = indices
        self.target = target
        self._at = 0

    def _draw(self, options: Sequence, weights: Sequence[float] | None,
              says: Callable[[T], str] | None) -> tuple[int, float]:
        n = len(options)
        k = len(self.trace)
        if k < len(self.indices):
            i = self.indices[k]
            return i, _probabilities(n, weights)[i] if weights is not None else 1.0 / n
        p = _probabilities(n, weights)
        viable = [q > 0 for q in p]
        if says is not None and self.target is not None and self._rewrite is None:
            viable = [v and self.target.startswith(says(o), self._at) for v, o in zip(viable, options)]
        raise _Frontier(p, viable)

    def _emit(self, text: str) -> None:
        if self.target is not None:
            if not self.target.startswith(text, self._at):
                raise _Mismatch
            self._at += len(text)
        self._out.append(text)

    @contextlib.contextmanager
    def rewritten(self, corruption: str | None) -> Iterator[None]:
        """Against a target, the sentence inside is checked against the target's sentence
        uncorrupted (the corruptions are invertible), so that pruning works inside it too."""
        if corruption is None or self.target is None:
            with super().rewritten(corruption):
                yield
            return
        start, end = self._at, self.target.find(" .", self._at) + len(" .")
        original = uncorrupt(corruption, self.target[start:end].split(" ")) if end > start else None
        if original is None:
            raise _Mismatch
        target, n_out = self.target, len(self._out)
        self.target = target[:start] + " ".join(original)
        yield
        if self._at != len(self.target):
            raise _Mismatch
        self.target, self._at = target, end
        self._out[n_out:] = [target[start:end]]


def _search(world: World, target: str | None = None,
            decisions: dict[tuple[int, ...], tuple[float, ...]] | None = None
            ) -> Iterator[tuple[str, list[Choice]]]:
    """Every (text, choices) the generator can write (only those writing `target`, when given),
    depth first. Sound pruning: text once written is never taken back."""
    stack: list[tuple[int, ...]] = [()]
    while stack:
        indices = stack.pop()
        draft = _Replay(world, indices, target)
        try:
            _document(draft)
        except _Frontier as frontier:
            if decisions is not None:
                decisions[indices] = frontier.probabilities
            viable = frontier.viable
            stack.extend(indices + (i,) for i in reversed(range(len(viable))) if viable[i])
            continue
        except _Mismatch:
            continue
        text = draft.text()
        if target is None or text == target:
            yield text, draft.trace


def derivations(world: World, text: str) -> list[list[Choice]]:
    """Every sequence of choices with which the generator writes `text` (one: the grammar is
    unambiguous; none: `text` is not a document of this world)."""
    return [choices for _, choices in _search(world, text)]


def parse(world: World, text: str) -> list[Choice]:
    """The choices that wrote `text`; ValueError unless there is exactly one way."""
    found = derivations(world, text)
    if len(found) != 1:
        raise ValueError(f"{len(found)} derivations (expected exactly one) of {text[:120]!r}")
    return found[0]


def regenerate(world: World, choices: Sequence[Choice]) -> str:
    """The document written by `choices` (as `parse` returns them)."""
    draft = _Replay(world, tuple(c.index for c in choices))
    try:
        _document(draft)
    except _Frontier:
        raise ValueError(f"the document needs more than {len(choices)} choices") from None
    if len(draft.trace) != len(choices):
        raise ValueError(f"the document takes {len(draft.trace)} of the {len(choices)} choices")
    return draft.text()


def document_logprob(world: World, text: str) -> float:
    """log P(text) in nats, exact: the sum of its choices' log-probabilities."""
    logps = [sum(math.log(c.probability) for c in choices) for choices in derivations(world, text)]
    if not logps:
        raise ValueError(f"not a document of this world's language: {text[:120]!r}")
    if len(logps) == 1:
        return logps[0]
    top = max(logps)
    return top + math.log(sum(math.exp(lp - top) for lp in logps))


def enumerate_documents(world: World, decisions: dict[tuple[int, ...], tuple[float, ...]] | None = None
                        ) -> Iterator[tuple[str, list[Choice]]]:
    """Every document of the world's language with its choices: only for tiny worlds.

    `decisions`, when given, receives every decision met: the indices of the choices that lead
    to it -> the probability of each of its options.
    """
    return _search(world, None, decisions)


def entropy_bits_per_byte(world: World, documents: Sequence[str],
                          logprobs: Sequence[float] | None = None) -> float:
    """Bits of the generating process per byte of `documents`: sum of -log2 P(doc) over sum of
    UTF-8 bytes, plus one per document for its end (as the data layer counts bytes).

    The entropy floor: a model's bits per byte on these documents cannot beat it on average.
    `logprobs` (from `corpus_logprobs`) spare parsing each document.
    """
    if logprobs is None:
        logprobs = [document_logprob(world, doc) for doc in documents]
    n_bytes = sum(len(doc.encode("utf-8")) + 1 for doc in documents)
    return -math.fsum(logprobs) / math.log(2) / n_bytes


# ---------------------------------------------------------------- task rows


def _rows(world: World, purpose: str, seed: int, n: int, n_labels: int
          ) -> Iterator[tuple[int, int, Draft]]:
    """(idx, label, a fresh draft) for n rows, labels balanced (0 .. n_labels-1 in turn, shuffled)."""
    rng = make_rng(world.seed, purpose, seed)
    labels = [i % n_labels for i in range(n)]
    shuffler = Draft(rng)
    for i in range(n - 1, 0, -1):  # Fisher-Yates, through Draft.choose like every random decision
        j = shuffler.choose(range(i + 1))
        labels[i], labels[j] = labels[j], labels[i]
    for idx, label in enumerate(labels):
        yield idx, label, Draft(rng, world)


def _between(text: str, start: str, end: str) -> str:
    return text[text.index(start) + len(start):text.index(end)]


def hellaswag_rows(world: World, n: int, seed: int) -> list[dict]:
    """Rows {"ctx", "endings", "label"}: `ctx` is the start of a story cut just before a fact's
    value, and ctx + " " + endings[label] is a story the corpus could hold.

    The four endings share the true ending's template: the true value, a wrong value of the same
    attribute, a value of another attribute (wrong in kind), and the true ending's words shuffled.
    """
    rng = make_rng(world.seed, "hellaswag", seed)
    return [_hellaswag_row(Draft(rng, world)) for _ in range(n)]


def _hellaswag_row(d: Draft) -> dict:
    g = d.world.grammar
    entity = d.subject()
    attribute = d.choose(g.attributes)
    others = [a for a in g.attributes if a is not attribute]
    _story(d, others, n=d.choose(range(MIN_STORY_SENTENCES, g.max_sentences + 1)) - 1)
    head, tail = _halves(d.choose(attribute.templates))
    true = entity.facts[attribute.name] + tail
    wrong = [_wrong_value(d, attribute, entity) + tail,
             _other_kind_value(d, attribute) + tail,
             _shuffled(d, true)]
    label = d.choose(range(4))
    endings = wrong[:label] + [true] + wrong[label:]
    ctx = d.text() + " " + head.replace("{e}", entity.name).rstrip()
    return {"ctx": ctx, "endings": endings, "label": label}


def _other_kind_value(d: Draft, attribute: Attribute) -> str:
    """A value that no person can have for `attribute` (a city where a profession belongs)."""
    # Two relations share their kind of value (a name), so one cannot stand in for the other.
    others = [a for a in ATTRIBUTES if a.name != attribute.name and (a.values or attribute.values)]
    other = d.choose(others)
    return d.choose(other.values) if other.values else d.choose(d.world.entities).name


def _shuffled(d: Draft, text: str) -> str:
    """The words of `text` in another order (`text` has at least two distinct words)."""
    words = text.split()
    while True:
        order = list(words)
        for i in range(len(order) - 1, 0, -1):
            j = d.choose(range(i + 1))
            order[i], order[j] = order[j], order[i]
        if (shuffled := " ".join(order)) != text:
            return shuffled


def glue_rows(world: World, n: int, seed: int) -> list[dict]:
    """Rows {"sentence", "label"}: one fact sentence, label 1 when true in the world, else 0.

    Exactly half the rows are true (one more false when `n` is odd), in random order.
    """
    rows = []
    for _, label, d in _rows(world, "glue", seed, n, 2):
        _claim(d, truth=bool(label))
        rows.append({"sentence": _between(d.text(), "claim : ", " verdict : "), "label": label})
    return rows


def mmlu_rows(world: World, n: int, seed: int) -> list[dict]:
    """MMLU-shaped rows {"question", "subject", "choices" (4), "answer" (index)}: a question about
    a fact of the world, the true value among three wrong ones. Answers are balanced over A-D."""
    if not world.grammar.quiz_attributes:
        raise ValueError("no attribute of this world has four possible values; add entities")
    rows = []
    for _, answer, d in _rows(world, "mmlu", seed, n, len(LETTERS)):
        attribute = _question(d, answer)
        lines = d.text().split("\n")
        rows.append({"question": lines[0], "subject": attribute.name,
                     "choices": [line[len("A. "):] for line in lines[1:5]], "answer": answer})
    return rows


def sst2_rows(world: World, n: int, seed: int) -> list[dict]:
    """SST-2-shaped rows {"sentence", "label", "idx"}: label 1 for a positive sentence, 0 negative."""
    rows = []
    for idx, label, d in _rows(world, "sst2", seed, n, 2):
        _review(d, positive=bool(label))
        rows.append({"sentence": _between(d.text(), "review : ", " sentiment : "), "label": label, "idx": idx})
    return rows


def rte_rows(world: World, n: int, seed: int) -> list[dict]:
    """RTE-shaped rows {"sentence1", "sentence2", "label", "idx"}, labelled as GLUE's RTE: 0 when
    the premise (a true fact) entails the hypothesis, 1 when not (a contradiction, or another fact)."""
    rows = []
    for idx, label, d in _rows(world, "rte", seed, n, 2):
        _entailment(d, entailed=label == 0)
        text = d.text()
        rows.append({"sentence1": _between(text, "premise : ", " hypothesis : "),
                     "sentence2": _between(text, " hypothesis : ", " entailed : "), "label": label, "idx": idx})
    return rows


def cola_rows(world: World, n: int, seed: int) -> list[dict]:
    """CoLA-shaped rows {"sentence", "label", "idx"}: 1 for a sentence of the language, 0 for one
    corrupted (two words swapped, or one doubled)."""
    rows = []
    for idx, label, d in _rows(world, "cola", seed, n, 2):
        _check(d, acceptable=bool(label))
        rows.append({"sentence": _between(d.text(), "check : ", " acceptable : "), "label": label, "idx": idx})
    return rows


# Every task the data layer writes: <task>/<split>.jsonl, n rows from the split's seed.
TASKS: dict[str, Callable[[World, int, int], list[dict]]] = {
    "synthetic_hellaswag": hellaswag_rows,
    "synthetic_glue": glue_rows,
    "synthetic_mmlu": mmlu_rows,
    "synthetic_cola": cola_rows,
    "synthetic_sst2": sst2_rows,
    "synthetic_rte": rte_rows,
}
# Seeds of the splits; the corpus has its own stream, so no split replays training documents.
TASK_SPLITS = {"train": 1, "validation": 2, "test": 3}
