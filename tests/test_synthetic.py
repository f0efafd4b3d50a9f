import collections
import re

import pytest
from pydantic import ValidationError

from harness.synthetic import (
    ATTRIBUTES,
    WorldConfig,
    build_world,
    corpus,
    glue_rows,
    hellaswag_rows,
)

CFG = WorldConfig(seed=3, entities=12, documents=200)


@pytest.fixture(scope="module")
def world():
    return build_world(CFG)


def parse_fact(sentence):
    """(entity, attribute name, value) when `sentence` is a fact sentence, else None."""
    for attribute in ATTRIBUTES:
        for template in attribute.templates:
            pattern = template.replace(".", r"\.").format(e=r"(?P<e>\w+)", v=r"(?P<v>\w+)")
            if m := re.fullmatch(pattern, sentence):
                return m["e"], attribute.name, m["v"]
    return None


def is_true(world, sentence):
    entity, attribute, value = parse_fact(sentence)
    return world.entity(entity).facts[attribute] == value


def sentences(text):
    return [s + " ." for s in text.removesuffix(" .").split(" . ")]


def test_world_and_corpus_are_deterministic_under_a_seed(world):
    assert build_world(CFG) == world
    assert corpus(world, 50, seed=1) == corpus(world, 50, seed=1)


def test_another_seed_gives_another_world_and_corpus(world):
    other = build_world(CFG.model_copy(update={"seed": 4}))
    assert [e.name for e in other.entities] != [e.name for e in world.entities]
    assert corpus(world, 50, seed=1) != corpus(world, 50, seed=2)
    assert corpus(world, 50, seed=1) != corpus(other, 50, seed=1)


def test_world_has_distinct_names_and_one_value_per_attribute(world):
    names = [e.name for e in world.entities]
    assert len(set(names)) == len(names) == CFG.entities
    for entity in world.entities:
        assert set(entity.facts) == {a.name for a in ATTRIBUTES}
        assert entity.facts["friend"] in names and entity.facts["friend"] != entity.name


def test_templates_name_the_entity_before_the_value():
    for attribute in ATTRIBUTES:
        for template in attribute.templates:
            assert template.index("{e}") < template.index("{v}") and template.endswith(" .")


def test_stories_are_short_and_about_one_true_entity(world):
    stories = [d for d in corpus(world, 300, seed=0) if not d.startswith("claim :")]
    for story in stories:
        assert 2 <= len(sentences(story)) <= 8
        facts = [f for s in sentences(story) if (f := parse_fact(s))]
        assert len({entity for entity, _, _ in facts}) <= 1
        assert all(world.entity(e).facts[a] == v for e, a, v in facts)
    assert re.fullmatch(r"[a-z .]+", " ".join(stories))


def test_fact_checks_have_the_configured_share_and_correct_verdicts(world):
    docs = corpus(world, 1000, seed=0)
    checks = [d for d in docs if d.startswith("claim :")]
    assert 0.06 < len(checks) / len(docs) < 0.14
    verdicts = re.findall(r"claim : (.+?) verdict : (true|false) \.", " ".join(checks))
    assert {v for _, v in verdicts} == {"true", "false"}
    assert all(is_true(world, claim) == (verdict == "true") for claim, verdict in verdicts)


def test_hellaswag_rows_have_one_world_consistent_ending(world):
    rows = hellaswag_rows(world, 400, seed=1)
    for row in rows:
        assert len(row["endings"]) == 4 == len(set(row["endings"]))
        head = row["ctx"].split(" . ")[-1]
        consistent = [i for i, e in enumerate(row["endings"])
                      if parse_fact(f"{head} {e}") and is_true(world, f"{head} {e}")]
        assert consistent == [row["label"]]
    counts = collections.Counter(row["label"] for row in rows)
    assert set(counts) == {0, 1, 2, 3} and min(counts.values()) > 60


def test_hellaswag_context_does_not_state_the_asked_fact(world):
    for row in hellaswag_rows(world, 100, seed=1):
        *before, head = row["ctx"].split(" . ")
        asked = parse_fact(f"{head} {row['endings'][row['label']]}")[1]
        assert asked not in {f[1] for s in before if (f := parse_fact(s + " ."))}


def test_evaluation_rows_do_not_replay_the_corpus(world):
    docs = corpus(world, 100, seed=1)
    rows = hellaswag_rows(world, 100, seed=1)
    assert sum(d.startswith(r["ctx"]) for d, r in zip(docs, rows)) < 5
    assert hellaswag_rows(world, 20, seed=1) != hellaswag_rows(world, 20, seed=2)


def test_glue_rows_are_balanced_and_labelled_by_the_world(world):
    rows = glue_rows(world, 201, seed=1)
    assert sum(r["label"] for r in rows) == 100
    assert all(r["label"] == int(is_true(world, r["sentence"])) for r in rows)
    assert glue_rows(world, 50, seed=1) == glue_rows(world, 50, seed=1)
    assert glue_rows(world, 50, seed=1) != glue_rows(world, 50, seed=2)


def test_config_rejects_unknown_keys():
    with pytest.raises(ValidationError, match="entites"):
        WorldConfig(entites=5)
