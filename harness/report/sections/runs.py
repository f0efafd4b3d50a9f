"""Runs: one row per run that finished training (plan and training summary)."""

from __future__ import annotations

import pandas as pd


def runs_table(runs: pd.DataFrame) -> str:
    if runs.empty:
        return ""
    shown = runs[["run_id", "objective", "size", "budget", "seed", "steps", "val_loss", "wall_time_s"]]
    return "## Runs\n\n" + shown.to_markdown(index=False)
