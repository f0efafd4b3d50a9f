"""The suite's answer, computed once for the headline, the sections that show it, and the plots.

Every number the answer compares becomes one row of `outcomes`, whatever kind it is:

    run_id  objective size budget seed kind        task                         metric         value higher chance
    clm-..  clm       mini 6e12   0    zero-shot   synthetic_glue               acc            0.61  True   0.5
    clm-..  clm       mini 6e12   0    aggregate   aggregate synthetic-core-v1  centered acc   0.22  True   0.0
    clm-..  clm       mini 6e12   0    held-out    held-out text                bits_per_byte  0.92  False  NaN
    clm-..  clm       mini 6e12   0    fine-tuned  synthetic_rte (fine-tuned)   acc            0.61  True   0.55

A zero-shot task counts with one metric: the aggregate's for it, else the first of PREFERRED it
has. Then, per size x budget, objectives are compared paired by seed (harness.analysis.paired:
difference of means, bootstrap intervals over seeds and documents, a paired t-test), and the
win matrix counts the zero-shot and fine-tuned tasks each objective wins. Where a size has 3
budgets or more, held-out bits per byte (a power law) and the aggregate (a saturating curve from
chance) are fitted against the FLOPs each run spent, with the crossovers of every pair; where a
budget has 3 sizes or more, bits per byte against parameters. Every bootstrap has a fixed seed:
the report is the same bytes every time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from harness.aggregate import Aggregate, chance_of
from harness.analysis.curves import distinct
from harness.analysis.paired import Wins, paired_table, win_matrix
from harness.analysis.scaling import Crossover, crossovers, fit_table
from harness.evaluate.documents import read_documents
from harness.report.collect import SuiteResults

PREFERRED = ("acc_norm", "acc", "mcc", "f1", "exact_match")
HELDOUT_TASK, AGGREGATE_METRIC = "held-out text", "centered acc"
CELL = ["size", "budget"]
OUTCOME_COLUMNS = ["run_id", "objective", "size", "budget", "budget_unit", "seed", "kind", "task", "metric",
                   "value", "higher", "chance"]
# What is fitted against compute: kind -> (curve, its chance level)
FITTED = {"held-out": ("power", None), "aggregate": ("saturating", 0.0)}


@dataclass
class Fit:
    """One outcome fitted against compute (or parameters) for one size (or budget)."""

    kind: str                 # the outcome: "held-out" or "aggregate"
    what: str                 # its name in sentences
    x: str                    # "flops_spent" or "params"
    where: dict               # {"size": ...} or {"budget": ...}
    table: pd.DataFrame       # harness.analysis.scaling.fit_table
    crossings: list[Crossover]
    points: pd.DataFrame      # objective, seed, x, value: the data fitted


@dataclass
class Answer:
    outcomes: pd.DataFrame                      # OUTCOME_COLUMNS
    paired: pd.DataFrame                        # paired_table rows with size, budget and kind
    wins: dict[tuple, Wins] = field(default_factory=dict)  # (size, budget) -> win matrix
    fits: list[Fit] = field(default_factory=list)           # against FLOPs, then against parameters

    def cells(self) -> list[tuple]:
        """The (size, budget) pairs with outcomes, smallest budget first."""
        return sorted({tuple(cell) for cell in self.outcomes[CELL].itertuples(index=False)},
                      key=lambda cell: (cell[0], cell[1]))


def answer(suite_dir: Path, results: SuiteResults, per_run: pd.DataFrame | None,
           aggregate: Aggregate | None) -> Answer:
    """The outcomes of every finished run, compared per size x budget and fitted where they can be."""
    outcomes = outcome_table(results, per_run, aggregate)
    paired, wins = compare_cells(outcomes, _documents(Path(suite_dir), outcomes))
    return Answer(outcomes, paired, wins, scaling_fits(outcomes, results.runs))


def compare_cells(outcomes: pd.DataFrame, documents: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Per size x budget, the paired table of every pair of objectives (with the cell and each
    row's kind) and the win matrix over its zero-shot and fine-tuned tasks."""
    paired, wins = [], {}
    for cell, rows in outcomes.groupby(CELL, sort=True):
        docs = documents.merge(rows[["run_id"]].drop_duplicates(), on="run_id") if not documents.empty else None
        table = paired_table(rows[["objective", "seed", "task", "metric", "value"]], docs,
                             higher_is_better=dict(zip(rows["metric"], rows["higher"])))
        table = table.assign(size=cell[0], budget=cell[1], kind=table["task"].map(dict(zip(rows["task"], rows["kind"]))))
        paired.append(table)
        tasks = table[table["kind"].isin(["zero-shot", "fine-tuned"])]
        if not tasks.empty:
            wins[cell] = win_matrix(tasks)
    return (pd.concat(paired, ignore_index=True) if paired else pd.DataFrame()), wins


def outcome_table(results: SuiteResults, per_run: pd.DataFrame | None, aggregate: Aggregate | None) -> pd.DataFrame:
    """One row per finished run x outcome (OUTCOME_COLUMNS)."""
    if results.runs.empty:
        return pd.DataFrame(columns=OUTCOME_COLUMNS)
    identity = results.runs[["run_id", "objective", "size", "budget", "budget_unit", "seed"]]
    parts = [_zero_shot(results.zero_shot, aggregate), _fine_tuned(results.finetune), _heldout(results.runs)]
    if per_run is not None and aggregate is not None:
        parts.append(pd.DataFrame({"run_id": per_run["run_id"], "kind": "aggregate",
                                   "task": f"aggregate {aggregate.key}", "metric": AGGREGATE_METRIC,
                                   "value": per_run["aggregate"], "higher": True, "chance": 0.0}))
    rows = pd.concat([p for p in parts if not p.empty], ignore_index=True)
    rows = identity.merge(rows, on="run_id")
    return rows[np.isfinite(rows["value"].astype(float))][OUTCOME_COLUMNS].reset_index(drop=True)


def _zero_shot(zero_shot: pd.DataFrame, aggregate: Aggregate | None) -> pd.DataFrame:
    rows = []
    for task, group in zero_shot.groupby("task", sort=True):
        metrics = set(group["metric"])
        wanted = aggregate.tasks.get(task) if aggregate is not None else None
        metric = wanted if wanted in metrics else next((m for m in PREFERRED if m in metrics), min(metrics))
        for row in group[group["metric"] == metric].to_dict("records"):
            rows.append({"run_id": row["run_id"], "kind": "zero-shot", "task": task, "metric": metric,
                         "value": row["value"], "higher": True, "chance": chance_of(metric, row["chance"])})
    return pd.DataFrame(rows)


def _fine_tuned(finetune: pd.DataFrame) -> pd.DataFrame:
    standard = finetune[finetune["standard"].astype(bool)] if not finetune.empty else finetune
    return pd.DataFrame([{"run_id": row["run_id"], "kind": "fine-tuned", "task": f"{row['task']} (fine-tuned)",
                          "metric": row["metric"], "value": row["value"], "higher": True, "chance": row["chance"]}
                         for row in standard.to_dict("records")])


def _heldout(runs: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"run_id": runs["run_id"], "kind": "held-out", "task": HELDOUT_TASK,
                         "metric": "bits_per_byte", "value": runs["bits_per_byte"], "higher": False,
                         "chance": np.nan})


def _documents(suite_dir: Path, outcomes: pd.DataFrame) -> pd.DataFrame:
    """Per-document scores of the zero-shot outcomes (harness.evaluate.documents), with the run's
    objective and seed; empty where lm-eval logged none."""
    zero_shot = outcomes[outcomes["kind"] == "zero-shot"]
    frames = []
    for run_id, rows in zero_shot.groupby("run_id", sort=True):
        docs = read_documents(suite_dir / run_id)
        if docs.empty:
            continue
        docs = docs.merge(rows[["task", "metric"]].drop_duplicates(), on=["task", "metric"])
        frames.append(docs.assign(run_id=run_id, objective=rows["objective"].iloc[0], seed=rows["seed"].iloc[0]))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# --- fits against compute and against size -------------------------------------------------------


def scaling_fits(outcomes: pd.DataFrame, runs: pd.DataFrame) -> list[Fit]:
    """Per size with 3 budgets or more, each FITTED outcome against FLOPs spent; per budget with
    3 sizes or more, held-out bits per byte against parameters."""
    if outcomes.empty:
        return []
    rows = outcomes.merge(runs[["run_id", "flops_spent", "params"]], on="run_id")
    fits = []
    for size, group in rows.groupby("size", sort=True):
        if distinct(group["flops_spent"]) >= 3:
            fits += [_fit(group, kind, "flops_spent", {"size": size}) for kind in FITTED
                     if (group["kind"] == kind).any()]
    for budget, group in rows.groupby("budget", sort=True):
        if group["size"].nunique() >= 3 and (group["kind"] == "held-out").any():
            fits.append(_fit(group, "held-out", "params", {"budget": budget}))
    return fits


def _fit(rows: pd.DataFrame, kind: str, x: str, where: dict) -> Fit:
    curve, chance = FITTED[kind]
    points = rows[rows["kind"] == kind][["objective", "seed", x, "value"]].reset_index(drop=True)
    what = "held-out bits per byte" if kind == "held-out" else f"the {rows[rows['kind'] == kind]['task'].iloc[0]}"
    return Fit(kind, what, x, where, fit_table(points, "value", x=x, kind=curve, chance=chance),
               crossovers(points, "value", x=x, kind=curve, chance=chance), points)
