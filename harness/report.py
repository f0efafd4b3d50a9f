"""pandas over every run of a suite: summary.csv and report.md.

Each finished run directory holds its plan (run.yaml), its training summary (train.json), one
lm-eval result per evaluation entry (eval/<entry>.json) and one result per fine-tuning task
(finetune/<task>.json). `collect` reads them into tidy tables, one row per number:

    zero_shot:  run_id         objective size seed scoring        task            metric value chance
                clm-mini-s0-.. clm       mini 0    loglikelihood  synthetic_glue  acc    0.61  0.5
                clm-mini-s1-.. clm       mini 1    loglikelihood  synthetic_glue  acc    0.65  0.5

and every table of the report groups such rows by objective x size: the mean over pretraining
seeds (here 0.63), its 95% bootstrap interval (harness.aggregate.bootstrap_ci; (0.61, 0.65) with
two seeds) and, against chance, the centered score ((0.63 - 0.5) / (1 - 0.5) = 0.26).

The report, top to bottom: the suite's description, a notice when some planned run is not done
(each run.yaml is a planned run: it is written before training starts), the runs that are not
done with their state and the failures of their latest attempt (RUN/FAILED, written by
harness.schedule), the data card, training at matched compute (with bits per byte of held-out
text from the `harness_heldout` entry), the zero-shot table, the fine-tuning table, the suite's
aggregate (a versioned list of tasks averaged as centered scores), notes on reading it, and the
list of runs. An objective x size with no finished run keeps its row in the training and
aggregate tables, marked "failed" or "missing". summary.csv holds, per objective x size with a
finished run, the mean, ci_low and ci_high of every number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from harness.aggregate import (Aggregate, centered, chance_of, default_aggregate, mean_ci, missing_tasks,
                               resolve_aggregate, run_aggregate)
from harness.errors import UserError
from harness.evaluate.tasks import HELDOUT_TASK as HELDOUT  # the entry of held-out text: bits/byte, perplexities
from harness.results import SUITE_RECORD, RunDir, read_json, read_yaml, write_atomic

HELDOUT_METRICS = ("bits_per_byte", "byte_perplexity", "word_perplexity")
SHOWN_METRICS = ("acc", "acc_norm", "mcc", "f1")  # the zero-shot table's metrics (summary.csv has all)
GROUP = ["objective", "size"]
IDENTITY = ["run_id", "objective", "size", "seed", "scoring"]
ZERO_SHOT_COLUMNS = [*IDENTITY, "entry", "task", "metric", "value", "stderr", "chance", "n", "num_fewshot"]
FINETUNE_COLUMNS = [*IDENTITY, "task", "metric", "standard", "head", "value", "chance", "majority",
                    "finetune_seeds"]
PLANNED_COLUMNS = ["run_id", "objective", "size", "seed", "scoring", "finished", "done", "state", "failures"]


@dataclass
class SuiteResults:
    """Everything the report reads, as tables."""

    runs: pd.DataFrame       # one row per run: plan, training summary, held-out text metrics
    zero_shot: pd.DataFrame  # one row per run x task x metric (ZERO_SHOT_COLUMNS)
    finetune: pd.DataFrame   # one row per run x fine-tuning task x metric (FINETUNE_COLUMNS)
    declared: list[tuple[str | dict, Path]]  # (eval.aggregate, run.yaml) of the runs that declare one
    planned: pd.DataFrame    # one row per run.yaml, finished or not (PLANNED_COLUMNS)


def write_report(suite_dir: Path, title: str, description: str | None = None) -> tuple[Path, Path]:
    """summary.csv and report.md of every run under `suite_dir`, finished or not. `description`
    None: the one `harness run` recorded (suite.json). FileNotFoundError without any run.yaml."""
    suite_dir = Path(suite_dir)
    results = collect(suite_dir)
    if results.planned.empty:
        raise FileNotFoundError(f"no runs under {suite_dir} (no <run id>/run.yaml)")
    description = recorded_description(suite_dir) if description is None else description
    aggregate, per_run, summary = None, None, pd.DataFrame(columns=[*GROUP, "seeds", "scoring"])
    if not results.runs.empty:
        aggregate = choose_aggregate(results)
        per_run = run_aggregates(results, aggregate)
        summary = summarize(wide(results, per_run, aggregate))
    csv_path, md_path = suite_dir / "summary.csv", suite_dir / "report.md"
    write_atomic(csv_path, summary.to_csv(index=False))
    write_atomic(md_path, render_markdown(title, description, results, summary, aggregate, per_run,
                                          suite_data_card(suite_dir)))
    return csv_path, md_path


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


# --- reading -----------------------------------------------------------------------------------


def collect(suite_dir: Path) -> SuiteResults:
    """Every run with a training summary under `suite_dir`, in run-id order."""
    runs, zero_shot, finetune, declared = [], [], [], []
    for run_yaml in run_yamls(suite_dir):
        run = RunDir(run_yaml.parent)
        if not run.train_json.exists():
            continue
        plan = read_yaml(run_yaml)
        identity = {"run_id": plan["run_id"], "objective": plan.get("label", plan["objective"]),
                    "size": plan["size"], "seed": plan["seed"], "scoring": plan["scoring"]}
        scores = [row for path in sorted(run.eval_dir.glob("*.json")) for row in eval_rows(path, plan["scoring"])]
        runs.append(_run_row(read_json(run.train_json), identity, scores))
        zero_shot += [identity | row for row in scores if row["entry"] != HELDOUT]
        finetune += [identity | row for path in sorted(run.finetune_dir.glob("*.json"))
                     for row in finetune_rows(read_json(path))]
        if (spec := (plan.get("eval") or {}).get("aggregate")) is not None:
            declared.append((spec, run_yaml))
    runs = pd.DataFrame(runs).astype({metric: float for metric in HELDOUT_METRICS}) if runs else pd.DataFrame()
    # A task reached through two entries (sst2 alone and in the glue tag) counts once per run.
    zero_shot = pd.DataFrame(zero_shot, columns=ZERO_SHOT_COLUMNS).drop_duplicates(["run_id", "task", "metric"])
    return SuiteResults(runs, _numeric(zero_shot), _numeric(pd.DataFrame(finetune, columns=FINETUNE_COLUMNS)),
                        declared, planned_runs(suite_dir))


def _run_row(train: dict, identity: dict, scores: list[dict]) -> dict:
    """The training summary, the plan's identity, and the held-out text metrics (None without them).

    Bits per byte come from the held-out evaluation only, never from the training loss."""
    heldout = {row["metric"]: row["value"] for row in scores if row["entry"] == HELDOUT}
    train = {key: value for key, value in train.items() if key not in HELDOUT_METRICS}
    return train | identity | {metric: heldout.get(metric) for metric in HELDOUT_METRICS}


def eval_rows(path: Path, scoring: str) -> list[dict]:
    """One row per task x metric of an evaluation file; `scoring` where the file names none.

    Reads the harness's block of the lm-eval results ("harness": {entry, scoring, tasks}) and
    the previous one-task format ({task, scoring, chance, metrics, n-samples, n-shot}).
    """
    result = read_json(path)
    if "harness" in result:
        block = result["harness"]
        entry, scoring, tasks = block["entry"], block.get("scoring") or scoring, block["tasks"]
    elif {"task", "metrics"} <= result.keys():
        entry, scoring = result["task"], result.get("scoring") or scoring
        tasks = {entry: {"metrics": result["metrics"], "chance": result.get("chance"),
                         "n": result.get("n-samples", {}).get(entry, {}).get("effective"),
                         "num_fewshot": result.get("n-shot", {}).get(entry)}}
    else:
        raise UserError("not an evaluation result: expected a 'harness' block (or the previous "
                        "format's 'task' and 'metrics' keys)", where=str(path))
    return [{"entry": entry, "scoring": scoring, "task": task, "metric": metric, "value": value,
             "stderr": row["metrics"].get(f"{metric}_stderr"), "chance": row.get("chance"),
             "n": row.get("n"), "num_fewshot": row.get("num_fewshot")}
            for task, row in tasks.items() for metric, value in row["metrics"].items()
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


def suite_data_card(suite_dir: Path) -> dict | None:
    """The data card of the suite's data, read from any run's plan (every run shares the data)."""
    from harness.data import PreparedData, data_card
    plans = (read_yaml(run_yaml) or {} for run_yaml in run_yamls(suite_dir))
    data = next((plan["data"] for plan in plans if plan.get("data")), None)
    return None if data is None else data_card(PreparedData.from_dict(data))


# --- planned runs: which are not done, and why -------------------------------------------------


def planned_runs(suite_dir: Path) -> pd.DataFrame:
    """One row per run.yaml (PLANNED_COLUMNS): whether the run finished training (train.json) and
    is done (DONE), its state in words, and the failures of its latest attempt (RUN/FAILED)."""
    rows = []
    for run_yaml in run_yamls(suite_dir):
        run, plan = RunDir(run_yaml.parent), read_yaml(run_yaml) or {}
        failures = read_failures(run, Path(suite_dir))
        rows.append({"run_id": plan.get("run_id", run.root.name), "size": plan.get("size"),
                     "objective": plan.get("label") or plan.get("objective"), "seed": plan.get("seed"),
                     "scoring": plan.get("scoring"), "finished": run.train_json.exists(),
                     "done": run.done.exists(), "state": run_state(run, plan, failures), "failures": failures})
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


def run_state(run: RunDir, plan: dict, failures: list[dict]) -> str:
    """Where a run stands, in a few words."""
    if run.done.exists():
        return "done"
    steps = plan.get("steps", "?")
    if run.train_json.exists():
        units = [f["failed"] for f in failures if f.get("failed") != "train"]
        return "trained; failed: " + ", ".join(units) if units else "trained; evaluation unfinished"
    train = [f for f in failures if f.get("failed") == "train"]
    if train:
        return f"training failed at step {train[-1].get('after_step', '?')} of {steps}"
    logged = max((row.get("step", 0) for row in run.read_metrics()), default=0)
    latest = run.checkpoints / "latest"
    if not logged and not latest.exists():
        return "not started"
    resume = f"; resumes from checkpoint {latest.read_text().strip()}" if latest.exists() else ""
    return f"training unfinished at step {logged} of {steps}{resume}"


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


def absent_groups(planned: pd.DataFrame) -> list[dict]:
    """Each objective x size that is planned but has no run that finished training: how many
    runs it planned, and "failed" when one of them failed, else "missing"."""
    known = planned.dropna(subset=GROUP)
    return [{"objective": objective, "size": size, "planned": len(group), "scoring": group["scoring"].iloc[0],
             "status": "failed" if group["failures"].map(bool).any() else "missing"}
            for (objective, size), group in known.groupby(GROUP, sort=False) if not group["finished"].any()]


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


# --- the aggregate -----------------------------------------------------------------------------


def choose_aggregate(results: SuiteResults) -> Aggregate | None:
    """The suite's declared aggregate, as the newest run.yaml holds it; without one, the largest
    registered aggregate whose tasks were all evaluated; else None."""
    if results.declared:
        spec, run_yaml = max(results.declared, key=lambda declared: declared[1].stat().st_mtime_ns)
        return resolve_aggregate(spec, where=f"{run_yaml}: eval.aggregate")
    return default_aggregate(results.zero_shot["task"])


def run_aggregates(results: SuiteResults, aggregate: Aggregate | None) -> pd.DataFrame | None:
    """One row per run: its aggregate (NaN when a declared task is missing) and the missing tasks."""
    if aggregate is None:
        return None
    rows = []
    for run in results.runs[IDENTITY].to_dict("records"):
        scores = _task_scores(results.zero_shot[results.zero_shot["run_id"] == run["run_id"]], aggregate)
        rows.append(run | {"aggregate": run_aggregate(scores, aggregate),
                           "missing": missing_tasks(scores, aggregate)})
    return pd.DataFrame(rows).astype({"aggregate": float})


def _task_scores(zero_shot: pd.DataFrame, aggregate: Aggregate) -> dict[str, tuple[float, float]]:
    """{task: (score, chance)} for the aggregate's tasks that have its metric and a chance level."""
    scores = {}
    for row in zero_shot.to_dict("records"):
        chance = chance_of(row["metric"], row["chance"])
        if aggregate.tasks.get(row["task"]) == row["metric"] and not _missing(row["value"]) \
                and not _missing(chance):
            scores[row["task"]] = (row["value"], chance)
    return scores


# --- summary.csv -------------------------------------------------------------------------------


def wide(results: SuiteResults, per_run: pd.DataFrame | None, aggregate: Aggregate | None) -> pd.DataFrame:
    """One row per run, one column per number: training, held-out text, `<task>:<metric>`,
    `finetune:<task>:<metric>` and `aggregate:<key>`."""
    parts = [results.runs.set_index("run_id"), _pivot(results.zero_shot, ""),
             _pivot(results.finetune, "finetune:")]
    if per_run is not None:
        column = {"aggregate": f"aggregate:{aggregate.key}"}
        parts.append(per_run.set_index("run_id")[["aggregate"]].rename(columns=column))
    return pd.concat(parts, axis=1).rename_axis("run_id").reset_index()


def _pivot(scores: pd.DataFrame, prefix: str) -> pd.DataFrame:
    if scores.empty:
        return pd.DataFrame()
    columns = prefix + scores["task"] + ":" + scores["metric"]
    table = scores.assign(column=columns).pivot_table(index="run_id", columns="column", values="value",
                                                      aggfunc="first")
    return table.rename_axis(columns=None)


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Per objective x size: seeds, scoring, and the mean, ci_low and ci_high over seeds of every
    numeric column (the interval is nan with one seed)."""
    numeric = [c for c in runs.columns if c != "seed" and pd.api.types.is_numeric_dtype(runs[c])]
    rows = []
    for (objective, size), group in runs.groupby(GROUP, sort=False):
        row = {"objective": objective, "size": size, "seeds": len(group), "scoring": group["scoring"].iloc[0]}
        for col in numeric:
            row[f"{col}_mean"], row[f"{col}_ci_low"], row[f"{col}_ci_high"] = mean_ci(group[col])
        rows.append(row)
    return pd.DataFrame(rows)


# --- markdown ----------------------------------------------------------------------------------


def render_markdown(title: str, description: str, results: SuiteResults, summary: pd.DataFrame,
                    aggregate: Aggregate | None = None, per_run: pd.DataFrame | None = None,
                    card: dict | None = None) -> str:
    absent = absent_groups(results.planned)
    parts = [f"# {title}", description.strip(), partial_notice(results.planned),
             _unfinished_table(results.planned), _failed_table(results.planned), _data_table(card),
             _training_table(summary, results.planned), _zero_shot_table(results.zero_shot, absent),
             _finetune_table(results.finetune, absent), _aggregate_table(per_run, aggregate, absent),
             _reading_notes(), _runs_table(results.runs)]
    return "\n\n".join(p for p in parts if p) + "\n"


def _runs_table(runs: pd.DataFrame) -> str:
    if runs.empty:
        return ""
    shown = runs[["run_id", "objective", "size", "seed", "steps", "val_loss", "wall_time_s"]]
    return "## Runs\n\n" + shown.to_markdown(index=False)


def _unfinished_table(planned: pd.DataFrame) -> str:
    rows = [{"run": row["run_id"], "objective": _text(row["objective"]), "size": _text(row["size"]),
             "seed": _text(row["seed"]), "state": row["state"]}
            for row in planned.to_dict("records") if not row["done"]]
    if not rows:
        return ""
    return ("## Unfinished runs\n\nPlanned runs (each has a run.yaml) that are not done. Running the "
            "suite again resumes them; a run folder that no longer belongs to the suite can be "
            "deleted.\n\n" + _markdown(pd.DataFrame(rows)))


def _failed_table(planned: pd.DataFrame) -> str:
    rows = [{"run": row["run_id"], "failed": failure.get("failed", "?"), "error": _cell(failure.get("message")),
             "at step": f"{failure.get('after_step', '?')} of {failure.get('steps', '?')}",
             "when (UTC)": _text(failure.get("when")), "logs": ", ".join(failure["logs"]) or "—"}
            for row in planned.to_dict("records") for failure in row["failures"]]
    if not rows:
        return ""
    return ("## Failed runs\n\nThe failures of each run's latest attempt. `<run>/FAILED` holds each "
            "error's last lines, and `<run>/logs/` the whole output of every worker and evaluation "
            "unit.\n\n" + _markdown(pd.DataFrame(rows)))


def _data_table(card: dict | None) -> str:
    """Source, size, tokenizer, validation split and (synthetic world) the entropy floor."""
    if not card:
        return ""
    rows = [{"split": split, "documents": f"{card[f'{split}_documents']:,}", "tokens": f"{card[f'{split}_tokens']:,}",
             "bytes": f"{card[f'{split}_bytes']:,}"} for split in ("train", "val")]
    floor = card.get("entropy_bits_per_byte")
    lines = [f"Source: {card['source']}. Tokenizer: {card['tokenizer']}, vocabulary {card['vocab_size']:,}. "
             f"Validation: the last {card['val_fraction']:.0%} of the documents, read by no training run."]
    if floor is not None:
        lines.append(f"Entropy floor of the held-out text (the generator's true entropy): "
                     f"{floor:.4f} bits/byte; no model's `bits/byte` can be lower on average.")
    if card.get("heldout_documents"):
        lines.append(f"`bits/byte held-out` and this floor are both over the first "
                     f"{card['heldout_documents']:,} validation documents.")
    return "## Data\n\n" + " ".join(lines) + "\n\n" + _markdown(pd.DataFrame(rows))


def _training_table(summary: pd.DataFrame, planned: pd.DataFrame) -> str:
    """One row per objective x size; one without a finished run says "failed" or "missing"."""
    table = _trained_rows(summary, planned) if len(summary) else pd.DataFrame(columns=TRAINING_HEADERS)
    absent = [{header: group["status"] for header in table.columns}
              | {"objective": group["objective"], "size": group["size"], "seeds": f"0 of {group['planned']}"}
              for group in absent_groups(planned)]
    if absent:
        table = pd.concat([table, pd.DataFrame(absent, columns=table.columns)], ignore_index=True)
    return "## Training at matched compute\n\n" + _markdown(table)


# The training table's columns when no run has finished (the rows then all say why).
TRAINING_HEADERS = ["objective", "size", "seeds", "params", "params trained", "FLOPs spent", "tokens seen",
                    "val loss [95% CI]", "uniform loss ln V", "bits/byte held-out [95% CI]", "wall time (s)"]


def _trained_rows(summary: pd.DataFrame, planned: pd.DataFrame) -> pd.DataFrame:
    trained = "params_trained_mean" if "params_trained_mean" in summary else "params_mean"
    return pd.DataFrame({
        "objective": summary["objective"], "size": summary["size"], "seeds": _seeds_text(summary, planned),
        "params": summary["params_mean"].map(lambda v: f"{v:,.0f}"),
        "params trained": summary[trained].map(lambda v: f"{v:,.0f}"),
        "FLOPs spent": summary["flops_spent_mean"].map(lambda v: f"{v:.4g}"),
        "tokens seen": summary["tokens_seen_mean"].map(lambda v: f"{v:,.0f}"),
        "val loss [95% CI]": _mean_ci_text(summary, "val_loss"),
        "uniform loss ln V": summary["uniform_loss_mean"].map(lambda v: f"{v:.3f}"),
        "bits/byte held-out [95% CI]": _mean_ci_text(summary, "bits_per_byte"),
        "wall time (s)": summary["wall_time_s_mean"].map(lambda v: f"{v:.0f}"),
    })


def _seeds_text(summary: pd.DataFrame, planned: pd.DataFrame) -> pd.Series:
    """Finished seeds, and "of N" when more were planned."""
    counts = planned.dropna(subset=GROUP).groupby(GROUP).size().to_dict()

    def cell(row: pd.Series) -> str:
        of = counts.get((row["objective"], row["size"]), 0)
        return f"{row['seeds']} of {of}" if of > row["seeds"] else str(row["seeds"])
    return summary.apply(cell, axis=1)


def _zero_shot_table(zero_shot: pd.DataFrame, absent: list[dict]) -> str:
    shown = zero_shot[zero_shot["metric"].isin(SHOWN_METRICS)].sort_values(["task", "metric"], kind="stable")
    if shown.empty:
        return ""
    rows = []
    for (task, metric, objective, size, scoring), group in shown.groupby(
            ["task", "metric", "objective", "size", "scoring"], sort=False):
        mean, low, high = mean_ci(group["value"])
        chance = chance_of(metric, _mean_or_none(group["chance"]))
        rows.append({"task": task, "metric": metric, "n-shot": _first_int(group["num_fewshot"]),
                     "chance": _fmt(chance), "objective": objective, "size": size, "scoring": scoring,
                     "mean": _fmt(mean), "95% CI": _ci(low, high),
                     "centered": _fmt(None if chance is None else centered(mean, chance)),
                     "stderr (lm-eval)": _fmt(group["stderr"].mean())})
    return ("## Zero-shot evaluation (lm-eval)\n\nOne row per task × metric × objective × size. "
            "`mean` and `95% CI` are over pretraining seeds; `centered` is (mean − chance) / (1 − chance); "
            "`stderr (lm-eval)` is lm-eval's standard error over the task's documents, averaged over seeds."
            + _absent_note(absent) + "\n\n" + _markdown(pd.DataFrame(rows)))


def _finetune_table(finetune: pd.DataFrame, absent: list[dict]) -> str:
    standard = finetune[finetune["standard"].astype(bool)].sort_values("task", kind="stable")
    if standard.empty:
        return ""
    rows = []
    for (task, metric, head, objective, size), group in standard.groupby(
            ["task", "metric", "head", "objective", "size"], sort=False):
        mean, low, high = mean_ci(group["value"])
        rows.append({"task": task, "metric": metric, "head": head, "objective": objective, "size": size,
                     "pretraining seeds": len(group),
                     "fine-tuning seeds": "/".join(str(n) for n in sorted(set(group["finetune_seeds"]))),
                     "mean of medians": _fmt(mean), "95% CI": _ci(low, high),
                     "baseline": _fmt(group["chance"].mean()), "majority acc": _fmt(group["majority"].mean())})
    return ("## Fine-tuning\n\nEach pretraining run is fine-tuned once per fine-tuning seed; `mean of medians` "
            "is the mean over pretraining seeds of each run's median over fine-tuning seeds, in the task's "
            "standard metric. `baseline` is that metric for the majority-class (or uniform) guess."
            + _absent_note(absent) + "\n\n" + _markdown(pd.DataFrame(rows)))


def _aggregate_table(per_run: pd.DataFrame | None, aggregate: Aggregate | None, absent: list[dict]) -> str:
    if per_run is None:
        return ""
    rows = []
    for (objective, size), group in per_run.groupby(GROUP, sort=False):
        mean, low, high = mean_ci(group["aggregate"])
        missing = [task for task in aggregate.tasks if any(task in m for m in group["missing"])]
        rows.append({"objective": objective, "size": size, "scoring": group["scoring"].iloc[0],
                     "runs with every task": f"{group['aggregate'].notna().sum()}/{len(group)}",
                     "mean": _fmt(mean), "95% CI": _ci(low, high),
                     "missing": ", ".join(missing)})
    rows += [{"objective": group["objective"], "size": group["size"], "scoring": _text(group["scoring"]),
              "runs with every task": f"0/{group['planned']}", "mean": group["status"], "95% CI": "—",
              "missing": ""} for group in absent]
    tasks = ", ".join(f"{task} ({metric})" for task, metric in aggregate.tasks.items())
    return (f"## Aggregate: {aggregate.name}, version {aggregate.version} (`{aggregate.key}`)\n\n"
            f"Mean centered score over {tasks}. 0 is chance, 1 is perfect. The mean and interval are "
            f"over the runs that evaluated every task; `missing` names the tasks some run lacks.\n\n"
            + _markdown(pd.DataFrame(rows)))


def _reading_notes() -> str:
    return (
        "## Reading this report\n\n"
        "- Every run at a size spends the same training FLOPs (counted on its real step); the "
        "FLOPs column shows it.\n"
        "- `val loss` is each objective's own loss on held-out text: comparable across seeds, not "
        "across objectives (masked LM predicts 15% of tokens with both-side context). "
        "`uniform loss ln V` is the loss of a uniform guess.\n"
        "- `bits/byte held-out` is the negative log-likelihood of the held-out text in bits per UTF-8 "
        "byte, scored with a sliding window (every token after the first window sees a full window of "
        "context), so tokenizers of any vocabulary compare. It exists only for objectives that define "
        "a likelihood of the text; `—` elsewhere.\n"
        "- Means and 95% intervals are over pretraining seeds: a percentile bootstrap of the mean "
        "(10,000 resamples). One seed gives no interval (`—`). With 2 or 3 seeds the interval is the "
        "range of the seeds: read it as the spread observed, not as a guarantee.\n"
        "- `stderr (lm-eval)` is a different noise: the sampling error of the task's documents, for "
        "one model. A score means something when it exceeds chance by several of both.\n"
        "- Scoring methods differ by architecture: `loglikelihood` for causal decoders, "
        "`pseudo-loglikelihood` (Salazar et al. 2020) for masked LMs, `seq2seq-loglikelihood`, "
        "`prefix-loglikelihood` and `discriminator` for the others. Their scores are not on one "
        "scale; the zero-shot and aggregate tables name the method on every row.\n"
        "- Centered score: (score − chance) / (1 − chance), 0 at chance and 1 at perfect, so tasks "
        "with two and four choices average fairly (Matthews correlation has chance 0). The "
        "aggregate is the mean centered score over a versioned task list: the same key always "
        "means the same tasks.")


def _absent_note(absent: list[dict]) -> str:
    if not absent:
        return ""
    groups = ", ".join(f"{g['objective']} ({g['size']}, {g['status']})" for g in absent)
    return f" Not here, for want of a finished run: {groups}."


def _cell(text) -> str:
    """Text for one markdown cell: one line, no column separator, at most 200 characters."""
    text = " ".join(str(text or "").split()).replace("|", "\\|")
    return text if len(text) <= 200 else text[:199] + "…"


def _text(value) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _markdown(table: pd.DataFrame) -> str:
    """A table of cells already formatted: tabulate would re-read "0.650" as 0.65."""
    return table.to_markdown(index=False, disable_numparse=True)


def _mean_ci_text(summary: pd.DataFrame, col: str, digits: int = 3) -> pd.Series:
    """'mean [low, high]' per row: the mean alone with one seed, '—' without a value."""
    def cell(s: pd.Series) -> str:
        mean, low, high = s.get(f"{col}_mean"), s.get(f"{col}_ci_low"), s.get(f"{col}_ci_high")
        if _missing(mean):
            return "—"
        return _fmt(mean, digits) + ("" if _missing(low) else " " + _ci(low, high, digits))
    return summary.apply(cell, axis=1)


def _ci(low, high, digits: int = 3) -> str:
    return "—" if _missing(low) else f"[{low:.{digits}f}, {high:.{digits}f}]"


def _fmt(value, digits: int = 3) -> str:
    return "—" if _missing(value) else f"{value:.{digits}f}"


def _first_int(values: pd.Series) -> str:
    known = values.dropna()
    return str(int(known.iloc[0])) if len(known) else "—"


def _mean_or_none(values: pd.Series) -> float | None:
    return None if values.isna().all() else float(values.mean())


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
