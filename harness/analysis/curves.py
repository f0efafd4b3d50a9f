"""The two curve forms the report fits against compute, each fitted with scipy's least squares.

**Power law, for losses** (held-out bits per byte, validation loss), lower is better:

    L(C) = E + A * (C / c_ref) ** -alpha        E >= 0, A > 0, alpha > 0

E is the loss no amount of compute removes, A the excess over E at the reference compute
c_ref (the smallest compute in the data, so A reads "how far above the floor the smallest budget
sits"), alpha how fast that excess shrinks. Dividing by c_ref keeps the optimiser's numbers near
1 whatever the unit (1e12 FLOPs or 1e6 parameters).

**Saturating curve, for scores** (accuracy-like, chance <= s <= 1), higher is better:

    s(C) = chance + (1 - chance) * sigmoid(k * (log10 C - log10 c_mid))      k >= 0

c_mid is the compute at which the score is half-way from chance to 1, k the steepness per
decade of compute. Every value lies in [chance, 1] by construction.

Three distinct compute values (`distinct`) at least, or there is no fit (None): with fewer, a curve of two or
three parameters says nothing the points do not. With exactly three a power law interpolates.

    >>> curve = fit_curve([1e12, 1e13, 1e14], [2.0, 1.5, 1.25], "power")
    >>> round(float(curve(1e15)), 3)
    1.125
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares
from scipy.special import expit

from harness.errors import UserError

KINDS = ("power", "saturating")
MIN_DISTINCT = 3
PARAMS = {"power": ("E", "A", "alpha"), "saturating": ("k", "c_mid")}
_MAX_ALPHA = 10.0
_MAX_K = 50.0


@dataclass(frozen=True)
class Curve:
    """A fitted curve: `curve(C)` evaluates it at compute C (a number or an array)."""

    kind: str
    params: dict[str, float]  # PARAMS[kind] -> value
    c_ref: float              # power: the compute A refers to; saturating: unused (1.0)
    chance: float | None      # saturating only

    def __call__(self, compute) -> np.ndarray:
        c = np.asarray(compute, dtype=float)
        p = self.params
        if self.kind == "power":
            return p["E"] + p["A"] * (c / self.c_ref) ** -p["alpha"]
        return self.chance + (1 - self.chance) * expit(p["k"] * (np.log10(c) - np.log10(p["c_mid"])))


def fit_curve(compute, values, kind: str, *, chance: float | None = None, c_ref: float | None = None,
              start: Curve | None = None) -> Curve | None:
    """Least-squares fit of `kind` to (compute, value) points; None with < 3 distinct compute
    values. `start` (an earlier fit of the same kind) warm-starts the optimiser, as the bootstrap
    does for each replicate; without it a few fixed starts are tried and the best kept."""
    c, y = np.asarray(compute, dtype=float), np.asarray(values, dtype=float)
    check_kind(kind, chance)
    if distinct(c) < MIN_DISTINCT:
        return None
    if kind == "power":
        return _fit_power(c, y, float(c_ref or c.min()), start)
    return _fit_saturating(c, y, float(chance), start)


def distinct(compute, tolerance: float = 0.05) -> int:
    """How many distinct budgets `compute` holds: FLOPs spent differ a little from run to run
    (whole steps), so values within `tolerance` (relative) of the previous one count once.

    >>> distinct([1e12, 1.01e12, 3e12, 3.02e12, 1e13])
    3
    """
    c = np.sort(np.asarray(compute, dtype=float))
    return int(len(c) > 0) + int(np.sum(c[1:] > c[:-1] * (1 + tolerance)))


def check_kind(kind: str, chance: float | None) -> None:
    if kind not in KINDS:
        raise UserError(f"unknown curve kind '{kind}'; known: {', '.join(KINDS)}")
    if kind == "saturating" and (chance is None or not 0 <= chance < 1):
        raise UserError(f"a saturating fit needs a chance level in [0, 1), got {chance!r}")


def _fit_power(c: np.ndarray, y: np.ndarray, c_ref: float, start: Curve | None) -> Curve:
    x = c / c_ref

    def residuals(p):
        return p[0] + p[1] * x ** -p[2] - y

    def jacobian(p):  # analytic: a third of the calls finite differences make (the bootstrap refits often)
        power = x ** -p[2]
        return np.column_stack([np.ones_like(x), power, -p[1] * power * np.log(x)])

    floor = max(float(y.min()), 1e-9)
    lower, upper = [0.0, 1e-12, 1e-6], [floor, np.inf, _MAX_ALPHA]
    if start is not None:
        starts = [[min(start.params["E"], floor), start.params["A"], start.params["alpha"]]]
    else:
        span = max(float(y.max() - y.min()), 1e-6)
        starts = [[floor * f, span + floor * (1 - f), a] for f in (0.0, 0.5, 0.9) for a in (0.1, 0.5)]
    best = _best(residuals, jacobian, starts, lower, upper)
    return Curve("power", dict(zip(PARAMS["power"], map(float, best))), c_ref, None)


def _fit_saturating(c: np.ndarray, y: np.ndarray, chance: float, start: Curve | None) -> Curve:
    logc = np.log10(c)

    def residuals(p):
        return chance + (1 - chance) * expit(p[0] * (logc - p[1])) - y

    def jacobian(p):
        slope = (1 - chance) * expit(p[0] * (logc - p[1])) * expit(-p[0] * (logc - p[1]))
        return np.column_stack([slope * (logc - p[1]), -slope * p[0]])

    # The midpoint may lie well outside the data: a curve still near chance, or already near 1.
    lower, upper = [0.0, logc.min() - 6], [_MAX_K, logc.max() + 6]
    if start is not None:
        starts = [[start.params["k"], float(np.clip(np.log10(start.params["c_mid"]), lower[1], upper[1]))]]
    else:
        starts = [[k, m] for k in (0.5, 2.0) for m in (logc.mean(), logc.max() + 2)]
    best = _best(residuals, jacobian, starts, lower, upper)
    return Curve("saturating", {"k": float(best[0]), "c_mid": float(10 ** best[1])}, 1.0, chance)


def _best(residuals, jacobian, starts, lower, upper) -> np.ndarray:
    """The lowest-cost solution over the starts (each clipped into the bounds)."""
    fits = [least_squares(residuals, np.clip(s, lower, upper), jac=jacobian, bounds=(lower, upper), method="trf")
            for s in starts]
    return min(fits, key=lambda fit: fit.cost).x
