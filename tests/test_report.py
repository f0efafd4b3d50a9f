"""The report from a small results tree written by hand: every table's numbers, checked by hand.

Two objectives at one size: `clm` (log-likelihood, three seeds, bits per byte of held-out text)
and `mlm` (pseudo-log-likelihood, two seeds, no likelihood, never evaluated on synthetic_rte).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from harness.data.prepare import PreparedData
from harness.errors import UserError
from harness.jobs import RunPlan
from harness.report import write_report
from harness.results import read_yaml, write_json, write_yaml
from harness.schema import EvalConfig, ResourcesConfig, TrainConfig
from objectives import registry

CHANCE = {"synthetic_hellaswag": 0.25, "synthetic_mmlu": 0.25, "synthetic_glue": 0.5,
          "synthetic_cola": 0.5, "synthetic_sst2": 0.5, "synthetic_rte": 0.5}
# Per seed, the metric synthetic-core-v1 reads, chosen so that centered scores are round:
#   clm seed 0: 0.2, 0.0, 0.2, 0.1, 0.4,  0.0 -> aggregate 0.9 / 6 = 0.150
#   clm seed 1: 0.4, 0.2, 0.3, 0.0, 0.6,  0.1 -> 1.6 / 6 = 0.2667
#   clm seed 2: 0.3, 0.1, 0.4, 0.2, 0.5, -0.1 -> 1.4 / 6 = 0.2333     mean 0.2167, CI [0.150, 0.267]
SCORES = {
    "clm": {"synthetic_hellaswag": [0.40, 0.55, 0.475], "synthetic_mmlu": [0.25, 0.40, 0.325],
            "synthetic_glue": [0.60, 0.65, 0.70], "synthetic_cola": [0.55, 0.50, 0.60],
            "synthetic_sst2": [0.70, 0.80, 0.75], "synthetic_rte": [0.50, 0.55, 0.45]},
    "mlm": {"synthetic_hellaswag": [0.30, 0.36], "synthetic_mmlu": [0.26, 0.30],
            "synthetic_glue": [0.52, 0.56], "synthetic_cola": [0.50, 0.50], "synthetic_sst2": [0.58, 0.62]},
}
SCORING = {"clm": "loglikelihood", "mlm": "pseudo-loglikelihood"}
HELDOUT_BPB = {"clm": [0.90, 0.94, 0.92]}
# Fine-tuning medians over fine-tuning seeds, per pretraining seed.
FINETUNE = {"clm": {"synthetic_sst2": [0.80, 0.84, 0.82], "synthetic_cola": [0.20, 0.30, 0.25]},
            "mlm": {"synthetic_sst2": [0.86, 0.90], "synthetic_cola": [0.40, 0.44]}}
HEAD = {"clm": "last-token", "mlm": "encoder-mean"}


def prepared_data(root: Path) -> PreparedData:
    return PreparedData(
        root=root, tokenizer_dir=root / "tokenizer", train_tokens=root / "train.bin", val_tokens=root / "val.bin",
        dtype="uint16", vocab_size=512, n_train_tokens=90_000, n_val_tokens=10_000, n_val_bytes=41_000,
        special_tokens={"[PAD]": 0, "[UNK]": 1, "[EOS]": 2}, tasks_dir=root / "tasks", n_train_documents=540,
        n_val_documents=60, n_train_bytes=369_000, source="synthetic world", tokenizer="bpe", val_fraction=0.1,
        entropy_bits_per_byte=0.2205)


def write_plan(run: Path, objective: str, seed: int, data: PreparedData, aggregate=None,
               budget: float | None = None) -> RunPlan:
    """RUN/run.yaml as `harness run` writes it: the run's plan, of which the report reads the
    identity, the steps, the data and the eval section. Without `budget`, as harnesses wrote it
    before budgets could be lists (no budget: the report takes the FLOPs of its 100 steps)."""
    cls = registry.get(objective)
    plan = RunPlan(
        run_id=run.name, suite=run.parent.name, objective=objective, label=objective, objective_config={},
        architecture=cls.architecture, scoring=cls.scoring, defines_likelihood=cls.defines_likelihood,
        size="mini", seed=seed, steps=round((budget or 6e12) / 6e10), warmup_steps=5, flops_per_step=6.0e10,
        tokens_per_step=4096, budget=budget, budget_unit=budget and "flops",
        params=1_200_000, params_trained=1_300_000, seq_len=128, block_length=128,
        scoring_args={"max_length": 128}, run_dir=run, data=data, train=TrainConfig(),
        resources=ResourcesConfig(), eval=EvalConfig(tasks=list(SCORES.get(objective, [])), aggregate=aggregate))
    write_yaml(run / "run.yaml", plan.record())
    return plan


def lm_eval_file(entry: str, task: str, scoring: str, metrics: dict, chance: float | None) -> dict:
    """lm-eval's results dict for one entry (the keys the harness keeps), plus the harness block."""
    return {
        "results": {task: {"alias": task, **{f"{k},none": v for k, v in metrics.items()}}},
        "versions": {task: 1.0}, "n-shot": {task: 0}, "n-samples": {task: {"original": 40, "effective": 40}},
        "harness": {"entry": entry, "scoring": scoring, "model_sha256": "0" * 64,
                    "tasks": {task: {"metrics": metrics, "chance": chance, "n": 40, "num_fewshot": 0,
                                     "higher_is_better": {k: True for k in metrics if "stderr" not in k}}}},
    }


def finetune_file(task: str, objective: str, median: float) -> dict:
    metric = "mcc" if task == "synthetic_cola" else "acc"
    runs = [{"seed": s, "acc": median + d, "mcc": median + d} for s, d in enumerate((-0.01, 0.0, 0.01))]
    return {"task": task, "metric": metric, "head": HEAD[objective], "recipe": {"lr": 1e-4, "epochs": 3},
            "n_train": 40, "n_eval": 40, "eval_split": "validation", "majority": 0.55,
            "chance": 0.0 if metric == "mcc" else 0.55, "runs": runs, "median": {"acc": median, "mcc": median}}


def write_run(suite: Path, objective: str, seed: int, data: PreparedData, aggregate=None,
              budget: float | None = None, gain: float = 0.0) -> Path:
    """A finished run; with `budget`, of a sweep (its id names the budget, `gain` is added to
    every zero-shot score and taken from the held-out bits per byte)."""
    run_id = f"{objective}-mini-s{seed}-{f'{budget:g}-'.replace('+', '') if budget else ''}0123abcd"
    run = suite / run_id
    likelihood = objective in HELDOUT_BPB
    plan = write_plan(run, objective, seed, data, aggregate, budget)
    write_json(run / "train.json", {
        "run_id": run_id, "objective": objective, "size": "mini", "seed": seed, "steps": plan.steps,
        "tokens_seen": 4096 * plan.steps, "flops_spent": plan.total_flops * (1 + seed / 1000), "flops_per_step": 6.0e10,
        "params": 1_200_000, "params_trained": 1_300_000, "val_loss": 2.0 + seed / 10, "val_accuracy": 0.4,
        "bits_per_byte": 1.5 if likelihood else None,  # from the training loss: not the report's
        "wall_time_s": 60.0 + seed, "uniform_loss": math.log(512),
        "workers": [{"rank": 0, "node_id": f"node{seed}", "node_ip": "10.0.0.1", "host": "h"}]})
    for task, values in SCORES[objective].items():
        acc = values[seed] + gain
        metrics = {"acc": acc, "acc_stderr": 0.02 + seed / 100}
        if task == "synthetic_hellaswag":  # acc_norm is what synthetic-core reads; acc is lower
            metrics = {"acc": acc - 0.05, "acc_stderr": 0.02, "acc_norm": acc, "acc_norm_stderr": 0.02}
        write_json(run / "eval" / f"{task}.json", lm_eval_file(task, task, SCORING[objective], metrics, CHANCE[task]))
    if likelihood:
        bpb = HELDOUT_BPB[objective][seed] - gain
        metrics = {"bits_per_byte": bpb, "byte_perplexity": 2 ** bpb, "word_perplexity": 30.0}
        write_json(run / "eval" / "harness_heldout.json",
                   lm_eval_file("harness_heldout", "harness_heldout", SCORING[objective], metrics, None))
    for task, medians in FINETUNE[objective].items():
        write_json(run / "finetune" / f"{task}.json", finetune_file(task, objective, medians[seed]))
    write_json(run / "DONE", {"finished_at": "2026-01-01T00:00:00"})
    return run


@pytest.fixture
def suite(tmp_path) -> Path:
    suite, data = tmp_path / "demo", prepared_data(tmp_path / "data")
    for objective, seeds in (("clm", 3), ("mlm", 2)):
        for seed in range(seeds):
            write_run(suite, objective, seed, data)
    write_plan(suite / "unfinished-run", "prefix_lm", 0, data)  # planned, not started: no finished run
    return suite


def markdown_table(report: str, heading: str) -> list[dict]:
    """The rows of the first table under the heading that starts with `heading`."""
    section = report.split("\n## " + heading, 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return [dict(zip(cells[0], row)) for row in cells[2:]]


def row(rows: list[dict], **match) -> dict:
    found = [r for r in rows if all(r[k] == v for k, v in match.items())]
    assert len(found) == 1, (match, rows)
    return found[0]


def test_zero_shot_table_gives_mean_ci_centered_and_each_objectives_scoring(suite):
    report = write_report(suite, "Demo")[1].read_text()
    rows = markdown_table(report, "Zero-shot")
    glue = row(rows, task="synthetic_glue", metric="acc", objective="clm")
    assert glue == {"task": "synthetic_glue", "metric": "acc", "n-shot": "0", "chance": "0.500", "objective": "clm",
                    "size": "mini", "budget": "6e12 FLOPs", "scoring": "loglikelihood", "mean": "0.650", "95% CI": "[0.600, 0.700]",
                    "centered": "0.300", "stderr (lm-eval)": "0.030"}
    mlm = row(rows, task="synthetic_glue", metric="acc", objective="mlm")
    assert (mlm["scoring"], mlm["mean"], mlm["95% CI"], mlm["centered"]) == (
        "pseudo-loglikelihood", "0.540", "[0.520, 0.560]", "0.080")
    hellaswag = row(rows, task="synthetic_hellaswag", metric="acc_norm", objective="clm")
    assert (hellaswag["chance"], hellaswag["mean"], hellaswag["centered"]) == ("0.250", "0.475", "0.300")
    assert row(rows, task="synthetic_hellaswag", metric="acc", objective="clm")["mean"] == "0.425"
    assert not [r for r in rows if r["task"] == "harness_heldout"]
    assert {r["task"] for r in rows if r["objective"] == "mlm"} == set(SCORES["mlm"])


def test_training_table_takes_bits_per_byte_from_the_heldout_entry(suite):
    report = write_report(suite, "Demo")[1].read_text()
    rows = markdown_table(report, "Training")
    assert row(rows, objective="clm")["bits/byte held-out [95% CI]"] == "0.920 [0.900, 0.940]"
    assert row(rows, objective="mlm")["bits/byte held-out [95% CI]"] == "—"
    assert row(rows, objective="clm")["seeds"] == "3"
    assert row(rows, objective="mlm")["val loss [95% CI]"] == "2.050 [2.000, 2.100]"


def test_finetune_table_averages_the_medians_over_pretraining_seeds(suite):
    report = write_report(suite, "Demo")[1].read_text()
    rows = markdown_table(report, "Fine-tuning")
    assert len(rows) == 4  # the standard metric only: acc for sst2, mcc for cola
    sst2 = row(rows, task="synthetic_sst2", objective="clm")
    assert sst2 == {"task": "synthetic_sst2", "metric": "acc", "head": "last-token", "objective": "clm",
                    "size": "mini", "budget": "6e12 FLOPs", "pretraining seeds": "3", "fine-tuning seeds": "3", "mean of medians": "0.820",
                    "95% CI": "[0.800, 0.840]", "baseline": "0.550", "majority acc": "0.550"}
    cola = row(rows, task="synthetic_cola", objective="mlm")
    assert (cola["metric"], cola["head"], cola["mean of medians"], cola["95% CI"], cola["baseline"]) == (
        "mcc", "encoder-mean", "0.420", "[0.400, 0.440]", "0.000")


def test_aggregate_by_hand_and_missing_task_named(suite):
    report = write_report(suite, "Demo")[1].read_text()
    assert "## Aggregate: synthetic-core, version 1 (`synthetic-core-v1`)" in report
    assert "synthetic_hellaswag (acc_norm)" in report
    rows = markdown_table(report, "Aggregate")
    clm, mlm = row(rows, objective="clm"), row(rows, objective="mlm")
    assert (clm["mean"], clm["95% CI"], clm["runs with every task"], clm["missing"]) == (
        "0.217", "[0.150, 0.267]", "3/3", "")
    assert (mlm["mean"], mlm["95% CI"], mlm["runs with every task"], mlm["missing"]) == ("—", "—", "0/2", "synthetic_rte")
    assert clm["scoring"] == "loglikelihood" and mlm["scoring"] == "pseudo-loglikelihood"


def test_summary_csv_has_mean_and_interval_of_every_score(suite):
    csv_path, _ = write_report(suite, "Demo")
    summary = pd.read_csv(csv_path).set_index("objective")
    clm, mlm = summary.loc["clm"], summary.loc["mlm"]
    assert (clm["seeds"], mlm["seeds"]) == (3, 2)
    assert clm["aggregate:synthetic-core-v1_mean"] == pytest.approx(0.65 / 3)
    assert (clm["aggregate:synthetic-core-v1_ci_low"], clm["aggregate:synthetic-core-v1_ci_high"]) == (
        pytest.approx(0.15), pytest.approx(1.6 / 6))
    assert math.isnan(mlm["aggregate:synthetic-core-v1_mean"])
    assert clm["bits_per_byte_mean"] == pytest.approx(0.92) and math.isnan(mlm["bits_per_byte_mean"])
    assert clm["synthetic_glue:acc_ci_low"] == pytest.approx(0.60)
    assert mlm["finetune:synthetic_cola:mcc_mean"] == pytest.approx(0.42)
    assert math.isnan(mlm["synthetic_rte:acc_mean"])
    assert {"flops_spent_mean", "val_loss_ci_high", "uniform_loss_mean"} <= set(summary.columns)
    # A run.yaml without a budget (written before sweeps) is grouped at the FLOPs of its steps.
    assert list(pd.read_csv(csv_path).columns[:5]) == ["objective", "size", "budget", "seeds", "scoring"]
    assert (clm["budget"], mlm["budget"]) == (6e12, 6e12) and "budget_mean" not in summary


def test_where_the_workers_ran_stays_out_of_summary_csv(suite):
    with_workers = write_report(suite, "Demo")[0].read_bytes()
    for path in suite.glob("*/train.json"):
        train = json.loads(path.read_text())
        assert train.pop("workers")
        write_json(path, train)
    assert write_report(suite, "Demo")[0].read_bytes() == with_workers


def test_declared_aggregate_wins_and_an_unknown_one_is_a_user_error(tmp_path):
    suite, data = tmp_path / "declared", prepared_data(tmp_path / "data")
    inline = {"name": "glue-pair", "version": 1, "tasks": {"synthetic_glue": "acc", "synthetic_sst2": "acc"}}
    for seed in range(2):
        write_run(suite, "mlm", seed, data, aggregate=inline)
    report = write_report(suite, "Declared")[1].read_text()
    # mlm seed 0: (0.52 - .5) / .5 = 0.04 and (0.58 - .5) / .5 = 0.16 -> 0.10; seed 1: 0.12, 0.24 -> 0.18
    assert "## Aggregate: glue-pair, version 1 (`glue-pair-v1`)" in report
    assert (row(markdown_table(report, "Aggregate"), objective="mlm")["mean"]) == "0.140"

    bad = write_run(tmp_path / "bad", "mlm", 0, data)
    record = read_yaml(bad / "run.yaml")  # as a harness that knows a synthetic-core-v2 would record it
    write_yaml(bad / "run.yaml", record | {"eval": record["eval"] | {"aggregate": "synthetic-core-v2"}})
    with pytest.raises(UserError, match="unknown aggregate 'synthetic-core-v2'.*did you mean") as err:
        write_report(tmp_path / "bad", "Bad")
    assert str(bad / "run.yaml") in err.value.where


def test_report_keeps_data_card_notes_and_runs(suite):
    report = write_report(suite, "Demo", "Two objectives.")[1].read_text()
    # The answer first, then the description and the partial-results notice (the fixture's unfinished run)
    assert report.startswith("# Demo\n\n## Headline\n\n- **Overall** (6.0e12 FLOPs, mini): of 7 task comparisons, "
                             "clm wins 5 and mlm 2; significantly: clm 1, mlm 1.\n")
    assert "Partial: 5 of 6 planned runs are done" in report.split("\n## ", 2)[1]
    assert "\n\nTwo objectives.\n\n**Partial results: 5 of 6 planned runs are done.** 1 not trained (absent " \
        "from the tables)." in report
    assert "\n## Data\n" in report
    assert "Entropy floor of the held-out text" in report and "0.2205 bits/byte" in report
    assert "centered" in report.split("## Reading this report")[1]
    assert len(markdown_table(report, "Runs")) == 5


def test_an_evaluation_file_without_the_harness_block_is_a_user_error(tmp_path):
    suite, data = tmp_path / "old", prepared_data(tmp_path / "data")
    run = write_run(suite, "mlm", 0, data)
    write_json(run / "eval" / "synthetic_glue.json", {  # a one-task format of older versions: not read
        "task": "synthetic_glue", "scoring": "pseudo-loglikelihood", "chance": 0.5,
        "metrics": {"acc": 0.58, "acc_stderr": 0.03}, "n-samples": {"synthetic_glue": {"effective": 40}},
        "n-shot": {"synthetic_glue": 0}})
    with pytest.raises(UserError, match="not an evaluation result: expected a 'harness' block") as err:
        write_report(suite, "Old")
    assert err.value.where == str(run / "eval" / "synthetic_glue.json")
    write_json(run / "eval" / "synthetic_glue.json", {"acc": 0.5})
    with pytest.raises(UserError, match="not an evaluation result"):
        write_report(suite, "Old")


def test_partial_report_names_each_unfinished_run_with_its_state(suite):
    data = prepared_data(suite.parent / "data")
    trained = suite / "mlm-mini-s1-0123abcd"
    (trained / "DONE").unlink()  # trained; its evaluation was cut short
    interrupted = suite / "clm-mini-s3-0123abcd"  # stopped after a checkpoint at step 40
    write_plan(interrupted, "clm", 3, data)
    (interrupted / "metrics.jsonl").write_text("".join(
        json.dumps({"kind": "train", "step": step, "loss": 3.0}) + "\n" for step in (20, 40, 45)))
    (interrupted / "checkpoints").mkdir()
    (interrupted / "checkpoints" / "latest").write_text("step40")
    failed = suite / "ul2-mini-s0-0123abcd"  # as harness.schedule records a failure (see test_failures)
    write_plan(failed, "ul2", 0, data)
    write_yaml(failed / "FAILED", {"run_id": failed.name, "failures": [{
        "failed": "train", "error": "RuntimeError", "message": "RuntimeError: a | b\nc", "error_tail": "...",
        "when": "2026-01-01T00:00:00+00:00", "after_step": 30, "steps": 100,
        "logs": [str(failed / "logs" / "worker-0.log")]}]})

    report = write_report(suite, "Demo")[1].read_text()
    assert ("**Partial results: 4 of 8 planned runs are done.** 1 failed; 3 not trained (absent from the "
            "tables); 1 trained, evaluation unfinished. Each is named under Unfinished runs and Failed runs.") in report
    states = {r["run"]: r["state"] for r in markdown_table(report, "Unfinished runs")}
    assert states == {interrupted.name: "training unfinished at step 45 of 100; resumes from checkpoint step40",
                      trained.name: "trained; evaluation unfinished", "unfinished-run": "not started",
                      failed.name: "training failed at step 30 of 100"}
    assert "| RuntimeError: a \\| b c " in report  # one line; the pipe escaped, not a column
    assert markdown_table(report.replace("\\|", "/"), "Failed runs") == [{
        "run": failed.name, "failed": "train", "error": "RuntimeError: a / b c", "at step": "30 of 100",
        "when (UTC)": "2026-01-01T00:00:00+00:00", "logs": f"{failed.name}/logs/worker-0.log"}]
    training = markdown_table(report, "Training")
    assert row(training, objective="clm")["seeds"] == "3 of 4" and row(training, objective="mlm")["seeds"] == "2"
    assert row(training, objective="ul2")["seeds"] == "0 of 1" and row(training, objective="ul2")["FLOPs spent"] == "failed"
    ul2 = row(markdown_table(report, "Aggregate"), objective="ul2")
    assert (ul2["mean"], ul2["runs with every task"], ul2["scoring"]) == ("failed", "0/1", "prefix-loglikelihood")
    assert ("Not here, for want of a finished run: ul2 (mini, 6e12 FLOPs, failed), prefix_lm (mini, 6e12 FLOPs, "
            "missing)."  # unfinished-run
            in report.split("## Zero-shot")[1])


def test_runs_the_suite_no_longer_plans_are_left_out(suite):
    """suite.json lists the runs the suite plans now; a finished run trained for older data (a
    changed tokenizer, say) stays on disk but is not mixed into the tables."""
    old = write_run(suite.parent / "elsewhere", "clm", 0, prepared_data(suite.parent / "older-data"))
    for name in ("run.yaml", "train.json"):  # the same run, under the id of other data
        text = (old / name).read_text().replace("0123abcd", "99999999")
        (old / name).write_text(text)
    old.rename(suite / "clm-mini-s0-99999999")
    current = sorted(p.name for p in suite.iterdir() if p.name != "clm-mini-s0-99999999")
    write_json(suite / "suite.json", {"name": "demo", "description": "", "runs": current})
    summary = pd.read_csv(write_report(suite, "Demo")[0]).set_index("objective")
    assert summary.loc["clm", "seeds"] == 3  # not 4: the older run is not counted
    report = (suite / "report.md").read_text()
    assert "clm-mini-s0-99999999" not in report


def test_a_run_yaml_that_is_not_a_run_record_is_a_user_error_naming_it(suite):
    foreign = suite / "foreign-run" / "run.yaml"
    write_yaml(foreign, {"run_id": "foreign-run"})  # not written by `harness run`
    with pytest.raises(UserError, match="not a run record of this harness") as err:
        write_report(suite, "Demo")
    assert err.value.where == str(foreign)


def test_a_sweep_has_a_row_per_budget_smallest_first(tmp_path):
    """clm and mlm at 3e12 and 1.2e13 FLOPs, two seeds each; mlm's larger budget never trained."""
    suite, data = tmp_path / "sweep", prepared_data(tmp_path / "data")
    for seed in range(2):
        for objective in ("clm", "mlm"):
            write_run(suite, objective, seed, data, budget=3e12)
        write_run(suite, "clm", seed, data, budget=1.2e13, gain=0.1)
        write_plan(suite / f"mlm-mini-s{seed}-1.2e13-0123abcd", "mlm", seed, data, budget=1.2e13)
    csv_path, md_path = write_report(suite, "Sweep")
    summary = pd.read_csv(csv_path)
    assert list(zip(summary["objective"], summary["budget"], summary["seeds"])) == [
        ("clm", 3e12, 2), ("mlm", 3e12, 2), ("clm", 1.2e13, 2)]  # in run-id order 1.2e13 comes first
    clm = summary[summary["objective"] == "clm"].set_index("budget")
    assert clm.loc[1.2e13, "synthetic_glue:acc_mean"] == pytest.approx(clm.loc[3e12, "synthetic_glue:acc_mean"] + 0.1)
    assert clm.loc[1.2e13, "bits_per_byte_mean"] == pytest.approx(0.92 - 0.1)
    assert clm.loc[1.2e13, "steps_mean"] == 4 * clm.loc[3e12, "steps_mean"] == 200
    report = md_path.read_text()
    training = markdown_table(report, "Training")
    assert [(r["objective"], r["budget"], r["seeds"]) for r in training] == [
        ("clm", "3e12 FLOPs", "2"), ("mlm", "3e12 FLOPs", "2"), ("clm", "1.2e13 FLOPs", "2"),
        ("mlm", "1.2e13 FLOPs", "0 of 2")]
    glue = [r for r in markdown_table(report, "Zero-shot") if r["task"] == "synthetic_glue" and r["objective"] == "clm"]
    assert [(r["budget"], r["mean"]) for r in glue] == [("3e12 FLOPs", "0.625"), ("1.2e13 FLOPs", "0.725")]
    aggregate = markdown_table(report, "Aggregate")
    assert row(aggregate, objective="mlm", budget="1.2e13 FLOPs")["mean"] == "missing"
    assert "mlm (mini, 1.2e13 FLOPs, missing)" in report.split("## Zero-shot")[1]
