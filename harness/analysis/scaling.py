"""Scaling fits with bootstrap intervals over seeds, and the compute at which two objectives cross.

The input is one row per run: objective, seed, compute (`x`, FLOPs spent by default, or
parameters for a fit across sizes at one budget) and the value fitted (held-out bits per byte,
an aggregate score). Per objective a curve (harness.analysis.curves) is fitted to every row, then
refitted on `n_boot` bootstrap replicates: each replicate draws the objective's seeds with
replacement, a seed bringing all its budgets along. The intervals are the replicates'
2.5 and 97.5 percentiles.

Two objectives run with the same seed share data order and initialisation, so a crossover is
bootstrapped paired: each replicate draws the same seed indices for both objectives. The
crossover is searched in [C_min, 10 * C_max] of the data (a scan of 400 points in log C, then
brentq on the first sign change):

    >>> table = fit_table(runs, "bpb", kind="power")            # doctest: +SKIP
    >>> [crossover_sentence(c, "held-out bits per byte") for c in crossovers(runs, "bpb")]  # doctest: +SKIP
    ['mlm overtakes clm on held-out bits per byte above ≈ 4.1e13 FLOPs [1.2e13, 2.0e14]
      (87% of bootstrap replicates cross; extrapolated beyond the largest budget trained, 1.0e13)']

Everything is deterministic for a given `seed` (numpy's Generator): the report is byte-identical
across runs.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.optimize import brentq

from harness.analysis.curves import PARAMS, Curve, check_kind, distinct, fit_curve
from harness.errors import UserError

N_BOOT = 200
LEVEL = 0.95
GRID = 400
REACH = 10.0  # crossovers are searched up to REACH times the largest compute trained


@dataclass(frozen=True)
class Fits:
    """One objective's fit on all its rows, and on each bootstrap replicate (None: no fit)."""

    curve: Curve | None
    replicates: list[Curve | None]
    n_points: int
    n_seeds: int
    n_distinct: int


@dataclass(frozen=True)
class Crossover:
    """Where objective `a`'s curve crosses `b`'s, with a paired-bootstrap interval.

    point is None when the fits on all the data do not cross in [c_min, REACH * c_max]; low and
    high are the percentiles of the replicates that do cross (None when none does), and
    share_crossing the share of replicates that cross in range. ahead_below / ahead_above name
    the better objective on either side of the point (both the same one when there is no point)."""

    a: str
    b: str
    point: float | None
    low: float | None
    high: float | None
    share_crossing: float
    c_min: float
    c_max: float
    extrapolated: bool
    ahead_below: str | None
    ahead_above: str | None
    higher_is_better: bool
    paired: bool
    fitted: bool


def fit_objective(rows: pd.DataFrame, value: str, x: str, kind: str, *, chance: float | None = None,
                  draws: np.ndarray | None = None, c_ref: float | None = None) -> Fits:
    """Fit one objective's rows, then every replicate: row r of `draws` holds indices into the
    objective's sorted seeds."""
    seeds = sorted(rows["seed"].unique())
    per_seed = [rows[rows["seed"] == s] for s in seeds]
    arrays = [(r[x].to_numpy(float), r[value].to_numpy(float)) for r in per_seed]
    c_ref = c_ref or float(rows[x].min())
    curve = fit_curve(rows[x], rows[value], kind, chance=chance, c_ref=c_ref)
    replicates = []
    for draw in ([] if draws is None or curve is None else draws):
        c = np.concatenate([arrays[i][0] for i in draw])
        y = np.concatenate([arrays[i][1] for i in draw])
        replicates.append(fit_curve(c, y, kind, chance=chance, c_ref=c_ref, start=curve))
    return Fits(curve, replicates, len(rows), len(seeds), distinct(rows[x]))


def seed_draws(n_seeds: int, n_boot: int, seed: int) -> np.ndarray:
    """n_boot rows of n_seeds indices drawn with replacement from range(n_seeds)."""
    return np.random.default_rng(seed).integers(0, n_seeds, size=(n_boot, n_seeds))


def fit_table(runs: pd.DataFrame, value: str, x: str = "flops_spent", kind: str = "power",
              chance: float | None = None, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """One row per objective: each parameter with its bootstrap interval (`<p>`, `<p>_low`,
    `<p>_high`), c_ref, chance, n_points, n_seeds, n_distinct, n_boot (replicates that fitted).
    An objective with fewer than 3 distinct compute values has NaN parameters."""
    runs = clean_runs(runs, value, x, kind, chance)
    records = []
    for objective, rows in runs.groupby("objective", sort=True):
        fits = fit_objective(rows, value, x, kind, chance=chance,
                             draws=seed_draws(rows["seed"].nunique(), n_boot, seed))
        record = {"objective": objective, "kind": kind}
        for name in PARAMS[kind]:
            estimate = fits.curve.params[name] if fits.curve else np.nan
            low, high = _percentiles([f.params[name] for f in fits.replicates if f is not None])
            record |= {name: estimate, f"{name}_low": low, f"{name}_high": high}
        ok = sum(f is not None for f in fits.replicates)
        record |= {"c_ref": fits.curve.c_ref if fits.curve and kind == "power" else np.nan,
                   "chance": chance if kind == "saturating" else np.nan, "n_points": fits.n_points,
                   "n_seeds": fits.n_seeds, "n_distinct": fits.n_distinct, "n_boot": ok}
        records.append(record)
    return pd.DataFrame.from_records(records)


def clean_runs(runs: pd.DataFrame, value: str, x: str, kind: str, chance: float | None) -> pd.DataFrame:
    """The rows with a finite value, checked: the columns exist and compute is positive."""
    check_kind(kind, chance)
    missing = [c for c in ("objective", "seed", x, value) if c not in runs.columns]
    if missing:
        raise UserError(f"runs table lacks column(s) {', '.join(missing)}; it has {', '.join(map(str, runs.columns))}")
    runs = runs[["objective", "seed", x, value]].copy()
    runs[x], runs[value] = runs[x].astype(float), runs[value].astype(float)
    runs = runs[np.isfinite(runs[value])]  # a run without this value (failed, or no likelihood)
    if (runs[x] <= 0).any() or not np.isfinite(runs[x]).all():
        raise UserError(f"runs table column '{x}': compute must be a positive number in every row")
    return runs.sort_values(["objective", "seed", x], kind="stable").reset_index(drop=True)


def _percentiles(values, level: float = LEVEL) -> tuple[float, float]:
    if not values:
        return np.nan, np.nan
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(np.asarray(values, dtype=float), [tail, 100 - tail])
    return float(low), float(high)


def crossing(first: Curve, second: Curve, c_min: float, c_max: float) -> float | None:
    """The smallest compute in [c_min, REACH * c_max] where the two curves cross, or None."""
    grid = np.linspace(np.log10(c_min), np.log10(REACH * c_max), GRID)

    def gap(logc):
        return float(first(10 ** logc) - second(10 ** logc))

    gaps = first(10 ** grid) - second(10 ** grid)
    # A strict sign change: curves that only touch, or coincide, do not cross.
    changes = np.nonzero(np.sign(gaps[:-1]) * np.sign(gaps[1:]) < 0)[0]
    if not len(changes):
        return None
    i = changes[0]
    return float(10 ** brentq(gap, grid[i], grid[i + 1], xtol=1e-10))


def crossovers(runs: pd.DataFrame, value: str, x: str = "flops_spent", kind: str = "power",
               chance: float | None = None, higher_is_better: bool | None = None,
               n_boot: int = N_BOOT, seed: int = 0) -> list[Crossover]:
    """A Crossover for every pair of objectives (in sorted order). Losses (kind "power") are
    lower-is-better and scores ("saturating") higher-is-better unless `higher_is_better` says."""
    runs = clean_runs(runs, value, x, kind, chance)
    better_high = kind == "saturating" if higher_is_better is None else higher_is_better
    objectives = sorted(runs["objective"].unique())
    return [pair_crossover(runs, value, x, kind, (a, b), chance=chance, higher_is_better=better_high,
                           n_boot=n_boot, seed=seed)
            for a, b in itertools.combinations(objectives, 2)]


def pair_crossover(runs: pd.DataFrame, value: str, x: str, kind: str, pair: tuple[str, str], *,
                   chance: float | None, higher_is_better: bool, n_boot: int, seed: int) -> Crossover:
    """The crossover of two objectives' curves. Both are fitted on the seeds they share (the
    pairs), each replicate drawing the same seed indices for both; with no seed in common each
    objective draws its own seeds (`paired` False)."""
    a_rows, b_rows = (runs[runs["objective"] == o] for o in pair)
    shared = sorted(set(a_rows["seed"]) & set(b_rows["seed"]))
    if shared:
        a_rows, b_rows = a_rows[a_rows["seed"].isin(shared)], b_rows[b_rows["seed"].isin(shared)]
        draws = [seed_draws(len(shared), n_boot, seed)] * 2
    else:
        rng = np.random.default_rng(seed)
        draws = [rng.integers(0, rows["seed"].nunique(), size=(n_boot, rows["seed"].nunique()))
                 for rows in (a_rows, b_rows)]
    both = pd.concat([a_rows, b_rows])
    c_min, c_max, c_ref = float(both[x].min()), float(both[x].max()), float(both[x].min())
    fa, fb = (fit_objective(rows, value, x, kind, chance=chance, draws=d, c_ref=c_ref)
              for rows, d in zip((a_rows, b_rows), draws))
    if fa.curve is None or fb.curve is None:
        return Crossover(*pair, None, None, None, 0.0, c_min, c_max, False, None, None,
                         higher_is_better, bool(shared), False)
    point = crossing(fa.curve, fb.curve, c_min, c_max)
    found = [crossing(ra, rb, c_min, c_max) for ra, rb in zip(fa.replicates, fb.replicates)
             if ra is not None and rb is not None]
    hits = [c for c in found if c is not None]
    low, high = (10 ** v for v in _percentiles(np.log10(hits).tolist())) if hits else (None, None)
    below, above = _leaders(fa.curve, fb.curve, pair, point, c_min, c_max, higher_is_better)
    return Crossover(*pair, point, low, high, len(hits) / len(found) if found else 0.0, c_min, c_max,
                     point is not None and point > c_max, below, above, higher_is_better, bool(shared), True)


def _leaders(first: Curve, second: Curve, pair, point, c_min, c_max, higher_is_better):
    """The better objective at c_min and just above the crossover (or at the range's end)."""
    def leader(c):
        gap = float(first(c) - second(c))
        if gap == 0:
            return None
        return pair[0] if (gap > 0) == higher_is_better else pair[1]

    above = point * 10 ** 0.01 if point is not None else REACH * c_max
    return leader(c_min), leader(above)


def sci(number: float) -> str:
    """Two significant digits, exponent without "+": 41200000000000.0 -> "4.1e13"."""
    mantissa, exponent = f"{number:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def crossover_sentence(cross: Crossover, what: str = "the aggregate", unit: str = "FLOPs") -> str:
    """One line for the report, e.g. "mlm overtakes clm on the aggregate above ≈ 4.1e13 FLOPs
    [1.2e13, 2.0e14] (87% of bootstrap replicates cross; extrapolated beyond the largest budget
    trained, 1.0e13)", or "no crossover of clm and mlm on the aggregate in [1.0e12, 1.0e14] FLOPs:
    clm stays ahead (4% of bootstrap replicates cross)"."""
    span = f"[{sci(cross.c_min)}, {sci(REACH * cross.c_max)}]"
    if not cross.fitted:
        return f"{cross.a} vs {cross.b} on {what}: no fit (fewer than 3 distinct {unit} values)"
    share = f"{cross.share_crossing:.0%} of bootstrap replicates cross"
    if cross.point is None:
        stays = f": {cross.ahead_below} stays ahead" if cross.ahead_below else ""
        return f"no crossover of {cross.a} and {cross.b} on {what} in {span} {unit}{stays} ({share})"
    interval = f" [{sci(cross.low)}, {sci(cross.high)}]" if cross.low is not None else ""
    note = f"; extrapolated beyond the largest budget trained, {sci(cross.c_max)}" if cross.extrapolated else ""
    return (f"{cross.ahead_above} overtakes {cross.ahead_below} on {what} above ≈ {sci(cross.point)} "
            f"{unit}{interval} ({share}{note})")


def crossover_frame(found: list[Crossover], what: str = "the aggregate", unit: str = "FLOPs") -> pd.DataFrame:
    """The crossovers as a table, one row each, with its sentence."""
    return pd.DataFrame.from_records([asdict(c) | {"sentence": crossover_sentence(c, what, unit)}
                                      for c in found])
