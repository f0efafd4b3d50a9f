"""Zero-shot evaluation (lm-eval): one row per task x metric x objective x size x budget.

The metrics shown are SHOWN_METRICS (summary.csv has every metric). `mean` and `95% CI` are
over pretraining seeds (harness.aggregate.mean_ci); `centered` is (mean - chance) / (1 - chance).
"""

from __future__ import annotations

import pandas as pd

from harness.aggregate import centered, chance_of, mean_ci
from harness.report.format import absent_note, budget_text, ci_text, first_int, fmt, markdown_table, mean_or_none

SHOWN_METRICS = ("acc", "acc_norm", "mcc", "f1")  # the zero-shot table's metrics (summary.csv has all)


def zero_shot_table(zero_shot: pd.DataFrame, absent: list[dict]) -> str:
    shown = zero_shot[zero_shot["metric"].isin(SHOWN_METRICS)].sort_values(["task", "metric", "budget"], kind="stable")
    if shown.empty:
        return ""
    rows = []
    for (task, metric, objective, size, budget, scoring), group in shown.groupby(
            ["task", "metric", "objective", "size", "budget", "scoring"], sort=False):
        mean, low, high = mean_ci(group["value"])
        chance = chance_of(metric, mean_or_none(group["chance"]))
        rows.append({"task": task, "metric": metric, "n-shot": first_int(group["num_fewshot"]),
                     "chance": fmt(chance), "objective": objective, "size": size,
                     "budget": budget_text(budget, group["budget_unit"].iloc[0]), "scoring": scoring,
                     "mean": fmt(mean), "95% CI": ci_text(low, high),
                     "centered": fmt(None if chance is None else centered(mean, chance)),
                     "stderr (lm-eval)": fmt(group["stderr"].mean())})
    return ("## Zero-shot evaluation (lm-eval)\n\nOne row per task × metric × objective × size × budget. "
            "`mean` and `95% CI` are over pretraining seeds; `centered` is (mean − chance) / (1 − chance); "
            "`stderr (lm-eval)` is lm-eval's standard error over the task's documents, averaged over seeds."
            + absent_note(absent) + "\n\n" + markdown_table(pd.DataFrame(rows)))
