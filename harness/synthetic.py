"""A small synthetic world and the language that talks about it.

The world is a set of people, each with one value per attribute: a home city, a profession, a
favourite food and colour, a pet, a friend and a sibling. Documents are short (2 to 8
sentences), each about one person, written in lowercase words with " ." as its own token:

    lamo lives in paris . the weather was fine . lamo works as a baker . lamo often visits kiru .

A share of the documents are fact checks, true and false claims about one person:

    claim : lamo lives in rome . verdict : false . claim : lamo has a pet cat . verdict : true .

which makes a GLUE-style truth task answerable zero-shot with the prompt
"claim : {sentence} verdict :" and the choices " false" / " true".

Every document is a sequence of explicit random choices (`choose`) over explicit distributions
(the constants below), so that a later version can record each choice's probability and give
the language a known entropy. Nothing here depends on numpy or torch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")


class WorldConfig(BaseModel):
    """The synthetic world and how much text the corpus holds about it."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    seed: int = Field(default=0, ge=0)
    """Seed of the world: its people, their names and their facts."""
    entities: int = Field(default=40, ge=3, le=10_000)
    """Number of people in the world (at least 3, so that every relation has a wrong value)."""
    documents: int = Field(default=4000, ge=2)
    """Documents in the corpus, training and validation together."""
    fact_check_fraction: float = Field(default=0.1, ge=0.0, le=1.0)
    """Share of documents written as "claim : <sentence> verdict : true ." (or false)."""


@dataclass(frozen=True)
class Attribute:
    """One kind of fact: every person has exactly one value of each attribute.

    `values` is None when the value is another person (a relation). Every template holds
    "{e}" (the person) before "{v}" (the value), so a sentence cut just before "{v}" still
    names whom it is about.
    """

    name: str
    values: tuple[str, ...] | None
    templates: tuple[str, ...]


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        "city",
        ("paris", "london", "rome", "berlin", "madrid", "vienna", "oslo", "lisbon", "dublin",
         "prague", "athens", "cairo"),
        ("{e} lives in {v} .", "{e} has a home in {v} .", "the home of {e} is in {v} ."),
    ),
    Attribute(
        "profession",
        ("baker", "doctor", "farmer", "teacher", "painter", "singer", "pilot", "lawyer", "nurse",
         "tailor", "miner", "cook"),
        ("{e} works as a {v} .", "{e} is a {v} by trade .", "the job of {e} is {v} ."),
    ),
    Attribute(
        "food",
        ("bread", "rice", "soup", "cheese", "apples", "pasta", "fish", "beans", "cake", "noodles"),
        ("{e} likes to eat {v} .", "the favourite food of {e} is {v} .",
         "{e} often cooks {v} for dinner ."),
    ),
    Attribute(
        "colour",
        ("red", "blue", "green", "yellow", "purple", "orange", "black", "white"),
        ("the favourite colour of {e} is {v} .", "{e} likes the colour {v} .",
         "{e} wears {v} clothes ."),
    ),
    Attribute(
        "pet",
        ("cat", "dog", "horse", "rabbit", "parrot", "goat"),
        ("{e} has a pet {v} .", "the pet of {e} is a {v} ."),
    ),
    Attribute(
        "friend",
        None,
        ("the friend of {e} is {v} .", "{e} is friends with {v} .", "{e} often visits {v} ."),
    ),
    Attribute(
        "sibling",
        None,
        ("the sibling of {e} is {v} .", "{e} has a sibling called {v} ."),
    ),
)

# Sentences that state no fact: they teach grammar and make documents less regular.
FILLERS: tuple[str, ...] = (
    "the weather was fine .",
    "it was a quiet day .",
    "nothing much happened .",
    "the story goes on .",
    "{e} went for a walk .",
    "{e} read a book in the evening .",
    "{e} was happy that day .",
)

CONSONANTS = tuple("bdfgklmnprstvz")
VOWELS = tuple("aeiou")
NAME_SYLLABLES: tuple[int, ...] = (2, 3)
DOCUMENT_SENTENCES: tuple[int, ...] = tuple(range(2, 9))
FACT_CHECK_CLAIMS: tuple[int, ...] = (1, 2, 3, 4)
FILLER_PROBABILITY = 0.2
CLAIM_TRUE_PROBABILITY = 0.5


@dataclass(frozen=True)
class Entity:
    name: str
    facts: dict[str, str]
    """attribute name -> value (a word, or another entity's name for a relation)"""


@dataclass(frozen=True)
class World:
    seed: int
    entities: tuple[Entity, ...]
    fact_check_fraction: float

    def entity(self, name: str) -> Entity:
        return next(e for e in self.entities if e.name == name)


# ---------------------------------------------------------------- random choices


def choose(rng: random.Random, options: Sequence[T], weights: Sequence[float] | None = None) -> T:
    """One draw from `options` (uniform unless `weights` are given). Every random choice in the
    world and its documents goes through here, so a later version can record its probability."""
    return rng.choices(options, weights=weights)[0]


def flip(rng: random.Random, probability: float) -> bool:
    return choose(rng, (True, False), (probability, 1.0 - probability))


def make_rng(world_seed: int, purpose: str, seed: int) -> random.Random:
    """A generator per (world, purpose, seed): the corpus and every task draw from their own
    stream, so evaluation rows never replay the training documents' choices."""
    # A str seed is hashed with SHA-512 by `random`, the same on every run and platform.
    return random.Random(f"{world_seed}/{purpose}/{seed}")


# ---------------------------------------------------------------- the world


def build_world(cfg: WorldConfig) -> World:
    rng = make_rng(cfg.seed, "world", 0)
    names = _entity_names(rng, cfg.entities)
    entities = tuple(Entity(name, _draw_facts(rng, name, names)) for name in names)
    return World(cfg.seed, entities, cfg.fact_check_fraction)


def _entity_names(rng: random.Random, n: int) -> list[str]:
    taken = _vocabulary()
    names: list[str] = []
    while len(names) < n:
        name = "".join(choose(rng, CONSONANTS) + choose(rng, VOWELS)
                       for _ in range(choose(rng, NAME_SYLLABLES)))
        if name not in taken:
            taken.add(name)
            names.append(name)
    return names


def _vocabulary() -> set[str]:
    """Every word the language uses besides names, so that no name collides with one."""
    texts = [t for a in ATTRIBUTES for t in a.templates] + list(FILLERS) + [claim_text("", True)]
    words = {w for t in texts for w in t.split()}
    return words | {v for a in ATTRIBUTES for v in a.values or ()}


def _draw_facts(rng: random.Random, name: str, names: Sequence[str]) -> dict[str, str]:
    return {a.name: choose(rng, _candidates(a, name, names)) for a in ATTRIBUTES}


def _candidates(attribute: Attribute, name: str, names: Sequence[str]) -> Sequence[str]:
    """The values `attribute` can take for `name`: nobody is their own friend or sibling."""
    if attribute.values is not None:
        return attribute.values
    return [n for n in names if n != name]


def _attribute(name: str) -> Attribute:
    return next(a for a in ATTRIBUTES if a.name == name)


# ---------------------------------------------------------------- sentences and documents


def fact_sentence(template: str, entity: str, value: str) -> str:
    return template.format(e=entity, v=value)


def _fact(rng: random.Random, entity: Entity, attribute: Attribute) -> str:
    value = entity.facts[attribute.name]
    return fact_sentence(choose(rng, attribute.templates), entity.name, value)


def _story(rng: random.Random, entity: Entity, n_sentences: int,
           attributes: Sequence[Attribute] = ATTRIBUTES) -> list[str]:
    """Sentences about `entity`: fillers and facts, each fact stated at most once, so that a
    story cut before a fact's value never gave the value away earlier."""
    remaining = list(attributes)
    sentences = []
    for _ in range(n_sentences):
        if not remaining or flip(rng, FILLER_PROBABILITY):
            sentences.append(choose(rng, FILLERS).format(e=entity.name))
        else:
            attribute = choose(rng, remaining)
            remaining.remove(attribute)
            sentences.append(_fact(rng, entity, attribute))
    return sentences


def _wrong_value(rng: random.Random, world: World, entity: Entity, attribute: Attribute) -> str:
    """A plausible but false value: another value of the same attribute."""
    names = [e.name for e in world.entities]
    candidates = _candidates(attribute, entity.name, names)
    return choose(rng, [v for v in candidates if v != entity.facts[attribute.name]])


def _claim(rng: random.Random, world: World, entity: Entity) -> tuple[str, bool]:
    """A sentence about `entity` and whether it is true in the world."""
    attribute = choose(rng, ATTRIBUTES)
    truth = flip(rng, CLAIM_TRUE_PROBABILITY)
    value = entity.facts[attribute.name] if truth else _wrong_value(rng, world, entity, attribute)
    return fact_sentence(choose(rng, attribute.templates), entity.name, value), truth


def claim_text(sentence: str, truth: bool) -> str:
    """The fact-check form the GLUE-style task prompts with ("claim : ... verdict :")."""
    return f"claim : {sentence} verdict : {'true' if truth else 'false'} ."


def _fact_check(rng: random.Random, world: World, entity: Entity) -> list[str]:
    claims = [_claim(rng, world, entity) for _ in range(choose(rng, FACT_CHECK_CLAIMS))]
    return [claim_text(sentence, truth) for sentence, truth in claims]


def document(rng: random.Random, world: World) -> str:
    entity = choose(rng, world.entities)
    if flip(rng, world.fact_check_fraction):
        return " ".join(_fact_check(rng, world, entity))
    return " ".join(_story(rng, entity, choose(rng, DOCUMENT_SENTENCES)))


def corpus(world: World, n_documents: int, seed: int) -> list[str]:
    rng = make_rng(world.seed, "corpus", seed)
    return [document(rng, world) for _ in range(n_documents)]


# ---------------------------------------------------------------- evaluation rows


def hellaswag_rows(world: World, n: int, seed: int) -> list[dict]:
    """Rows {"ctx", "endings", "label"}: `ctx` is the start of a story cut just before a fact's
    value, and ctx + " " + endings[label] is text the corpus could hold.

    The four endings share the true ending's template: the true value, a wrong value of the same
    attribute, a value of another attribute (wrong in kind), and the true ending's words shuffled.
    """
    rng = make_rng(world.seed, "hellaswag", seed)
    return [_hellaswag_row(rng, world) for _ in range(n)]


def _hellaswag_row(rng: random.Random, world: World) -> dict:
    entity = choose(rng, world.entities)
    attribute = choose(rng, ATTRIBUTES)
    others = [a for a in ATTRIBUTES if a is not attribute]
    before = _story(rng, entity, choose(rng, DOCUMENT_SENTENCES) - 1, others)
    head, tail = choose(rng, attribute.templates).format(e=entity.name, v="{v}").split("{v}")
    true = entity.facts[attribute.name] + tail
    wrong = [_wrong_value(rng, world, entity, attribute) + tail,
             _other_kind_value(rng, world, attribute) + tail,
             _shuffled(rng, true)]
    label = choose(rng, range(4))
    endings = wrong[:label] + [true] + wrong[label:]
    return {"ctx": " ".join(before + [head.rstrip()]), "endings": endings, "label": label}


def _other_kind_value(rng: random.Random, world: World, attribute: Attribute) -> str:
    """A value that no person can have for `attribute` (a city where a profession belongs)."""
    # Two relations share their kind of value (a name), so one cannot stand in for the other.
    others = [a for a in ATTRIBUTES if a is not attribute and (a.values or attribute.values)]
    other = choose(rng, others)
    return choose(rng, other.values) if other.values else choose(rng, world.entities).name


def _shuffled(rng: random.Random, text: str) -> str:
    """The words of `text` in another order (`text` has at least two distinct words)."""
    words = text.split()
    while (shuffled := " ".join(rng.sample(words, len(words)))) == text:
        pass
    return shuffled


def glue_rows(world: World, n: int, seed: int) -> list[dict]:
    """Rows {"sentence", "label"}: one fact sentence, label 1 when true in the world, else 0.

    Exactly half the rows are true (one more false when `n` is odd), in random order.
    """
    rng = make_rng(world.seed, "glue", seed)
    truths = [i < n // 2 for i in range(n)]
    rng.shuffle(truths)
    return [_glue_row(rng, world, truth) for truth in truths]


def _glue_row(rng: random.Random, world: World, truth: bool) -> dict:
    entity = choose(rng, world.entities)
    attribute = choose(rng, ATTRIBUTES)
    value = entity.facts[attribute.name] if truth else _wrong_value(rng, world, entity, attribute)
    return {"sentence": fact_sentence(choose(rng, attribute.templates), entity.name, value),
            "label": int(truth)}
