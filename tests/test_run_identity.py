"""A run's id covers everything the model sees: adding an objective that brings new special
tokens changes the tokenizer, and so the id of every run, even of the objectives already there."""

from __future__ import annotations

import io

from harness.pipeline import _note_superseded, prepare_and_plan
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
