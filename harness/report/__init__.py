"""pandas over every run of a suite: summary.csv, report.md, its plots and report.html.

Each finished run directory holds its plan (run.yaml), its training summary (train.json), one
lm-eval result per evaluation entry (eval/<entry>.json) and one result per fine-tuning task
(finetune/<task>.json). `collect` reads them into tidy tables, one row per number:

    zero_shot:  run_id         objective size seed scoring        task            metric value chance
                clm-mini-s0-.. clm       mini 0    loglikelihood  synthetic_glue  acc    0.61  0.5
                clm-mini-s1-.. clm       mini 1    loglikelihood  synthetic_glue  acc    0.65  0.5

and every table of the report groups such rows by objective x size x budget: the mean over pretraining
seeds (here 0.63), its 95% bootstrap interval (harness.aggregate.bootstrap_ci; (0.61, 0.65) with
two seeds) and, against chance, the centered score ((0.63 - 0.5) / (1 - 0.5) = 0.26).

Where each part lives, in the order `write_report` uses them:

    collect.py             reading the suite's folder, each run.yaml as its harness.plan.RunPlan:
                           SuiteResults (runs, zero-shot, fine-tuning, declared aggregates) and
                           every planned run with its state (RUN/FAILED)
    summary.py             the suite's aggregate per run, the per-run wide table, summary.csv
    figures.py             the plots' tables from the results, written under <suite>/plots/
    plots.py               one matplotlib Figure per plot, from plain tables; `save` (PNG + SVG)
    html.py                report.html: report.md as one page, the plots inline
    write.py               write_report: collect, summarize, draw, render, write every file
    format.py              numbers, intervals, "—" and markdown tables
    sections/              one module per section of report.md, top to bottom:
      (title, description)
      unfinished.py        the Partial results notice, Unfinished runs, Failed runs
      headline.py          Headline (an anchor for the answer in sentences)
      data_card.py         Data (source, splits, tokenizer, entropy floor)
      training.py          Training at matched compute (bits per byte of held-out text from
                           the `harness_heldout` entry)
      zero_shot.py         Zero-shot evaluation
      finetune.py          Fine-tuning
      aggregate.py         Aggregate (a versioned list of tasks averaged as centered scores)
      plots.py             Plots (each figure, linking its SVG)
      notes.py             Reading this report
      environment.py       Environment (versions, commit, hardware: one line per distinct one)
      runs.py              Runs

A planned run is one with a run.yaml (written before training starts); an objective x size x budget with
no finished run keeps its row in the training and aggregate tables, marked "failed" or
"missing". summary.csv holds, per objective x size x budget with a finished run, the mean, ci_low and
ci_high of every number.
"""

from harness.report.collect import planned_runs, recorded_description, run_yamls
from harness.report.sections.unfinished import partial_notice
from harness.report.write import write_report

__all__ = ["partial_notice", "planned_runs", "recorded_description", "run_yamls", "write_report"]
