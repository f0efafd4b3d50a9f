"""Scaling: each outcome fitted against compute (per size) or parameters (per budget), with
bootstrap intervals over seeds, and the crossovers of every pair (harness.report.answer).

    | objective | E              | A              | alpha          | points | seeds |
    | clm       | 0.41 [0.3, 0.5]| 0.52 [...]     | 0.31 [...]     | 9      | 3     |
"""

from __future__ import annotations

import pandas as pd

from harness.analysis.curves import PARAMS
from harness.analysis.scaling import crossover_sentence
from harness.report.answer import Answer, Fit
from harness.report.format import fmt, markdown_table
from harness.report.sections.headline import budget_text

FORMS = {"power": "L(C) = E + A·(C / C_ref)^(−alpha), C_ref the smallest compute fitted",
         "saturating": "s(C) = chance + (1 − chance)·sigmoid(k·(log10 C − log10 c_mid)); chance 0 for "
                       "centered scores"}


def scaling_section(answer: Answer) -> str:
    """'## Scaling' with one table and its crossovers per fit; '' where nothing could be fitted
    (fewer than 3 budgets per size and 3 sizes per budget)."""
    if not answer.fits:
        return ""
    parts = ["## Scaling",
             "Each objective's curve is fitted by least squares (scipy) to every run; the intervals "
             "are the 2.5 and 97.5 percentiles of 200 refits on seeds drawn with replacement (a seed "
             "keeps all its budgets; two objectives draw the same seeds). A crossover is searched "
             "from the smallest compute trained to 10 times the largest; beyond the largest it is an "
             "extrapolation, and says so."]
    for fit in answer.fits:
        parts += [f"### {fit_title(fit, answer)}", f"Form: {FORMS[fit.table['kind'].iloc[0]]}.",
                  markdown_table(fit_rows(fit))]
        parts += [f"- {crossover_sentence(c, fit.what, 'FLOPs' if fit.x == 'flops_spent' else 'parameters')}."
                  for c in fit.crossings]
    return "\n\n".join(parts)


def fit_title(fit: Fit, answer: Answer) -> str:
    if fit.x == "flops_spent":
        return f"{fit.what[0].upper() + fit.what[1:]} against FLOPs spent, size {fit.where['size']}"
    return f"{fit.what[0].upper() + fit.what[1:]} against parameters, at {budget_text(answer, fit.where['budget'])}"


def fit_rows(fit: Fit) -> pd.DataFrame:
    table = fit.table
    kind = table["kind"].iloc[0]
    rows = {"objective": table["objective"]}
    for name in PARAMS[kind]:
        digits = 3 if abs(table[name]).max() < 1e3 else 0
        rows[name] = [_estimate(v, lo, hi, digits) for v, lo, hi in
                      zip(table[name], table[f"{name}_low"], table[f"{name}_high"])]
    rows |= {"points": table["n_points"].astype(str), "seeds": table["n_seeds"].astype(str),
             "budgets": table["n_distinct"].astype(str)}
    return pd.DataFrame(rows)


def _estimate(value, low, high, digits: int) -> str:
    if pd.isna(value):
        return "—"
    text = f"{value:.3g}" if digits == 0 or abs(value) >= 1e3 or (value and abs(value) < 1e-2) else fmt(value, digits)
    return text if pd.isna(low) else f"{text} [{low:.3g}, {high:.3g}]"
