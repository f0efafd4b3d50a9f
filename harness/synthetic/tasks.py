"""The six evaluation tasks: rows in the shapes of real benchmarks, written by the generator's
items with a given label, each task from its own random stream (`TASKS`, `TASK_SPLITS`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from harness.synthetic.draft import Draft, make_rng
from harness.synthetic.generator import check, claim, entailment, halves, question, review, story, wrong_value
from harness.synthetic.language import ATTRIBUTES, LETTERS, MIN_STORY_SENTENCES, Attribute
from harness.synthetic.world import World


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
    story(d, others, n=d.choose(range(MIN_STORY_SENTENCES, g.max_sentences + 1)) - 1)
    head, tail = halves(d.choose(attribute.templates))
    true = entity.facts[attribute.name] + tail
    wrong = [wrong_value(d, attribute, entity) + tail,
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
        claim(d, truth=bool(label))
        rows.append({"sentence": _between(d.text(), "claim : ", " verdict : "), "label": label})
    return rows


def mmlu_rows(world: World, n: int, seed: int) -> list[dict]:
    """MMLU-shaped rows {"question", "subject", "choices" (4), "answer" (index)}: a question about
    a fact of the world, the true value among three wrong ones. Answers are balanced over A-D."""
    if not world.grammar.quiz_attributes:
        raise ValueError("no attribute of this world has four possible values; add entities")
    rows = []
    for _, answer, d in _rows(world, "mmlu", seed, n, len(LETTERS)):
        attribute = question(d, answer)
        lines = d.text().split("\n")
        rows.append({"question": lines[0], "subject": attribute.name,
                     "choices": [line[len("A. "):] for line in lines[1:5]], "answer": answer})
    return rows


def sst2_rows(world: World, n: int, seed: int) -> list[dict]:
    """SST-2-shaped rows {"sentence", "label", "idx"}: label 1 for a positive sentence, 0 negative."""
    rows = []
    for idx, label, d in _rows(world, "sst2", seed, n, 2):
        review(d, positive=bool(label))
        rows.append({"sentence": _between(d.text(), "review : ", " sentiment : "), "label": label, "idx": idx})
    return rows


def rte_rows(world: World, n: int, seed: int) -> list[dict]:
    """RTE-shaped rows {"sentence1", "sentence2", "label", "idx"}, labelled as GLUE's RTE: 0 when
    the premise (a true fact) entails the hypothesis, 1 when not (a contradiction, or another fact)."""
    rows = []
    for idx, label, d in _rows(world, "rte", seed, n, 2):
        entailment(d, entailed=label == 0)
        text = d.text()
        rows.append({"sentence1": _between(text, "premise : ", " hypothesis : "),
                     "sentence2": _between(text, " hypothesis : ", " entailed : "), "label": label, "idx": idx})
    return rows


def cola_rows(world: World, n: int, seed: int) -> list[dict]:
    """CoLA-shaped rows {"sentence", "label", "idx"}: 1 for a sentence of the language, 0 for one
    corrupted (two words swapped, or one doubled)."""
    rows = []
    for idx, label, d in _rows(world, "cola", seed, n, 2):
        check(d, acceptable=bool(label))
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
