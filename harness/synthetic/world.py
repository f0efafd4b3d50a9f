"""What a world is: its config (`WorldConfig`), its people (`Entity`), the language it speaks
(`Grammar`, trimmed from the words of `language` by the config) and the `World` that holds them.

The people and their facts are drawn by `generator.build_world`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from harness.synthetic.language import (
    ATTRIBUTE_NAMES,
    ATTRIBUTES,
    FILLERS,
    LETTERS,
    MAX_ITEMS,
    MAX_RICHNESS,
    MIN_STORY_SENTENCES,
    OBJECTS,
    SENTIMENT_FORMS,
    Attribute,
    SentimentForm,
)

T = TypeVar("T")


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


def make_grammar(cfg: WorldConfig, n_entities: int) -> Grammar:
    """The language of a world of `n_entities` people under `cfg`."""
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

