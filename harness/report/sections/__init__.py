"""One module per section of report.md, in the order report.md shows them:

    unfinished.py   the Partial results notice, Unfinished runs, Failed runs
    headline.py     Headline: the answer in sentences (a placeholder until the statistics write it)
    data_card.py    Data: source, tokenizer, splits, the entropy floor
    training.py     Training at matched compute
    zero_shot.py    Zero-shot evaluation (lm-eval)
    finetune.py     Fine-tuning
    aggregate.py    Aggregate: the suite's versioned mean of centered scores
    plots.py        Plots: each figure of harness.report.figures, linking its SVG
    notes.py        Reading this report
    environment.py  Environment: versions, the harness's commit and hardware of the runs
    runs.py         Runs: one row per finished run

Each returns its section's markdown, or "" when it has nothing to show (then report.md leaves
the section out). harness.report.write puts them together.
"""
