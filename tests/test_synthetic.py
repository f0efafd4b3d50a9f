import collections
import hashlib
import json
import math
import os
import re
import subprocess
import sys

import pytest
from pydantic import ValidationError

from harness.synthetic import TASK_SPLITS, TASKS, WorldConfig, build_world, corpus, corpus_logprobs
from harness.synthetic.draft import uncorrupt
from harness.synthetic.entropy import derivations, document_logprob, entropy_bits_per_byte, parse, regenerate
from harness.synthetic.generator import documents
from harness.synthetic.language import ATTRIBUTES, CORRUPTIONS, KINDS, LETTERS
from harness.synthetic.tasks import glue_rows, hellaswag_rows, mmlu_rows, rte_rows

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


def is_story(document):
    """Not in the format of a task (a fact check, quiz, review, entailment or acceptability check)."""
    return not re.match(r"(claim|review|premise|check) : ", document) and "\nAnswer: " not in document


def test_world_and_corpus_are_deterministic_under_a_seed(world):
    assert build_world(CFG) == world
    assert corpus(world, 50, seed=1) == corpus(world, 50, seed=1)


def test_corpus_and_rows_do_not_depend_on_the_process(world):
    """The same bytes in a process with another string-hash seed (no set order leaks in)."""
    script = ("import hashlib, json; from harness.synthetic import *; w = build_world(WorldConfig(seed=3, "
              "entities=12)); print(hashlib.sha256(json.dumps([corpus(w, 300, 1)] + "
              "[rows(w, 20, 1) for rows in TASKS.values()]).encode()).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": seed},
                              capture_output=True, text=True, check=True).stdout for seed in ("1", "2")}
    expected = json.dumps([corpus(world, 300, 1)] + [rows(world, 20, 1) for rows in TASKS.values()])
    assert digests == {hashlib.sha256(expected.encode()).hexdigest() + "\n"}


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
    stories = [d for d in corpus(world, 300, seed=0) if is_story(d)]
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


def test_task_formats_have_their_configured_shares(world):
    shares = collections.Counter(kind_of(d) for d in corpus(world, 2000, seed=0))
    for kind in ("quiz", "review", "entailment", "check"):
        assert 0.03 < shares[kind] / 2000 < 0.07  # task_fraction 0.2, a quarter each
    none = build_world(CFG.model_copy(update={"task_fraction": 0.0, "fact_check_fraction": 0.0}))
    assert {kind_of(d) for d in corpus(none, 300, seed=0)} == {"story"}


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


def test_config_rejects_unknown_keys_attributes_and_shares():
    with pytest.raises(ValidationError, match="entites"):
        WorldConfig(entites=5)
    with pytest.raises(ValidationError, match="distinct names among city"):
        WorldConfig(attributes=("city", "planet"))
    with pytest.raises(ValidationError, match="at most 1"):
        WorldConfig(fact_check_fraction=0.5, task_fraction=0.6)


# ---------------------------------------------------------------- choices and parsing

# Worlds of different shapes: the test world, the richest vocabulary, a small plain one.
WORLDS = {
    "default": CFG,
    "rich": WorldConfig(seed=5, entities=30, richness=3),
    "plain": WorldConfig(seed=7, entities=6, richness=1, attributes=("city", "friend"), max_sentences=5),
}
PER_KIND = 6


def kind_of(document):
    if "\nAnswer: " in document:
        return "quiz"
    prefixes = {"claim": "fact_check", "review": "review", "premise": "entailment", "check": "check"}
    return prefixes.get(document.split(" ", 1)[0], "story")


@pytest.fixture(scope="module", params=list(WORLDS))
def sample(request):
    """(world, drafts): a few documents of every kind, with the choices that wrote them."""
    world = build_world(WORLDS[request.param])
    by_kind = collections.defaultdict(list)
    for draft in documents(world, 600, seed=9, record=True):
        by_kind[kind_of(draft.text())].append(draft)
    assert set(by_kind) == set(KINDS)
    return world, [d for kind in KINDS for d in by_kind[kind][:PER_KIND]]


def test_parse_recovers_the_choices_and_regenerating_gives_the_text(sample):
    world, drafts = sample
    for draft in drafts:
        choices = parse(world, draft.text())  # exactly one derivation, else ValueError
        assert choices == draft.trace
        assert regenerate(world, choices) == draft.text()


def test_document_logprob_is_the_sum_of_the_recorded_choices(sample):
    world, drafts = sample
    for draft in drafts:
        recorded = sum(math.log(c.probability) for c in draft.trace)
        assert draft.logprob == pytest.approx(recorded, rel=1e-12)
        assert document_logprob(world, draft.text()) == pytest.approx(recorded, rel=1e-12)
        assert all(0 < c.probability <= 1 for c in draft.trace)


def test_text_outside_the_language_has_no_derivation(world):
    docs = corpus(world, 200, seed=4)
    story = next(d for d in docs if kind_of(d) == "story" and parse_fact(sentences(d)[0]))
    entity, attribute, value = parse_fact(sentences(story)[0])
    kind = next(a.values or [e.name for e in world.entities] for a in ATTRIBUTES if a.name == attribute)
    wrong = next(v for v in kind if v not in (value, entity))
    claim = next(d for d in docs if kind_of(d) == "fact_check")
    outside = [
        story.replace(f" {value} .", f" {wrong} .", 1),  # a story states only true facts
        story + " .",
        story.removesuffix(" ."),
        claim.replace("verdict : true", "verdict : false") if "verdict : true" in claim
        else claim.replace("verdict : false", "verdict : true"),
        "the weather was fine .",  # a story has at least two sentences
    ]
    for text in outside:
        assert derivations(world, text) == []
        with pytest.raises(ValueError, match="not a document"):
            document_logprob(world, text)
        with pytest.raises(ValueError, match="0 derivations"):
            parse(world, text)


def test_regenerate_needs_exactly_the_choices_of_one_document(world):
    draft = documents(world, 1, seed=3, record=True)[0]
    with pytest.raises(ValueError, match="needs more"):
        regenerate(world, draft.trace[:-1])
    with pytest.raises(ValueError, match="takes"):
        regenerate(world, draft.trace + draft.trace[-1:])


def test_logprobs_come_with_the_corpus_and_give_the_entropy_floor(world):
    pairs = corpus_logprobs(world, 60, seed=5)
    texts = [text for text, _ in pairs]
    assert texts == corpus(world, 60, seed=5)
    floor = entropy_bits_per_byte(world, texts, [lp for _, lp in pairs])
    assert entropy_bits_per_byte(world, texts) == pytest.approx(floor, rel=1e-12)
    n_bytes = sum(len(t.encode()) + 1 for t in texts)
    assert floor == pytest.approx(-sum(lp for _, lp in pairs) / math.log(2) / n_bytes)
    assert 0.05 < floor < 0.6


def test_richness_adds_paraphrases_and_words(world):
    def words(cfg):
        return {w for d in corpus(build_world(cfg), 1500, seed=0) for w in d.split()}
    poor, rich = words(CFG.model_copy(update={"richness": 1})), words(CFG.model_copy(update={"richness": 3}))
    assert poor < rich | poor and len(rich) > len(poor) + 20
    assert {"resides", "earns", "splendid", "harbour"} <= rich and not {"resides", "splendid"} & poor


def test_a_world_of_some_attributes_states_only_those():
    world = build_world(WorldConfig(seed=2, entities=8, attributes=("pet", "month")))
    assert all(set(e.facts) == {"pet", "month"} for e in world.entities)
    stated = {f[1] for d in corpus(world, 200, seed=0) if kind_of(d) == "story"
              for s in sentences(d) if (f := parse_fact(s))}
    assert stated == {"pet", "month"}


# ---------------------------------------------------------------- downstream tasks

N_ROWS = 40
FIELDS = {
    "synthetic_hellaswag": {"ctx", "endings", "label"},
    "synthetic_glue": {"sentence", "label"},
    "synthetic_mmlu": {"question", "subject", "choices", "answer"},
    "synthetic_cola": {"sentence", "label", "idx"},
    "synthetic_sst2": {"sentence", "label", "idx"},
    "synthetic_rte": {"sentence1", "sentence2", "label", "idx"},
}


@pytest.fixture(scope="module")
def task_rows(world):
    return {task: rows(world, N_ROWS, TASK_SPLITS["validation"]) for task, rows in TASKS.items()}


def test_every_task_has_rows_in_its_benchmark_shape(task_rows):
    assert set(TASKS) == set(FIELDS) and list(TASK_SPLITS) == ["train", "validation", "test"]
    assert len(set(TASK_SPLITS.values())) == 3
    for task, rows in task_rows.items():
        assert len(rows) == N_ROWS
        assert all(set(row) == FIELDS[task] for row in rows)
        assert all(json.loads(json.dumps(row)) == row for row in rows)
        if "idx" in FIELDS[task]:
            assert [row["idx"] for row in rows] == list(range(N_ROWS))


def test_task_rows_are_deterministic_and_differ_by_split(world, task_rows):
    for task, rows in TASKS.items():
        assert rows(world, N_ROWS, TASK_SPLITS["validation"]) == task_rows[task]
        assert rows(world, N_ROWS, TASK_SPLITS["train"]) != rows(world, N_ROWS, TASK_SPLITS["test"])


def test_labels_are_balanced(task_rows):
    for task in ("synthetic_glue", "synthetic_cola", "synthetic_sst2", "synthetic_rte"):
        assert collections.Counter(r["label"] for r in task_rows[task]) == {0: N_ROWS // 2, 1: N_ROWS // 2}
    assert collections.Counter(r["answer"] for r in task_rows["synthetic_mmlu"]) == {i: N_ROWS // 4 for i in range(4)}


def test_mmlu_answers_are_the_world_facts(world):
    rows = mmlu_rows(world, 200, seed=1)
    for row in rows:
        name = next(w for w in row["question"].split() if w in {e.name for e in world.entities})
        fact = world.entity(name).facts[row["subject"]]
        assert row["choices"][row["answer"]] == fact and len(set(row["choices"])) == 4
        attribute = next(a for a in ATTRIBUTES if a.name == row["subject"])
        kind = attribute.values or [e.name for e in world.entities if e.name != name]
        assert set(row["choices"]) <= set(kind)
        assert row["question"].endswith(" ?") and "\n" not in row["question"]
    assert len({r["subject"] for r in rows}) == len(ATTRIBUTES)


def test_mmlu_rows_are_not_corpus_questions(world):
    quizzes = {q for d in corpus(world, 3000, seed=0) if kind_of(d) == "quiz" for q in d.split("\n\n")}
    assert len(quizzes) > 50
    for row in mmlu_rows(world, 100, seed=TASK_SPLITS["test"]):
        lines = [row["question"]] + [f"{l}. {c}" for l, c in zip(LETTERS, row["choices"])]
        assert "\n".join(lines + [f"Answer: {LETTERS[row['answer']]}"]) not in quizzes


def test_rte_negatives_both_contradict_and_change_the_subject(world):
    negatives = [r for r in rte_rows(world, 200, seed=1) if r["label"] == 1]
    same = [parse_fact(r["sentence1"])[1] == parse_fact(r["sentence2"])[1] for r in negatives]
    assert 0.3 < sum(same) / len(same) < 0.7
    assert all(is_true(world, r["sentence1"]) for r in negatives)


def test_unacceptable_sentences_are_corruptions_of_acceptable_ones(world, task_rows):
    for row in task_rows["synthetic_cola"]:
        as_check = f"check : {row['sentence']} acceptable : yes ."
        assert bool(derivations(world, as_check)) == bool(row["label"])
        if not row["label"]:
            words = row["sentence"].split(" ")
            originals = [" ".join(o) for k in CORRUPTIONS if (o := uncorrupt(k, words))]
            assert any(derivations(world, f"check : {o} acceptable : yes .") for o in originals)


# Text after the target of each task that completes a document of the language.
COMPLETION_SUFFIX = {"synthetic_hellaswag": "", "synthetic_mmlu": ""}


@pytest.fixture(scope="module")
def lm_eval_tasks(world, tmp_path_factory):
    """The shipped task YAMLs loaded by lm-eval, over rows written as the data layer writes them."""
    from lm_eval.tasks import TaskManager

    from harness.evaluate.tasks import materialize_tasks

    tasks_dir = tmp_path_factory.mktemp("tasks")
    for task, rows in TASKS.items():
        (tasks_dir / task).mkdir()
        for split, seed in TASK_SPLITS.items():
            lines = [json.dumps(row) + "\n" for row in rows(world, 12, seed)]
            (tasks_dir / task / f"{split}.jsonl").write_text("".join(lines))
    manager = TaskManager(include_path=str(materialize_tasks(tasks_dir)), include_defaults=False)
    return manager.load(list(TASKS))["tasks"]


def test_task_yamls_load_with_lm_eval(lm_eval_tasks):
    assert set(lm_eval_tasks) == set(TASKS)
    for name, task in lm_eval_tasks.items():
        assert task.OUTPUT_TYPE == "multiple_choice"
        assert task.has_training_docs() and task.has_validation_docs()
        assert len(list(task.eval_docs)) == 12
    assert lm_eval_tasks["synthetic_mmlu"].has_test_docs()  # scored on test, as MMLU is


def test_each_prompt_with_its_answer_is_a_document_and_with_another_is_not(world, lm_eval_tasks):
    """The zero-shot prompts ask what the language answers: the prompt followed by the target is a
    document of the world's language, followed by any other choice it is not."""
    for name, task in lm_eval_tasks.items():
        for doc in list(task.eval_docs)[:8]:
            context, choices = task.doc_to_text(doc), task.doc_to_choice(doc)
            target = task.doc_to_target(doc)
            for i, choice in enumerate(choices):
                text = context + task.config.target_delimiter + choice + COMPLETION_SUFFIX.get(name, " .")
                assert bool(derivations(world, text)) == (i == target), (name, text)
