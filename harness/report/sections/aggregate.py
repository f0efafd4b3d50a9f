"""Aggregate: per objective x size x budget, the suite's versioned mean of centered scores over seeds.

The aggregate and each run's score come from harness.report.summary (choose_aggregate,
run_aggregates); a run lacking a task has no score and the task is named under `missing`.
"""

from __future__ import annotations

import pandas as pd

from harness.aggregate import Aggregate, mean_ci
from harness.report.collect import GROUP, by_budget
from harness.report.format import budget_text, ci_text, fmt, markdown_table, text_or_dash


def aggregate_table(per_run: pd.DataFrame | None, aggregate: Aggregate | None, absent: list[dict]) -> str:
    if per_run is None:
        return ""
    rows = []
    for (objective, size, budget), group in by_budget(per_run).groupby(GROUP, sort=False):
        mean, low, high = mean_ci(group["aggregate"])
        missing = [task for task in aggregate.tasks if any(task in m for m in group["missing"])]
        rows.append({"objective": objective, "size": size, "budget": budget_text(budget, group["budget_unit"].iloc[0]),
                     "scoring": group["scoring"].iloc[0],
                     "runs with every task": f"{group['aggregate'].notna().sum()}/{len(group)}",
                     "mean": fmt(mean), "95% CI": ci_text(low, high),
                     "missing": ", ".join(missing)})
    rows += [{"objective": group["objective"], "size": group["size"],
              "budget": budget_text(group["budget"], group["budget_unit"]), "scoring": text_or_dash(group["scoring"]),
              "runs with every task": f"0/{group['planned']}", "mean": group["status"], "95% CI": "—",
              "missing": ""} for group in absent]
    tasks = ", ".join(f"{task} ({metric})" for task, metric in aggregate.tasks.items())
    return (f"## Aggregate: {aggregate.name}, version {aggregate.version} (`{aggregate.key}`)\n\n"
            f"Mean centered score over {tasks}. 0 is chance, 1 is perfect. The mean and interval are "
            f"over the runs that evaluated every task; `missing` names the tasks some run lacks.\n\n"
            + markdown_table(pd.DataFrame(rows)))
