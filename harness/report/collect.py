"""Reading a suite's folder into tables: the finished runs' numbers, and every planned run's state.

    <suite>/suite.json            the runs the suite plans now, and its description
    <suite>/<run>/run.yaml        the plan: written before training, so every planned run has one
    <suite>/<run>/train.json      the training summary: the run finished training
    <suite>/<run>/eval/<entry>.json     one lm-eval result per evaluation entry ("harness" block)
    <suite>/<run>/finetune/<task>.json  one result per fine-tuning task (median over seeds)
    <suite>/<run>/FAILED          the failures of the latest attempt (harness.schedule)
    <suite>/<run>/attempts.jsonl  each attempt at training it (harness.train.attempts)
    <suite>/<run>/DONE            the run is done: trained and every unit evaluated

Every run.yaml is read through its type, harness.jobs.RunPlan (`run_records`: the suite's runs,
each a RunRecord of its folder and its plan); one that is not a run record is a UserError naming
it. `collect` returns `SuiteResults`; `planned_runs` gives one row per run.yaml with its state in
words ("not started", "training unfinished at step 45 of 100; ...", "trained; evaluation
unfinished", "training failed at step 30 of 100", "training stopped as hung at step 30 of 100")
and its attempts at training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import yaml

from harness.errors import UserError
from harness.evaluate.tasks import HELDOUT_TASK as HELDOUT  # the entry of held-out text: bits/byte, perplexities
from harness.data.entry import data_card
from harness.jobs import RunPlan
from harness.results import SUITE_RECORD, RunDir, read_json, read_yaml
from harness.train import attempts

HELDOUT_METRICS = ("bits_per_byte", "byte_perplexity", "word_perplexity")
GROUP = ["objective", "size", "budget"]
IDENTITY = ["run_id", "objective", "size", "budget", "budget_unit", "seed", "scoring"]
ZERO_SHOT_COLUMNS = [*IDENTITY, "entry", "task", "metric", "value", "stderr", "chance", "n", "num_fewshot"]
FINETUNE_COLUMNS = [*IDENTITY, "task", "metric", "standard", "head", "value", "chance", "majority",
                    "finetune_seeds"]
PLANNED_COLUMNS = ["run_id", "objective", "size", "budget", "budget_unit", "seed", "scoring", "finished", "done",
                   "state", "failures", "attempts"]
# Keys of train.json on how and where the training went, not on what it computed: kept out of the
# runs table, and so out of summary.csv (the report shows restarts from the planned runs' attempts;
# `workers` says where each rank ran; `environment`, the versions, commit and hardware, has a
# section of its own; `deepspeed_config` is the engine's config as given; `startup`, the parts of
# the last attempt's start-up, see harness.train.startup).
NOT_SUMMARIZED = ("restarts", "attempts", "workers", "environment", "deepspeed_config", "startup")


@dataclass
class SuiteResults:
    """Everything the report reads, as tables."""

    runs: pd.DataFrame       # one row per run: plan, training summary, held-out text metrics
    zero_shot: pd.DataFrame  # one row per run x task x metric (ZERO_SHOT_COLUMNS)
    finetune: pd.DataFrame   # one row per run x fine-tuning task x metric (FINETUNE_COLUMNS)
    declared: list[tuple[str | dict, Path]]  # (eval.aggregate, run.yaml) of the runs that declare one
    planned: pd.DataFrame    # one row per run.yaml, finished or not (PLANNED_COLUMNS)
    card: dict | None        # the data card of the data every run shares (None without runs)
    # train.json's `environment` of each finished run, by run id (None where it was not recorded)
    environments: dict[str, dict | None] = field(default_factory=dict)


def recorded_description(suite_dir: Path) -> str:
    """The description `harness run` recorded in suite.json (pipeline.record_suite)."""
    record = Path(suite_dir) / SUITE_RECORD
    return read_json(record).get("description", "") if record.is_file() else ""


def run_yamls(suite_dir: Path) -> list[Path]:
    """The run.yaml of every run the suite plans now, as suite.json lists them: runs trained for
    older data or settings stay on disk but are not mixed in (every run without a suite.json)."""
    found = sorted(Path(suite_dir).glob("*/run.yaml"))
    record = Path(suite_dir) / SUITE_RECORD
    if not record.is_file() or "runs" not in (current := read_json(record)):
        return found
    return [path for path in found if path.parent.name in set(current["runs"])]


class RunRecord(NamedTuple):
    """A run the suite plans: its folder, and the plan `harness run` recorded there (run.yaml)."""

    run: RunDir
    plan: RunPlan


def run_records(suite_dir: Path) -> list[RunRecord]:
    """The runs the suite plans now (`run_yamls`), in run-id order, each with its plan."""
    return [RunRecord(RunDir(path.parent), RunPlan.read(path)) for path in run_yamls(suite_dir)]


# --- the finished runs' numbers ----------------------------------------------------------------


def collect(suite_dir: Path) -> SuiteResults:
    """Every run with a training summary under `suite_dir`, in run-id order."""
    records = run_records(suite_dir)
    runs, zero_shot, finetune, declared, environments = [], [], [], [], {}
    for run, plan in records:
        if not run.train_json.exists():
            continue
        train = read_json(run.train_json)
        environments[plan.run_id] = train.get("environment")
        identity = {"run_id": plan.run_id, "objective": plan.label, "size": plan.size, **run_budget(plan),
                    "seed": plan.seed, "scoring": plan.scoring}
        scores = [row for path in sorted(run.eval_dir.glob("*.json")) for row in eval_rows(path, plan.scoring)]
        runs.append(_run_row(train, identity, scores))
        zero_shot += [identity | row for row in scores if row["entry"] != HELDOUT]
        finetune += [identity | row for path in sorted(run.finetune_dir.glob("*.json"))
                     for row in finetune_rows(read_json(path))]
        if plan.eval.aggregate is not None:
            declared.append((plan.eval.aggregate, run.run_yaml))
    runs = pd.DataFrame(runs).astype({metric: float for metric in HELDOUT_METRICS}) if runs else pd.DataFrame()
    # A task reached through two entries (sst2 alone and in the glue tag) counts once per run.
    zero_shot = pd.DataFrame(zero_shot, columns=ZERO_SHOT_COLUMNS).drop_duplicates(["run_id", "task", "metric"])
    return SuiteResults(runs, _numeric(zero_shot), _numeric(pd.DataFrame(finetune, columns=FINETUNE_COLUMNS)),
                        declared, planned_table(records, Path(suite_dir)),
                        data_card(records[0].plan.data) if records else None, environments)


def run_budget(plan: RunPlan) -> dict:
    """{budget, budget_unit} of a run: its plan's, or, in a run.yaml written before budgets could
    be lists, the FLOPs its steps spend."""
    if plan.budget is None:
        return {"budget": plan.steps * plan.flops_per_step, "budget_unit": "flops"}
    return {"budget": plan.budget, "budget_unit": plan.budget_unit}


def _run_row(train: dict, identity: dict, scores: list[dict]) -> dict:
    """The training summary, the plan's identity, and the held-out text metrics (None without them).

    Bits per byte come from the held-out evaluation only, never from the training loss."""
    heldout = {row["metric"]: row["value"] for row in scores if row["entry"] == HELDOUT}
    train = {key: value for key, value in train.items() if key not in (*HELDOUT_METRICS, *NOT_SUMMARIZED)}
    return train | identity | {metric: heldout.get(metric) for metric in HELDOUT_METRICS}


def eval_rows(path: Path, scoring: str) -> list[dict]:
    """One row per task x metric of an evaluation file, read from the harness's block of the
    lm-eval results ("harness": {entry, scoring, tasks}); `scoring` where the block names none."""
    result = read_json(path)
    if "harness" not in result:
        raise UserError("not an evaluation result: expected a 'harness' block", where=str(path))
    block = result["harness"]
    entry, scoring = block["entry"], block.get("scoring") or scoring
    return [{"entry": entry, "scoring": scoring, "task": task, "metric": metric, "value": value,
             "stderr": row["metrics"].get(f"{metric}_stderr"), "chance": row.get("chance"),
             "n": row.get("n"), "num_fewshot": row.get("num_fewshot")}
            for task, row in block["tasks"].items() for metric, value in row["metrics"].items()
            if not metric.endswith("_stderr")]


def finetune_rows(record: dict) -> list[dict]:
    """One row per metric of the median over fine-tuning seeds; the task's standard metric is
    marked, and carries the baseline's score in that metric (`chance`)."""
    standard = record["metric"]
    return [{"task": record["task"], "metric": metric, "standard": metric == standard, "head": record["head"],
             "value": value, "chance": record["chance"] if metric == standard else None,
             "majority": record["majority"], "finetune_seeds": len(record["runs"])}
            for metric, value in record["median"].items()]


def _numeric(frame: pd.DataFrame) -> pd.DataFrame:
    for col in ("value", "stderr", "chance", "majority"):
        if col in frame:
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame


# --- planned runs: which are not done, and why -------------------------------------------------


def planned_runs(suite_dir: Path) -> pd.DataFrame:
    """One row per run.yaml (PLANNED_COLUMNS): whether the run finished training (train.json) and
    is done (DONE), its state in words, the failures of its latest attempt (RUN/FAILED), and its
    attempts at training (harness.train.attempts.history)."""
    return planned_table(run_records(suite_dir), Path(suite_dir))


def planned_table(records: list[RunRecord], suite_dir: Path) -> pd.DataFrame:
    """`planned_runs` of runs already read."""
    rows = []
    for run, plan in records:
        failures = read_failures(run, suite_dir)
        rows.append({"run_id": plan.run_id, "size": plan.size, "objective": plan.label, **run_budget(plan),
                     "seed": plan.seed,
                     "scoring": plan.scoring, "finished": run.train_json.exists(), "done": run.done.exists(),
                     "state": run_state(run, plan, failures), "failures": failures,
                     "attempts": attempts.history(run)})
    return pd.DataFrame(rows, columns=PLANNED_COLUMNS)


def read_failures(run: RunDir, suite_dir: Path) -> list[dict]:
    """The entries of RUN/FAILED, their log paths relative to the suite's folder."""
    if not run.failed.exists():
        return []
    try:
        failures = (read_yaml(run.failed) or {}).get("failures") or []
    except (yaml.YAMLError, AttributeError):
        failures = [{"failed": "?", "message": f"{run.failed} cannot be read"}]
    for failure in failures:
        failure["logs"] = [_relative(path, suite_dir) for path in failure.get("logs") or []]
    return failures


def run_state(run: RunDir, plan: RunPlan, failures: list[dict]) -> str:
    """Where a run stands, in a few words."""
    if run.done.exists():
        return "done"
    if run.train_json.exists():
        units = [f["failed"] for f in failures if f.get("failed") != "train"]
        return "trained; failed: " + ", ".join(units) if units else "trained; evaluation unfinished"
    train = [f for f in failures if f.get("failed") == "train"]
    if train:
        how = "stopped as hung" if train[-1].get("error") == "StepTimeout" else "failed"
        return f"training {how} at step {train[-1].get('after_step', '?')} of {plan.steps}"
    logged = max((row.get("step", 0) for row in run.read_metrics()), default=0)
    latest = run.checkpoints / "latest"
    if not logged and not latest.exists():
        return "not started"
    resume = f"; resumes from checkpoint {latest.read_text().strip()}" if latest.exists() else ""
    return f"training unfinished at step {logged} of {plan.steps}{resume}"


def absent_groups(planned: pd.DataFrame) -> list[dict]:
    """Each objective x size x budget that is planned but has no run that finished training: how
    many runs it planned, and "failed" when one of them failed, else "missing"."""
    return [{"objective": objective, "size": size, "budget": budget, "budget_unit": group["budget_unit"].iloc[0],
             "planned": len(group), "scoring": group["scoring"].iloc[0],
             "status": "failed" if group["failures"].map(bool).any() else "missing"}
            for (objective, size, budget), group in by_budget(planned).groupby(GROUP, sort=False)
            if not group["finished"].any()]


def by_budget(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows in ascending budget, in their order otherwise: grouped after this, a sweep's tables
    list every objective at the smallest budget first."""
    return frame.sort_values("budget", kind="stable")


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)
