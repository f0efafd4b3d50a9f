"""How the report writes a number, an interval, a missing value and a markdown table.

    fmt(0.6504)              -> "0.650"        fmt(None) -> "—"
    ci_text(0.6, 0.7)        -> "[0.600, 0.700]"   (one seed: low is nan -> "—")
    mean_ci_text(summary, "val_loss") -> "2.050 [2.000, 2.100]" per row
    budget_text(6e12, "flops") -> "6e12 FLOPs"    budget_text(2e6, "tokens") -> "2e6 tokens"
"""

from __future__ import annotations

import math
import re

import pandas as pd


def is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def fmt(value, digits: int = 3) -> str:
    return "—" if is_missing(value) else f"{value:.{digits}f}"


def ci_text(low, high, digits: int = 3) -> str:
    return "—" if is_missing(low) else f"[{low:.{digits}f}, {high:.{digits}f}]"


def mean_ci_text(summary: pd.DataFrame, col: str, digits: int = 3) -> pd.Series:
    """'mean [low, high]' per row: the mean alone with one seed, '—' without a value."""
    def cell(s: pd.Series) -> str:
        mean, low, high = s.get(f"{col}_mean"), s.get(f"{col}_ci_low"), s.get(f"{col}_ci_high")
        if is_missing(mean):
            return "—"
        return fmt(mean, digits) + ("" if is_missing(low) else " " + ci_text(low, high, digits))
    return summary.apply(cell, axis=1)


def budget_text(value, unit: str) -> str:
    """A run's budget as its run id writes it, with its unit."""
    if is_missing(value):
        return "—"
    return re.sub(r"e\+?0*(\d)", r"e\1", f"{value:g}") + (" tokens" if unit == "tokens" else " FLOPs")


def text_or_dash(value) -> str:
    return "—" if is_missing(value) else str(value)


def cell_text(text) -> str:
    """Text for one markdown cell: one line, no column separator, at most 200 characters."""
    text = " ".join(str(text or "").split()).replace("|", "\\|")
    return text if len(text) <= 200 else text[:199] + "…"


def first_int(values: pd.Series) -> str:
    known = values.dropna()
    return str(int(known.iloc[0])) if len(known) else "—"


def mean_or_none(values: pd.Series) -> float | None:
    return None if values.isna().all() else float(values.mean())


def markdown_table(table: pd.DataFrame) -> str:
    """A table of cells already formatted: tabulate would re-read "0.650" as 0.65."""
    return table.to_markdown(index=False, disable_numparse=True)


def absent_note(absent: list[dict]) -> str:
    """The sentence that names the objective x size x budget rows a table lacks (no finished run)."""
    if not absent:
        return ""
    groups = ", ".join(f"{g['objective']} ({g['size']}, {budget_text(g['budget'], g['budget_unit'])}, "
                       f"{g['status']})" for g in absent)
    return f" Not here, for want of a finished run: {groups}."
