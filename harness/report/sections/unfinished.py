"""The runs that are not done: the Partial results notice, Unfinished runs and Failed runs.

The rows come from harness.report.collect.planned_runs (one per run.yaml, with its state and
the failures of its latest attempt, as harness.schedule records them in RUN/FAILED).
"""

from __future__ import annotations

import pandas as pd

from harness.report.format import cell_text, markdown_table, text_or_dash


def partial_notice(planned: pd.DataFrame, markdown: bool = True) -> str:
    """A sentence when some planned run is not done: how many, and where each is named."""
    if planned.empty or planned["done"].all():
        return ""
    failed = int(planned["failures"].map(bool).sum())
    counts = {"failed": failed, "not trained (absent from the tables)": int((~planned["finished"]).sum()),
              "trained, evaluation unfinished": int((planned["finished"] & ~planned["done"]).sum())}
    head = f"Partial results: {int(planned['done'].sum())} of {len(planned)} planned runs are done."
    return (f"{'**' if markdown else ''}{head}{'**' if markdown else ''} "
            + "; ".join(f"{n} {what}" for what, n in counts.items() if n)
            + f". Each is named under Unfinished runs{' and Failed runs' if failed else ''}.")


def unfinished_table(planned: pd.DataFrame) -> str:
    rows = [{"run": row["run_id"], "objective": text_or_dash(row["objective"]), "size": text_or_dash(row["size"]),
             "seed": text_or_dash(row["seed"]), "state": row["state"]}
            for row in planned.to_dict("records") if not row["done"]]
    if not rows:
        return ""
    return ("## Unfinished runs\n\nPlanned runs (each has a run.yaml) that are not done. Running the "
            "suite again resumes them; a run folder that no longer belongs to the suite can be "
            "deleted.\n\n" + markdown_table(pd.DataFrame(rows)))


def failed_table(planned: pd.DataFrame) -> str:
    rows = [{"run": row["run_id"], "failed": failure.get("failed", "?"), "error": cell_text(failure.get("message")),
             "at step": f"{failure.get('after_step', '?')} of {failure.get('steps', '?')}",
             "when (UTC)": text_or_dash(failure.get("when")), "logs": ", ".join(failure["logs"]) or "—"}
            for row in planned.to_dict("records") for failure in row["failures"]]
    if not rows:
        return ""
    hung = any(failure.get("error") == "StepTimeout" for row in planned.to_dict("records") for failure in row["failures"])
    return ("## Failed runs\n\nThe failures of each run's latest attempt. `<run>/FAILED` holds each "
            "error's last lines, and `<run>/logs/` the whole output of every worker and evaluation "
            "unit." + (_HUNG if hung else "") + "\n\n" + markdown_table(pd.DataFrame(rows)))


_HUNG = (" A StepTimeout is a training stopped as hung: it finished no step, validation or checkpoint "
         "for train.step_timeout_s, and was stopped, its workers with it; the next `harness run` "
         "resumes it from its last checkpoint.")
