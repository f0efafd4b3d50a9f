"""Fine-tuning: per task x objective x size x budget, the mean over pretraining seeds of each run's
median over fine-tuning seeds, in the task's standard metric, beside the majority baseline."""

from __future__ import annotations

import pandas as pd

from harness.aggregate import mean_ci
from harness.report.format import absent_note, budget_text, ci_text, fmt, markdown_table


def finetune_table(finetune: pd.DataFrame, absent: list[dict]) -> str:
    standard = finetune[finetune["standard"].astype(bool)].sort_values(["task", "budget"], kind="stable")
    if standard.empty:
        return ""
    rows = []
    for (task, metric, head, objective, size, budget), group in standard.groupby(
            ["task", "metric", "head", "objective", "size", "budget"], sort=False):
        mean, low, high = mean_ci(group["value"])
        rows.append({"task": task, "metric": metric, "head": head, "objective": objective, "size": size,
                     "budget": budget_text(budget, group["budget_unit"].iloc[0]),
                     "pretraining seeds": len(group),
                     "fine-tuning seeds": "/".join(str(n) for n in sorted(set(group["finetune_seeds"]))),
                     "mean of medians": fmt(mean), "95% CI": ci_text(low, high),
                     "baseline": fmt(group["chance"].mean()), "majority acc": fmt(group["majority"].mean())})
    return ("## Fine-tuning\n\nEach pretraining run is fine-tuned once per fine-tuning seed; `mean of medians` "
            "is the mean over pretraining seeds of each run's median over fine-tuning seeds, in the task's "
            "standard metric. `baseline` is that metric for the majority-class (or uniform) guess."
            + absent_note(absent) + "\n\n" + markdown_table(pd.DataFrame(rows)))
