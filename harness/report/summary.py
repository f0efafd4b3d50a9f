"""summary.csv: one row per objective x size x budget, the mean and 95% interval over seeds of
every number.

    wide       one row per run, one column per number: the training summary, held-out text,
               `<task>:<metric>`, `finetune:<task>:<metric>` and `aggregate:<key>`
    summarize  per objective x size x budget: seeds, scoring, and `<column>_mean`, `_ci_low`,
               `_ci_high`; a sweep's rows in ascending budget
    parquet    summary.parquet: the same table with typed columns (text as strings, seeds as
               integers, every number as float64, even a column with no value in any row)

The suite's aggregate (harness.aggregate) is chosen here and computed per run, for the wide
table and for the report's aggregate section.
"""

from __future__ import annotations

import io

import pandas as pd

from harness.aggregate import (Aggregate, chance_of, default_aggregate, mean_ci, missing_tasks,
                               resolve_aggregate, run_aggregate)
from harness.report.collect import GROUP, IDENTITY, SuiteResults, by_budget
from harness.report.format import is_missing


def choose_aggregate(results: SuiteResults) -> Aggregate | None:
    """The suite's declared aggregate, as the newest run.yaml holds it; without one, the largest
    registered aggregate whose tasks were all evaluated; else None."""
    if results.declared:
        spec, run_yaml = max(results.declared, key=lambda declared: declared[1].stat().st_mtime_ns)
        return resolve_aggregate(spec, where=f"{run_yaml}: eval.aggregate")
    return default_aggregate(results.zero_shot["task"])


def run_aggregates(results: SuiteResults, aggregate: Aggregate | None) -> pd.DataFrame | None:
    """One row per run: its aggregate (NaN when a declared task is missing) and the missing tasks."""
    if aggregate is None:
        return None
    rows = []
    for run in results.runs[IDENTITY].to_dict("records"):
        scores = _task_scores(results.zero_shot[results.zero_shot["run_id"] == run["run_id"]], aggregate)
        rows.append(run | {"aggregate": run_aggregate(scores, aggregate),
                           "missing": missing_tasks(scores, aggregate)})
    return pd.DataFrame(rows).astype({"aggregate": float})


def _task_scores(zero_shot: pd.DataFrame, aggregate: Aggregate) -> dict[str, tuple[float, float]]:
    """{task: (score, chance)} for the aggregate's tasks that have its metric and a chance level."""
    scores = {}
    for row in zero_shot.to_dict("records"):
        chance = chance_of(row["metric"], row["chance"])
        if aggregate.tasks.get(row["task"]) == row["metric"] and not is_missing(row["value"]) \
                and not is_missing(chance):
            scores[row["task"]] = (row["value"], chance)
    return scores


def wide(results: SuiteResults, per_run: pd.DataFrame | None, aggregate: Aggregate | None) -> pd.DataFrame:
    """One row per run, one column per number: training, held-out text, `<task>:<metric>`,
    `finetune:<task>:<metric>` and `aggregate:<key>`."""
    parts = [results.runs.set_index("run_id"), _pivot(results.zero_shot, ""),
             _pivot(results.finetune, "finetune:")]
    if per_run is not None:
        column = {"aggregate": f"aggregate:{aggregate.key}"}
        parts.append(per_run.set_index("run_id")[["aggregate"]].rename(columns=column))
    return pd.concat(parts, axis=1).rename_axis("run_id").reset_index()


def _pivot(scores: pd.DataFrame, prefix: str) -> pd.DataFrame:
    if scores.empty:
        return pd.DataFrame()
    columns = prefix + scores["task"] + ":" + scores["metric"]
    table = scores.assign(column=columns).pivot_table(index="run_id", columns="column", values="value",
                                                      aggfunc="first")
    return table.rename_axis(columns=None)


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Per objective x size x budget: seeds, scoring, and the mean, ci_low and ci_high over seeds
    of every numeric column (the interval is nan with one seed)."""
    numeric = [c for c in runs.columns if c not in ("seed", "budget") and pd.api.types.is_numeric_dtype(runs[c])]
    rows = []
    for (objective, size, budget), group in by_budget(runs).groupby(GROUP, sort=False):
        row = {"objective": objective, "size": size, "budget": budget, "seeds": len(group),
               "scoring": group["scoring"].iloc[0]}
        for col in numeric:
            row[f"{col}_mean"], row[f"{col}_ci_low"], row[f"{col}_ci_high"] = mean_ci(group[col])
        rows.append(row)
    return pd.DataFrame(rows)


TEXT_COLUMNS = ("objective", "size", "scoring")


def parquet(summary: pd.DataFrame) -> bytes:
    """summary.parquet's bytes: `summary` with typed columns, so that a reader gets numbers as
    numbers and names as strings without guessing (a CSV column of blanks reads as text)."""
    types = {col: "string" if col in TEXT_COLUMNS else "int64" if col == "seeds" else "float64"
             for col in summary.columns}
    buffer = io.BytesIO()
    summary.astype(types).to_parquet(buffer, index=False, engine="pyarrow")
    return buffer.getvalue()
