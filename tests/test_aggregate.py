"""Bootstrap intervals over seeds, centered accuracy and versioned aggregates (harness.aggregate)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import yaml

from harness import synthetic
from harness.aggregate import (AGGREGATES, Aggregate, bootstrap_ci, centered, chance_of, default_aggregate,
                               mean_ci, missing_tasks, resolve_aggregate, run_aggregate)
from harness.errors import UserError
from harness.evaluate.tasks import TEMPLATES


def exact_bootstrap_percentiles(values: list[float], level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of the exact bootstrap distribution: the mean of every one of the
    n**n equally likely resamples, enumerated, and the quantiles of that discrete distribution."""
    means = [np.mean(resample) for resample in itertools.product(values, repeat=len(values))]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail], method="inverted_cdf")
    return low, high


def test_bootstrap_matches_the_exact_bootstrap_distribution_and_brackets_the_mean():
    values = [0.41, 0.47, 0.38, 0.52, 0.44]  # five seeds: 3,125 resamples to enumerate
    low, high = bootstrap_ci(values)
    exact_low, exact_high = exact_bootstrap_percentiles(values)
    assert low == pytest.approx(exact_low, abs=0.003) and high == pytest.approx(exact_high, abs=0.003)
    assert min(values) < low < np.mean(values) < high < max(values)  # five seeds: inside the range
    assert bootstrap_ci(values) == (low, high)  # deterministic
    assert bootstrap_ci(values, level=0.5) != (low, high)


def test_with_three_seeds_the_interval_is_the_range_and_one_seed_gives_none():
    assert bootstrap_ci([0.30, 0.34, 0.32]) == pytest.approx((0.30, 0.34))
    assert exact_bootstrap_percentiles([0.30, 0.34, 0.32]) == pytest.approx((0.30, 0.34))
    assert all(math.isnan(v) for v in bootstrap_ci([0.5]))
    # A run without the score (NaN, None) is left out: one seed remains.
    mean, low, high = mean_ci([0.6, math.nan, None])
    assert mean == 0.6 and math.isnan(low) and math.isnan(high)
    assert math.isnan(mean_ci([])[0])


def test_centered_accuracy_by_hand():
    assert centered(0.40, 0.25) == pytest.approx(0.20)
    assert centered(0.25, 0.25) == 0.0
    assert centered(1.0, 0.5) == 1.0
    assert centered(0.45, 0.5) == pytest.approx(-0.10)
    assert chance_of("acc_norm", 0.25) == 0.25 and chance_of("mcc", 0.5) == 0.0
    assert chance_of("f1", 0.5) is None


def test_run_aggregate_is_the_mean_centered_score_and_none_with_a_task_missing():
    core = AGGREGATES["synthetic-core-v1"]
    scores = {"synthetic_hellaswag": (0.40, 0.25), "synthetic_mmlu": (0.25, 0.25),  # 0.2, 0.0
              "synthetic_glue": (0.60, 0.5), "synthetic_cola": (0.55, 0.5),          # 0.2, 0.1
              "synthetic_sst2": (0.70, 0.5), "synthetic_rte": (0.50, 0.5)}           # 0.4, 0.0
    assert run_aggregate(scores, core) == pytest.approx(0.9 / 6)
    del scores["synthetic_rte"]
    assert run_aggregate(scores, core) is None
    assert missing_tasks(scores, core) == ["synthetic_rte"]


def test_synthetic_core_reads_every_synthetic_task_by_a_metric_its_task_reports():
    core = AGGREGATES["synthetic-core-v1"]
    assert set(core.tasks) == set(synthetic.TASKS)
    for task, metric in core.tasks.items():
        declared = yaml.safe_load((TEMPLATES / f"{task}.yaml").read_text())["metric_list"]
        assert metric in [m["metric"] for m in declared], task
    assert core.tasks["synthetic_hellaswag"] == "acc_norm"
    assert all(key == f"{agg.name}-v{agg.version}" for key, agg in AGGREGATES.items())


def test_a_published_aggregate_cannot_be_edited():
    with pytest.raises(TypeError):
        AGGREGATES["core-v1"].tasks["piqa"] = "acc"
    inline = {"name": "core", "version": 1, "tasks": {"piqa": "acc"}}
    with pytest.raises(UserError, match="new version"):
        resolve_aggregate(inline)
    assert resolve_aggregate(inline | {"version": 2}).key == "core-v2"


def test_resolve_by_key_or_inline_and_unknown_names_are_user_errors():
    assert resolve_aggregate("core-v1") is AGGREGATES["core-v1"]
    mine = resolve_aggregate({"name": "mine", "version": 3, "tasks": {"piqa": "acc_norm"}})
    assert mine == Aggregate("mine", 3, {"piqa": "acc_norm"}) and mine.key == "mine-v3"
    with pytest.raises(UserError, match="did you mean 'core-v1'") as err:
        resolve_aggregate("core-v")
    assert err.value.where == "eval.aggregate"
    for bad in ({"name": "x", "tasks": {"piqa": "acc"}}, {"name": "x", "version": 1, "tasks": {}},
                {"name": "x", "version": "1", "tasks": {"piqa": "acc"}}):
        with pytest.raises(UserError, match="malformed inline aggregate"):
            resolve_aggregate(bad, where="suite.yaml: eval.aggregate")


def test_default_aggregate_needs_every_task_evaluated():
    evaluated = list(synthetic.TASKS) + ["piqa"]
    assert default_aggregate(evaluated).key == "synthetic-core-v1"
    assert default_aggregate([t for t in evaluated if t != "synthetic_rte"]) is None


def test_core_v1_names_stock_tasks_and_metrics_they_report():
    """Every task of the stock aggregate is in lm-eval's registry and declares the metric used
    (a group through its aggregate_metric_list)."""
    from lm_eval.tasks import TaskManager

    index = TaskManager().task_index
    for task, metric in AGGREGATES["core-v1"].tasks.items():
        assert task in index, task
        cfg = index[task].cfg or {}
        declared = cfg.get("metric_list") or cfg.get("aggregate_metric_list") or []
        assert metric in {m["metric"] for m in declared}, (task, metric, declared)
