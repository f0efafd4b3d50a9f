"""The report's plots: pure functions from small pandas tables to matplotlib Figures.

Each function takes plain tables (columns named in its docstring) and returns a
`matplotlib.figure.Figure` built with the object API (no pyplot, no global state), so a test can
count its series before anything is written. `save` writes a figure as PNG and SVG, byte for
byte the same every time. For example:

    val = pd.DataFrame({"objective": ["clm", "clm", "mlm", "mlm"], "budget": "", "seed": 0,
                        "flops": [1e12, 2e12, 1e12, 2e12], "val_loss": [3.1, 2.8, 3.4, 3.2]})
    fig = loss_curves(val)             # one line per objective, a band where seeds differ
    save(fig, suite / "plots", "val_loss")   # -> (plots/val_loss.png, plots/val_loss.svg)

One objective keeps one colour in every plot (`colours`); a second budget of the same objective
is a second line style. Every function tolerates one objective, one seed (no band) and missing
values (rows with NaN are left out; a plot with nothing left says so in its title).
"""

from __future__ import annotations

import io
import math
import os
import secrets
from pathlib import Path
from typing import Callable, NamedTuple

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# SVG element ids are hashed from this salt: without a fixed one they are random per process.
SVG_SALT = "objective-harness"
STYLES = ("-", "--", ":", "-.")
BAR_WIDTH = 0.8  # of one task's slot, shared by its objectives' bars


class Crossover(NamedTuple):
    """Where two fitted curves cross: the compute `at`, its interval [low, high], and a label
    such as "mlm overtakes clm"."""

    at: float
    low: float
    high: float
    label: str


def colours(objectives) -> dict[str, str]:
    """A fixed colour per objective, by sorted name: the same objective looks the same everywhere."""
    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    return {name: cycle[i % len(cycle)] for i, name in enumerate(sorted(set(objectives)))}


def _new_figure(width: float, height: float) -> Figure:
    """A figure drawn by Agg, set on the figure itself: pyplot's global backend stays untouched."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _figure(title: str, xlabel: str, ylabel: str, width: float = 7.0) -> tuple[Figure, object]:
    fig = _new_figure(width, 4.2)
    ax = fig.add_subplot()
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _series_label(objective: str, budget, several_budgets: bool) -> str:
    return f"{objective} @ {_budget_text(budget)}" if several_budgets else str(objective)


def _budget_text(budget) -> str:
    return f"{budget:.3g}" if isinstance(budget, (int, float)) else str(budget)


def _legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small")


def _log_x(ax, values) -> None:
    """A log compute axis; runs at (nearly) one budget get a decade around them, not ticks that
    split hairs between 6.000e12 and 6.012e12."""
    ax.set_xscale("log")
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    if low > 0 and high / low < 4:
        centre = math.sqrt(low * high)
        ax.set_xlim(centre / 3.3, centre * 3.3)


def _empty(ax, what: str) -> None:
    ax.set_title(f"{ax.get_title()} (no {what} to show)")


# --- curves against compute -------------------------------------------------------------------


def loss_curves(val: pd.DataFrame) -> Figure:
    """Validation loss against FLOPs: per objective x budget the mean over seeds as a line and,
    with several seeds, the min-max band.

    val: objective, budget, seed, flops (step x the run's FLOPs per step), val_loss; one row per
    validation of a run (metrics.jsonl's `kind: val` rows)."""
    fig, ax = _figure("Validation loss against compute", "FLOPs", "validation loss")
    val = val.dropna(subset=["flops", "val_loss"])
    if val.empty:
        _empty(ax, "validation loss")
        return fig
    colour, several = colours(val["objective"]), val["budget"].nunique() > 1
    budgets = sorted(val["budget"].unique(), key=str)
    for (objective, budget), group in val.groupby(["objective", "budget"], sort=True):
        stats = group.groupby("flops")["val_loss"].agg(["mean", "min", "max"]).sort_index()
        ax.plot(stats.index, stats["mean"], color=colour[objective], linestyle=STYLES[budgets.index(budget) % 4],
                label=_series_label(objective, budget, several))
        if group["seed"].nunique() > 1:
            ax.fill_between(stats.index, stats["min"], stats["max"], color=colour[objective], alpha=0.2)
    _log_x(ax, val["flops"])
    _legend(ax)
    return fig


def bits_per_byte(runs: pd.DataFrame, floor: float | None = None) -> Figure:
    """Held-out bits per byte against FLOPs: each run a point, the mean per objective x budget a
    marker joined across budgets per objective, and the entropy floor as a horizontal line.

    runs: objective, budget, seed, flops (the run's FLOPs spent), bits_per_byte (NaN for an
    objective without a likelihood: left out). floor: the data's entropy in bits per byte, or None."""
    fig, ax = _figure("Held-out bits per byte against compute", "FLOPs", "bits per byte")
    runs = runs.dropna(subset=["flops", "bits_per_byte"])
    if floor is not None and not math.isnan(floor):
        ax.axhline(floor, color="black", linestyle="--", linewidth=1, label=f"entropy floor {floor:.4f}")
    if runs.empty:
        _empty(ax, "bits per byte")
        _legend(ax)
        return fig
    colour = colours(runs["objective"])
    for objective, group in runs.groupby("objective", sort=True):
        ax.scatter(group["flops"], group["bits_per_byte"], color=colour[objective], alpha=0.4, s=16)
        means = group.groupby("budget")[["flops", "bits_per_byte"]].mean().sort_values("flops")
        ax.plot(means["flops"], means["bits_per_byte"], color=colour[objective], marker="o", label=objective)
    _log_x(ax, runs["flops"])
    _legend(ax)
    return fig


def _curve_points(curve, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A fitted curve as arrays: a callable evaluated on `x`, or (x, y) arrays as given."""
    if callable(curve):
        return x, np.asarray(curve(x), dtype=float)
    cx, cy = curve
    return np.asarray(cx, dtype=float), np.asarray(cy, dtype=float)


def scaling_fits(points: pd.DataFrame, curves: dict[str, Callable | tuple], *, ylabel: str,
                 bands: dict[str, tuple] | None = None, crossover: Crossover | None = None,
                 title: str = "Fitted scaling curves", xlabel: str = "FLOPs") -> Figure:
    """Data points and a fitted curve per objective against compute (log x), an optional band per
    objective and an optional crossover: a vertical line at `crossover.at`, its interval shaded.

    points: objective, compute, value (one row per run or per mean). curves: {objective: a callable
    of compute, or (x, y) arrays}. bands: {objective: (x, low, high)}."""
    fig, ax = _figure(title, xlabel, ylabel)
    points = points.dropna(subset=["compute", "value"])
    colour = colours([*points["objective"], *curves])
    span = [points["compute"].min(), points["compute"].max()] if len(points) else [1.0, 10.0]
    if crossover is not None and not math.isnan(crossover.at):
        span += [v for v in crossover if isinstance(v, float) and math.isfinite(v) and v > 0]
    grid = np.geomspace(min(span), max(span), 200)
    for objective, group in points.groupby("objective", sort=True):
        ax.scatter(group["compute"], group["value"], color=colour[objective], s=18, zorder=3)
    for objective, curve in sorted(curves.items()):
        x, y = _curve_points(curve, grid)
        ax.plot(x, y, color=colour[objective], label=f"{objective} (fit)")
    for objective, (x, low, high) in sorted((bands or {}).items()):
        ax.fill_between(x, low, high, color=colour[objective], alpha=0.2)
    if crossover is not None and not math.isnan(crossover.at):
        ax.axvspan(crossover.low, crossover.high, color="grey", alpha=0.15)
        ax.axvline(crossover.at, color="black", linestyle="--", linewidth=1,
                   label=f"{crossover.label} ≈ {crossover.at:.2g} [{crossover.low:.2g}, {crossover.high:.2g}]")
    _log_x(ax, grid)
    _legend(ax)
    return fig


# --- scores with intervals --------------------------------------------------------------------


def _errors(rows: pd.DataFrame) -> np.ndarray:
    """Error bar lengths below and above each mean; none where the interval is unknown (one seed)."""
    low = (rows["mean"] - rows["low"]).fillna(0).clip(lower=0)
    high = (rows["high"] - rows["mean"]).fillna(0).clip(lower=0)
    return np.vstack([low.to_numpy(float), high.to_numpy(float)])


def _grouped_bars(ax, rows: pd.DataFrame, reference: str, reference_label: str) -> None:
    """One bar per task x series with its interval, side by side per task, and each task's
    `reference` level (chance, baseline) as a short black line over the task's bars.

    rows: task, series, mean, low, high and the column `reference`."""
    tasks, series = sorted(rows["task"].unique()), sorted(rows["series"].unique())
    colour = colours(rows["objective"])
    width = BAR_WIDTH / len(series)
    for i, name in enumerate(series):
        part = rows[rows["series"] == name].set_index("task").reindex(tasks)
        x = np.arange(len(tasks)) - BAR_WIDTH / 2 + (i + 0.5) * width
        known = part["mean"].notna().to_numpy()
        ax.bar(x[known], part["mean"][known], width, yerr=_errors(part[known]), capsize=3, label=name,
               color=colour[part["objective"].dropna().iloc[0]], alpha=0.85 if i % 2 == 0 else 0.6)
    levels = rows.groupby("task")[reference].mean().reindex(tasks)
    known = levels.notna().to_numpy()
    if known.any():
        x = np.arange(len(tasks))[known]
        ax.hlines(levels[known], x - BAR_WIDTH / 2, x + BAR_WIDTH / 2, color="black", linestyle="--",
                  label=reference_label)
    metric = rows.groupby("task")["metric"].first() if "metric" in rows else {}
    ax.set_xticks(np.arange(len(tasks)), [f"{t} ({metric[t]})" if t in metric else t for t in tasks],
                  rotation=20, ha="right")


def _with_series(rows: pd.DataFrame) -> pd.DataFrame:
    several = rows["budget"].nunique() > 1 if "budget" in rows else False
    budget = rows["budget"] if "budget" in rows else pd.Series("", index=rows.index)
    return rows.assign(series=[_series_label(o, b, several) for o, b in zip(rows["objective"], budget)])


def task_scores(scores: pd.DataFrame, *, title: str = "Zero-shot scores per task") -> Figure:
    """Per task, each objective's mean score over seeds with its interval, and the task's chance.

    scores: task, objective, budget (optional), metric, mean, low, high, chance (NaN where the
    metric has no chance level). Bars without a mean are left out."""
    return _task_bars(scores, title, "score (mean over seeds, 95% CI)", "chance", "scores")


def finetune_scores(results: pd.DataFrame) -> Figure:
    """Per fine-tuning task, each objective's mean over pretraining seeds with its interval, and
    the baseline (majority class or chance) in the same metric.

    results: task, objective, budget (optional), metric, mean, low, high, baseline."""
    return _task_bars(results, "Fine-tuning per task", "score (standard metric, 95% CI)", "baseline",
                      "fine-tuning results")


def _task_bars(rows: pd.DataFrame, title: str, ylabel: str, reference: str, what: str) -> Figure:
    """The figure of `task_scores` and `finetune_scores`: grouped bars per task, `reference` as
    each task's level; "no <what>" when no row has a mean."""
    fig, ax = _figure(title, "task", ylabel, width=max(7.0, 1.2 * rows["task"].nunique()))
    if rows["mean"].notna().sum() == 0:
        _empty(ax, what)
        return fig
    _grouped_bars(ax, _with_series(rows), reference, reference)
    _legend(ax)
    return fig


def aggregate_scores(rows: pd.DataFrame, *, name: str = "aggregate") -> Figure:
    """The aggregate per objective with its interval: bars at one budget, and with several
    budgets one line per objective across budgets (log x).

    rows: objective, budget, mean, low, high (one row per objective x budget)."""
    fig, ax = _figure(f"Aggregate: {name}", "objective", "centered score (0 = chance, 95% CI)")
    rows = rows.dropna(subset=["mean"])
    if rows.empty:
        _empty(ax, "aggregate")
        return fig
    colour = colours(rows["objective"])
    if rows["budget"].nunique() > 1:
        ax.set_xlabel("budget")
        for objective, group in rows.groupby("objective", sort=True):
            group = group.sort_values("budget")
            ax.errorbar(group["budget"], group["mean"], yerr=_errors(group), color=colour[objective],
                        marker="o", capsize=3, label=objective)
        ax.set_xscale("log")
        _legend(ax)
        return fig
    rows = rows.sort_values("objective")
    ax.bar(rows["objective"], rows["mean"], yerr=_errors(rows), capsize=3,
           color=[colour[o] for o in rows["objective"]])
    ax.axhline(0.0, color="black", linewidth=0.8)
    return fig


def win_matrix(wins: pd.DataFrame, significant: pd.DataFrame | None = None) -> Figure:
    """The share of tasks on which the row's objective beats the column's, as a heat map, each
    cell annotated (and with the share of significant differences, when given); the diagonal blank
    and grey, as is a pair with no task in common.

    wins: a square table, index and columns the objectives, values in [0, 1] (NaN: no shared task).
    significant: the same shape, the share of the row's wins that are significant."""
    n = len(wins)
    fig = _new_figure(1.2 * n + 2.5, 1.0 * n + 1.5)
    ax = fig.add_subplot()
    values = wins.to_numpy(dtype=float).copy()
    np.fill_diagonal(values, np.nan)
    cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="#d9d9d9")  # grey: no number, unlike 0.5's white
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, label="share of tasks won by the row")
    ax.set_xticks(range(n), list(wins.columns), rotation=30, ha="right")
    ax.set_yticks(range(n), list(wins.index))
    ax.set(title="Win matrix: row beats column", xlabel="column", ylabel="row")
    for i in range(n):
        for j in range(n):
            if i != j:
                ax.text(j, i, _cell_text(values[i, j], significant, i, j), ha="center", va="center",
                        fontsize="small", color="white" if abs(values[i, j] - 0.5) > 0.3 else "black")
    return fig


def _cell_text(share: float, significant: pd.DataFrame | None, i: int, j: int) -> str:
    if math.isnan(share):
        return "no shared task"
    if significant is None or math.isnan(sig := float(significant.iloc[i, j])):
        return f"{share:.2f}"
    return f"{share:.2f}\n({sig:.2f} sig.)"


# --- writing ----------------------------------------------------------------------------------


def save(fig: Figure, plots_dir: Path, name: str) -> tuple[Path, Path]:
    """Write `fig` as `<plots_dir>/<name>.png` and `.svg`; the same figure gives the same bytes
    (fixed SVG id salt, no date, no software version in either file)."""
    # The constrained layout of a figure with a colour bar moves by a hair on each draw (and PNG and
    # SVG draw at different dpi): lay it out once, then freeze it, so that every save is the same.
    fig.draw_without_rendering()
    fig.set_layout_engine("none")
    paths = []
    for fmt, metadata in (("png", {"Software": None}), ("svg", {"Date": None, "Creator": None})):
        buffer = io.BytesIO()
        with matplotlib.rc_context({"svg.hashsalt": SVG_SALT}):
            fig.savefig(buffer, format=fmt, dpi=100, metadata=metadata)
        path = Path(plots_dir) / f"{name}.{fmt}"
        _write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths[0], paths[1]


def _write_bytes(path: Path, data: bytes) -> None:
    """Write beside, then rename: a reader never sees half a picture."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = ["Crossover", "aggregate_scores", "bits_per_byte", "colours", "finetune_scores", "loss_curves",
           "save", "scaling_fits", "task_scores", "win_matrix"]
