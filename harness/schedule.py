"""Ray: where runs are scheduled. With harness.nodes and harness.trainers, the only modules that
import ray.

`harness run` starts an embedded local Ray (dashboard bound to 127.0.0.1) unless it is given
the address of an existing cluster. Runs are trained by trainers (harness.trainers): Ray Train
TorchTrainers whose workers drive DeepSpeed (see harness.train) and take run after run from a
queue, so that a worker group is started once per trainer rather than once per run. As many
trainers work at once as the cluster holds runs, so no trainer sits waiting for workers. After
a run's training, each unit of evaluation (one lm-eval task, group or tag, the held-out bits per
byte, one fine-tuning task) is a Ray task of its own, so units of one run and of different runs
proceed in parallel where resources allow.

What fails is kept in the run directory, so that the terminal can stay short: each training
worker and each unit writes its whole output (stdout, stderr, the traceback) to
`RUN/logs/worker-<rank>.log` or `RUN/logs/<kind>-<name>.log`, and every failure of a run's latest
attempt is described in `RUN/FAILED` (one YAML file per run, its `failures` a list: the training,
or one entry per failed unit; see harness.failures). Training that later succeeds removes it; so
does the run's DONE.

Faults: Ray Train restarts a trainer's workers after a lost worker, which resume their run from
its checkpoint (resources.max_failures times per run, counted by the queue), a callback in its
controller recording each restart (harness.train.attempts); the scheduler stops a trainer whose
run's heartbeat stays still for train.step_timeout_s and fails that run as a StepTimeout (see
Scheduler).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil  # a dependency of Ray and DeepSpeed
import ray

import harness
import objectives
from harness import loopback, nodes, provenance
from harness.errors import UserError
from harness.failures import last_line as _last_line, record_failure
from harness.progress import Progress, duration
from harness.results import RunDir
from harness.runtime import quiet
from harness.train import attempts
from harness.trainers import RunQueue, fit, output_to
from harness.units import RunWork, Unit

QUEUE_POLL_S = 2.0  # how often the queue of runs is read while trainers work


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
        # Ray's notice that token authentication is on is not news: harness.loopback turned it on
        with quiet(logging.ERROR, loggers=("ray._private.authentication",)):
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


@ray.remote
def _unit(unit: Unit) -> dict:
    with output_to(unit.log_path):
        nodes.limit_threads(unit.job.eval.cpus)  # the CPUs Ray reserved for it, no more
        return unit.run()


@dataclass
class Outcome:
    finished: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # "run_id" or "run_id kind name" -> one line


@dataclass
class InFlight:
    """A Ray task the scheduler waits for: one unit, or a trainer (unit None) with the run it is
    training (work; None while it starts or between runs)."""

    work: RunWork | None
    unit: Unit | None
    trainer: str | None = None
    started: float = field(default_factory=time.time)
    watch: attempts.Watch | None = None  # the current run's clock on its heartbeat

    @property
    def label(self) -> str:
        return f"{self.unit.label} {self.work.run_id}" if self.unit else f"{self.trainer}"


class Scheduler:
    """Train the runs that need it in trainers (harness.trainers: worker groups that take run
    after run from a queue, as many at once as the cluster holds runs), then submit each run's
    units as Ray tasks as soon as its training ends: Ray runs them in parallel as resources
    allow. `on_done(run)` once every unit of a run has succeeded. A failure is written to the
    run's FAILED (see the module docstring) and shown as one line; it never stops the other runs:
    a failed trainer fails the run it was on (or, failing before it took one, the next run
    waiting, so that a trainer that cannot start cannot be retried forever), and another trainer
    takes the runs still waiting.

    A training whose heartbeat goes stale for train.step_timeout_s (attempts.Watch says how the
    clock runs) is stopped and failed as a StepTimeout, polled every step_timeout_s / 4 at most.
    The collective timeout (harness.trainers.COLLECTIVE_TIMEOUT_FACTOR x step_timeout_s) stays as the backstop
    where the heartbeat is not watched: the process group's set-up, while the controller
    schedules the workers. In training, a stopped worker leaves the others waiting in a
    collective, rank 0 among them, so the heartbeat stops too, and the watchdog (1.25 x
    step_timeout_s at most, its poll included) fires before the collective times out."""

    def __init__(self, work: list[RunWork], on_done: Callable[[Path], None], progress: Progress):
        self.works = {w.run_id: w for w in work}
        to_train = [w for w in work if w.train is not None]
        self.left = {w.run_id: len(w.units) for w in work}
        self.broken: set[str] = set()
        self.in_flight: dict[ray.ObjectRef, InFlight] = {}
        self.on_done, self.progress, self.outcome = on_done, progress, Outcome()
        self.template = to_train[0].train if to_train else None
        self.slots = nodes.slots(self.template.resources if self.template else None)
        self.waiting, self.trainers_made, self.queue = len(to_train), 0, None
        if to_train:
            for w in to_train:
                attempts.beat(RunDir(Path(w.run_dir)), "submitted", by="driver")
                attempts.submitted(RunDir(Path(w.run_dir)))
            self.queue = RunQueue.options(**nodes.on_driver_node()).remote(
                [w.train.model_dump(mode="json") for w in to_train])
        for w in work:
            if w.train is None:
                self.submit_units(w)

    def run(self, poll_s: float) -> Outcome:
        poll_s = min([poll_s, *(w.train.train.step_timeout_s / 4 for w in self.works.values() if w.train)])
        while self.waiting or self.in_flight:
            self.start_trainers()
            timeout = min(poll_s, QUEUE_POLL_S) if self.trainers() else poll_s
            ready, _ = ray.wait(list(self.in_flight), num_returns=1, timeout=timeout)
            self.follow_queue()  # first: a run finished before its trainer ended is credited
            for ref in ready:
                self.collect(ref, self.in_flight.pop(ref))
            self.stop_hung()
            for task in self.trainers():
                if task.work is not None:
                    self.progress.training(task.work.run_id, Path(task.work.run_dir))
        return self.outcome

    def trainers(self) -> list[InFlight]:
        return [task for task in self.in_flight.values() if task.unit is None]

    def start_trainers(self) -> None:
        busy = sum(task.work is not None for task in self.trainers())
        while len(self.trainers()) < min(self.slots, self.waiting + busy):
            trainer = f"trainer-{self.trainers_made}"
            self.trainers_made += 1
            ray.get(self.queue.register.remote(trainer))
            suite_dir = str(Path(next(iter(self.works.values())).run_dir).parent)
            ref = fit.options(**nodes.on_driver_node()).remote(self.template, self.queue, trainer, suite_dir)
            self.in_flight[ref] = InFlight(None, None, trainer=trainer)
            res = self.template.resources
            self.progress.event(f"{trainer} starting: {res.workers_per_run} workers of {res.cpus_per_worker} "
                                f"CPU{'s' * (res.cpus_per_worker > 1)}{' and a GPU' if res.use_gpu else ''} each, "
                                f"for the {self.waiting} runs waiting")

    def follow_queue(self) -> None:
        """The runs trainers took and finished since the last look: a heartbeat clock for each
        run taken, the units of each run finished."""
        if self.queue is None:
            return
        events, self.waiting = ray.get(self.queue.drain.remote())
        by_trainer = {task.trainer: task for task in self.trainers()}
        for kind, trainer, run_id, when in events:
            work, task = self.works[run_id], by_trainer.get(trainer)
            if kind == "started" and task is not None:
                task.work, task.started = work, when
                task.watch = attempts.Watch(RunDir(Path(work.run_dir)), work.train.train.step_timeout_s)
                self.progress.event(f"train    {run_id} started ({trainer})")
            elif kind == "finished":
                took = f" in {duration(when - task.started)}" if task is not None else ""
                self.progress.event(f"train    {run_id} finished{took}")
                if task is not None:
                    task.work, task.watch = None, None
                RunDir(Path(work.run_dir)).failed.unlink(missing_ok=True)  # an earlier attempt's
                self.submit_units(work)

    def submit_units(self, work: RunWork) -> None:
        if not work.units:
            self.finish(work)
        for unit in work.units:
            self.in_flight[_unit.options(**_unit_resources(unit)).remote(unit)] = InFlight(work, unit)
            self.progress.event(f"{unit.kind:<8} {work.run_id} {unit.name} started")

    def collect(self, ref, task: InFlight) -> None:
        if task.unit is None:
            self.trainer_ended(ref, task)
            return
        what = f"{task.unit.kind:<8} {task.work.run_id} {task.unit.name}"
        try:
            ray.get(ref)
        except Exception as e:  # a failed unit must not stop the others
            self.failed(task, task.unit.kind, task.unit.name, e)
            return
        self.progress.event(f"{what} finished in {duration(time.time() - task.started)}")
        self.left[task.work.run_id] -= 1
        if self.left[task.work.run_id] == 0 and task.work.run_id not in self.broken:
            self.finish(task.work)

    def trainer_ended(self, ref, task: InFlight) -> None:
        """A trainer returns when no run is left; failed, it fails the run it was on."""
        try:
            ray.get(ref)
        except Exception as e:
            self.fail_trainer(task, e)

    def fail_trainer(self, task: InFlight, error: BaseException) -> None:
        run_id = ray.get(self.queue.release.remote(task.trainer))
        if run_id is None:  # no run left to fail: its error is shown alone
            self.progress.event(f"{task.trainer} FAILED after {duration(time.time() - task.started)}: {_last_line(error)}")
            return
        if task.work is None or task.work.run_id != run_id:  # its run not seen taken, or none taken
            task = InFlight(self.works[run_id], None, trainer=task.trainer)
        self.failed(task, "train", "", error)

    def failed(self, task: InFlight, kind: str, name: str, error: BaseException) -> None:
        what = f"{kind:<8} {task.work.run_id} {name}".rstrip()
        line = record_failure(task.work, kind, name, error, first=task.work.run_id not in self.broken)
        self.outcome.failed[" ".join(what.split())] = line
        self.progress.event(f"{what} FAILED after {duration(time.time() - task.started)}: {line}")
        self.broken.add(task.work.run_id)

    def stop_hung(self) -> None:
        """Stop every trainer whose run's heartbeat is stale: its fit task's process is killed,
        and with it the Ray Train controller it owns, the controller's worker actors (a stopped
        process included: Ray kills them with SIGKILL) and, through Ray Train's placement group
        cleaner, their placement group. The run fails; the runs waiting go to another trainer."""
        for ref, task in list(self.in_flight.items()):
            why = task.watch.hung() if task.watch else None
            if why and not ray.wait([ref], timeout=0)[0]:  # one that just ended is collected instead
                ray.cancel(ref, force=True)
                del self.in_flight[ref]
                attempts.ended(RunDir(Path(task.work.run_dir)), "watchdog", why)
                self.fail_trainer(task, attempts.StepTimeout(why))

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
