"""Ray: where runs are scheduled. With harness.nodes, the only module that imports ray.

`harness run` starts an embedded local Ray (dashboard bound to 127.0.0.1) unless it is given
the address of an existing cluster. Each training run is one Ray Train TorchTrainer (its workers
drive DeepSpeed, see harness.train), launched from a Ray task so that several runs can proceed at
once where the cluster has room. After training, each unit of evaluation (one lm-eval task,
group or tag, the held-out bits per byte, one fine-tuning task) is a Ray task of its own, so
units of one run and of different runs proceed in parallel where resources allow. At most as many runs are in
flight as the cluster can hold, so no trainer sits waiting for workers.

What fails is kept in the run directory, so that the terminal can stay short: each training
worker and each unit writes its whole output (stdout, stderr, the traceback) to
`RUN/logs/worker-<rank>.log` or `RUN/logs/<kind>-<name>.log`, and every failure of a run's latest
attempt is described in `RUN/FAILED` (one YAML file per run, its `failures` a list: the training,
or one entry per failed unit; see harness.failures). Training that later succeeds removes it; so
does the run's DONE.

Faults: Ray Train restarts a run's workers after a lost worker (resources.max_failures), a
callback in its controller recording each restart (harness.train.attempts); the scheduler stops
a training whose heartbeat stays still for train.step_timeout_s and fails it as a StepTimeout
(see Scheduler).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil  # a dependency of Ray and DeepSpeed
import ray

import harness
import objectives
from harness import loopback, nodes, provenance
from harness.errors import UserError
from harness.failures import describe, last_line as _last_line, record_failure
from harness.jobs import TrainJob
from harness.progress import Progress, duration
from harness.results import RunDir, utc_now as _utc_now
from harness.train import attempts
from harness.units import RunWork, Unit

COLLECTIVE_TIMEOUT_FACTOR = 2  # x train.step_timeout_s


def connect(address: str | None, use_gpu: bool) -> None:
    """Start an embedded Ray, or join the cluster at `address` ('auto' or HOST:PORT)."""
    env = runtime_env(use_gpu)
    if address:
        # Ship this checkout's packages, so that cluster nodes run the same code as the driver.
        env["py_modules"] = [os.path.dirname(harness.__file__), os.path.dirname(objectives.__file__)]
        # ... and its commit, which the copies cannot ask git for (harness.provenance). Inside a
        # submitted job the job's runtime_env already carries it, and Ray refuses a variable set twice.
        if provenance.COMMIT_VAR not in os.environ:
            env["env_vars"].update(provenance.commit_env())
        join(address, env)
    else:
        start_embedded(env)


def runtime_env(use_gpu: bool) -> dict:
    # Ray Train would also copy every print() of a worker to its logger, doubling RUN/logs/.
    return {"env_vars": {"DS_ACCELERATOR": "cuda" if use_gpu else "cpu", "PYTHONUNBUFFERED": "1",
                         "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}}


# --- starting and joining Ray ------------------------------------------------------------------
# Under load, an embedded Ray can miss its own start-up waits ("The current node timed out during
# startup": Ray waits a fixed 30 s for the raylet to register). The start is then cleaned up and
# tried once more, without the dashboard (less to start), and with longer waits where Ray reads
# them from the environment: for the GCS port and connection, for the core worker's raylet, and
# for worker registration (a user's longer values are kept).
FIRST_START = {"include_dashboard": True, "dashboard_host": "127.0.0.1"}
RETRY_START = {"include_dashboard": False}
RETRY_WAITS = {"RAY_gcs_server_port_wait_time_s": 120, "RAY_raylet_start_wait_time_s": 120,
               "RAY_worker_register_timeout_seconds": 180}


def start_embedded(runtime_env: dict, first: dict = FIRST_START, retry: dict = RETRY_START,
                   log: Callable[[str], None] = print) -> None:
    """ray.init an embedded Ray with `first`; if that fails, clean up and try `retry` once.
    Both failing is a UserError saying what happened and what to try."""
    try:
        _init_embedded(runtime_env, first)
        return
    except Exception as e:  # any start-up failure: timeouts, a port taken meanwhile, ...
        log(f"Ray did not start ({_last_line(e)}); starting it again with longer waits, no dashboard")
    try:
        with _longer_waits(RETRY_WAITS):
            _init_embedded(runtime_env, retry)
    except Exception as e:
        raise UserError(
            f"Ray did not start, twice (the second time without the dashboard and with longer "
            f"waits): {_last_line(e)}. The machine may be too busy: try again when it is less "
            f"loaded, or start Ray yourself (`ray start --head`, with its own --temp-dir if you like) "
            f"and pass --address auto. Ray's own logs are in its temp dir "
            f"(/tmp/ray/session_latest/logs by default).", where="ray (embedded)") from None


def _init_embedded(runtime_env: dict, settings: dict) -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    loopback.loopback_only(runtime_env)  # every listening socket of this Ray on 127.0.0.1
    loopback.private_token_file()
    try:
        ray.init(runtime_env=runtime_env, log_to_driver=False, configure_logging=False,
                 _node_ip_address=loopback.LOOPBACK, **settings)
    except BaseException:
        _stop_new_children(before)  # what the failed start left running, and only that
        raise


def _stop_new_children(before: set[int]) -> None:
    new = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    for process in new:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    _, alive = psutil.wait_procs(new, timeout=10)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()


@contextlib.contextmanager
def _longer_waits(waits: dict[str, int]) -> Iterator[None]:
    """These Ray settings (seconds) at least `waits` for the block; Ray's processes inherit them."""
    saved = {key: os.environ.get(key) for key in waits}
    for key, seconds in waits.items():
        current = saved[key] or ""
        os.environ[key] = str(max(seconds, int(current) if current.isdigit() else 0))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def join(address: str, runtime_env: dict) -> None:
    """ray.init on an existing cluster; a refused token or no cluster there is a UserError."""
    try:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    except Exception as e:
        if auth_refused(e):
            raise UserError(auth_message(address), where="--address") from None
        if isinstance(e, ConnectionError):
            raise UserError(f"no Ray cluster could be joined at {address}: {_last_line(e)}",
                            where="--address") from None
        raise


def auth_refused(error: BaseException) -> bool:
    """Whether Ray refused to connect for want of the cluster's token. ray.init reports it as a
    ConnectionError whose cause holds the AuthenticationError, sometimes only as text."""
    from ray.exceptions import AuthenticationError

    return any(isinstance(e, AuthenticationError) or "AuthenticationError" in str(e)
               or "InvalidAuthToken" in str(e) for e in _chain(error))


def auth_message(address: str) -> str:
    mode = os.environ.get("RAY_AUTH_MODE")
    if (mode or "").lower() == "token":
        problem = "refused the token this client sent (RAY_AUTH_MODE is 'token' here)"
    else:
        problem = (f"requires token authentication, which is off here (RAY_AUTH_MODE is "
                   f"{repr(mode) if mode else 'not set'})")
    return (f"the Ray cluster at {address} {problem}. Set RAY_AUTH_MODE=token, and the cluster's "
            f"token in RAY_AUTH_TOKEN or in a file named by RAY_AUTH_TOKEN_PATH (default "
            f"~/.ray/auth_token); `ray get-auth-token` on the head node prints it")


def _chain(error: BaseException) -> list[BaseException]:
    chain = []
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    return chain


def shutdown() -> None:
    ray.shutdown()
    loopback.restore()


@ray.remote(num_cpus=0)  # started on the driver's node (nodes.on_driver_node)
def _fit(job: TrainJob) -> None:
    from ray.train import FailureConfig, RunConfig, ScalingConfig

    from harness.rendezvous import NodeBoundTorchConfig  # torch: in the Ray task only

    res = job.resources
    trainer = _restarting_after_loss_only()(
        _train_logged, train_loop_config=job.model_dump(mode="json"),
        scaling_config=ScalingConfig(num_workers=res.workers_per_run, use_gpu=res.use_gpu,
                                     resources_per_worker={"CPU": res.cpus_per_worker},
                                     placement_strategy=res.placement),
        # A collective that waits longer than this raises in every waiting rank (gloo's default
        # is 30 minutes): a backstop behind the scheduler's watchdog on step progress.
        torch_config=NodeBoundTorchConfig(backend="nccl" if res.use_gpu else "gloo",
                                          timeout_s=int(COLLECTIVE_TIMEOUT_FACTOR * job.train.step_timeout_s)),
        run_config=RunConfig(name=job.run_id, storage_path=str(Path(job.run_dir).parent / "_ray"),
                             failure_config=FailureConfig(max_failures=res.max_failures),
                             callbacks=[_attempt_recorder(job.run_dir)]))
    trainer.fit()


def _restarting_after_loss_only():
    """TorchTrainer, whose failure policy restarts the workers (resources.max_failures) only when
    a worker was lost: its process died or stopped answering. An error of the training code
    itself (a missing file, a refused checkpoint) would only recur, so it fails the run at once."""
    from ray.exceptions import RayActorError
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.exceptions import WorkerHealthCheckFailedError, WorkerHealthCheckTimeoutError
    from ray.train.v2._internal.execution.failure_handling.default import DefaultFailurePolicy
    lost = (RayActorError, WorkerHealthCheckFailedError, WorkerHealthCheckTimeoutError)

    class AfterLossOnly(DefaultFailurePolicy):
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


def _attempt_recorder(run_dir: Path):
    """A callback of the Ray Train controller (it runs there): a heartbeat on each change of the
    controller's state (harness.train.attempts), and the end of the attempt in progress, with
    its error, when the controller restarts the workers or gives up. It never raises: an error
    in a callback would fail the run."""
    from ray.train.v2._internal.execution.callback import ControllerCallback

    class AttemptRecorder(ControllerCallback):
        def __init__(self):
            self.run, self.state = RunDir(Path(run_dir)), None

        def after_controller_state_update(self, previous_state, current_state):
            state = type(current_state).__name__.removesuffix("State").lower()
            if state == self.state:  # the controller sets RUNNING again at every poll
                return
            self.state = state
            with contextlib.suppress(Exception):
                error = getattr(current_state, "training_failed_error", None)
                if error is not None and state in ("restarting", "errored"):
                    attempts.ended(self.run, "ray train" if state == "restarting" else "failed",
                                   describe(error)["message"][:300])
                last = attempts.read_beat(self.run) or {}
                attempts.beat(self.run, state, last.get("step"), last.get("attempt"), by="ray train controller")
    return AttemptRecorder()


def _train_logged(config: dict) -> dict:
    """harness.train.worker.train_worker, its output and traceback in RUN/logs/worker-<rank>.log."""
    from ray.train import get_context

    from harness.train.worker import train_worker

    with output_to(RunDir(Path(config["run_dir"])).logs / f"worker-{get_context().get_world_rank()}.log"):
        return train_worker(config, node=nodes.this_node())


@ray.remote
def _unit(unit: Unit) -> dict:
    with output_to(unit.log_path):
        nodes.limit_threads(unit.job.eval.cpus)  # the CPUs Ray reserved for it, no more
        return unit.run()


@contextlib.contextmanager
def output_to(log: Path) -> Iterator[None]:
    """This process's stdout and stderr appended to `log` for the block, then the traceback of
    any error. Ray does not send worker output to the terminal (log_to_driver=False)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f, _descriptors_to(f):
        print(f"--- {_utc_now()}, process {os.getpid()} ---", flush=True)
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


@dataclass
class Outcome:
    finished: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # "run_id" or "run_id kind name" -> one line


@dataclass
class InFlight:
    """A Ray task the scheduler waits for: a run's training (unit None) or one unit."""

    work: RunWork
    unit: Unit | None
    started: float = field(default_factory=time.time)
    watch: attempts.Watch | None = None  # a training's clock on its heartbeat

    @property
    def label(self) -> str:
        return f"{self.unit.label if self.unit else 'train'} {self.work.run_id}"


class Scheduler:
    """Train the runs that need it (as many at once as the cluster holds), then submit each run's
    units as Ray tasks, all at once: Ray runs them in parallel as resources allow. `on_done(run)`
    once every unit of a run has succeeded. A failure is written to the run's FAILED (see the
    module docstring) and shown as one line; it never stops the other runs.

    A training whose heartbeat goes stale for train.step_timeout_s (attempts.Watch says how the
    clock runs) is stopped and failed as a StepTimeout, polled every step_timeout_s / 4 at most.
    The collective timeout (COLLECTIVE_TIMEOUT_FACTOR x step_timeout_s) stays as the backstop
    where the heartbeat is not watched: the process group's set-up, while the controller
    schedules the workers. In training, a stopped worker leaves the others waiting in a
    collective, rank 0 among them, so the heartbeat stops too, and the watchdog (1.25 x
    step_timeout_s at most, its poll included) fires before the collective times out."""

    def __init__(self, work: list[RunWork], on_done: Callable[[Path], None], progress: Progress):
        self.trainings = deque(w for w in work if w.train is not None)
        self.left = {w.run_id: len(w.units) for w in work}
        self.broken: set[str] = set()
        self.in_flight: dict[ray.ObjectRef, InFlight] = {}
        self.on_done, self.progress, self.outcome = on_done, progress, Outcome()
        self.slots = nodes.slots(next((w.train.resources for w in work if w.train), None))
        for w in work:
            if w.train is None:
                self.submit_units(w)

    def run(self, poll_s: float) -> Outcome:
        poll_s = min([poll_s, *(w.train.train.step_timeout_s / 4 for w in self.trainings)])
        while self.trainings or self.in_flight:
            self.start_trainings()
            ready, _ = ray.wait(list(self.in_flight), num_returns=1, timeout=poll_s)
            for ref in ready:
                self.collect(ref, self.in_flight.pop(ref))
            self.stop_hung()
            for task in self.in_flight.values():
                if task.unit is None:
                    self.progress.training(task.work.run_id, Path(task.work.run_dir))
        return self.outcome

    def start_trainings(self) -> None:
        while self.trainings and sum(t.unit is None for t in self.in_flight.values()) < self.slots:
            work = self.trainings.popleft()
            run = RunDir(Path(work.run_dir))
            attempts.beat(run, "submitted", by="driver")
            attempts.submitted(run)
            watch = attempts.Watch(run, work.train.train.step_timeout_s)
            self.in_flight[_fit.options(**nodes.on_driver_node()).remote(work.train)] = InFlight(work, None, watch=watch)
            self.progress.event(f"train    {work.run_id} started")

    def submit_units(self, work: RunWork) -> None:
        if not work.units:
            self.finish(work)
        for unit in work.units:
            self.in_flight[_unit.options(**_unit_resources(unit)).remote(unit)] = InFlight(work, unit)
            self.progress.event(f"{unit.kind:<8} {work.run_id} {unit.name} started")

    def collect(self, ref, task: InFlight) -> None:
        kind, name = (task.unit.kind, task.unit.name) if task.unit else ("train", "")
        what = f"{kind:<8} {task.work.run_id} {name}".rstrip()
        try:
            ray.get(ref)
        except Exception as e:  # a failed run or unit must not stop the others
            self.failed(task, kind, name, e)
            return
        self.progress.event(f"{what} finished in {duration(time.time() - task.started)}")
        if task.unit is None:
            RunDir(Path(task.work.run_dir)).failed.unlink(missing_ok=True)  # an earlier attempt's
            self.submit_units(task.work)
            return
        self.left[task.work.run_id] -= 1
        if self.left[task.work.run_id] == 0 and task.work.run_id not in self.broken:
            self.finish(task.work)

    def failed(self, task: InFlight, kind: str, name: str, error: BaseException) -> None:
        what = f"{kind:<8} {task.work.run_id} {name}".rstrip()
        line = record_failure(task.work, kind, name, error, first=task.work.run_id not in self.broken)
        self.outcome.failed[" ".join(what.split())] = line
        self.progress.event(f"{what} FAILED after {duration(time.time() - task.started)}: {line}")
        self.broken.add(task.work.run_id)

    def stop_hung(self) -> None:
        """Stop every training whose heartbeat is stale: its _fit task's process is killed, and
        with it the Ray Train controller it owns, the controller's worker actors (a stopped
        process included: Ray kills them with SIGKILL) and, through Ray Train's placement group
        cleaner, their placement group."""
        for ref, task in list(self.in_flight.items()):
            why = task.watch.hung() if task.watch else None
            if why and not ray.wait([ref], timeout=0)[0]:  # one that just ended is collected instead
                ray.cancel(ref, force=True)
                del self.in_flight[ref]
                attempts.ended(RunDir(Path(task.work.run_dir)), "watchdog", why)
                self.failed(task, "train", "", attempts.StepTimeout(why))

    def finish(self, work: RunWork) -> None:
        self.on_done(Path(work.run_dir))
        self.outcome.finished.append(work.run_id)


def execute(work: list[RunWork], on_done: Callable[[Path], None], progress: Progress,
            poll_s: float = 10.0) -> Outcome:
    """Every training and unit of `work` through Ray (see Scheduler)."""
    return Scheduler(work, on_done, progress).run(poll_s)


def _unit_resources(unit: Unit) -> dict:
    """Each evaluation or fine-tuning task: eval.cpus CPUs, and eval.gpus GPUs (default: one where
    runs train on GPUs)."""
    gpus = unit.job.eval.gpus
    return {"num_cpus": unit.job.eval.cpus, "num_gpus": (1 if unit.job.use_gpu else 0) if gpus is None else gpus}
