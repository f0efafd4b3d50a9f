"""The generator: it draws a world's people and facts (`build_world`), then writes documents
about them, sentence by sentence, each random decision through `Draft.choose`.

A document is a story (facts, fillers and feelings) or a few items in the format of a task
(`claim`, `question`, `review`, `entailment`, `check`); the task builders write single items
with a given label. `stream` yields the corpus's documents without end.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from functools import lru_cache

from harness.synthetic.draft import Draft, make_rng
from harness.synthetic.language import (
    ACCEPTABLE_PROBABILITY,
    ASIDE_PROBABILITY,
    CLAIM_TRUE_PROBABILITY,
    CONSONANTS,
    CONTRADICTION_PROBABILITY,
    CORRUPTIONS,
    ENTAILED_PROBABILITY,
    KINDS,
    LETTERS,
    MIN_STORY_SENTENCES,
    NAME_SYLLABLES,
    PLAIN_SENTENCES,
    POSITIVE_PROBABILITY,
    SENTIMENT_PROBABILITY,
    VOWELS,
    Attribute,
    vocabulary,
)
from harness.synthetic.world import Entity, World, WorldConfig, make_grammar


# ---------------------------------------------------------------- the people


def build_world(cfg: WorldConfig) -> World:
    """The world of `cfg`: its people's names and facts, drawn from the world's own stream."""
    draft = Draft(make_rng(cfg.seed, "world", 0))
    names = _entity_names(draft, cfg.entities)
    grammar = make_grammar(cfg, len(names))
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
def halves(template: str) -> tuple[str, str]:
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
    head, tail = halves(template)
    _say(d, head)
    entity = d.subject()
    d.write(entity.facts[attribute.name] if true else wrong_value(d, attribute, entity))
    d.write(tail)


def _fact(d: Draft, attribute: Attribute) -> None:
    _state(d, attribute, _choose_template(d, attribute.templates))


def wrong_value(d: Draft, attribute: Attribute, entity: Entity, taken: Collection[int] = ()) -> str:
    """A plausible but false value: another value of the same attribute (and not in `taken`)."""
    world = d.world
    excluded = {world.index(attribute, entity.facts[attribute.name]), *taken}
    if attribute.values is None:
        excluded.add(world.index(attribute, entity.name))
    return _pick(d, world.values(attribute), excluded)


def _same(word: str) -> str:
    return word


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


def story(d: Draft, attributes: Sequence[Attribute] | None = None, n: int | None = None) -> None:
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


def claim(d: Draft, truth: bool | None = None) -> bool:
    """"claim : <fact sentence> verdict : true ." (or a wrong value and false)."""
    d.write("claim : ")
    if truth is None:
        truth = d.flip(CLAIM_TRUE_PROBABILITY)
    attribute = d.choose(d.world.grammar.attributes)
    _state(d, attribute, _choose_template(d, attribute.templates), truth)
    d.write(" verdict : true ." if truth else " verdict : false .")
    return truth


def question(d: Draft, answer: int | None = None) -> Attribute:
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
        value = entity.facts[attribute.name] if slot == answer else wrong_value(d, attribute, entity, taken)
        taken.add(d.world.index(attribute, value))
        d.write(value)
    d.write(f"\nAnswer: {LETTERS[answer]}")
    return attribute


def review(d: Draft, positive: bool | None = None) -> bool:
    d.write("review : ")
    positive = _sentiment(d, positive)
    d.write(" sentiment : positive ." if positive else " sentiment : negative .")
    return positive


def entailment(d: Draft, entailed: bool | None = None) -> bool:
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


def check(d: Draft, acceptable: bool | None = None) -> bool:
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
    "story": story,
    "fact_check": _items(claim),
    "quiz": _items(question, "\n\n"),
    "review": _items(review),
    "entailment": _items(entailment),
    "check": _items(check),
}


def write_document(d: Draft) -> None:
    _WRITERS[d.choose(KINDS, d.world.grammar.kind_weights)](d)


def stream(world: World, seed: int, record: bool = False) -> Iterator[Draft]:
    """The corpus's documents without end, each a draft: its `text()`, `logprob` and (when
    `record`) `trace`. `corpus(world, n, seed)` holds the texts of the first n."""
    rng = make_rng(world.seed, "corpus", seed)
    while True:
        draft = Draft(rng, world, record)
        write_document(draft)
        yield draft


def documents(world: World, n_documents: int, seed: int, record: bool = False) -> list[Draft]:
    """The first `n_documents` drafts of `stream`."""
    return list(itertools.islice(stream(world, seed, record), n_documents))


def corpus(world: World, n_documents: int, seed: int) -> list[str]:
    return [d.text() for d in documents(world, n_documents, seed)]


def corpus_logprobs(world: World, n_documents: int, seed: int) -> list[tuple[str, float]]:
    """(text, log P(text)) of every corpus document, as written: no parse needed."""
    return [(d.text(), d.logprob) for d in documents(world, n_documents, seed)]

