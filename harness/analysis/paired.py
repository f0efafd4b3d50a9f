"""Paired comparisons of objectives per task: across pretraining seeds and across documents.

Runs of two objectives with the same seed share data order and initialisation, so the seed is a
pair: the difference a - b is taken seed by seed, and its mean gets a 95% percentile-bootstrap
interval from scipy.stats.bootstrap(paired=True). Where lm-eval logged per-document scores, the
per-document difference (averaged over the paired seeds) gets a second interval, resampling
documents: it says whether the test set is large enough, as the seed interval says whether the
seeds are enough.

**Significant** needs 2 seed pairs at least and three things at once: a paired t-test over the
seeds (p_t < 0.05), a seed interval and, where there are documents, a document interval that
exclude 0. The t-test is there because a percentile bootstrap of 2 or 3 seeds is the range of
what was seen (it would call two agreeing seeds significant), while the t-test knows how little
3 values say; it is also the test the seeds-needed line below is computed for. Requiring the
document interval too guards against a tiny test set: many seeds cannot make up for it.

    task        a    b    mean_a mean_b diff   seeds_low seeds_high docs_low docs_high significant
    hellaswag   clm  mlm  0.41   0.35   0.060  0.052     0.071      0.031    0.089     True

How many seeds a difference needs follows the paired t-test: `min_detectable_effect(sd, n)` is
the smallest difference n seeds resolve at alpha 0.05 with power 0.8 given the seed-to-seed
standard deviation sd of the paired differences, and `seeds_needed(diff, sd)` its inverse.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats
from scipy.optimize import brentq

from harness.errors import UserError

N_RESAMPLES = 2000
LEVEL = 0.95
SCORE_COLUMNS = ("objective", "seed", "task", "metric", "value")
DOCUMENT_COLUMNS = ("objective", "seed", "task", "metric", "doc_id", "value")
MAX_SEEDS = 100_000


def paired_table(scores: pd.DataFrame, documents: pd.DataFrame | None = None,
                 higher_is_better: bool | Mapping[str, bool] = True, n_resamples: int = N_RESAMPLES,
                 seed: int = 0) -> pd.DataFrame:
    """One row per (task, metric) x pair of objectives (a < b by name): mean_a, mean_b and diff =
    mean_a - mean_b over the paired seeds, seeds_low/high, docs_low/high (NaN where there is no
    interval), p_seeds (sign-flip permutation test over seeds), n_pairs, n_docs, better (the
    objective ahead, None on a tie) and significant. `higher_is_better` is one flag or one per
    metric."""
    scores = _checked(scores, SCORE_COLUMNS, "scores")
    documents = None if documents is None or documents.empty else _checked(documents, DOCUMENT_COLUMNS, "documents")
    rows = []
    for (task, metric), group in scores.groupby(["task", "metric"], sort=True):
        high = _flag(higher_is_better, metric)
        docs = None if documents is None else documents[(documents["task"] == task) & (documents["metric"] == metric)]
        for a, b in itertools.combinations(sorted(group["objective"].unique()), 2):
            rows.append({"task": task, "metric": metric, "a": a, "b": b}
                        | compare(group, docs, a, b, high, n_resamples=n_resamples, seed=seed))
    return pd.DataFrame.from_records(rows, columns=["task", "metric", "a", "b", *_RESULT])


_RESULT = ("mean_a", "mean_b", "diff", "seeds_low", "seeds_high", "docs_low", "docs_high", "p_seeds", "p_t",
           "n_pairs", "n_docs", "higher_is_better", "better", "significant")


def compare(scores: pd.DataFrame, documents: pd.DataFrame | None, a: str, b: str, higher_is_better: bool,
            *, n_resamples: int = N_RESAMPLES, seed: int = 0) -> dict:
    """The paired comparison of objectives a and b on one task's scores (and documents)."""
    pairs = _pivot(scores, ["seed"], a, b)
    va, vb = pairs[a].to_numpy(float), pairs[b].to_numpy(float)
    diff = float(np.mean(va - vb)) if len(pairs) else math.nan
    seeds_low, seeds_high = seed_interval(va, vb, n_resamples, seed)
    per_doc = document_differences(documents, a, b, set(pairs.index)) if documents is not None else np.array([])
    docs_low, docs_high = document_interval(per_doc, n_resamples, seed)
    intervals = [(lo, hi) for lo, hi in ((seeds_low, seeds_high), (docs_low, docs_high)) if not math.isnan(lo)]
    p_t = t_test_p(va - vb)
    better = None if not diff or math.isnan(diff) else (a if (diff > 0) == higher_is_better else b)
    return {"mean_a": float(np.mean(va)) if len(va) else math.nan, "mean_b": float(np.mean(vb)) if len(vb) else math.nan,
            "diff": diff, "seeds_low": seeds_low, "seeds_high": seeds_high, "docs_low": docs_low,
            "docs_high": docs_high, "p_seeds": sign_flip_p(va - vb), "p_t": p_t, "n_pairs": len(pairs),
            "n_docs": len(per_doc), "higher_is_better": higher_is_better, "better": better,
            "significant": p_t < 0.05 and all(lo > 0 or hi < 0 for lo, hi in intervals)}


def seed_interval(va: np.ndarray, vb: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of mean(va - vb), resampling the pairs; NaN under 2 pairs."""
    if len(va) < 2:
        return math.nan, math.nan
    result = stats.bootstrap((va, vb), _mean_difference, paired=True, vectorized=True, method="percentile",
                             n_resamples=n_resamples, confidence_level=LEVEL, rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def _mean_difference(x, y, axis=-1):
    return np.mean(x - y, axis=axis)


def document_differences(documents: pd.DataFrame, a: str, b: str, seeds: set) -> np.ndarray:
    """Per document, a's value minus b's, averaged over the paired seeds where both scored it."""
    docs = documents[documents["seed"].isin(seeds)]
    wide = _pivot(docs, ["seed", "doc_id"], a, b)
    return (wide[a] - wide[b]).groupby(level="doc_id", sort=True).mean().to_numpy(float)


def document_interval(per_doc: np.ndarray, n_resamples: int = N_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean per-document difference; NaN under 2 documents."""
    if len(per_doc) < 2:
        return math.nan, math.nan
    result = stats.bootstrap((per_doc,), np.mean, vectorized=True, method="percentile", n_resamples=n_resamples,
                             confidence_level=LEVEL, rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def t_test_p(differences: np.ndarray) -> float:
    """Two-sided p-value of the paired t-test; NaN under 2 pairs. Differences that agree exactly
    (no spread) and are not 0 give 0: no number of seeds would doubt them."""
    if len(differences) < 2:
        return math.nan
    if np.ptp(differences) <= 1e-12 * max(1.0, float(np.max(np.abs(differences)))):  # equal but for rounding
        return 1.0 if abs(differences[0]) <= 1e-12 else 0.0
    return float(stats.ttest_1samp(differences, 0.0).pvalue)


def sign_flip_p(differences: np.ndarray) -> float:
    """Two-sided p-value of a paired permutation test (signs of the differences flipped; exact
    for the few seeds a suite has); NaN under 2 pairs. With n pairs it is at least 2 / 2**n."""
    if len(differences) < 2:
        return math.nan
    result = stats.permutation_test((differences,), np.mean, permutation_type="samples", vectorized=True,
                                    n_resamples=10_000, alternative="two-sided", rng=np.random.default_rng(0))
    return float(result.pvalue)


def _pivot(frame: pd.DataFrame, keys: list[str], a: str, b: str) -> pd.DataFrame:
    """Rows with both objectives present, one column each (a duplicated key is a user error)."""
    both = frame[frame["objective"].isin([a, b])]
    duplicated = both.duplicated([*keys, "objective"])
    if duplicated.any():
        row = both[duplicated].iloc[0]
        raise UserError(f"two values for objective {row['objective']}, {', '.join(f'{k} {row[k]}' for k in keys)}, "
                        f"task {row['task']}, metric {row['metric']}: expected one")
    return both.pivot(index=keys, columns="objective", values="value").reindex(columns=[a, b]).dropna()


def _checked(frame: pd.DataFrame, columns, name: str) -> pd.DataFrame:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise UserError(f"{name} table lacks column(s) {', '.join(missing)}; expected {', '.join(columns)}")
    frame = frame[list(columns)].copy()
    frame["value"] = frame["value"].astype(float)
    return frame[np.isfinite(frame["value"])]


def _flag(higher_is_better: bool | Mapping[str, bool], metric: str) -> bool:
    if isinstance(higher_is_better, Mapping):
        if metric not in higher_is_better:
            raise UserError(f"higher_is_better names no direction for metric '{metric}'")
        return bool(higher_is_better[metric])
    return bool(higher_is_better)


@dataclass(frozen=True)
class Wins:
    """objectives x objectives: `share` of the tasks compared on which the row beats the column,
    and `significant`: the share on which it beats the column significantly (<= share)."""

    share: pd.DataFrame
    significant: pd.DataFrame


def win_matrix(paired: pd.DataFrame) -> Wins:
    """The win matrix of a `paired_table` (pass one metric per task: each row counts once)."""
    objectives = sorted(set(paired["a"]) | set(paired["b"]))
    wins = pd.DataFrame(0.0, index=objectives, columns=objectives)
    significant, compared = wins.copy(), wins.copy()
    for row in paired.itertuples(index=False):
        compared.loc[row.a, row.b] += 1
        compared.loc[row.b, row.a] += 1
        if not pd.isna(row.better):  # a tie has no winner (None, or NaN once in a frame)
            loser = row.b if row.better == row.a else row.a
            wins.loc[row.better, loser] += 1
            significant.loc[row.better, loser] += bool(row.significant)
    compared = compared.where(compared > 0)  # never compared (and the diagonal): NaN
    return Wins(wins / compared, significant / compared)


def power_of(effect: float, n: int, alpha: float = 0.05) -> float:
    """Power of a two-sided paired t-test with n pairs for a standardised effect (diff / sd)."""
    df = n - 1
    critical = stats.t.ppf(1 - alpha / 2, df)
    shift = effect * math.sqrt(n)
    # The far tail (a significant difference of the wrong sign) underflows to NaN for large shifts.
    wrong_sign = np.nan_to_num(stats.nct.cdf(-critical, df, shift), nan=0.0)
    return float(stats.nct.sf(critical, df, shift) + wrong_sign)


def min_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest paired difference n seeds resolve (in the units of sd, the seed-to-seed
    standard deviation of the differences); NaN under 2 seeds."""
    if n < 2 or math.isnan(sd):
        return math.nan
    if sd == 0:
        return 0.0
    return sd * brentq(lambda d: power_of(d, n, alpha) - power, 1e-9, 1e3)


def seeds_needed(diff: float, sd: float, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """The fewest seeds (>= 2) at which a paired t-test resolves `diff` given `sd`; None when no
    number of seeds up to MAX_SEEDS does (a zero difference, or one tiny against sd)."""
    if diff == 0 or math.isnan(diff) or math.isnan(sd):
        return None
    if sd == 0:
        return 2
    effect = abs(diff) / sd
    low, high = 1, 2  # power_of(effect, low) < power is the invariant; find a high with enough
    while power_of(effect, high, alpha) < power:
        low, high = high, high * 2
        if low > MAX_SEEDS:
            return None
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if power_of(effect, middle, alpha) >= power else (middle, high)
    return high


def mde_sentence(diff: float, sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> str:
    """One line for the report: what the suite's seeds resolve, and what the observed diff needs."""
    if n < 2 or math.isnan(sd):
        return f"With {n} seed{'s' if n != 1 else ''} there is no seed-to-seed spread to size a difference against."
    resolves = (f"With {n} seeds the suite resolves paired differences of {min_detectable_effect(sd, n, alpha, power):.3g} "
                f"or more (alpha {alpha:g}, power {power:g})")
    needed = seeds_needed(diff, sd, alpha, power)
    if needed is None:
        return f"{resolves}; the observed {abs(diff):.3g} would need more than {MAX_SEEDS:,} seeds."
    return f"{resolves}; the observed {abs(diff):.3g} would need {needed} seeds."
