"""RUN/FAILED: what failed in a run's latest attempt, one YAML file per run (see harness.schedule).

Its `failures` list holds the training's failure, or one entry per failed evaluation unit: what
failed, the error's type and last line (`message`) and last TAIL_LINES lines, when (UTC), after
which step, and the logs to read. A training stopped by the watchdog on step progress is an
error of type StepTimeout (harness.train.attempts).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from harness.results import RunDir, read_yaml, utc_now, write_atomic
from harness.units import RunWork

TAIL_LINES = 30  # of an error's text, kept in RUN/FAILED (the whole output is in RUN/logs/)


def record_failure(work: RunWork, kind: str, name: str, error: BaseException, first: bool) -> str:
    """Describe the failure in RUN/FAILED (replacing an earlier attempt's when `first` of this
    attempt, else added to its list); return it in one line for the terminal."""
    run = RunDir(Path(work.run_dir))
    entry = {"failed": f"{kind} {name}".strip(), **describe(error), "when": utc_now(),
             "after_step": _last_step(run), "steps": work.steps,
             "logs": [str(p) for p in sorted(run.logs.glob(_log_pattern(kind, name)))]}
    failures = [] if first or not run.failed.exists() else read_yaml(run.failed).get("failures", [])
    write_atomic(run.failed, _literal_yaml({"run_id": work.run_id, "failures": [*failures, entry]}))
    return f"{entry['message'][:200]} (see {run.failed} and logs/)"


def describe(error: BaseException) -> dict:
    """The type of what really failed (a Ray Train worker's exception, not Ray's wrapper), the
    last line of its text, and the last TAIL_LINES lines of the whole text."""
    root = getattr(error, "cause", None) or error  # RayTaskError(X) carries X as .cause
    failures = getattr(root, "worker_failures", None)  # Ray Train: {rank: exception}
    if failures:
        root = failures[min(failures)]
    name = type(root).__name__
    lines = [line.rstrip() for line in _ANSI.sub("", str(error)).strip().splitlines() if line.strip()]
    message = lines[-1] if lines else name
    head, colon, text = message.partition(": ")
    if colon and head.split(".")[-1] == name:  # "harness.errors.UserError: x" -> "UserError: x"
        message = f"{name}: {text}"
    elif not message.startswith(name):
        message = f"{name}: {message}"
    return {"error": name, "message": message, "error_tail": "\n".join(lines[-TAIL_LINES:])}


_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours the names of remote functions


def last_line(error: BaseException) -> str:
    lines = [line for line in _ANSI.sub("", str(error)).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__


def _last_step(run: RunDir) -> int:
    """The last step in metrics.jsonl: how far the attempt got (0 before the first logged step)."""
    return max((row.get("step", 0) for row in run.read_metrics()), default=0)


def _log_pattern(kind: str, name: str) -> str:
    return "worker-*.log" if kind == "train" else f"{kind}-{name.replace('/', '_')}.log"


def _literal_yaml(data: dict) -> str:
    """YAML with multi-line text as literal blocks, so that a traceback reads as one."""
    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper, value: str):
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)
    Dumper.add_representer(str, text)
    return yaml.dump(data, Dumper=Dumper, sort_keys=False, allow_unicode=True)

