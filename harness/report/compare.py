"""`harness compare RESULTS_A RESULTS_B`: the paired tables of the report, across two suites.

Two suites that share objectives (the same objectives trained on two data sources, say) are
compared objective by objective: within one objective x size x budget, the run of suite A and
the run of suite B with the same seed are a pair, and every outcome the report compares
(harness.report.answer) gets its paired difference A − B, bootstrap interval over seeds and
t-test. Documents are not paired across suites: two suites need not evaluate the same documents.

    ### clm, mini, 6e12 FLOPs
    | outcome        | metric | a        | b         | mean a | mean b | a − b  | seeds          | ...
    | synthetic_glue | acc    | A: world | B: corpus | 0.650  | 0.600  | +0.050 | [0.020, 0.080] | ...
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.errors import UserError
from harness.report.answer import Answer, compare_cells, outcome_table
from harness.report.collect import collect
from harness.report.sections.comparisons import comparisons_section
from harness.report.sections.headline import ORDER, outcome_sentence
from harness.report.summary import choose_aggregate, run_aggregates


def compare_suites(dir_a: Path, dir_b: Path) -> str:
    """The comparison of two suites' results folders as markdown; a UserError naming the folder
    when one holds no finished run, or when they share no objective."""
    labels = _labels(Path(dir_a), Path(dir_b))
    sides = [_outcomes(Path(d)).assign(suite=label) for d, label in zip((dir_a, dir_b), labels)]
    shared = sorted(set(sides[0]["objective"]) & set(sides[1]["objective"]))
    if not shared:
        raise UserError(f"the two suites share no objective: {labels[0]} has "
                        f"{', '.join(sorted(set(sides[0]['objective'])))}; {labels[1]} has "
                        f"{', '.join(sorted(set(sides[1]['objective'])))}", where=str(dir_b))
    both = pd.concat(sides, ignore_index=True)
    both = both[both["objective"].isin(shared)]
    # Each objective x size is a cell of its own, and the two suites play the objectives' part.
    both = both.assign(size=both["objective"] + ", " + both["size"], objective=both["suite"])
    paired, wins = compare_cells(both, pd.DataFrame())
    answer = Answer(both, paired, {}, [])
    return "\n\n".join([f"# {labels[0]} vs {labels[1]}", _summary(answer), comparisons_section(answer)]) + "\n"


def _labels(dir_a: Path, dir_b: Path) -> tuple[str, str]:
    a, b = dir_a.resolve().name, dir_b.resolve().name
    return (f"A: {a}", f"B: {b}") if a == b else (a, b)


def _outcomes(suite_dir: Path) -> pd.DataFrame:
    if not suite_dir.is_dir():
        raise UserError("no such results folder", where=str(suite_dir))
    results = collect(suite_dir)
    if results.runs.empty:
        raise UserError("no finished run here: expected a suite's results folder "
                        "(<suite>/<run id>/train.json)", where=str(suite_dir))
    aggregate = choose_aggregate(results)
    return outcome_table(results, run_aggregates(results, aggregate), aggregate)


def _summary(answer: Answer) -> str:
    lines = []
    for (cell, budget), rows in answer.paired.groupby(["size", "budget"], sort=True):
        for kind in ORDER:
            for task in sorted(rows.loc[rows["kind"] == kind, "task"].unique()):
                lines.append(f"- **{cell}**, {task}: {outcome_sentence(answer, rows, task)}")
    return "\n".join(lines)
