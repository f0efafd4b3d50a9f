"""Units of evaluation: after training, a run is evaluated in units, each one Ray task writing one
file of the run directory.

    EvalUnit(job, task)        eval/<task>.json           an lm-eval task, group or tag of eval.tasks
                               (and eval/<task>.samples/ with eval.log_samples)
    EvalUnit(job, heldout)     eval/harness_heldout.json  bits per byte, likelihood objectives only
    FinetuneUnit(job, task)    finetune/<task>.json       the fine-tuning track

A unit is current when its file exists and was written for the settings asked for now, so adding
a task to a finished suite evaluates that task alone. The pipeline, the scheduler and
`harness eval` all go through these classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from harness.evaluate.samples import samples_dir
from harness.evaluate.tasks import HELDOUT_TASK
from harness.jobs import EvalJob, TrainJob
from harness.results import RunDir, read_json


@dataclass(frozen=True)
class Unit:
    job: EvalJob
    name: str
    kind: ClassVar[str]  # also the folder of the run that holds its results

    @property
    def label(self) -> str:
        return f"{self.kind} {self.name}"

    @property
    def result_path(self) -> Path:
        return Path(self.job.run_dir) / self.kind / f"{self.name}.json"

    @property
    def log_path(self) -> Path:
        return RunDir(self.job.run_dir).logs / f"{self.kind}-{self.name.replace('/', '_')}.log"

    def is_current(self) -> bool:
        """Whether its file exists, whole, and was written for the settings asked for now."""
        if not self.result_path.exists():
            return False
        try:
            return self.written_for(read_json(self.result_path))
        except ValueError:  # cut short: evaluate again
            return False

    def written_for(self, written: dict) -> bool:
        raise NotImplementedError

    def run(self) -> dict:
        """Evaluate, write the result file, return its content (runs inside a Ray task)."""
        raise NotImplementedError


class EvalUnit(Unit):
    """One lm-eval task, group or tag (or the held-out text) on the run's exported model."""

    kind = "eval"

    def request(self) -> dict:
        if self.name == HELDOUT_TASK:  # the whole held-out text, as it is
            return {"num_fewshot": None, "limit": None}
        return {"num_fewshot": self.job.eval.num_fewshot, "limit": self.job.eval.limit}

    def written_for(self, written: dict) -> bool:
        return written.get("harness", {}).get("request") == self.request()

    def is_current(self) -> bool:
        """As any unit; and with `eval.log_samples`, its samples are there too (a result written
        without them is evaluated again, so that turning the setting on gives every entry its
        samples)."""
        if not super().is_current():
            return False
        return not self.job.eval.log_samples or samples_dir(self.result_path.parent, self.name).is_dir()

    def run(self) -> dict:
        from harness.evaluate.run import evaluate_entry  # lm-eval and torch: in the Ray task only

        job, run, request = self.job, RunDir(self.job.run_dir), self.request()
        return evaluate_entry(run.model, job.scoring, self.name, tasks_dir=job.tasks_dir,
                              out_dir=run.eval_dir, bundle=job.eval.bundle,
                              num_fewshot=request["num_fewshot"], batch_size=job.eval.batch_size,
                              limit=request["limit"], seed=job.seed, model_args=job.scoring_args,
                              cache_dir=run.eval_dir / ".cache" if job.eval.cache else None,
                              log_samples=job.eval.log_samples)


class FinetuneUnit(Unit):
    """One classification task of the fine-tuning track, every fine-tuning seed."""

    kind = "finetune"

    def settings(self) -> dict:
        return self.job.eval.finetune.model_dump(mode="json", exclude={"tasks"})

    def written_for(self, written: dict) -> bool:
        return written.get("settings") == self.settings()

    def run(self) -> dict:
        from harness.evaluate.finetune import finetune_model  # torch: in the Ray task only

        job, run = self.job, RunDir(self.job.run_dir)
        return finetune_model(run.model, job.architecture, self.name, job.eval.finetune,
                              tasks_dir=job.tasks_dir, bundle_dir=job.eval.bundle,
                              max_length=job.seq_len, out_dir=run.finetune_dir)


@dataclass
class RunWork:
    """A run with work left: its training (None when trained) and its pending units."""

    run_id: str
    run_dir: Path
    steps: int
    train: TrainJob | None
    units: list[Unit]


def units_of(job: EvalJob, tasks: Sequence[str] | None = None,
             finetune: Sequence[str] | None = None) -> list[Unit]:
    """The units of a run: its eval.tasks, the held-out text where the objective defines a
    likelihood and eval.bits_per_byte asks for it, and its fine-tuning tasks. `tasks` and
    `finetune` replace the suite's lists (as `harness eval --tasks ... --finetune ...` does)."""
    if tasks is None:
        tasks = [*job.eval.tasks, *([HELDOUT_TASK] if job.defines_likelihood and job.eval.bits_per_byte else [])]
    finetune = job.eval.finetune.tasks if finetune is None else finetune
    return [*(EvalUnit(job, task) for task in tasks), *(FinetuneUnit(job, task) for task in finetune)]


def pending(units: Sequence[Unit]) -> list[Unit]:
    return [unit for unit in units if not unit.is_current()]


def preflight(tasks: Sequence[str], finetune_tasks: Sequence[str], tasks_dir: Path,
              bundle: Path | None) -> None:
    """Every evaluation and fine-tuning task loads, before any cluster resource is taken."""
    from harness.evaluate.finetune import check_finetune_tasks  # torch, transformers
    from harness.evaluate.tasks import check_tasks

    check_tasks(list(tasks), tasks_dir, bundle)
    check_finetune_tasks(list(finetune_tasks), tasks_dir, bundle)


def check_loads(units: Sequence[Unit]) -> None:
    """`preflight` for the tasks of these units (of one run)."""
    if units:
        job = units[0].job
        preflight([u.name for u in units if isinstance(u, EvalUnit)],
                  [u.name for u in units if isinstance(u, FinetuneUnit)], job.tasks_dir, job.eval.bundle)
