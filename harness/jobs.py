"""The typed records of a planned run, and the jobs its components receive.

`RunPlan` is the whole resolved run, written as RUN/run.yaml and read back through this type by
the report and `harness eval`. Nothing downstream receives all of it: training workers get a
`TrainJob` (harness.train), each unit of evaluation an `EvalJob` (harness.units). This module is
light (pydantic and the schema only), so that reading a record costs no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from harness.data.entry import PreparedData
from harness.errors import UserError
from harness.results import read_yaml
from harness.schema import EvalConfig, ResourcesConfig, Strict, TrackingConfig, TrainConfig


class TrainJob(Strict):
    """What every worker of a training run needs (harness.train), and nothing of evaluation."""

    run_id: str
    suite: str
    objective: str
    objective_config: dict[str, Any]
    size: str
    seed: int
    steps: int
    warmup_steps: int
    flops_per_step: float
    tokens_per_step: int
    params: int          # the model kept and evaluated
    params_trained: int  # everything optimized (with extra heads, a generator)
    seq_len: int
    block_length: int    # raw tokens per example (span corruption reads more than seq_len)
    run_dir: Path
    data: PreparedData = Field(repr=False)
    train: TrainConfig = Field(repr=False)
    resources: ResourcesConfig = Field(repr=False)
    # Where the metrics also go (harness.tracking); the default lets older run.yaml files read.
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, repr=False)
    # The run's own budget (one of a sweep's; the trackers' tag); None in run.yaml files written before sweeps.
    budget: float | None = None
    budget_unit: Literal["flops", "tokens"] | None = None

    @property
    def total_flops(self) -> float:
        return self.steps * self.flops_per_step

    @property
    def total_tokens(self) -> int:
        return self.steps * self.tokens_per_step


class RunPlan(TrainJob):
    """One run of a suite, resolved: its training job, what it is called in the report, how its
    model is scored and how it is evaluated.

    RUN/run.yaml is this record; the report and `harness eval` read it back through this type.
    The components that do the work get only their part: `train_job()` for the training workers,
    `eval_job()` for the units of evaluation."""

    label: str           # the objective's name in the report (two configs of one objective differ)
    architecture: str
    scoring: str
    defines_likelihood: bool
    scoring_args: dict[str, Any]
    eval: EvalConfig = Field(repr=False)

    def record(self) -> dict:
        """run.yaml's content: plain YAML types, paths as text."""
        return self.model_dump(mode="json")

    @classmethod
    def read(cls, path: Path) -> RunPlan:
        """A run.yaml read back; one that does not describe a run is a UserError."""
        try:
            return cls.model_validate(read_yaml(path))
        except ValidationError as e:
            err = e.errors()[0]
            key = ".".join(str(part) for part in err["loc"])
            raise UserError(f"not a run record of this harness: {key}: {err['msg']}", where=str(path)) from None

    def train_job(self) -> TrainJob:
        return TrainJob(**{name: getattr(self, name) for name in TrainJob.model_fields})

    def eval_job(self) -> EvalJob:
        return EvalJob(run_id=self.run_id, run_dir=self.run_dir, seed=self.seed, steps=self.steps,
                       architecture=self.architecture, scoring=self.scoring,
                       defines_likelihood=self.defines_likelihood, scoring_args=self.scoring_args,
                       seq_len=self.seq_len, tasks_dir=self.data.tasks_dir, eval=self.eval,
                       use_gpu=self.resources.use_gpu)


class EvalJob(Strict):
    """What one unit of evaluation or fine-tuning needs (harness.units): the trained run's
    folder, how its model is scored, the task files and the eval settings; nothing of training."""

    run_id: str
    run_dir: Path
    seed: int
    steps: int  # of the training, for the record of a failure
    architecture: str
    scoring: str
    defines_likelihood: bool
    scoring_args: dict[str, Any]
    seq_len: int
    tasks_dir: Path
    eval: EvalConfig
    use_gpu: bool
