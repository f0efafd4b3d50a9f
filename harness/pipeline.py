"""One suite, end to end: data, plan, schedule (train then evaluate), report.

Everything that can be wrong with the user's input is checked before Ray starts: the suite
(harness.suite), the data (prepared once for all runs), the budget (each run's steps), and the
evaluation tasks.
"""

from __future__ import annotations

import time
from pathlib import Path

from harness import report
from harness.data import BASE_SPECIAL_TOKENS, PreparedData, prepare
from harness.plan import RunPlan, plan_suite
from harness.progress import Progress
from harness.results import RunDir, write_json, write_yaml
from harness.suite import Suite
from objectives import registry


def special_tokens(suite: Suite) -> list[str]:
    """Every special token any objective of the suite needs, each once."""
    tokens = list(BASE_SPECIAL_TOKENS)
    for entry in suite.objectives:
        tokens += [t for t in registry.get(entry.name).special_tokens if t not in tokens]
    return tokens


def prepare_and_plan(suite: Suite, results_root: Path) -> tuple[PreparedData, list[RunPlan]]:
    data = prepare(suite.data, special_tokens(suite), cache_root=results_root / "_data")
    from harness.evaluate import check_tasks
    check_tasks(suite.eval.tasks, data.tasks_dir)
    return data, plan_suite(suite, data, results_root / suite.name)


def run_suite(suite: Suite, results_root: Path, address: str | None = None,
              progress: Progress | None = None) -> int:
    """Train and evaluate every unfinished run, then write the report; 0 when all succeeded."""
    progress = progress or Progress()
    progress.event(f"suite {suite.name} (profile {suite.profile}): preparing data")
    data, plans = prepare_and_plan(suite, results_root)
    progress.event(f"data ready: {data.n_train_tokens:,} training tokens, vocabulary {data.vocab_size}")
    work = _pending(plans, progress)
    outcome = None
    if work:
        from harness import schedule  # ray is imported only when there is work for it
        schedule.connect(address, use_gpu=suite.resources.use_gpu)
        try:
            outcome = schedule.execute(work, evaluate_run, _mark_done, progress)
        finally:
            schedule.shutdown()
    suite_dir = results_root / suite.name
    csv_path, md_path = report.write_report(suite_dir, f"Suite {suite.name}", suite.description)
    progress.event(f"report: {md_path} (table: {csv_path})")
    if outcome and outcome.failed:
        for run_id, why in outcome.failed.items():
            progress.event(f"FAILED {run_id}: {why}")
        return 1
    return 0


def _pending(plans: list[RunPlan], progress: Progress) -> list[tuple[RunPlan, str]]:
    """(plan, first stage) for every run not yet done; writes each run's run.yaml."""
    work, counts = [], {"done": 0, "trained": 0, "partial": 0, "new": 0}
    for plan in plans:
        run = RunDir(Path(plan.run_dir))
        counts[run.state] += 1
        if run.state == "done":
            continue
        if run.state == "partial":
            run.check_checkpoint(plan.resources["workers_per_run"], plan.train["zero_stage"])
        if not run.run_yaml.exists():
            write_yaml(run.run_yaml, plan.to_dict())
        work.append((plan, "eval" if run.state == "trained" else "train"))
    progress.event(f"{len(plans)} runs: {counts['done']} done, {counts['trained']} to evaluate, "
                   f"{counts['partial']} to resume, {counts['new']} to train")
    return work


def evaluate_run(plan_dict: dict) -> dict:
    """Evaluate one trained run (runs inside a Ray task)."""
    from harness.evaluate import evaluate_model
    plan = RunPlan.from_dict(plan_dict)
    run, ev = RunDir(Path(plan.run_dir)), plan.eval
    return evaluate_model(run.model, plan.scoring, ev["tasks"], Path(plan.data["tasks_dir"]),
                          run.eval_dir, batch_size=ev["batch_size"], limit=ev["limit"], seed=plan.seed,
                          extra_model_args=plan.scoring_args)


def _mark_done(plan: RunPlan) -> None:
    write_json(RunDir(Path(plan.run_dir)).done, {"finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")})



