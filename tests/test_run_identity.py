"""A run's id covers everything the model sees: adding an objective that brings new special
tokens changes the tokenizer, and so the id of every run, even of the objectives already there."""

from __future__ import annotations

import hashlib
import io
import json

import pytest

from harness.models.sizes import SIZES
from harness.pipeline import _note_superseded, prepare_and_plan
from harness.plan import tokenizer_sha256
from harness.progress import Progress
from harness.schema import Suite

BASE = {"name": "identity", "sizes": ["tiny"], "seeds": [0], "budget": {"tokens": 2e4, "min_steps": 5},
        "data": {"synthetic": {"entities": 8, "documents": 200, "seed": 5}, "seq_len": 32},
        "train": {"micro_batch_size": 4}, "resources": {"workers_per_run": 1},
        "eval": {"tasks": ["synthetic_glue"]}}


def _plans(results, objectives):
    data, plans = prepare_and_plan(Suite.model_validate({**BASE, "objectives": objectives}), results)
    return data, {p.objective: p for p in plans}


def test_a_changed_tokenizer_is_a_new_run(tmp_path):
    data_clm, alone = _plans(tmp_path, ["clm"])
    data_both, both = _plans(tmp_path, ["clm", "mlm"])
    assert data_both.vocab_size > data_clm.vocab_size  # mlm brings [MASK], [CLS], [SEP]
    assert alone["clm"].run_id != both["clm"].run_id
    _, again = _plans(tmp_path, ["clm"])
    assert again["clm"].run_id == alone["clm"].run_id  # and the same data gives the same id


def test_finished_runs_of_other_data_are_named_once(tmp_path):
    _, plans = _plans(tmp_path, ["clm"])
    suite_dir = tmp_path / "identity"
    for name in ("clm-tiny-s0-00000000", "clm-tiny-s0-11111111", plans["clm"].run_id):
        (suite_dir / name).mkdir(parents=True)
        (suite_dir / name / "train.json").write_text("{}")
    (suite_dir / "mlm-tiny-s0-22222222").mkdir()  # never finished: not a result to warn about
    out = io.StringIO()
    _note_superseded(suite_dir, list(plans.values()), Progress(out))
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and "2 finished runs" in lines[0]
    assert "clm-tiny-s0-00000000, clm-tiny-s0-11111111" in lines[0] and plans["clm"].run_id not in lines[0]
    assert (suite_dir / "clm-tiny-s0-00000000" / "train.json").exists()  # kept


def _old_digest(suite: Suite, plan, data) -> str:
    """The digest as runs were named before budgets could be lists and before train.schedule:
    the suite's one budget, and train settings without the fields added since."""
    identity = {
        "objective": plan.objective, "objective_config": plan.objective_config, "size": plan.size,
        "model": SIZES[plan.size].model_dump(), "seed": plan.seed, "data": suite.data.identity(),
        "tokenizer": tokenizer_sha256(data.tokenizer_dir), "special_tokens": data.special_tokens,
        "budget": suite.budget.model_dump(),
        "train": suite.train.model_dump(exclude={"step_timeout_s", "schedule", "decay_fraction"}),
        "workers": suite.resources.workers_per_run,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One results folder for the budget tests: its data, prepared once, serves all of them."""
    return tmp_path_factory.mktemp("budgets")


def test_a_one_budget_suite_keeps_its_digests_and_names_its_budget(shared):
    tmp_path = shared
    suite = Suite.model_validate({**BASE, "objectives": ["clm", "mlm"], "seeds": [0, 1]})
    data, plans = prepare_and_plan(suite, tmp_path)
    assert len(plans) == 4
    for plan in plans:
        assert plan.run_id == f"{plan.objective}-tiny-s{plan.seed}-t20000-{_old_digest(suite, plan, data)}"
        assert (plan.budget, plan.budget_unit) == (2e4, "tokens")
    flops = Suite.model_validate({**BASE, "objectives": ["clm"], "budget": {"flops": 1.5e11, "min_steps": 5}})
    assert prepare_and_plan(flops, tmp_path)[1][0].run_id.startswith("clm-tiny-s0-1.5e11-")


def test_a_sweep_plans_each_budget_as_its_own_suite_would(shared):
    tmp_path = shared
    sweep = Suite.model_validate({**BASE, "objectives": ["clm"], "budget": {"tokens": [4e4, 2e4], "min_steps": 5}})
    _, plans = prepare_and_plan(sweep, tmp_path)
    assert [p.budget for p in plans] == [2e4, 4e4] and plans[1].steps == 2 * plans[0].steps
    for plan in plans:  # under cosine a run of the sweep is the run of a suite of its budget alone
        alone = Suite.model_validate({**BASE, "objectives": ["clm"],
                                      "budget": {"tokens": plan.budget, "min_steps": 5}})
        assert prepare_and_plan(alone, tmp_path)[1][0].run_id == plan.run_id
    assert plans[0].warmup_steps < plans[1].warmup_steps


def test_wsd_warms_up_every_budget_as_the_smallest_and_names_it(shared):
    tmp_path = shared
    wsd = {**BASE, "objectives": ["clm"], "budget": {"tokens": [2e4, 4e4], "min_steps": 5},
           "train": {**BASE["train"], "schedule": "wsd", "warmup_fraction": 0.2}}
    _, plans = prepare_and_plan(Suite.model_validate(wsd), tmp_path)
    assert plans[0].warmup_steps == plans[1].warmup_steps == round(0.2 * plans[0].steps)
    # The warmup is part of the identity: the longer run alone would warm up longer.
    alone = {**wsd, "budget": {"tokens": 4e4, "min_steps": 5}}
    assert prepare_and_plan(Suite.model_validate(alone), tmp_path)[1][0].run_id != plans[1].run_id
    cosine = Suite.model_validate({**wsd, "train": {**wsd["train"], "schedule": "cosine"}})
    assert {p.run_id for p in prepare_and_plan(cosine, tmp_path)[1]}.isdisjoint(p.run_id for p in plans)
