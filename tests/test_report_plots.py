"""The report's plots: each plot function on small made-up tables (its series counted on the
Figure before saving), the PNG and SVG read back, saving twice byte-identical, and write_report
on the hand-made tree of test_report linking plots that exist."""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import LineCollection, PolyCollection
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.image import imread

from harness.report import plots, write_report
import test_report

suite = test_report.suite  # the hand-made results tree, a fixture

NAN = math.nan


def val_table(objectives=("clm", "mlm"), seeds=(0, 1), budgets=("",)) -> pd.DataFrame:
    return pd.DataFrame([{"objective": o, "budget": b, "seed": s, "flops": step * 1e10,
                          "val_loss": 4.0 - step / 50 + s / 10 + i / 5}
                         for i, o in enumerate(objectives) for b in budgets for s in seeds for step in (10, 50, 100)])


def saved_ok(fig, tmp_path, name: str, twice: bool = False) -> None:
    """PNG and SVG written, readable, not blank; `twice`: a second save gives the same bytes."""
    png, svg = plots.save(fig, tmp_path / "plots", name)
    image = imread(png)
    assert image.shape[0] > 0 and image.shape[1] > 0
    assert len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 1  # not all one colour
    assert ET.parse(svg).getroot().tag.endswith("svg")
    if not twice:
        return
    first = png.read_bytes(), svg.read_bytes()
    plots.save(fig, tmp_path / "plots", name)
    assert (png.read_bytes(), svg.read_bytes()) == first


def bands(ax) -> list:
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def test_loss_curves_one_line_per_objective_and_a_band_only_with_seeds(tmp_path):
    fig = plots.loss_curves(val_table())
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 2 and len(bands(ax)) == 2
    assert ax.get_xscale() == "log"
    assert [line.get_label() for line in ax.get_lines()] == ["clm", "mlm"]
    saved_ok(fig, tmp_path, "val_loss", twice=True)

    one = plots.loss_curves(val_table(objectives=("clm",), seeds=(0,)))
    assert len(one.axes[0].get_lines()) == 1 and bands(one.axes[0]) == []
    saved_ok(one, tmp_path, "one")


def test_loss_curves_per_budget_keep_the_objectives_colour(tmp_path):
    fig = plots.loss_curves(val_table(budgets=(1e12, 3e12)))
    lines = fig.axes[0].get_lines()
    assert len(lines) == 4
    by_label = {line.get_label(): line for line in lines}
    assert by_label["clm @ 1e+12"].get_color() == by_label["clm @ 3e+12"].get_color()
    assert by_label["clm @ 1e+12"].get_linestyle() != by_label["clm @ 3e+12"].get_linestyle()
    assert by_label["clm @ 1e+12"].get_color() != by_label["mlm @ 1e+12"].get_color()


def test_bits_per_byte_leaves_out_objectives_without_a_likelihood_and_draws_the_floor(tmp_path):
    runs = pd.DataFrame({"objective": ["clm", "clm", "clm", "mlm"], "budget": "", "seed": [0, 1, 2, 0],
                         "flops": [6e12, 6e12, 6e12, 6e12], "bits_per_byte": [0.90, 0.94, NAN, NAN]})
    fig = plots.bits_per_byte(runs, floor=0.2205)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels == ["entropy floor 0.2205", "clm"]  # the floor, then the mean of clm
    assert ax.get_lines()[0].get_ydata()[0] == pytest.approx(0.2205)
    assert ax.get_lines()[1].get_ydata() == pytest.approx([0.92])
    assert len(ax.collections) == 1 and len(ax.collections[0].get_offsets()) == 2  # clm's two runs
    saved_ok(fig, tmp_path, "bpb")
    assert len(plots.bits_per_byte(runs).axes[0].get_lines()) == 1  # no card floor: no line


def score_table() -> pd.DataFrame:
    return pd.DataFrame({"task": ["glue", "glue", "mmlu", "mmlu"], "objective": ["clm", "mlm", "clm", "mlm"],
                         "budget": "", "metric": "acc", "mean": [0.65, 0.54, 0.30, NAN],
                         "low": [0.60, 0.52, NAN, NAN], "high": [0.70, 0.56, NAN, NAN],
                         "chance": [0.5, 0.5, 0.25, 0.25]})


def test_task_scores_bars_with_intervals_and_each_tasks_chance(tmp_path):
    fig = plots.task_scores(score_table())
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, BarContainer)]
    assert [len(c) for c in bars] == [2, 1]  # clm on both tasks; mlm's mmlu is missing
    assert [c.get_label() for c in bars] == ["clm", "mlm"]
    chance = [c for c in ax.collections if isinstance(c, LineCollection) and c.get_label() == "chance"]
    assert len(chance) == 1 and sorted(s[0][1] for s in chance[0].get_segments()) == [0.25, 0.5]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["glue (acc)", "mmlu (acc)"]
    saved_ok(fig, tmp_path, "tasks")


def test_finetune_scores_with_the_baseline_line(tmp_path):
    results = score_table().rename(columns={"chance": "baseline"})
    fig = plots.finetune_scores(results[results["objective"] == "clm"])  # one objective
    ax = fig.axes[0]
    assert [len(c) for c in ax.containers if isinstance(c, BarContainer)] == [2]
    assert [c.get_label() for c in ax.collections if isinstance(c, LineCollection)].count("baseline") == 1
    saved_ok(fig, tmp_path, "finetune")


def test_aggregate_bars_at_one_budget_and_lines_across_budgets(tmp_path):
    one = pd.DataFrame({"objective": ["clm", "mlm"], "budget": "", "mean": [0.217, NAN],
                        "low": [0.15, NAN], "high": [0.267, NAN]})
    fig = plots.aggregate_scores(one, name="synthetic-core-v1")
    bars = [c for c in fig.axes[0].containers if isinstance(c, BarContainer)]
    assert len(bars) == 1 and len(bars[0]) == 1  # mlm has no aggregate: no bar
    assert bars[0][0].get_height() == pytest.approx(0.217)
    saved_ok(fig, tmp_path, "aggregate")
    several = pd.DataFrame({"objective": ["clm", "clm", "mlm", "mlm"], "budget": [1e12, 1e13] * 2,
                            "mean": [0.1, 0.2, 0.05, 0.3], "low": [0.0, 0.1, 0.0, 0.2], "high": [0.2, 0.3, 0.1, 0.4]})
    ax = plots.aggregate_scores(several).axes[0]
    assert len([c for c in ax.containers if isinstance(c, ErrorbarContainer)]) == 2 and ax.get_xscale() == "log"


def test_scaling_fits_curves_band_and_crossover(tmp_path):
    points = pd.DataFrame({"objective": ["clm"] * 3 + ["mlm"] * 3, "compute": [1e12, 3e12, 1e13] * 2,
                           "value": [1.00, 0.90, 0.85, 1.10, 0.92, 0.80]})
    curves = {"clm": lambda c: 0.7 + 0.3 * (c / 1e12) ** -0.3,  # a callable, and arrays
              "mlm": (np.array([1e12, 1e14]), np.array([1.1, 0.6]))}
    band = {"clm": (np.array([1e12, 1e13]), np.array([0.95, 0.8]), np.array([1.05, 0.9]))}
    crossing = plots.Crossover(4e13, 1e13, 2e14, "mlm overtakes clm")
    fig = plots.scaling_fits(points, curves, ylabel="bits per byte", bands=band, crossover=crossing)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[:2] == ["clm (fit)", "mlm (fit)"] and labels[2].startswith("mlm overtakes clm ≈ 4e+13")
    assert ax.get_lines()[2].get_xdata()[0] == 4e13
    assert len(bands(ax)) == 1 and ax.get_xscale() == "log"
    assert ax.get_xlim()[1] >= 2e14  # the grid reaches the crossover's interval
    assert ax.get_lines()[0].get_xdata().max() == pytest.approx(2e14)
    saved_ok(fig, tmp_path, "fit")
    bare = plots.scaling_fits(points[points["objective"] == "clm"], {"clm": curves["clm"]}, ylabel="bpb")
    assert len(bare.axes[0].get_lines()) == 1 and bands(bare.axes[0]) == []


def test_win_matrix_heat_map_blank_diagonal_and_annotations(tmp_path):
    names = ["clm", "mlm", "ul2"]
    wins = pd.DataFrame([[NAN, 0.67, 0.5], [0.33, NAN, NAN], [0.5, 0.2, NAN]], index=names, columns=names)
    fig = plots.win_matrix(wins, significant=wins * 0.5)
    ax = fig.axes[0]
    assert len(ax.images) == 1
    assert ax.images[0].get_array().mask.diagonal().all()
    texts = sorted(t.get_text() for t in ax.texts)
    assert len(texts) == 6 and "0.67\n(0.34 sig.)" in texts and "no shared task" in texts  # off the diagonal
    saved_ok(fig, tmp_path, "wins", twice=True)  # a colour bar: the layout must settle
    assert sorted(t.get_text() for t in plots.win_matrix(wins).axes[0].texts)[0] == "0.20"


def test_every_plot_tolerates_an_empty_table(tmp_path):
    empty = score_table().iloc[0:0]
    assert "no scores" in plots.task_scores(empty).axes[0].get_title()
    assert "no validation loss" in plots.loss_curves(val_table().iloc[0:0]).axes[0].get_title()
    saved_ok(plots.bits_per_byte(val_table().iloc[0:0].assign(bits_per_byte=[]), floor=0.22), tmp_path, "e")


def test_write_report_writes_the_plots_report_md_links(suite):
    run = suite / "clm-mini-s0-0123abcd"  # validation rows as the training worker logs them
    (run / "metrics.jsonl").write_text("".join(
        f'{{"kind": "val", "step": {step}, "val_loss": {3 - step / 100}}}\n' for step in (50, 100)))
    report = write_report(suite, "Demo")[1].read_text()
    plots_part = report.split("\n## Plots\n", 1)[1].split("\n## ", 1)[0]
    links = re.findall(r"\]\((plots/[^)]+)\)", plots_part)
    assert {link.rsplit("/", 1)[1] for link in links} == {
        f"{name}.{ext}" for name in ("val_loss", "bits_per_byte", "zero_shot", "aggregate", "finetune",
                                     "wins_mini_6.0e12")  # one budget: no fit, one win matrix
        for ext in ("png", "svg")}
    for link in links:
        assert (suite / link).stat().st_size > 0, link
    assert imread(suite / "plots" / "zero_shot.png").shape[0] > 0
    assert report.index("## Headline") < report.index("## Plots") < report.index("## Reading this report")
