"""write_report: collect a suite's runs, summarize them, work out the answer (harness.report.answer),
draw the plots, render report.md and report.html (the same report, one self-contained file), and
write them with summary.csv and summary.parquet."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.aggregate import Aggregate
from harness.report.collect import GROUP, SuiteResults, absent_groups, collect, recorded_description
from harness.report.answer import Answer, answer
from harness.report.figures import answer_figures, write_figures
from harness.report.html import render_html
from harness.report.sections.aggregate import aggregate_table
from harness.report.sections.data_card import data_table
from harness.report.sections.environment import environment_section
from harness.report.sections.finetune import finetune_table
from harness.report.sections.comparisons import comparisons_section
from harness.report.sections.headline import headline
from harness.report.sections.notes import reading_notes
from harness.report.sections.plots import key_figure, plots_section
from harness.report.sections.restarts import restarts_section
from harness.report.sections.scaling import scaling_section
from harness.report.sections.runs import runs_table
from harness.report.sections.training import training_table
from harness.report.sections.unfinished import failed_table, partial_notice, unfinished_table
from harness.report.sections.zero_shot import zero_shot_table
from harness.report.summary import choose_aggregate, parquet, run_aggregates, summarize, wide
from harness.results import write_atomic


def write_report(suite_dir: Path, title: str, description: str | None = None) -> tuple[Path, Path]:
    """summary.csv, summary.parquet, plots/, report.md and report.html of every run under
    `suite_dir`, finished or not. `description` None: the one `harness run` recorded (suite.json). FileNotFoundError
    without any run.yaml."""
    suite_dir = Path(suite_dir)
    results = collect(suite_dir)
    if results.planned.empty:
        raise FileNotFoundError(f"no runs under {suite_dir} (no <run id>/run.yaml)")
    description = recorded_description(suite_dir) if description is None else description
    aggregate, per_run, summary = None, None, pd.DataFrame(columns=[*GROUP, "seeds", "scoring"])
    if not results.runs.empty:
        aggregate = choose_aggregate(results)
        per_run = run_aggregates(results, aggregate)
        summary = summarize(wide(results, per_run, aggregate))
    found = answer(suite_dir, results, per_run, aggregate)
    figures = write_figures(suite_dir, results, summary, per_run, aggregate) + answer_figures(suite_dir, found)
    csv_path, md_path = suite_dir / "summary.csv", suite_dir / "report.md"
    write_atomic(csv_path, summary.to_csv(index=False))
    write_atomic(suite_dir / "summary.parquet", parquet(summary))
    markdown = render_markdown(title, description, results, summary, aggregate, per_run, found, figures)
    write_atomic(md_path, markdown)
    write_atomic(suite_dir / "report.html", render_html(markdown, suite_dir, title))
    return csv_path, md_path


def render_markdown(title: str, description: str, results: SuiteResults, summary: pd.DataFrame,
                    aggregate: Aggregate | None, per_run: pd.DataFrame | None, found: Answer,
                    figures: list[tuple[str, str]] = ()) -> str:
    """report.md, its sections top to bottom, the headline first; a section with nothing to show
    is left out. `figures`: (title, PNG path) of each plot written (harness.report.figures)."""
    absent = absent_groups(results.planned)
    parts = [f"# {title}", headline(found, results.planned), key_figure(list(figures)), description.strip(),
             partial_notice(results.planned),
             unfinished_table(results.planned), failed_table(results.planned), restarts_section(results.planned),
             data_table(results.card),
             training_table(summary, results.planned), zero_shot_table(results.zero_shot, absent),
             finetune_table(results.finetune, absent), aggregate_table(per_run, aggregate, absent),
             comparisons_section(found), scaling_section(found),
             plots_section(list(figures)), reading_notes(), environment_section(results.environments),
             runs_table(results.runs)]
    return "\n\n".join(p for p in parts if p) + "\n"
