"""One suite, end to end: data, plan, schedule (train then evaluate), report.

Everything that can be wrong with the user's input is checked before Ray starts: the suite
(harness.suite), the data (prepared once for all runs), the budget (each run's steps), and the
evaluation tasks.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from harness import report, units
from harness.data.prepare import BASE_SPECIAL_TOKENS, PreparedData, prepare
from harness.errors import UserError
from harness.export.card import write_cards
from harness.jobs import RunPlan
from harness.plan import check_validation_split, plan_suite
from harness.progress import Progress
from harness.evaluate.weights import safetensors_weights
from harness.train.checkpoint import check_resumable
from harness.lock import SuiteLock
from harness.results import SUITE_RECORD, RunDir, read_json, read_yaml, write_json, write_yaml
from harness.schema import Suite
from objectives import registry


def special_tokens(suite: Suite) -> list[str]:
    """Every special token any objective of the suite needs, each once."""
    tokens = list(BASE_SPECIAL_TOKENS)
    for entry in suite.objectives:
        tokens += [t for t in registry.get(entry.name).special_tokens if t not in tokens]
    return tokens


def prepare_and_plan(suite: Suite, results_root: Path) -> tuple[PreparedData, list[RunPlan]]:
    check_writable(results_root, where="--results")
    data = prepare(suite.data, special_tokens(suite), cache_root=results_root / "_data")
    check_validation_split(suite, data)
    units.preflight(suite.eval.tasks, suite.eval.finetune.tasks, data.tasks_dir, suite.eval.bundle)
    return data, plan_suite(suite, data, results_root / suite.name)


def check_writable(folder: Path, where: str) -> None:
    """Create and remove a probe file in `folder`: whatever would stop the harness writing there
    (permissions, a read-only or immutable folder, a file in the way) is found before any data is
    prepared. Folders made for the probe are removed again, so a refused suite leaves nothing."""
    made = [f for f in (folder, *folder.parents) if not f.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        reason = e.strerror + (f": {e.filename}" if e.filename else "")
        raise UserError(f"cannot write in {folder} ({reason}); give a folder you can write to",
                        where=where) from None
    finally:
        for f in made:  # innermost first
            with contextlib.suppress(OSError):
                f.rmdir()


def run_suite(suite: Suite, results_root: Path, address: str | None = None,
              progress: Progress | None = None) -> int:
    """Train and evaluate every unfinished run, then write the report; 0 when all succeeded."""
    progress = progress or Progress()
    suite_dir = results_root / suite.name
    check_writable(results_root, where="--results")
    with SuiteLock(suite_dir, "harness run", notice=progress.event):
        progress.event(f"suite {suite.name} (profile {suite.profile}): preparing data")
        data, plans = prepare_and_plan(suite, results_root)
        progress.event(f"data ready: {data.n_train_tokens:,} training tokens, vocabulary {data.vocab_size}")
        record_suite(suite_dir, suite, plans)
        _note_superseded(suite_dir, plans, progress)
        work = _pending(plans, progress)
        outcome = None
        if work:
            from harness import nodes, schedule  # ray is imported only when there is work for it
            began = time.time()
            schedule.connect(address, use_gpu=suite.resources.use_gpu)
            progress.event(f"ray: {'joined ' + address if address else 'started (embedded)'} in {time.time() - began:.1f} s")
            try:
                if checked := nodes.check_shared_storage(results_root):  # before any run starts
                    progress.event(f"results folder {results_root}: seen by all {checked} nodes")
                outcome = schedule.execute(work, mark_done, progress)
            finally:
                schedule.shutdown()
        csv_path, md_path = report.write_report(suite_dir, f"Suite {suite.name}", suite.description)
        write_cards(suite_dir)  # every finished run's RUN/model/README.md, with every result
    progress.event(f"report: {md_path} (table: {csv_path})")
    if outcome and outcome.failed:
        for what, why in outcome.failed.items():
            progress.event(f"FAILED {what}: {why}")
        return 1
    return 0


def record_suite(suite_dir: Path, suite: Suite, plans: list[RunPlan]) -> None:
    """suite.json: the suite's name, profile, description and the runs it plans now. The report
    shows these runs only, so runs trained for older data or settings are kept but not mixed in.
    Rewritten only when it changes, so a re-run with nothing to do touches no file."""
    record = {"name": suite.name, "profile": suite.profile, "description": suite.description,
              "runs": [plan.run_id for plan in plans]}
    path = suite_dir / SUITE_RECORD
    if not path.exists() or read_json(path) != record:
        write_json(path, record)


def _note_superseded(suite_dir: Path, plans: list[RunPlan], progress: Progress) -> None:
    """Say once, in one line, that finished runs of this suite no longer match what it asks for."""
    planned = {plan.run_id for plan in plans}
    old = sorted(path.parent.name for path in suite_dir.glob("*/train.json") if path.parent.name not in planned)
    if old:
        progress.event(
            f"notice: {len(old)} finished run{'s' * (len(old) > 1)} in {suite_dir} {'were' if len(old) > 1 else 'was'} "
            f"trained for other data or settings than the suite now asks for (a changed tokenizer or "
            f"special tokens, budget or training settings); kept, but not in the report: {', '.join(old)}")


def _pending(plans: list[RunPlan], progress: Progress) -> list[units.RunWork]:
    """The runs with work left (training, or units not yet current); writes each run's run.yaml
    and marks DONE the runs that turn out finished."""
    work, counts = [], {"done": 0, "evaluate": 0, "partial": 0, "new": 0}
    for plan in plans:
        run = RunDir(plan.run_dir)
        _record_settings(run, plan)
        state = run.state
        trained = state in ("done", "trained")
        todo = units.units_of(plan.eval_job())
        todo = units.pending(todo) if trained else todo
        if trained and not todo:
            counts["done"] += 1
            if state != "done":
                mark_done(run.root)
            continue
        counts["evaluate" if trained else state] += 1
        if state == "partial":
            _check_resumable(run, plan, progress)
        if trained:
            safetensors_weights(run.model)  # a planted pickle is refused before Ray starts
            run.done.unlink(missing_ok=True)
        work.append(units.RunWork(plan.run_id, plan.run_dir, plan.steps, None if trained else plan.train_job(), todo))
    progress.event(f"{len(plans)} runs: {counts['done']} done, {counts['evaluate']} to evaluate, "
                   f"{counts['partial']} to resume, {counts['new']} to train")
    return work


def _check_resumable(run: RunDir, plan: RunPlan, progress: Progress) -> None:
    for note in check_resumable(run.checkpoints, plan.resources.workers_per_run, plan.train.zero_stage):
        progress.event(f"run {plan.run_id}: {note}")


def _record_settings(run: RunDir, plan: RunPlan) -> None:
    """run.yaml holds the settings the run was last asked for (evaluation settings may change
    between invocations; the report reads the declared aggregate from it). Rewritten only when
    they differ, so a re-run with nothing to do touches no file."""
    settings = plan.record()
    if not run.run_yaml.exists() or read_yaml(run.run_yaml) != settings:
        write_yaml(run.run_yaml, settings)


def mark_done(run_dir: Path) -> None:
    run = RunDir(run_dir)
    write_json(run.done, {"finished_at": time.strftime("%Y-%m-%dT%H:%M:%S")})
    run.failed.unlink(missing_ok=True)  # an earlier attempt's failures
