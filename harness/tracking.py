"""Experiment tracking: every metrics row of a run, as it is logged, to TensorBoard and to the
trackers its suite names (MLflow, Weights & Biases).

TensorBoard is always on: RUN/tensorboard/ holds the event files, read with
`tensorboard --logdir results/<suite>`. A suite may add MLflow or W&B (harness.schema
TrackingConfig); one tracker run is one harness run, named by its run id and tagged with its
objective, size, seed, budget, run id and suite.

    tracker = open_tracker(job, RunDir(job.run_dir), after_step=0)   # rank 0, after resume
    tracker.log({"kind": "train", "step": 10, "loss": 5.1, "lr": 1e-3})  # train/loss, train/lr
    tracker.log({"kind": "val", "step": 10, "val_loss": 5.3})            # val/val_loss
    tracker.close()                                                      # or close(failed=True)

A scalar is named `<kind>/<key>` and plotted against the optimizer step.

Resume. A run resumed at step N continues the same tracker runs: TensorBoard purges its points
past N (SummaryWriter's purge_step); MLflow reopens the run remembered in RUN/tracking.json and
skips the points it already holds (resume is exact, so they are the same numbers); W&B resumes
the run of the same id (online, W&B itself drops steps it has seen; offline, each attempt is a
separate file that `wandb sync` joins).

Failure. TensorBoard writes local files, as metrics.jsonl does, and its errors stop the run like
any other write. An outside tracker that fails (an unreachable server, a refused login) is named
in one warning in the run's log and dropped for the rest of the attempt; training goes on.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from harness.jobs import TrainJob
from harness.results import RunDir, write_atomic
from harness.schema import MlflowConfig, WandbConfig

LOG = logging.getLogger(__name__)
NOT_SCALARS = {"kind", "step", "steps"}  # `steps` is the run's length, the same on every row


def scalars(row: dict) -> dict[str, float]:
    """A metrics row's numbers, named `<kind>/<key>` (train/loss, val/val_loss).

    >>> scalars({"kind": "val", "step": 20, "val_loss": 2.5})
    {'val/val_loss': 2.5}
    """
    kind = row.get("kind", "train")
    return {f"{kind}/{key}": float(value) for key, value in row.items()
            if key not in NOT_SCALARS and isinstance(value, (int, float)) and not isinstance(value, bool)}


def run_tags(job: TrainJob) -> dict[str, str]:
    """What a tracker run is tagged with. The budget is the plan's where it has one (a run.yaml
    written before budgets could be lists has none); otherwise the FLOPs the run spends."""
    budget, unit = job.budget, job.budget_unit
    if budget is None:
        budget, unit = job.total_flops, "flops"
    return {"run_id": job.run_id, "suite": job.suite, "objective": job.objective, "size": job.size,
            "seed": str(job.seed), "budget": f"{budget:.4g}", "budget_unit": str(unit or "flops")}


def run_params(job: TrainJob) -> dict[str, str]:
    """The settings a tracker run records: the train section, the objective's config and the
    plan's ledger (steps, FLOPs and tokens per step, parameters)."""
    params = {f"train.{k}": v for k, v in job.train.model_dump(mode="json").items()}
    params |= {f"objective.{k}": v for k, v in job.objective_config.items()}
    params |= {name: getattr(job, name) for name in (
        "steps", "warmup_steps", "flops_per_step", "tokens_per_step", "params", "params_trained", "seq_len")}
    params["workers_per_run"] = job.resources.workers_per_run
    return {k: str(v) for k, v in params.items()}


class Tracker:
    """The run's TensorBoard writer and its outside trackers, fed one metrics row at a time."""

    def __init__(self, tensorboard: TensorBoard, others: list):
        self.tensorboard, self.others = tensorboard, others

    def log(self, row: dict) -> None:
        values = scalars(row)
        self.tensorboard.log(row["step"], values)
        self._each("log", row["step"], values)

    def close(self, failed: bool = False) -> None:
        self._each("close", failed)
        self.tensorboard.close()

    def _each(self, method: str, *args) -> None:
        for backend in list(self.others):
            try:
                getattr(backend, method)(*args)
            except Exception as e:  # a tracker must never stop the training
                self.others.remove(backend)
                LOG.warning("tracking.%s failed (%s: %s); it gets no more metrics in this attempt, "
                            "TensorBoard and metrics.jsonl go on", backend.key, type(e).__name__, e)


def open_tracker(job: TrainJob, run: RunDir, after_step: int) -> Tracker:
    """The tracker of a run that starts, or resumes, after `after_step`; called by rank 0 only."""
    others = []
    for key, config, start in (("mlflow", job.tracking.mlflow, MlflowRun.open),
                               ("wandb", job.tracking.wandb, WandbRun.open)):
        if config is None:
            continue
        try:
            others.append(start(config, job, run))
        except Exception as e:  # e.g. an unreachable server: the run trains without it
            LOG.warning("tracking.%s could not start (%s: %s); this attempt logs to TensorBoard "
                        "and metrics.jsonl only", key, type(e).__name__, e)
    return Tracker(TensorBoard(run.root / "tensorboard", after_step), others)


# --- the backends ------------------------------------------------------------------------------


class TensorBoard:
    """Event files under RUN/tensorboard/; points past a resumed step are purged."""

    def __init__(self, folder: Path, after_step: int):
        from torch.utils.tensorboard import SummaryWriter
        # purge_step marks every older point at or past it as stale; readers drop them
        purge = after_step + 1 if folder.exists() else None
        self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge)

    def log(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, global_step=step)
        self.writer.flush()  # a crash loses no point metrics.jsonl already holds

    def close(self) -> None:
        self.writer.close()


def remembered(run: RunDir, key: str) -> dict:
    """What RUN/tracking.json remembers of tracker `key` (its run id and where), or {}."""
    path = run.root / "tracking.json"
    return json.loads(path.read_text()).get(key, {}) if path.exists() else {}


def remember(run: RunDir, key: str, record: dict) -> None:
    path = run.root / "tracking.json"
    known = json.loads(path.read_text()) if path.exists() else {}
    write_atomic(path, json.dumps(known | {key: record}, indent=2) + "\n")


class MlflowRun:
    """One MLflow run per harness run, continued when the harness run resumes."""

    key = "mlflow"

    def __init__(self, client, run_id: str, logged: dict[str, int]):
        self.client, self.run_id, self.logged = client, run_id, logged

    @classmethod
    def open(cls, config: MlflowConfig, job: TrainJob, run: RunDir) -> MlflowRun:
        if config.uri.startswith("file:"):
            # MLflow 3 refuses file stores unless asked; they are what works offline.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient
        client = MlflowClient(tracking_uri=config.uri)
        before = remembered(run, cls.key)
        if before.get("uri") == config.uri and _exists(client, before["run_id"]):
            client.update_run(before["run_id"], status="RUNNING")
            return cls(client, before["run_id"], _logged_steps(client, before["run_id"]))
        experiment = config.experiment or job.suite
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        created = client.create_run(experiment_id, run_name=job.run_id, tags=run_tags(job))
        run_id = created.info.run_id
        client.log_batch(run_id, params=_params(run_params(job)))
        remember(run, cls.key, {"uri": config.uri, "experiment": experiment, "run_id": run_id})
        return cls(client, run_id, {})

    def log(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric
        now = int(time.time() * 1000)
        fresh = [Metric(name, value, now, step) for name, value in values.items()
                 if step > self.logged.get(name, -1)]
        if fresh:
            self.client.log_batch(self.run_id, metrics=fresh)

    def close(self, failed: bool) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


def _exists(client, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException
    try:
        return client.get_run(run_id).info.lifecycle_stage == "active"
    except MlflowException:
        return False


def _logged_steps(client, run_id: str) -> dict[str, int]:
    """Each metric's last step already in MLflow: a resumed run does not log those again."""
    keys = client.get_run(run_id).data.metrics
    return {key: max(m.step for m in client.get_metric_history(run_id, key)) for key in keys}


def _params(params: dict[str, str]) -> list:
    from mlflow.entities import Param
    return [Param(k, v) for k, v in params.items()]


class WandbRun:
    """One W&B run per harness run (id and name: the run id), its files under RUN/wandb/."""

    key = "wandb"

    def __init__(self, handle):
        self.handle = handle

    @classmethod
    def open(cls, config: WandbConfig, job: TrainJob, run: RunDir) -> WandbRun:
        import wandb
        tags = run_tags(job)
        settings = wandb.Settings(silent=True, console="off", disable_git=True, save_code=False,
                                  x_disable_stats=True)  # the worker's output is the harness's log
        handle = wandb.init(project=config.project, entity=config.entity, mode=config.mode,
                            id=job.run_id, name=job.run_id, dir=str(run.root), resume="allow",
                            group=job.suite, tags=[f"{k}={tags[k]}" for k in ("objective", "size", "seed", "budget")],
                            config=tags | run_params(job), settings=settings)
        remember(run, cls.key, {"project": config.project, "mode": config.mode, "run_id": job.run_id})
        return cls(handle)

    def log(self, step: int, values: dict[str, float]) -> None:
        self.handle.log(values, step=step)

    def close(self, failed: bool) -> None:
        self.handle.finish(exit_code=1 if failed else 0)
