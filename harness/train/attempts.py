"""A run's attempts, and the heartbeat by which the scheduler tells a hung run from a slow one.

    RUN/heartbeat.json   {"phase", "step", "attempt", "time", "unix", "by"}, replaced (never
                         appended): by the driver when it submits the run ("submitted"); by
                         the Ray Train controller when its state changes ("scheduling",
                         "running", "restarting", ...); by rank 0 as an attempt starts, once
                         its engine is up, once it has resumed, after optimizer steps (at most
                         once a second), after each validation and checkpoint, and as it saves
                         the model.
    RUN/attempts.jsonl   one line per event: {"event": "submitted", "when"} by the driver as it
                         submits the run (a new `harness run`); {"event": "started", "attempt",
                         "when", "resumed_from_step"} by rank 0 once an attempt has resumed;
                         {"event": "ended", "when", "by", "error"} by the Ray Train controller
                         when it restarts the workers ("ray train") or gives up ("failed"), and
                         by the driver when it stops a hung run ("watchdog").

`history` reads the second into one entry per attempt, with the reason it started where one is
known; train.json keeps it (`attempts`) and the count of restarts (`restarts`).

`Watch` is the driver's clock on a heartbeat: see its docstring.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from harness.results import RunDir, read_jsonl, utc_now

BEAT_EVERY_S = 1.0  # rank 0 rewrites the heartbeat after a step at most this often
# Phases in which a run waits for Ray to place it: not judged by the watchdog (Ray Train's own
# timeouts on placement, worker start-up and the process group apply there).
WAITING = frozenset({"submitted", "initializing", "scheduling", "rescheduling"})
# Phases of training proper: each must be followed by another heartbeat within step_timeout_s.
TRAINING = frozenset({"resumed", "step", "val", "checkpoint"})
# Every other phase (the controller starting or restarting the workers, an attempt's set-up:
# imports, the engine, the checkpoint load; the model's export) gets at least this long.
SETUP_S = 300.0


def heartbeat_path(run: RunDir) -> Path:
    return run.root / "heartbeat.json"


def attempts_path(run: RunDir) -> Path:
    return run.root / "attempts.jsonl"


def beat(run: RunDir, phase: str, step: int | None = None, attempt: int | None = None, by: str = "rank 0") -> None:
    """Replace RUN/heartbeat.json. Not fsynced: it is a sign of life, not a record; a rename makes
    it whole or absent, never half written."""
    path = heartbeat_path(run)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"phase": phase, "step": step, "attempt": attempt, "time": utc_now(),
                               "unix": time.time(), "by": by}))
    os.replace(tmp, path)


def read_beat(run: RunDir) -> dict | None:
    try:
        return json.loads(heartbeat_path(run).read_text())
    except (OSError, ValueError):
        return None


class Heartbeat:
    """Rank 0's heartbeat for one attempt (a no-op on other ranks)."""

    def __init__(self, run: RunDir, enabled: bool):
        self.run, self.enabled, self.attempt, self.last = run, enabled, None, 0.0

    def __call__(self, phase: str, step: int | None = None) -> None:
        if self.enabled:
            beat(self.run, phase, step, self.attempt)
            self.last = time.monotonic()

    def step(self, step: int) -> None:
        if time.monotonic() - self.last >= BEAT_EVERY_S:
            self("step", step)

    def started(self, resumed_from_step: int) -> None:
        """Record the attempt in RUN/attempts.jsonl, now that it has resumed."""
        if self.enabled:
            self.attempt = 1 + sum(row.get("event") == "started" for row in read(self.run))
            _append(self.run, {"event": "started", "attempt": self.attempt, "when": utc_now(),
                               "resumed_from_step": resumed_from_step})
            self("resumed", resumed_from_step)


def submitted(run: RunDir) -> None:
    """Record that a `harness run` submitted the run (the driver)."""
    _append(run, {"event": "submitted", "when": utc_now()})


def ended(run: RunDir, by: str, error: str) -> None:
    """Record that the attempt in progress ended (nothing when none is: no started line since the
    last end)."""
    rows = [row for row in read(run) if row.get("event") in ("started", "ended")]
    if rows and rows[-1]["event"] == "started":
        _append(run, {"event": "ended", "when": utc_now(), "by": by, "error": error})


def read(run: RunDir) -> list[dict]:
    path = attempts_path(run)
    return read_jsonl(path) if path.exists() else []


def _append(run: RunDir, row: dict) -> None:
    attempts_path(run).parent.mkdir(parents=True, exist_ok=True)
    with attempts_path(run).open("a") as f:
        f.write(json.dumps(row) + "\n")


def history(run: RunDir) -> list[dict]:
    """One entry per attempt: {attempt, started, resumed_from_step, reason} (reason None for the
    first), and `ended`, `ended_by` and `error` where its end was recorded."""
    attempts, end, new_command = [], None, False
    for row in read(run):
        event = row.get("event")
        if event == "submitted":
            new_command = True
        elif event == "ended" and attempts:
            end = row
            attempts[-1] |= {"ended": row.get("when"), "ended_by": row.get("by"), "error": row.get("error")}
        elif event == "started":
            attempts.append({"attempt": row.get("attempt", len(attempts) + 1), "started": row.get("when"),
                             "resumed_from_step": row.get("resumed_from_step", 0),
                             "reason": _reason(end, new_command) if attempts else None})
            end, new_command = None, False
    return attempts


def _reason(end: dict | None, new_command: bool) -> str:
    """Why an attempt after the first started: the end recorded of the one before, if any, and
    whether a new `harness run` started it (else Ray Train restarted the workers)."""
    if not new_command:
        if end is None:
            return "a new attempt; the one before ended without a record"
        return f"a Ray Train restart of the workers after {end.get('error')}"
    if end is None:
        return "a new `harness run`; the attempt before ended without a record (its driver stopped)"
    if end.get("by") == "watchdog":
        return f"a new `harness run`; the attempt before was stopped as hung ({end.get('error')})"
    return f"a new `harness run`; the attempt before ended with {end.get('error')}"


def summary(run: RunDir) -> dict:
    """What train.json keeps of the attempts: their count beyond the first, and each one."""
    attempts = history(run)
    return {"restarts": max(len(attempts) - 1, 0), "attempts": attempts}


class StepTimeout(Exception):
    """A run made no progress (no heartbeat) for train.step_timeout_s."""


class Watch:
    """The driver's clock on one run's heartbeat.

    The clock restarts whenever the heartbeat's content changes, as the driver sees it (so that
    a node whose clock is ahead or behind cannot make a healthy run look hung), and the run is
    hung when the heartbeat has neither changed for `timeout_s` by the driver's clock nor been
    written within `timeout_s` by its own timestamp. Polled every `timeout_s / 4` at most, a hang
    is caught within 1.25 x timeout_s of the last sign of life.

    Before the first heartbeat of this invocation (the file may be an older invocation's, seen
    here for the first time) the clock starts when the driver first looks. While the run waits
    for Ray to place it (WAITING: submitted, the controller scheduling the workers) the clock
    does not run: waiting for resources is not a hang, and Ray Train bounds those phases itself
    (placement group wait, worker group start-up, the process group's timeout). Training proper
    (TRAINING: from resumed through steps, validations and checkpoints) gets `timeout_s` between
    heartbeats. Everything else gets max(timeout_s, SETUP_S): an attempt's set-up (importing
    DeepSpeed, building the engine, loading the checkpoint: on a loaded machine, tens of
    seconds), the model's export, and a Ray Train restart, which is a chain of heartbeats from
    the controller (restarting, scheduling, running) and then the new attempt's start, engine
    and resumed, each link with its own allowance. So a restart is not taken for a hang, with
    default settings or small step timeouts.
    """

    def __init__(self, run: RunDir, timeout_s: float):
        self.run, self.timeout_s = run, timeout_s
        self.seen: dict | None = None
        self.since = time.time()

    def hung(self, now: float | None = None) -> str | None:
        """None while the run lives; else a sentence naming the last sign of life."""
        now = time.time() if now is None else now
        beat = read_beat(self.run)
        if beat != self.seen:
            self.seen, self.since = beat, now
            return None
        if beat is None or beat.get("phase") in WAITING:
            return None
        phase = beat.get("phase")
        limit = self.timeout_s if phase in TRAINING else max(self.timeout_s, SETUP_S)
        age = min(now - self.since, now - float(beat.get("unix", now)))
        if age <= limit:
            return None
        step = max(beat.get("step") or 0, *(row.get("step", 0) for row in self.run.read_metrics()), 0)
        allowed = "" if limit == self.timeout_s else f"; {limit:g} s allowed in phase {phase}"
        return (f"no training progress for {age:.0f} s (train.step_timeout_s is {self.timeout_s:g}{allowed}) "
                f"after step {step} (last heartbeat: {phase}, attempt {beat.get('attempt')}): stopped as hung")
