"""The report's figures: the tables of harness.report.plots built from a suite's results, written
under `<suite>/plots/` as PNG and SVG.

    write_figures(suite_dir, results, summary, per_run, aggregate)
      -> [("Validation loss against compute", "plots/val_loss.png"), ...]

    plots/val_loss        metrics.jsonl's `kind: val` rows of every finished run, FLOPs = step x
                          the run's FLOPs per step
    plots/bits_per_byte   each run's held-out bits per byte against its FLOPs, the entropy floor
                          of the data card (left out when no objective has a likelihood)
    plots/zero_shot       per task the mean over seeds of one metric (the aggregate's, else the
                          first of acc, acc_norm, mcc, f1), its 95% interval and chance
    plots/aggregate       the suite's aggregate per objective (per budget when several)
    plots/finetune        per fine-tuning task, the standard metric and the baseline

and, from the suite's answer (harness.report.answer, `answer_figures`):

    plots/fit_<outcome>_<size>          each fit against FLOPs: the runs, each objective's
                                        fitted curve, the first crossover with its interval
    plots/fit_<outcome>_params_<budget> the same against parameters, across sizes
    plots/wins_<size>_<budget>          the win matrix at each size's largest budget

A figure with nothing to show is not written. Objectives are named as in the tables; with
several sizes a series is "objective size". Runs are told apart by budget where the runs table
has a `budget` column (a suite with several budgets), else all share one.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.aggregate import Aggregate, chance_of, mean_ci
import harness.report.plots as plots
from harness.analysis.curves import Curve, PARAMS
from harness.analysis.scaling import sci
from harness.report.answer import Answer, Fit
from harness.report.collect import SuiteResults, run_records
from harness.report.sections.zero_shot import SHOWN_METRICS

PLOTS_DIR = "plots"


def write_figures(suite_dir: Path, results: SuiteResults, summary: pd.DataFrame, per_run: pd.DataFrame | None,
                  aggregate: Aggregate | None) -> list[tuple[str, str]]:
    """Write every figure that has data under `<suite_dir>/plots/`; (title, PNG path relative
    to `suite_dir`) of each, in the report's order. `summary` is summary.csv's table (unused by
    the figures of now; the fits will read it)."""
    if results.runs.empty:
        return []
    ident = run_identity(results.runs)
    floor = (results.card or {}).get("entropy_bits_per_byte")
    figures = [  # (file name, title, table, the column that must have a value, drawing)
        ("val_loss", "Validation loss against compute", val_rows(suite_dir, ident), "val_loss", plots.loss_curves),
        ("bits_per_byte", "Held-out bits per byte against compute", heldout_rows(results.runs, ident),
         "bits_per_byte", lambda table: plots.bits_per_byte(table, floor)),
        ("zero_shot", "Zero-shot scores per task", task_rows(results.zero_shot, ident, aggregate), "mean",
         plots.task_scores),
        ("aggregate", "Aggregate with intervals", aggregate_rows(per_run, ident), "mean",
         lambda table: plots.aggregate_scores(table, name=aggregate.key)),
        ("finetune", "Fine-tuning per task", finetune_rows(results.finetune, ident), "mean", plots.finetune_scores),
    ]
    written = []
    for name, title, table, value, draw in figures:
        if table[value].notna().any():
            png, _ = plots.save(draw(table), Path(suite_dir) / PLOTS_DIR, name)
            written.append((title, f"{PLOTS_DIR}/{png.name}"))
    return written


def run_identity(runs: pd.DataFrame) -> pd.DataFrame:
    """run_id, objective (with the size when the suite has several) and budget of each run."""
    objective = runs["objective"].astype(str)
    if runs["size"].nunique() > 1:
        objective = objective + " " + runs["size"].astype(str)
    budget = runs["budget"] if "budget" in runs else ""
    return pd.DataFrame({"run_id": runs["run_id"], "objective": objective, "budget": budget})


def val_rows(suite_dir: Path, ident: pd.DataFrame) -> pd.DataFrame:
    """objective, budget, seed, flops, val_loss: one row per validation of a finished run."""
    finished = set(ident["run_id"])
    rows = [{"run_id": plan.run_id, "seed": plan.seed, "flops": row["step"] * plan.flops_per_step,
             "val_loss": row.get("val_loss")}
            for run, plan in run_records(suite_dir) if plan.run_id in finished
            for row in run.read_metrics() if row.get("kind") == "val"]
    table = pd.DataFrame(rows, columns=["run_id", "seed", "flops", "val_loss"])
    return ident.merge(table, on="run_id").drop(columns="run_id").astype({"flops": float, "val_loss": float})


def heldout_rows(runs: pd.DataFrame, ident: pd.DataFrame) -> pd.DataFrame:
    """objective, budget, seed, flops, bits_per_byte of the runs with a held-out bits per byte."""
    table = ident.assign(seed=runs["seed"].to_numpy(), flops=runs["flops_spent"].astype(float).to_numpy(),
                         bits_per_byte=runs["bits_per_byte"].to_numpy())
    return table.dropna(subset=["bits_per_byte"]).drop(columns="run_id")


def _mean_ci_rows(scores: pd.DataFrame, keys: list[str], extra: dict) -> pd.DataFrame:
    """Per `keys`, the mean and 95% interval over seeds of `value`, and each of `extra`
    ({column: function of the group})."""
    rows = []
    for key, group in scores.groupby(keys, sort=True):
        mean, low, high = mean_ci(group["value"])
        rows.append(dict(zip(keys, key)) | {"mean": mean, "low": low, "high": high}
                    | {col: f(group) for col, f in extra.items()})
    return pd.DataFrame(rows, columns=[*keys, "mean", "low", "high", *extra])


def _metric_per_task(zero_shot: pd.DataFrame, aggregate: Aggregate | None) -> dict[str, str]:
    """The one metric plotted per task: the aggregate's, else the first shown metric it has."""
    chosen = {}
    for task, group in zero_shot.groupby("task"):
        have = set(group["metric"])
        wanted = aggregate.tasks.get(task) if aggregate else None
        chosen[task] = wanted if wanted in have else next((m for m in SHOWN_METRICS if m in have), None)
    return {task: metric for task, metric in chosen.items() if metric}


def task_rows(zero_shot: pd.DataFrame, ident: pd.DataFrame, aggregate: Aggregate | None) -> pd.DataFrame:
    """task, objective, budget, metric, mean, low, high, chance: one metric per task."""
    metric = _metric_per_task(zero_shot, aggregate)
    shown = zero_shot[zero_shot["metric"] == zero_shot["task"].map(metric)]
    shown = shown[["run_id", "task", "metric", "value", "chance"]].merge(ident, on="run_id")
    return _mean_ci_rows(shown, ["task", "objective", "budget", "metric"], {
        "chance": lambda g: chance_of(g["metric"].iloc[0], g["chance"].mean() if g["chance"].notna().any() else None)
    }).astype({"chance": float})


def aggregate_rows(per_run: pd.DataFrame | None, ident: pd.DataFrame) -> pd.DataFrame:
    """objective, budget, mean, low, high of the suite's aggregate."""
    if per_run is None:
        return pd.DataFrame(columns=["objective", "budget", "mean", "low", "high"])
    scores = per_run[["run_id", "aggregate"]].rename(columns={"aggregate": "value"}).merge(ident, on="run_id")
    return _mean_ci_rows(scores, ["objective", "budget"], {})


def finetune_rows(finetune: pd.DataFrame, ident: pd.DataFrame) -> pd.DataFrame:
    """task, objective, budget, metric, mean, low, high, baseline in each task's standard metric."""
    standard = finetune[finetune["standard"].astype(bool)][["run_id", "task", "metric", "value", "chance"]]
    return _mean_ci_rows(standard.merge(ident, on="run_id"), ["task", "objective", "budget", "metric"],
                         {"baseline": lambda g: g["chance"].mean()})


def answer_figures(suite_dir: Path, found: Answer) -> list[tuple[str, str]]:
    """The fits (one figure each) and each size's win matrix at its largest budget, written under
    `<suite_dir>/plots/`: (title, PNG path relative to `suite_dir`) of each."""
    drawn = []
    for fit in found.fits:
        if fit.x == "flops_spent":
            name, title = f"fit_{fit.kind}_{fit.where['size']}", f"Fitted {fit.what} against FLOPs, {fit.where['size']}"
        else:
            name, title = f"fit_{fit.kind}_params_{sci(fit.where['budget'])}", f"Fitted {fit.what} against parameters"
        drawn.append((name, title, fit_figure(fit)))
    for size in sorted({size for size, _ in found.wins}):
        budget = max(b for s, b in found.wins if s == size)
        wins = found.wins[(size, budget)]
        drawn.append((f"wins_{size}_{sci(budget)}", f"Win matrix, {size} at {sci(budget)}",
                      plots.win_matrix(wins.share, wins.significant)))
    written = []
    for name, title, figure in drawn:
        png, _ = plots.save(figure, Path(suite_dir) / PLOTS_DIR, name)
        written.append((title, f"{PLOTS_DIR}/{png.name}"))
    return written


def fit_figure(fit: Fit):
    """The runs of one fit, each objective's curve, and the first crossover that has a point."""
    curves = {}
    for row in fit.table.to_dict("records"):
        params = {name: row[name] for name in PARAMS[row["kind"]]}
        if not any(pd.isna(v) for v in params.values()):
            c_ref = row["c_ref"] if not pd.isna(row["c_ref"]) else 1.0
            chance = None if pd.isna(row["chance"]) else row["chance"]
            curves[row["objective"]] = Curve(row["kind"], params, c_ref, chance)
    crossing = next((c for c in fit.crossings if c.point is not None), None)
    marked = None if crossing is None else plots.Crossover(
        float(crossing.point), float(crossing.low if crossing.low is not None else crossing.point),
        float(crossing.high if crossing.high is not None else crossing.point),
        f"{crossing.ahead_above} overtakes {crossing.ahead_below}")
    points = fit.points.rename(columns={fit.x: "compute"})
    ylabel = "bits per byte" if fit.kind == "held-out" else "centered accuracy"
    return plots.scaling_fits(points, curves, ylabel=ylabel, crossover=marked, title=f"Fitted {fit.what}",
                              xlabel="FLOPs spent" if fit.x == "flops_spent" else "parameters")
