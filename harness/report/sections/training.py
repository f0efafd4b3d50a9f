"""Training at matched compute: one row per objective x size x budget, from summary.csv's means.

An objective x size x budget with no finished run keeps its row, every cell "failed" or "missing"
(harness.report.collect.absent_groups), and `seeds` reads "2 of 3" when some seeds are missing.
"""

from __future__ import annotations

import pandas as pd

from harness.report.collect import GROUP, absent_groups
from harness.report.format import budget_text, markdown_table, mean_ci_text

# The training table's columns when no run has finished (the rows then all say why).
TRAINING_HEADERS = ["objective", "size", "budget", "seeds", "params", "params trained", "FLOPs spent", "tokens seen",
                    "val loss [95% CI]", "uniform loss ln V", "bits/byte held-out [95% CI]", "wall time (s)"]


def training_table(summary: pd.DataFrame, planned: pd.DataFrame) -> str:
    """One row per objective x size x budget; one without a finished run says "failed" or "missing"."""
    table = _trained_rows(summary, planned) if len(summary) else pd.DataFrame(columns=TRAINING_HEADERS)
    absent = [{header: group["status"] for header in table.columns}
              | {"objective": group["objective"], "size": group["size"],
                 "budget": budget_text(group["budget"], group["budget_unit"]), "seeds": f"0 of {group['planned']}"}
              for group in absent_groups(planned)]
    if absent:
        table = pd.concat([table, pd.DataFrame(absent, columns=table.columns)], ignore_index=True)
    return "## Training at matched compute\n\n" + markdown_table(table)


def _trained_rows(summary: pd.DataFrame, planned: pd.DataFrame) -> pd.DataFrame:
    trained = "params_trained_mean" if "params_trained_mean" in summary else "params_mean"
    return pd.DataFrame({
        "objective": summary["objective"], "size": summary["size"], "budget": _budget_text(summary, planned),
        "seeds": _seeds_text(summary, planned),
        "params": summary["params_mean"].map(lambda v: f"{v:,.0f}"),
        "params trained": summary[trained].map(lambda v: f"{v:,.0f}"),
        "FLOPs spent": summary["flops_spent_mean"].map(lambda v: f"{v:.4g}"),
        "tokens seen": summary["tokens_seen_mean"].map(lambda v: f"{v:,.0f}"),
        "val loss [95% CI]": mean_ci_text(summary, "val_loss"),
        "uniform loss ln V": summary["uniform_loss_mean"].map(lambda v: f"{v:.3f}"),
        "bits/byte held-out [95% CI]": mean_ci_text(summary, "bits_per_byte"),
        "wall time (s)": summary["wall_time_s_mean"].map(lambda v: f"{v:.0f}"),
    })


def _seeds_text(summary: pd.DataFrame, planned: pd.DataFrame) -> pd.Series:
    """Finished seeds, and "of N" when more were planned."""
    counts = planned.groupby(GROUP).size().to_dict()

    def cell(row: pd.Series) -> str:
        of = counts.get((row["objective"], row["size"], row["budget"]), 0)
        return f"{row['seeds']} of {of}" if of > row["seeds"] else str(row["seeds"])
    return summary.apply(cell, axis=1)


def _budget_text(summary: pd.DataFrame, planned: pd.DataFrame) -> pd.Series:
    """Each row's budget with its unit, as the planned runs give it."""
    units = planned.groupby(GROUP)["budget_unit"].first().to_dict()
    return summary.apply(lambda row: budget_text(row["budget"], units.get(
        (row["objective"], row["size"], row["budget"]), "flops")), axis=1)
