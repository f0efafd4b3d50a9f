"""Paired comparisons: per size x budget, every pair of objectives on every outcome, and the win
matrix (harness.report.answer; the statistics are harness.analysis.paired's).

    | outcome        | metric | a   | b   | mean a | mean b | a − b  | seeds           | documents       | t-test p | resolved |
    | synthetic_glue | acc    | clm | mlm | 0.650  | 0.540  | +0.110 | [0.080, 0.140]  | [0.050, 0.170]  | 0.004    | yes      |
"""

from __future__ import annotations

import math

import pandas as pd

from harness.report.answer import Answer
from harness.report.format import ci_text, fmt, markdown_table
from harness.report.sections.headline import budget_text, p_text

KIND_ORDER = {"aggregate": 0, "zero-shot": 1, "fine-tuned": 2, "held-out": 3}


def comparisons_section(answer: Answer) -> str:
    """'## Paired comparisons', one table and one win matrix per size x budget; '' without pairs."""
    if answer.paired.empty:
        return ""
    parts = ["## Paired comparisons",
             "Runs of two objectives with the same seed share data order and initialization, so "
             "each seed is a pair. `a − b` is the mean paired difference (positive: a scored higher); "
             "`seeds` its 95% percentile-bootstrap interval over seeds, `documents` over the task's "
             "documents (lm-eval's per-document scores, averaged over the paired seeds). `resolved` "
             "needs a paired t-test over seeds below 0.05 and every interval to exclude 0. Lower is "
             "better for bits per byte."]
    for (size, budget), rows in answer.paired.groupby(["size", "budget"], sort=True):
        parts.append(f"### {size}, {budget_text(answer, budget)}")
        parts.append(markdown_table(_rows(rows)))
        if (size, budget) in answer.wins:
            parts.append(win_table(answer.wins[(size, budget)]))
    return "\n\n".join(parts)


def _rows(rows: pd.DataFrame) -> pd.DataFrame:
    rows = rows.assign(order=rows["kind"].map(KIND_ORDER)).sort_values(["order", "task", "a", "b"], kind="stable")
    return pd.DataFrame({
        "outcome": rows["task"], "metric": rows["metric"], "a": rows["a"], "b": rows["b"],
        "mean a": rows["mean_a"].map(fmt), "mean b": rows["mean_b"].map(fmt),
        "a − b": rows["diff"].map(lambda d: "—" if math.isnan(d) else f"{d:+.3f}"),
        "seeds": [ci_text(lo, hi) for lo, hi in zip(rows["seeds_low"], rows["seeds_high"])],
        "documents": [ci_text(lo, hi) for lo, hi in zip(rows["docs_low"], rows["docs_high"])],
        "t-test p": rows["p_t"].map(lambda p: "—" if math.isnan(p) else p_text(p).removeprefix("= ")),
        "resolved": rows["significant"].map({True: "yes", False: "no"}),
        "seeds n": rows["n_pairs"].astype(int).astype(str)})


def win_table(wins) -> str:
    """The win matrix as text: 'share won (share won significantly)' of the row against the column."""
    cells = wins.share.copy().astype(object)
    for row in wins.share.index:
        for col in wins.share.columns:
            share, significant = wins.share.loc[row, col], wins.significant.loc[row, col]
            cells.loc[row, col] = "—" if pd.isna(share) else f"{share:.0%} ({significant:.0%})"
    table = cells.reset_index().rename(columns={"index": "row beats column"})
    return ("Win matrix over the zero-shot and fine-tuned tasks: the share of tasks on which the row "
            "objective beats the column one (in brackets: significantly).\n\n" + markdown_table(table))
