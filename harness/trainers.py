"""Worker groups that train run after run: how the scheduler (harness.schedule) trains.

Starting a run's workers costs far more than most of what follows on small machines (measured:
about 20 s of Ray Train's controller, placement group, worker processes and process group, then
5 s of imports, against 10-120 s of training; see bench/startup.py). So a worker group is not
made per run: a *trainer* (one Ray Train TorchTrainer, whose workers run `_train_runs`) takes the
suite's runs one after another from a `RunQueue`, an actor on the driver's node, until none is
left. Every run of a suite has the same shape (workers, CPUs and GPUs per worker), so any trainer
can take any run; as many trainers run at once as the cluster holds runs (harness.nodes.slots).

Faults keep their per-run meaning:
- A lost worker (its process died or stopped answering) makes Ray Train restart the trainer's
  workers; they take their current run again from the queue and resume it from its checkpoint.
  The failure policy counts the losses of each run apart, so resources.max_failures is a limit
  per run, as it was with one trainer per run; past it, the trainer fails with the loss's error.
- Any other error of the training code fails the trainer at once (`_restarting_after_loss_only`): the
  scheduler fails the run it was training (`RunQueue.release`) and starts another trainer for
  the runs still waiting. So does the scheduler's watchdog for a hung run.
- The controller's state changes and restarts are recorded in the current run's heartbeat and
  attempts (harness.train.attempts), as before.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import time
import traceback
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import ray

from harness import nodes
from harness.failures import describe
from harness.jobs import TrainJob
from harness.results import RunDir, utc_now
from harness.train import attempts
from harness.train.startup import attempt_began

COLLECTIVE_TIMEOUT_FACTOR = 2  # x train.step_timeout_s


@ray.remote(num_cpus=0)
class RunQueue:
    """The runs waiting to train, in order, and the run each trainer is on. Events (a run taken,
    a run finished) are kept until the scheduler drains them."""

    def __init__(self, jobs: list[dict]):
        self.waiting = deque(jobs)
        self.current: dict[str, dict] = {}   # trainer -> the job it is on
        self.since: dict[str, float] = {}    # trainer -> when it started or last finished a run
        self.events: list[tuple] = []

    def register(self, trainer: str) -> None:
        self.since[trainer] = time.time()

    def take(self, trainer: str) -> dict | None:
        """The trainer's current run (its workers were restarted) or the next waiting run, and
        since when the trainer has been free; None when nothing is left."""
        if trainer not in self.current:
            if not self.waiting:
                return None
            job = self.waiting.popleft()
            self.current[trainer] = job
            self.events.append(("started", trainer, job["run_id"], time.time()))
        return {"job": self.current[trainer], "since": self.since.get(trainer, 0.0)}

    def done(self, trainer: str, run_id: str) -> None:
        assert self.current.pop(trainer)["run_id"] == run_id
        self.since[trainer] = time.time()
        self.events.append(("finished", trainer, run_id, time.time()))

    def release(self, trainer: str) -> str | None:
        """The trainer failed or was stopped: the run it was on, which is not retried; if it was
        on none (it failed starting), the next run waiting, so that each failed trainer fails a
        run and a trainer that cannot start is not started again forever. None: nothing left."""
        job = self.current.pop(trainer, None) or (self.waiting.popleft() if self.waiting else None)
        return job["run_id"] if job else None

    def current_run(self, trainer: str) -> dict | None:
        """The run the trainer is on: its run_id and run_dir."""
        job = self.current.get(trainer)
        return {"run_id": job["run_id"], "run_dir": job["run_dir"]} if job else None

    def drain(self) -> tuple[list[tuple], int]:
        """(the events since the last drain, the number of runs still waiting)."""
        events, self.events = self.events, []
        return events, len(self.waiting)


@ray.remote(num_cpus=0)  # started on the driver's node (nodes.on_driver_node)
def fit(template: TrainJob, queue, trainer: str, suite_dir: str) -> None:
    """One trainer: a TorchTrainer of the suite's run shape whose workers train runs from `queue`."""
    from ray.train import FailureConfig, RunConfig, ScalingConfig

    from harness.rendezvous import NodeBoundTorchConfig  # torch: in the Ray task only

    res = template.resources
    config = {"queue": queue, "trainer": trainer}
    worker_group = _restarting_after_loss_only(queue, trainer)(
        _train_runs, train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=res.workers_per_run, use_gpu=res.use_gpu,
                                     resources_per_worker={"CPU": res.cpus_per_worker},
                                     placement_strategy=res.placement),
        # A collective that waits longer than this raises in every waiting rank (gloo's default
        # is 30 minutes): a backstop behind the scheduler's watchdog on step progress.
        torch_config=NodeBoundTorchConfig(backend="nccl" if res.use_gpu else "gloo",
                                          timeout_s=int(COLLECTIVE_TIMEOUT_FACTOR * template.train.step_timeout_s)),
        run_config=RunConfig(name=trainer, storage_path=str(Path(suite_dir) / "_ray"),
                             failure_config=FailureConfig(max_failures=res.max_failures),  # per run
                             callbacks=[_attempt_recorder(queue, trainer)]))
    worker_group.fit()


def _train_runs(config: dict) -> None:
    """Every worker of a trainer: take a run (rank 0 asks the queue, every rank gets its answer),
    train it (harness.train.worker, output in RUN/logs/worker-<rank>.log), report it done; until
    the queue is empty."""
    import torch.distributed as dist
    from ray.train import get_context

    queue, trainer, rank = config["queue"], config["trainer"], get_context().get_world_rank()
    while True:
        entered = time.time()  # before the trainer's imports, on the first run
        answer = [ray.get(queue.take.remote(trainer)) if rank == 0 else None]
        dist.broadcast_object_list(answer, src=0)
        if answer[0] is None:
            return
        job = answer[0]["job"]
        run = RunDir(Path(job["run_dir"]))
        began = max(answer[0]["since"], attempt_began(attempts.read(run)) or 0.0)
        with output_to(run.logs / f"worker-{rank}.log"):
            from harness.train.worker import train_worker
            if not run.train_json.exists():  # else trained, and the workers lost before it was reported
                train_worker(job, node=nodes.this_node(), entered=entered, began=began)
        if rank == 0:
            ray.get(queue.done.remote(trainer, job["run_id"]))
        gc.collect()  # the finished run's engine and model, before the next run builds its own


def _restarting_after_loss_only(queue, trainer: str):
    """TorchTrainer, whose failure policy restarts the workers only when a worker was lost: its
    process died or stopped answering, at most max_failures times per run (the losses are
    counted afresh when the trainer's run changes). An error of the training code itself (a
    missing file, a refused checkpoint) would only recur, so it fails the trainer at once."""
    from ray.exceptions import RayActorError
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.exceptions import WorkerHealthCheckFailedError, WorkerHealthCheckTimeoutError
    from ray.train.v2._internal.execution.failure_handling.default import DefaultFailurePolicy
    lost = (RayActorError, WorkerHealthCheckFailedError, WorkerHealthCheckTimeoutError)

    class AfterLossOnly(DefaultFailurePolicy):
        run = None

        def make_decision(self, training_failed_error):
            with contextlib.suppress(Exception):
                run = ray.get(queue.current_run.remote(trainer), timeout=30)
                if run != self.run:
                    self.run, self._worker_group_failures = run, 0
            return super().make_decision(training_failed_error)

        def _is_retryable_error(self, error) -> bool:
            failures = getattr(error, "worker_failures", None)
            if failures and not any(isinstance(e, lost) for e in failures.values()):
                return False
            return super()._is_retryable_error(error)

    class Trainer(TorchTrainer):
        def _initialize_and_run_controller(self, **controller):
            return super()._initialize_and_run_controller(
                **controller | {"failure_policy": AfterLossOnly(self.run_config.failure_config)})
    return Trainer


def _attempt_recorder(queue, trainer: str):
    """A callback of the Ray Train controller (it runs there): a heartbeat of the trainer's
    current run on each change of the controller's state (harness.train.attempts), and the end of
    the attempt in progress, with its error, when the controller restarts the workers or gives up.
    It never raises: an error in a callback would fail the trainer."""
    from ray.train.v2._internal.execution.callback import ControllerCallback

    class AttemptRecorder(ControllerCallback):
        def __init__(self):
            self.state = None

        def after_controller_state_update(self, previous_state, current_state):
            state = type(current_state).__name__.removesuffix("State").lower()
            if state == self.state:  # the controller sets RUNNING again at every poll
                return
            self.state = state
            with contextlib.suppress(Exception):
                current = ray.get(queue.current_run.remote(trainer), timeout=30)
                if current is None:
                    return
                run = RunDir(Path(current["run_dir"]))
                error = getattr(current_state, "training_failed_error", None)
                if error is not None and state in ("restarting", "errored"):
                    attempts.ended(run, "ray train" if state == "restarting" else "failed",
                                   describe(error)["message"][:300])
                last = attempts.read_beat(run) or {}
                attempts.beat(run, state, last.get("step"), last.get("attempt"), by="ray train controller")
    return AttemptRecorder()


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[None]:
    """This process's stdout and stderr appended to `log` for the block, then the traceback of
    any error. Ray does not send worker output to the terminal (log_to_driver=False)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f, _descriptors_to(f):
        print(f"--- {utc_now()}, process {os.getpid()} ---", flush=True)
        try:
            yield
        except BaseException:
            traceback.print_exc()
            raise


@contextlib.contextmanager
def _descriptors_to(f) -> Iterator[None]:
    """File descriptors 1 and 2 to the open file `f` for the block: C++ output (gloo, DeepSpeed's
    ops) goes there too, not only Python's."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(f.fileno(), 1)
    os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)
