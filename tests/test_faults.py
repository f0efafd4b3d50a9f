"""Faults a cluster deals out, survived: a worker killed, a failure budget spent, the driver
killed, a kill during a checkpoint save, a hung worker.

Everything is real: `harness run` in a subprocess (so this process never hosts Ray Train), its
embedded Ray, Ray Train restarting workers, DeepSpeed on CPU at the tiny size, and the faults:
SIGKILL and SIGSTOP sent to the processes that train. Two suites share one definition:

    faulted        seeds 0-3, resources.max_failures 1, train.step_timeout_s 20: seed 0 loses its
                   worker once (restarted, resumes), seed 1 is left alone, seed 2 hangs (SIGSTOP),
                   seed 3 loses its worker twice (its failure budget is spent)
    driver_killed  seeds 0-1, defaults: `harness run` is SIGKILLed once seed 0 is done and seed 1
                   has a checkpoint, then run again

The uninterrupted references come from these same invocations: seed 0 of driver_killed finished
before the driver was killed, and seed 1 of faulted was never touched. Timings (time to detect a
dead worker, to resume, to fail a hang) are printed; run with -s to read them.
"""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from children import spawn
from conftest import REPO

HANG_TIMEOUT_S = 20
# The watchdog polls every step_timeout_s / 4; then the kill of the run's task and the FAILED
# record, on a loaded 2-core machine: 15 s.
HANG_MARGIN_S = HANG_TIMEOUT_S / 4 + 15
SUITE = {
    "name": "faults", "objectives": ["clm"], "sizes": ["tiny"], "seeds": [0, 1],
    "data": {"synthetic": {"entities": 12, "documents": 600, "seed": 3}, "seq_len": 32,
             "val_fraction": 0.1, "eval_examples": 40},
    "budget": {"tokens": 300 * 8 * 32, "min_steps": 10},  # 300 optimizer steps
    "train": {"micro_batch_size": 8, "log_every": 10, "eval_every": 100, "checkpoint_every": 50, "val_batches": 2},
    "resources": {"workers_per_run": 1},
    "eval": {"tasks": ["synthetic_sst2"], "limit": 4, "bits_per_byte": False, "finetune": {"tasks": []}},
}


# --- driving `harness run` and watching its runs -----------------------------------------------


class Harness:
    """`harness run` in a subprocess whose environment carries a unique mark, so that every
    process of its Ray (which inherits the environment) can be found afterwards."""

    def __init__(self, suite: dict, root: Path):
        self.mark, self.root = secrets.token_hex(8), root
        path = root / f"{suite['name']}.yaml"
        path.write_text(yaml.safe_dump(suite))
        self.suite_dir = root / "results" / suite["name"]
        self.out = (root / f"out-{self.mark}.txt").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "run", str(path), "--results", str(root / "results")],
            cwd=REPO, stdout=self.out, stderr=subprocess.STDOUT, env={**os.environ, "FAULTS_MARK": self.mark})

    def run(self, seed: int) -> Path:
        found = sorted(self.suite_dir.glob(f"clm-tiny-s{seed}-*"))
        return found[0] if found else self.suite_dir / f"(seed {seed} not planned yet)"

    def processes(self) -> list[psutil.Process]:
        """Every live process with this invocation's mark (the driver, Ray's, the workers)."""
        found = []
        for process in psutil.process_iter():
            try:
                if process.environ().get("FAULTS_MARK") == self.mark and process.status() != psutil.STATUS_ZOMBIE:
                    found.append(process)
            except psutil.Error:
                continue
        return found

    def output(self) -> str:
        self.out.flush()
        return Path(self.out.name).read_text()

    def clean_up(self) -> None:
        """Kill what is left of this invocation, by pid (stopped processes are woken first)."""
        for process in self.processes():
            for sig in (signal.SIGKILL, signal.SIGCONT):
                with _quiet():
                    process.send_signal(sig)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=60)
        self.out.close()


def _quiet():
    import contextlib
    return contextlib.suppress(psutil.Error, ProcessLookupError)


def worker_pids(run: Path) -> list[int]:
    """The pid of each attempt's rank-0 worker, in order (its log opens with a line naming it)."""
    log = run / "logs" / "worker-0.log"
    return [int(pid) for pid in re.findall(r"^--- .*, process (\d+) ---$", log.read_text(), re.M)] if log.exists() else []


def events(run: Path, kind: str) -> list[dict]:
    path = run / "attempts.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return [row for row in rows if row["event"] == kind]


def sealed(run: Path) -> list[int]:
    return sorted(int(p.parent.name[4:]) for p in run.glob("checkpoints/step*/MANIFEST.json"))


def heartbeat(run: Path) -> dict:
    try:
        return json.loads((run / "heartbeat.json").read_text())
    except (OSError, ValueError):
        return {}


class Fault:
    """One run's fault, driven by polling: `kills` SIGKILLs of its rank-0 worker (the first once
    a checkpoint is sealed, each next one once the restarted attempt has resumed), or a SIGSTOP
    once a checkpoint is sealed. Notes when it acted and when it saw the run react."""

    def __init__(self, harness: Harness, seed: int, kills: int = 0, stop: bool = False):
        self.harness, self.seed, self.kills, self.stop = harness, seed, kills, stop
        self.acted: list[tuple[int, float]] = []  # (pid, time)
        self.seen: dict[str, float] = {}  # "attempt 2 resumed", "restarting", "FAILED" -> first seen

    def poll(self) -> None:
        run = self.harness.run(self.seed)
        now, beat = time.time(), heartbeat(run)
        self.seen.setdefault(f"{beat.get('phase')} attempt {beat.get('attempt')}", now)
        if (run / "FAILED").exists():
            self.seen.setdefault("FAILED", now)
            if self.acted and not psutil.pid_exists(self.acted[-1][0]):
                self.seen.setdefault("its process gone", now)  # while `harness run` goes on
        pids, started, ended = worker_pids(run), len(events(run, "started")), len(events(run, "ended"))
        if ended:
            self.seen.setdefault(f"ended {ended}", now)  # the controller noticed the loss
        wanted = self.kills + self.stop
        if len(self.acted) >= wanted or not pids or len(pids) != started or len(self.acted) != started - 1:
            return
        if started == 1 and not sealed(run):
            return
        os.kill(pids[-1], signal.SIGSTOP if self.stop else signal.SIGKILL)
        self.acted.append((pids[-1], time.time()))

    def after(self, what: str, since: str | None = None) -> float | None:
        """Seconds from the last action (or the first sight of `since`) to the first sight of
        `what`, a phase seen in the heartbeat or a count of ended attempts (None: not seen; the
        poll may miss a phase that lasted less than its 0.1 s)."""
        start = self.seen.get(since) if since else self.acted[-1][1]
        return round(self.seen[what] - start, 1) if what in self.seen and start else None


def drive(harness: Harness, faults: list[Fault], until, timeout_s: float = 420) -> None:
    """Poll the faults every 0.1 s until `until()` is true or the command exits."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and not until():
        for fault in faults:
            fault.poll()
        if harness.proc.poll() is not None:
            return
        time.sleep(0.1)
    assert until() or harness.proc.poll() is not None, f"timed out; output:\n{harness.output()[-3000:]}"


def wait_gone(harness: Harness, timeout_s: float = 60) -> list[psutil.Process]:
    deadline = time.time() + timeout_s
    while (left := harness.processes()) and time.time() < deadline:
        time.sleep(0.5)
    return left


# --- the two suites ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def faulted(tmp_path_factory):
    root = tmp_path_factory.mktemp("faulted")
    suite = {**SUITE, "seeds": [0, 1, 2, 3], "resources": {"workers_per_run": 1, "max_failures": 1},
             "train": {**SUITE["train"], "step_timeout_s": HANG_TIMEOUT_S}}
    started = time.time()
    harness = Harness(suite, root)
    faults = {"killed once": Fault(harness, 0, kills=1), "hung": Fault(harness, 2, stop=True),
              "killed twice": Fault(harness, 3, kills=2)}
    try:
        drive(harness, list(faults.values()), until=lambda: False)
        rc = harness.proc.wait(timeout=120)
        left = wait_gone(harness)
        stopped_alive = [pid for pid, _ in faults["hung"].acted if psutil.pid_exists(pid)]
        yield {"harness": harness, "rc": rc, "left": left, "faults": faults, "stopped_alive": stopped_alive,
               "seconds": round(time.time() - started)}
    finally:
        harness.clean_up()


@pytest.fixture(scope="module")
def driver_killed(tmp_path_factory):
    """The driver is SIGKILLed once seed 0 is done and seed 1 has a checkpoint (its worker is
    held by SIGSTOP meanwhile, so that seed 1 is surely unfinished); then the same command again."""
    root = tmp_path_factory.mktemp("driver_killed")
    started = time.time()
    first = Harness(SUITE, root)
    hold = Fault(first, 1, stop=True)
    try:
        drive(first, [hold], until=lambda: (first.run(0) / "DONE").exists() and bool(hold.acted))
        first.proc.kill()
        killed = time.time()
        left = [" ".join(p.cmdline())[:120] for p in wait_gone(first) if _alive(p)]
        gone_after = round(time.time() - killed)
        checkpoint_then = sealed(first.run(1))
        stamps = {p: p.stat().st_mtime_ns for p in first.run(0).rglob("*") if p.is_file()}
    finally:
        first.clean_up()
    second = Harness(SUITE, root)
    try:
        rc = second.proc.wait(timeout=420)
        yield {"first": first, "second": second, "rc": rc, "left": left, "checkpoint_then": checkpoint_then,
               "stamps": stamps, "gone_after_s": gone_after, "seconds": round(time.time() - started)}
    finally:
        second.clean_up()


def _alive(process: psutil.Process) -> bool:
    try:
        return process.is_running()
    except psutil.Error:
        return False


def _train(run: Path) -> dict:
    return json.loads((run / "train.json").read_text())


def _failure(run: Path) -> dict:
    failures = yaml.safe_load((run / "FAILED").read_text())["failures"]
    assert len(failures) == 1
    return failures[0]


def _section(report: str, title: str) -> str:
    return report.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0] if f"## {title}\n" in report else ""


# --- 1. a worker killed, within the failure budget -----------------------------------------------


def test_a_killed_worker_is_restarted_and_the_run_ends_as_if_uninterrupted(faulted, driver_killed):
    harness, fault = faulted["harness"], faulted["faults"]["killed once"]
    run = harness.run(0)
    assert len(fault.acted) == 1 and (run / "DONE").exists()
    # bit for bit the validation loss of the same run trained without a kill (driver_killed's seed 0)
    reference = driver_killed["first"].run(0)
    assert run.name == reference.name and not (reference / "attempts.jsonl").read_text().count("ended")
    assert _train(run)["val_loss"] == _train(reference)["val_loss"]
    assert _train(run)["val_accuracy"] == _train(reference)["val_accuracy"]
    # the retry, in train.json and in the report
    train = _train(run)
    assert train["restarts"] == 1 and len(train["attempts"]) == 2
    again = train["attempts"][1]
    assert again["resumed_from_step"] >= 50 and again["resumed_from_step"] % 50 == 0
    assert again["reason"].startswith("a Ray Train restart of the workers after WorkerHealthCheckFailedError")
    assert "worker process has died" in again["reason"]
    assert train["attempts"][0]["ended_by"] == "ray train"
    restarted = _section((harness.suite_dir / "report.md").read_text(), "Restarted runs")
    assert f"`{run.name}` was restarted 1 time (now done): attempt 2 resumed from step {again['resumed_from_step']}" in restarted
    assert "restarts" not in (harness.suite_dir / "summary.csv").read_text()
    print(f"\nworker killed: the controller recorded the loss {fault.after('ended 1')} s after the SIGKILL; "
          f"attempt 2 resumed {fault.after('resumed attempt 2')} s after it, {fault.after('resumed attempt 2', 'ended 1')} s "
          f"after the restart began; its first step beat (at most 1 s a beat) {fault.after('step attempt 2', 'ended 1')} s "
          f"after the restart began")


# --- 2. the failure budget spent -----------------------------------------------------------------


def test_a_spent_failure_budget_fails_the_run_with_its_error_and_leaves_no_process(faulted):
    harness, fault = faulted["harness"], faulted["faults"]["killed twice"]
    run = harness.run(3)
    assert len(fault.acted) == 2 and not (run / "train.json").exists()
    failure = _failure(run)
    # Ray Train reports a lost worker through its health check
    assert failure["failed"] == "train" and failure["error"] == "WorkerHealthCheckFailedError"
    assert "worker process has died" in failure["message"]
    assert [row["by"] for row in events(run, "ended")] == ["ray train", "failed"]
    assert (harness.run(1) / "DONE").exists()  # the run left alone finished
    assert faulted["rc"] == 1
    output = harness.output()
    assert f"FAILED train {run.name}: WorkerHealthCheckFailedError" in output
    report = (harness.suite_dir / "report.md").read_text()
    assert f"| {run.name} | train    | WorkerHealthCheckFailedError" in _section(report, "Failed runs")
    assert faulted["left"] == [], [p.cmdline() for p in faulted["left"]]  # no process of that Ray
    print(f"\nfailure budget spent: FAILED seen {fault.after('FAILED')} s after the second SIGKILL; "
          f"the faulted suite took {faulted['seconds']} s")


# --- 5. a hung worker ----------------------------------------------------------------------------


def test_a_hung_worker_fails_its_run_as_a_timeout_and_the_others_go_on(faulted):
    harness, fault = faulted["harness"], faulted["faults"]["hung"]
    run = harness.run(2)
    assert len(fault.acted) == 1
    waited = fault.after("FAILED")
    assert waited <= HANG_TIMEOUT_S + HANG_MARGIN_S
    failure = _failure(run)
    assert failure["error"] == "StepTimeout" and "stopped as hung" in failure["message"]
    assert f"(train.step_timeout_s is {HANG_TIMEOUT_S})" in failure["message"]
    assert re.search(r"no training progress for \d+ s .* after step [1-9]\d*", failure["message"])
    # the stopped worker went with its run (seen gone while `harness run` went on, where it did)
    assert faulted["stopped_alive"] == [] and (fault.after("its process gone", "FAILED") or 0) < 30
    assert [row["by"] for row in events(run, "ended")] == ["watchdog"]
    report = (harness.suite_dir / "report.md").read_text()
    assert "training stopped as hung at step" in _section(report, "Unfinished runs")
    assert "A StepTimeout is a training stopped as hung" in _section(report, "Failed runs")
    assert (harness.run(1) / "DONE").exists() and (harness.run(0) / "DONE").exists()
    print(f"\nhang: FAILED {waited} s after the SIGSTOP (step_timeout_s {HANG_TIMEOUT_S}, "
          f"bound {HANG_TIMEOUT_S + HANG_MARGIN_S:g} s); its process seen gone "
          f"{fault.after('its process gone', 'FAILED')} s after FAILED")


# --- 3. the driver killed ------------------------------------------------------------------------


def test_a_killed_driver_leaves_no_ray_behind_and_the_same_command_resumes(driver_killed, faulted, tmp_path):
    first, second = driver_killed["first"], driver_killed["second"]
    # the embedded Ray went with its driver, the worker the test had stopped included
    assert driver_killed["left"] == []
    assert driver_killed["checkpoint_then"], "seed 1 had a checkpoint when the driver was killed"
    assert driver_killed["rc"] == 0, second.output()[-3000:]
    assert "2 runs: 1 done, 0 to evaluate, 1 to resume, 0 to train" in second.output()
    done = first.run(0)
    # the finished run is left as it was; only its model card is new, written with the first
    # report after it finished (the driver was killed before that report)
    now = {p: p.stat().st_mtime_ns for p in done.rglob("*") if p.is_file()}
    assert {p: now.get(p) for p in driver_killed["stamps"]} == driver_killed["stamps"]
    assert set(now) - set(driver_killed["stamps"]) <= {done / "model" / "README.md"}
    resumed = first.run(1)
    started = events(resumed, "started")
    assert [row["resumed_from_step"] for row in started] == [0, driver_killed["checkpoint_then"][-1]]
    assert _train(resumed)["attempts"][1]["reason"].startswith("a new `harness run`; the attempt before ended")
    steps = [row["step"] for row in map(json.loads, (resumed / "metrics.jsonl").read_text().splitlines())
             if row["kind"] == "train"]
    assert steps == list(range(10, 301, 10))  # no step twice, none missing

    # summary.csv equals an uninterrupted suite's: the same runs, each trained without a fault
    reference = tmp_path / "results" / "faults"
    for run in (done, faulted["harness"].run(1)):
        shutil.copytree(run, reference / run.name)
    shutil.copy(first.suite_dir / "suite.json", reference / "suite.json")
    from harness.report import write_report
    write_report(reference, "Suite faults")
    ours, theirs = (pd.read_csv(d / "summary.csv") for d in (first.suite_dir, reference))
    wall = [c for c in ours.columns if c.startswith("wall_time_s")]
    assert list(ours.columns) == list(theirs.columns)
    pd.testing.assert_frame_equal(ours.drop(columns=wall), theirs.drop(columns=wall), check_exact=True)
    print(f"\ndriver killed: its Ray's processes were gone {driver_killed['gone_after_s']} s after; "
          f"both invocations took {driver_killed['seconds']} s")


# --- 4. a kill during a checkpoint save ----------------------------------------------------------


def _die_while_saving(plan: dict, tag: str) -> None:
    """Child process: train, and SIGKILL this process halfway through writing the second file of
    checkpoint `tag` (DeepSpeed's own save, through its checkpoint engine)."""
    import torch
    from deepspeed.runtime.checkpoint_engine import TorchCheckpointEngine

    from harness.train.worker import train_worker
    save, files = TorchCheckpointEngine.save, []

    def dying(self, state_dict, path):
        if Path(path).parent.name == tag:
            files.append(path)
            if len(files) == 2:
                whole = io.BytesIO()
                torch.save(state_dict, whole)
                Path(path).write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
                os.kill(os.getpid(), signal.SIGKILL)
        return save(self, state_dict, path)
    TorchCheckpointEngine.save = dying
    train_worker(plan)


def _train_plainly(plan: dict) -> None:
    from harness.train.worker import train_worker
    train_worker(plan)


def _child(target, *args) -> int:
    return spawn(target, *args)


def test_a_kill_during_a_save_resumes_from_the_checkpoint_before(tiny_data, tmp_path):
    from test_checkpoint import _plan  # 20 steps, a checkpoint every 5, ZeRO-2, no Ray

    plan = _plan(tiny_data, tmp_path / "results")
    job, run = plan.train_job().model_dump(mode="json"), Path(plan.run_dir)
    assert _child(_die_while_saving, job, "step10") == -signal.SIGKILL
    torn = run / "checkpoints" / "step10"
    assert sorted(p.name for p in torn.iterdir()) == ["mp_rank_00_model_states.pt",
                                                      "zero_pp_rank_0_mp_rank_00_optim_states.pt"]
    assert not (torn / "MANIFEST.json").exists() and sealed(run) == [5]

    assert _child(_train_plainly, job) == 0
    # from the complete checkpoint before the torn one: not 10, not 0 (the torn folder was set
    # aside; checkpoints/ goes once the run is trained)
    assert [row["resumed_from_step"] for row in events(run, "started")] == [0, 5]
    train = _train(run)
    assert train["restarts"] == 1 and train["steps"] == 20
    assert train["attempts"][1]["reason"] == "a new attempt; the one before ended without a record"


# --- the watchdog's clock, without Ray ----------------------------------------------------------


def test_the_watchdog_clock_runs_in_training_waits_for_placement_and_allows_set_up(tmp_path):
    from harness.results import RunDir
    from harness.train import attempts

    run = RunDir(tmp_path / "run")
    watch = attempts.Watch(run, timeout_s=20)
    t = time.time()
    assert watch.hung(now=t) is None  # no heartbeat yet: nothing to judge
    attempts.beat(run, "submitted", by="driver")
    assert watch.hung(now=t) is None and watch.hung(now=t + 3600) is None  # waiting for placement
    attempts.beat(run, "engine")  # an attempt's set-up: SETUP_S at least
    assert watch.hung(now=t) is None and watch.hung(now=t + 200) is None
    assert "300 s allowed in phase engine" in watch.hung(now=t + attempts.SETUP_S + 10)
    attempts.beat(run, "step", step=7, attempt=1)
    seen = time.time()
    assert watch.hung(now=seen) is None and watch.hung(now=seen + 15) is None
    hung = watch.hung(now=seen + 25)
    assert hung.startswith("no training progress for 25 s (train.step_timeout_s is 20) after step 7")
    # a heartbeat whose own clock is behind is judged by when the driver saw it change
    attempts.beat(run, "step", step=8, attempt=1)
    beat = json.loads((run.root / "heartbeat.json").read_text())
    (run.root / "heartbeat.json").write_text(json.dumps({**beat, "unix": beat["unix"] - 3600}))
    seen = time.time()
    assert watch.hung(now=seen) is None and watch.hung(now=seen + 15) is None
    assert watch.hung(now=seen + 25) is not None


def test_the_attempts_say_why_each_started(tmp_path):
    from harness.results import RunDir
    from harness.train import attempts

    run = RunDir(tmp_path / "run")
    beat = attempts.Heartbeat(run, enabled=True)
    attempts.submitted(run)
    beat.started(0)
    attempts.ended(run, "ray train", "WorkerHealthCheckFailedError: lost")
    attempts.ended(run, "ray train", "recorded once only")
    beat.started(50)  # Ray Train restarted the workers
    attempts.submitted(run)  # the driver was killed; a new `harness run`
    beat.started(100)
    attempts.ended(run, "watchdog", "no training progress for 25 s")
    attempts.submitted(run)
    beat.started(150)
    assert [(a["attempt"], a["resumed_from_step"], a["reason"]) for a in attempts.history(run)] == [
        (1, 0, None),
        (2, 50, "a Ray Train restart of the workers after WorkerHealthCheckFailedError: lost"),
        (3, 100, "a new `harness run`; the attempt before ended without a record (its driver stopped)"),
        (4, 150, "a new `harness run`; the attempt before was stopped as hung (no training progress for 25 s)")]
    assert attempts.summary(run)["restarts"] == 3
    assert attempts.read_beat(run)["phase"] == "resumed" and attempts.read_beat(run)["attempt"] == 4
