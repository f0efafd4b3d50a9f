"""Restarted runs: each run whose training took more than one attempt, in words.

The attempts come from RUN/attempts.jsonl (harness.train.attempts): a Ray Train restart after a
lost worker, or a new `harness run` after the driver stopped or the run failed. Every attempt
resumes from the newest complete checkpoint and reads exactly the batches an uninterrupted run
would have read, so a restarted run's numbers are those of an uninterrupted one.
"""

from __future__ import annotations

import pandas as pd

from harness.report.format import cell_text


def restarts_section(planned: pd.DataFrame) -> str:
    lines = [_line(row) for row in planned.to_dict("records") if len(row.get("attempts") or []) > 1]
    if not lines:
        return ""
    return ("## Restarted runs\n\nRuns whose training needed more than one attempt. Each attempt "
            "resumed from the newest complete checkpoint, reading the batches an uninterrupted run "
            "reads, so the numbers of a run that finished are those of an uninterrupted run.\n\n"
            + "\n".join(lines))


def _line(row: dict) -> str:
    attempts = row["attempts"]
    restarts = len(attempts) - 1
    where = "done" if row["done"] else row["state"]
    said = "; ".join(f"attempt {a['attempt']} resumed from step {a['resumed_from_step']}, "
                     f"started by {cell_text(a.get('reason')) or 'an unknown cause'}" for a in attempts[1:])
    return f"- `{row['run_id']}` was restarted {restarts} time{'s' * (restarts > 1)} (now {where}): {said}."
