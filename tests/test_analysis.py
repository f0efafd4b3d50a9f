"""harness.analysis: scaling fits, crossovers and paired comparisons on made-up numbers whose
answer is known (curves chosen to cross at a known compute, a paired difference of known size),
checked against scipy's own distributions and a direct resampling."""

from __future__ import annotations

import doctest
import math
import re

import numpy as np
import pandas as pd
import pytest

from scipy import stats

import harness.analysis.curves
import harness.analysis.paired
import harness.analysis.scaling
from harness.analysis.curves import Curve, distinct, fit_curve
from harness.analysis.paired import (
    mde_sentence,
    min_detectable_effect,
    paired_table,
    seed_interval,
    seeds_needed,
    win_matrix,
)
from harness.analysis.scaling import crossing, crossover_sentence, crossovers, fit_table
from harness.errors import UserError

BUDGETS = [1e12, 3e12, 1e13, 3e13]
CLM = Curve("power", {"E": 0.5, "A": 1.0, "alpha": 0.3}, 1e12, None)
MLM = Curve("power", {"E": 0.3, "A": 1.4, "alpha": 0.3}, 1e12, None)


def crossing_point(first: Curve, second: Curve) -> float:
    """Where E1 + A1 x^-a = E2 + A2 x^-a (same alpha): x^-a = (E2 - E1) / (A1 - A2)."""
    x = ((second.params["E"] - first.params["E"]) / (first.params["A"] - second.params["A"])) ** (-1 / first.params["alpha"])
    return first.c_ref * x


def sample_runs(curves: dict[str, Curve], budgets=BUDGETS, seeds=3, noise=0.005, seed_shift=0.01,
                seed=1, value="bpb") -> pd.DataFrame:
    """`seeds` runs per objective and budget: a shift per (seed, budget) shared by the objectives
    (same data order and init), plus independent noise; FLOPs spent jitter by 1% around the budget."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(seeds):
        for budget in budgets:
            shared = rng.normal(0, seed_shift)
            for name, curve in curves.items():
                spent = budget * (1 + rng.normal(0, 0.01))
                rows.append({"objective": name, "seed": s, "flops_spent": spent,
                             value: float(curve(spent)) + shared + rng.normal(0, noise)})
    return pd.DataFrame(rows)


def test_noiseless_power_law_is_recovered():
    compute = np.array(BUDGETS + [1e14])
    truth = Curve("power", {"E": 0.8, "A": 2.5, "alpha": 0.35}, 1e12, None)
    fitted = fit_curve(compute, truth(compute), "power")
    for name, value in truth.params.items():
        assert fitted.params[name] == pytest.approx(value, rel=1e-4)
    # three points and three parameters: the curve interpolates them
    three = fit_curve(compute[:3], truth(compute[:3]), "power")
    assert three(compute[:3]) == pytest.approx(truth(compute[:3]), abs=1e-6)


def test_too_few_distinct_budgets_is_no_fit():
    assert distinct([1e12, 1.01e12, 3e12, 3.03e12]) == 2
    assert fit_curve([1e12, 1.01e12, 3e12, 3.03e12], [2.0, 2.0, 1.5, 1.5], "power") is None
    table = fit_table(sample_runs({"clm": CLM}, budgets=BUDGETS[:2]), "bpb")
    assert math.isnan(table.loc[0, "E"]) and table.loc[0, "n_distinct"] == 2
    [cross] = crossovers(sample_runs({"clm": CLM, "mlm": MLM}, budgets=BUDGETS[:2]), "bpb")
    assert not cross.fitted and "no fit" in crossover_sentence(cross)


def test_saturating_fit_stays_between_chance_and_one():
    chance = 0.25
    truth = Curve("saturating", {"k": 1.2, "c_mid": 5e13}, 1.0, chance)
    rng = np.random.default_rng(0)
    compute = np.repeat(BUDGETS, 3)
    scores = np.clip(truth(compute) + rng.normal(0, 0.03, len(compute)), 0, 1)
    scores[0] = 0.1  # a run below chance, as tiny models give
    fitted = fit_curve(compute, scores, "saturating", chance=chance)
    everywhere = fitted(np.logspace(0, 30, 500))
    assert everywhere.min() >= chance and everywhere.max() <= 1
    assert fitted.params["k"] == pytest.approx(1.2, rel=0.5)
    with pytest.raises(UserError, match="chance level"):
        fit_curve(compute, scores, "saturating")


def test_fit_table_gives_intervals_that_contain_the_truth():
    table = fit_table(sample_runs({"clm": CLM, "mlm": MLM}), "bpb").set_index("objective")
    for name, curve in (("clm", CLM), ("mlm", MLM)):
        row = table.loc[name]
        assert row["n_points"] == 12 and row["n_seeds"] == 3 and row["n_distinct"] == 4 and row["n_boot"] == 200
        for param in ("A", "alpha"):
            assert row[f"{param}_low"] <= row[param] <= row[f"{param}_high"]
        assert row["alpha_low"] <= curve.params["alpha"] <= row["alpha_high"]


def test_known_crossover_is_recovered_within_its_interval():
    """One fixed draw of 4 budgets x 3 seeds. Over 20 draws the 95% interval held the truth in
    16 with 3 seeds, 18 with 5: a percentile bootstrap over 3 seeds is narrow (it sees at most 10
    distinct resamples), which the report's reader should know."""
    truth = crossing_point(CLM, MLM)  # ~1.0e13, inside the budgets trained
    assert crossing(CLM, MLM, 1e12, 3e13) == pytest.approx(truth, rel=1e-6)
    [cross] = crossovers(sample_runs({"clm": CLM, "mlm": MLM}), "bpb")
    assert cross.fitted and cross.paired and not cross.extrapolated
    assert cross.low <= truth <= cross.high and cross.low <= cross.point <= cross.high
    assert cross.share_crossing > 0.9
    assert (cross.ahead_below, cross.ahead_above) == ("clm", "mlm")
    sentence = crossover_sentence(cross, "held-out bits per byte")
    assert re.fullmatch(r"mlm overtakes clm on held-out bits per byte above ≈ 1\.\de13 FLOPs "
                        r"\[1\.\de13, 1\.\de13\] \(\d+% of bootstrap replicates cross\)", sentence)
    assert "extrapolated" not in sentence


def test_a_crossover_beyond_the_largest_budget_is_flagged_as_extrapolated():
    late = Curve("power", {"E": 0.42, "A": 1.27, "alpha": 0.3}, 1e12, None)  # crosses at 5.8e13
    truth = crossing_point(CLM, late)
    assert BUDGETS[-1] < truth < 10 * BUDGETS[-1]
    [cross] = crossovers(sample_runs({"clm": CLM, "late": late}, noise=0.001, seed_shift=0.002), "bpb")
    assert cross.extrapolated and cross.point > cross.c_max
    assert cross.low <= truth <= cross.high
    assert "extrapolated beyond the largest budget trained, 3.0e13" in crossover_sentence(cross)


def test_curves_that_do_not_cross_in_range_say_so():
    apart = Curve("power", {"E": 0.3, "A": 0.9, "alpha": 0.3}, 1e12, None)  # better everywhere
    [cross] = crossovers(sample_runs({"apart": apart, "clm": CLM}), "bpb", n_boot=100)
    assert cross.point is None and cross.ahead_below == cross.ahead_above == "apart"
    assert cross.share_crossing < 0.1
    assert crossover_sentence(cross).startswith(
        "no crossover of apart and clm on the aggregate in [9.9e11, 3.0e14] FLOPs: apart stays ahead (")


def test_higher_is_better_scores_cross_the_other_way():
    low, high = (Curve("saturating", p, 1.0, 0.25) for p in ({"k": 0.6, "c_mid": 3e12}, {"k": 2.0, "c_mid": 6e12}))
    truth = crossing(low, high, 1e12, 3e13)
    # a fixed draw whose interval covers (as 7 draws in 10 did; see the power-law test's note)
    runs = sample_runs({"slow": low, "steep": high}, seeds=5, noise=0.003, seed_shift=0.003, value="score", seed=0)
    [cross] = crossovers(runs, "score", kind="saturating", chance=0.25)
    assert cross.higher_is_better and cross.low <= truth <= cross.high
    assert (cross.ahead_below, cross.ahead_above) == ("slow", "steep")


def test_fits_and_crossovers_are_deterministic():
    runs = sample_runs({"clm": CLM, "mlm": MLM})
    pd.testing.assert_frame_equal(fit_table(runs, "bpb", n_boot=40, seed=3), fit_table(runs, "bpb", n_boot=40, seed=3))
    assert repr(crossovers(runs, "bpb", n_boot=40, seed=3)) == repr(crossovers(runs, "bpb", n_boot=40, seed=3))


def test_bad_runs_tables_are_user_errors():
    runs = sample_runs({"clm": CLM})
    with pytest.raises(UserError, match="lacks column.*flops"):
        fit_table(runs.drop(columns="flops_spent"), "bpb")
    with pytest.raises(UserError, match="positive"):
        fit_table(runs.assign(flops_spent=0.0), "bpb")
    with pytest.raises(UserError, match="unknown curve kind 'powr'"):
        fit_table(runs, "bpb", kind="powr")


def paired_scores(diff=0.05, seeds=5, sd=0.01, seed=0) -> pd.DataFrame:
    """Two objectives on two tasks; b = a - diff plus noise of sd per seed."""
    rng = np.random.default_rng(seed)
    rows = []
    for task in ("glue", "hellaswag"):
        for s in range(seeds):
            base = 0.5 + rng.normal(0, 0.05)  # a seed effect both objectives share
            rows += [{"objective": "clm", "seed": s, "task": task, "metric": "acc", "value": base},
                     {"objective": "mlm", "seed": s, "task": task, "metric": "acc", "value": base - diff + rng.normal(0, sd)}]
    return pd.DataFrame(rows)


def test_paired_difference_interval_contains_the_known_difference():
    table = paired_table(paired_scores())
    assert list(table["task"]) == ["glue", "hellaswag"] and (table["n_pairs"] == 5).all()
    for row in table.itertuples():
        assert row.seeds_low <= 0.05 <= row.seeds_high and row.diff == pytest.approx(0.05, abs=0.01)
        assert row.better == "clm" and row.significant and math.isnan(row.docs_low) and row.n_docs == 0
        assert row.p_seeds == pytest.approx(2 / 2**5)  # exact sign-flip test: all five agree
    lower = paired_table(paired_scores(), higher_is_better={"acc": False})
    assert (lower["better"] == "mlm").all()
    one_seed = paired_table(paired_scores(seeds=1))
    assert math.isnan(one_seed.loc[0, "seeds_low"]) and not one_seed["significant"].any()


def test_seed_interval_matches_a_direct_resampling():
    """scipy's paired percentile bootstrap against numpy resampling of the same pairs, 20000
    resamples each: the bounds agree within 0.004 (the data spread is ~0.05)."""
    rng = np.random.default_rng(7)
    a = rng.normal(0.5, 0.05, 12)
    b = a - 0.02 + rng.normal(0, 0.03, 12)
    low, high = seed_interval(a, b, n_resamples=20_000, seed=1)
    draws = np.random.default_rng(2).integers(0, 12, size=(20_000, 12))
    direct = np.percentile((a - b)[draws].mean(axis=1), [2.5, 97.5])
    assert (low, high) == pytest.approx(tuple(direct), abs=0.004)


def test_document_interval_pairs_documents_and_matches_the_normal_interval():
    """Per-document differences of 0/1 accuracies: a is right on 60% of 400 documents, b on 50%,
    so the interval is close to diff +- 1.96 * sd / sqrt(n)."""
    rng = np.random.default_rng(3)
    rows = []
    for s in range(2):
        right_a, right_b = rng.random(400) < 0.6, rng.random(400) < 0.5
        for doc in range(400):
            rows += [{"objective": "clm", "seed": s, "task": "glue", "metric": "acc", "doc_id": str(doc), "value": float(right_a[doc])},
                     {"objective": "mlm", "seed": s, "task": "glue", "metric": "acc", "doc_id": str(doc), "value": float(right_b[doc])}]
    documents = pd.DataFrame(rows)
    scores = documents.groupby(["objective", "seed", "task", "metric"], as_index=False)["value"].mean()
    [row] = paired_table(scores, documents).itertuples()
    per_doc = documents.pivot_table(index=["seed", "doc_id"], columns="objective", values="value")
    per_doc = (per_doc["clm"] - per_doc["mlm"]).groupby("doc_id").mean()
    half = 1.96 * per_doc.std() / math.sqrt(len(per_doc))
    assert row.n_docs == 400 and row.diff == pytest.approx(per_doc.mean())
    assert (row.docs_low, row.docs_high) == pytest.approx((per_doc.mean() - half, per_doc.mean() + half), abs=0.01)
    # Two seeds that agree in sign make the bootstrap's seed interval exclude 0 (it is their
    # range), but the paired t-test over two seeds does not resolve them: not significant.
    excluded = row.docs_low > 0 and row.seeds_low > 0 or row.docs_high < 0 and row.seeds_high < 0
    seed_means = scores.pivot_table(index="seed", columns="objective", values="value")
    assert row.p_t == pytest.approx(stats.ttest_rel(seed_means["clm"], seed_means["mlm"]).pvalue)
    assert excluded and row.p_t > 0.05 and not row.significant


def test_win_matrix_on_a_hand_made_table():
    paired = pd.DataFrame([
        {"task": "t1", "a": "clm", "b": "mlm", "better": "clm", "significant": True},
        {"task": "t2", "a": "clm", "b": "mlm", "better": "clm", "significant": False},
        {"task": "t3", "a": "clm", "b": "mlm", "better": "mlm", "significant": True},
        {"task": "t4", "a": "clm", "b": "mlm", "better": None, "significant": False},
        {"task": "t1", "a": "clm", "b": "t5", "better": "t5", "significant": True},
    ])
    wins = win_matrix(paired)
    assert wins.share.loc["clm", "mlm"] == 0.5 and wins.share.loc["mlm", "clm"] == 0.25
    assert wins.significant.loc["clm", "mlm"] == 0.25 and wins.significant.loc["mlm", "clm"] == 0.25
    assert wins.share.loc["t5", "clm"] == 1.0 and wins.share.loc["clm", "t5"] == 0.0
    assert math.isnan(wins.share.loc["mlm", "t5"]) and math.isnan(wins.share.loc["clm", "clm"])


def test_seeds_needed_against_the_noncentral_t():
    """Cohen's d 0.5 needs 34 pairs and d 0.8 needs 15 at alpha 0.05, power 0.8 (the tables of
    power analysis give the same); each is the first n whose power, computed here directly from
    scipy.stats.nct, reaches 0.8."""
    def direct_power(d, n):
        critical = stats.t.ppf(0.975, n - 1)
        return stats.nct.sf(critical, n - 1, d * math.sqrt(n)) + stats.nct.cdf(-critical, n - 1, d * math.sqrt(n))

    for d, expected in ((0.5, 34), (0.8, 15)):
        n = seeds_needed(d * 0.02, 0.02)
        assert n == expected and direct_power(d, n) >= 0.8 > direct_power(d, n - 1)
    needed = [seeds_needed(diff, 1.0) for diff in (2.0, 1.0, 0.5, 0.25, 0.1)]
    assert needed == sorted(needed) and len(set(needed)) == len(needed)
    assert seeds_needed(0.0, 1.0) is None and seeds_needed(0.3, 0.0) == 2
    mde = min_detectable_effect(0.02, 34)
    assert direct_power(mde / 0.02, 34) == pytest.approx(0.8, abs=1e-6) and math.isnan(min_detectable_effect(0.02, 1))
    assert mde_sentence(0.01, 0.02, 3) == ("With 3 seeds the suite resolves paired differences of 0.0653 or more "
                                           "(alpha 0.05, power 0.8); the observed 0.01 would need 34 seeds.")


def test_paired_outputs_are_deterministic_and_bad_tables_are_user_errors():
    scores = paired_scores()
    pd.testing.assert_frame_equal(paired_table(scores, seed=5), paired_table(scores, seed=5))
    with pytest.raises(UserError, match="scores table lacks column.*metric"):
        paired_table(scores.drop(columns="metric"))
    with pytest.raises(UserError, match="two values for objective clm, seed 0, task glue"):
        paired_table(pd.concat([scores, scores.iloc[:1]]))


def test_the_modules_worked_examples_hold():
    for module in (harness.analysis.curves, harness.analysis.scaling, harness.analysis.paired):
        assert doctest.testmod(module).failed == 0
