"""Headline: the answer first, one line per group of outcomes, then the caveats that apply.

    ## Headline

    - **Overall** (6e12 FLOPs, mini): of 7 task comparisons, clm wins 6 and mlm 1; significantly:
      clm 2, mlm 0.
    - **Aggregate synthetic-core-v1** (6e12 FLOPs, mini): **clm** leads: 0.217 vs 0.120 for mlm,
      by 0.097 [0.050, 0.150] over 3 paired seeds (t-test p = 0.01).
    - **synthetic_rte (fine-tuned)** (...): clm 0.61 vs mlm 0.60, by 0.010 [-0.02, 0.04]: not
      resolved with 3 seeds (a difference this size needs about 21).
    - **Held-out text, bits per byte** (...): ...
    - **Against compute**: mlm overtakes clm on held-out bits per byte above ≈ 4.1e13 FLOPs [...].

Each line speaks of the largest budget trained at each size; smaller budgets are in the paired
comparisons below, and the fits join them. "Resolved" is harness.analysis.paired's
`significant`: a paired t-test over seeds and every bootstrap interval agree.
"""

from __future__ import annotations

import math

import pandas as pd

from harness.analysis.paired import seeds_needed
from harness.analysis.scaling import crossover_sentence, sci
from harness.report.answer import Answer
from harness.report.format import fmt

ORDER = ("aggregate", "fine-tuned", "held-out")  # after Overall; zero-shot tasks count in Overall


def headline(answer: Answer, planned: pd.DataFrame) -> str:
    """The Headline section ('## Headline' and its lines); a placeholder line without outcomes."""
    lines = []
    for size, budget in _largest_cells(answer):
        where = f"{budget_text(answer, budget)}, {size}"
        lines += _overall(answer, size, budget, where)
        paired = answer.paired[(answer.paired["size"] == size) & (answer.paired["budget"] == budget)]
        outcomes = answer.outcomes[(answer.outcomes["size"] == size) & (answer.outcomes["budget"] == budget)]
        for kind in ORDER:
            for task in sorted(outcomes.loc[outcomes["kind"] == kind, "task"].unique()):
                sentence = outcome_sentence(answer, paired, task) if (paired["task"] == task).any() else \
                    _alone(outcomes[outcomes["task"] == task])
                lines.append(f"- **{_label(task)}** ({where}): {sentence}")
    lines += [f"- **Against compute** ({_fit_where(fit.where, answer)}): {crossover_sentence(c, fit.what)}."
              for fit in answer.fits for c in fit.crossings if fit.x == "flops_spent"]
    if not lines:
        lines = ["- No run has finished: nothing to compare yet."]
    caveats = caveat_lines(answer, planned)
    return "## Headline\n\n" + "\n".join(lines) + ("\n\n" + "\n".join(caveats) if caveats else "")


def _largest_cells(answer: Answer) -> list[tuple]:
    """(size, largest budget of that size), per size."""
    cells = answer.cells()
    return [(size, max(b for s, b in cells if s == size)) for size in sorted({s for s, _ in cells})]


def budget_text(answer: Answer, budget: float) -> str:
    units = answer.outcomes.loc[answer.outcomes["budget"] == budget, "budget_unit"]
    return f"{sci(budget)} {'tokens' if len(units) and units.iloc[0] == 'tokens' else 'FLOPs'}"


def _label(task: str) -> str:
    return "Held-out text, bits per byte" if task == "held-out text" else task


def p_text(p: float) -> str:
    """'= 0.037', or '< 0.0001' for what the t-test calls certain (seeds that agree exactly)."""
    return "< 0.0001" if p < 1e-4 else f"= {p:.2g}"


def _alone(rows: pd.DataFrame) -> str:
    """The sentence for an outcome only one objective has (the others failed, or lack a task)."""
    objective = rows["objective"].iloc[0]
    return f"only {objective} has a value ({fmt(rows['value'].mean())}): nothing to compare."


def outcome_sentence(answer: Answer, paired: pd.DataFrame, task: str) -> str:
    """Who leads on one outcome, by how much, and whether the seeds resolve it."""
    rows = paired[paired["task"] == task]
    means = _means(rows)
    if len(means) < 2:
        only = next(iter(means), "—")
        return f"only {only} has a value ({fmt(means.get(only))}): nothing to compare."
    higher = bool(rows["higher_is_better"].iloc[0])
    ranked = sorted(means, key=lambda o: -means[o] if higher else means[o])
    best, runner = ranked[0], ranked[1]
    row, sign = _pair(rows, best, runner)
    diff, low, high = sign * row["diff"], *sorted((sign * row["seeds_low"], sign * row["seeds_high"]))
    of = f" (best of {len(means)})" if len(means) > 2 else ""
    interval = "" if math.isnan(low) else f" [{fmt(low)}, {fmt(high)}]"
    seeds = int(row["n_pairs"])
    if row["significant"]:
        return (f"**{best}** leads{of}: {fmt(means[best])} vs {fmt(means[runner])} for {runner}, by "
                f"{fmt(abs(diff))}{interval} over {seeds} paired seeds (t-test p {p_text(row['p_t'])}).")
    return (f"{best} {fmt(means[best])} vs {runner} {fmt(means[runner])}{of}, a difference of {fmt(abs(diff))}"
            f"{interval}: not resolved with {seeds} seed{'s' * (seeds != 1)}{_needed(answer, task, best, runner, row)}.")


def _means(rows: pd.DataFrame) -> dict[str, float]:
    means = {}
    for row in rows.to_dict("records"):
        means.setdefault(row["a"], row["mean_a"])
        means.setdefault(row["b"], row["mean_b"])
    return {o: m for o, m in means.items() if not math.isnan(m)}


def _pair(rows: pd.DataFrame, first: str, second: str) -> tuple[dict, int]:
    """The paired row of two objectives, and +1 when it reads first - second, else -1."""
    for row in rows.to_dict("records"):
        if (row["a"], row["b"]) in ((first, second), (second, first)):
            return row, 1 if row["a"] == first else -1
    raise KeyError((first, second))


def _needed(answer: Answer, task: str, best: str, runner: str, row: dict) -> str:
    """'; a difference this size needs about N seeds', from the seed-to-seed spread."""
    outcomes = answer.outcomes[(answer.outcomes["task"] == task) & (answer.outcomes["size"] == row["size"])
                               & (answer.outcomes["budget"] == row["budget"])]
    wide = outcomes.pivot_table(index="seed", columns="objective", values="value")
    if best not in wide or runner not in wide:
        return ""
    differences = (wide[best] - wide[runner]).dropna()
    if len(differences) < 2:
        return ""
    needed = seeds_needed(float(differences.mean()), float(differences.std(ddof=1)))
    return "; no number of seeds would resolve a difference this small" if needed is None else \
        f"; a difference this size needs about {needed} seeds"


def _overall(answer: Answer, size: str, budget: float, where: str) -> list[str]:
    """The win matrix in one line: who wins the most task comparisons, ties and significance
    counted (two objectives: both tallies; more: the leader's against all the others)."""
    wins = answer.wins.get((size, budget))
    if wins is None or wins.share.shape[0] < 2:
        return []
    best = wins.share.mean(axis=1, skipna=True).idxmax()
    paired = answer.paired[(answer.paired["size"] == size) & (answer.paired["budget"] == budget)
                           & answer.paired["kind"].isin(["zero-shot", "fine-tuned"])]
    mine = paired[(paired["a"] == best) | (paired["b"] == best)]
    ties = int(mine["better"].isna().sum())
    tie_text = f", {ties} tie{'s' * (ties != 1)}" if ties else ""
    if wins.share.shape[0] == 2:
        other = next(o for o in wins.share.index if o != best)
        won = {o: int((mine["better"] == o).sum()) for o in (best, other)}
        sure = {o: int(((mine["better"] == o) & mine["significant"]).sum()) for o in (best, other)}
        return [f"- **Overall** ({where}): of {len(mine)} task comparisons, {best} wins {won[best]} and {other} "
                f"{won[other]}{tie_text}; significantly: {best} {sure[best]}, {other} {sure[other]}."]
    won, sure = int((mine["better"] == best).sum()), int(((mine["better"] == best) & mine["significant"]).sum())
    against = ", ".join(o for o in wins.share.index if o != best)
    return [f"- **Overall** ({where}): {best} wins {won} of its {len(mine)} task comparisons against {against} "
            f"({sure} significantly{tie_text})."]


def _fit_where(where: dict, answer: Answer) -> str:
    return f"size {where['size']}" if "size" in where else budget_text(answer, where["budget"])


def caveat_lines(answer: Answer, planned: pd.DataFrame) -> list[str]:
    """The caveats that apply to this suite's answer, in words."""
    notes = []
    runs = answer.outcomes.drop_duplicates("run_id")
    done = int(planned["done"].sum())
    if done < len(planned):
        notes.append(f"Partial: {done} of {len(planned)} planned runs are done; the answer may change.")
    zero_shot = answer.outcomes[answer.outcomes["kind"] == "zero-shot"]
    if "scoring" in planned and planned["scoring"].nunique() > 1 and not zero_shot.empty:
        methods = ", ".join(sorted(planned["scoring"].unique()))
        notes.append(f"Zero-shot scores come from different scoring methods ({methods}): they are not "
                     "on one scale, so a zero-shot difference is partly a difference of measurement.")
    with_bpb = set(answer.outcomes.loc[answer.outcomes["kind"] == "held-out", "objective"])
    without = sorted(set(runs["objective"]) - with_bpb)
    if with_bpb and without:
        notes.append(f"Held-out bits per byte exist only for objectives with a likelihood: not for {', '.join(without)}.")
    seeds = int(runs.groupby(["objective", "size", "budget"])["seed"].nunique().min()) if len(runs) else 0
    if 0 < seeds < 5:
        notes.append(f"With {seeds} seed{'s' * (seeds != 1)} an interval is close to the range of what was seen, "
                     "and bootstrap intervals of fits and crossovers cover less than their nominal 95%.")
    return ["Caveats:", "", *[f"- {note}" for note in notes]] if notes else []
