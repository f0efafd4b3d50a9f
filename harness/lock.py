"""One writer per suite results folder.

`harness run`, `harness eval` and `harness report` write into RESULTS/<suite>/. Two of them at
once would train the same run in the same folder and interleave its metrics, so each holds
RESULTS/<suite>/.lock while it writes. The lock file says who holds it (pid, host, since) and
carries a heartbeat that the holder refreshes. A second invocation refuses with a message naming
the holder. A lock whose holder is gone (its process ended on this host, or its heartbeat
stopped, on any host of shared storage) is stale: it is taken over with a notice.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from pathlib import Path

from harness.errors import UserError

LOCK_NAME = ".lock"
HEARTBEAT_S = 10.0
STALE_AFTER_S = 120.0  # a heartbeat this old means the holder is gone, whatever its host


class SuiteLock:
    """`with SuiteLock(suite_dir):` holds the folder's lock, refreshing its heartbeat."""

    def __init__(self, suite_dir: Path, command: str = "harness", notice=None):
        self.path = Path(suite_dir) / LOCK_NAME
        self.command = command
        self.notice = notice or (lambda message: print(message, file=sys.stderr, flush=True))
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> SuiteLock:
        self._made_folder = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while not self._create():
            holder = read_holder(self.path)
            if holder is None:  # released (or torn) between our two looks: try again
                continue
            if not is_stale(holder):
                raise UserError(f"another {holder.get('command', 'harness')} is writing here: "
                                f"{describe(holder)}; wait for it to finish, or stop it", where=str(self.path.parent))
            self._take_over(holder)
        self._beat = threading.Thread(target=self._heartbeat, daemon=True, name="suite-lock")
        self._beat.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        if (read_holder(self.path) or {}).get("token") == self._token:
            self.path.unlink(missing_ok=True)
        if self._made_folder and not any(self.path.parent.iterdir()):
            self.path.parent.rmdir()  # refused before writing anything: leave no empty folder

    # --- the file --------------------------------------------------------------------------

    def _create(self) -> bool:
        """Create the lock file if there is none; False when someone holds it."""
        self._since = time.time()
        self._token = f"{os.getpid()}-{time.time_ns()}-{socket.gethostname()}"
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(self._record())
            f.flush()
            os.fsync(f.fileno())
        return True

    def _record(self) -> str:
        record = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                  "token": self._token, "since": _utc(self._since), "heartbeat": time.time()}
        if job := ray_job_id():
            record["ray_job"] = job
        return json.dumps(record) + "\n"

    def _take_over(self, holder: dict) -> None:
        # Rename first: of two invocations taking over at once, one rename wins and the other
        # finds the lock gone, then competes for a fresh one through O_EXCL like anyone else.
        aside = self.path.with_name(f"{LOCK_NAME}.stale-{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        aside.unlink(missing_ok=True)
        self.notice(f"notice: took over a stale lock of {self.path.parent} ({describe(holder)})")

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            if (read_holder(self.path) or {}).get("token") != self._token:
                return  # taken over (we were presumed gone): never write over the new holder
            tmp = self.path.with_name(f"{LOCK_NAME}.beat-{os.getpid()}")
            tmp.write_text(self._record())
            os.replace(tmp, self.path)


def read_holder(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, ValueError):
        return None


def is_stale(holder: dict, now: float | None = None) -> bool:
    """The holder is gone: its process ended (same host), or its heartbeat stopped (any host)."""
    now = time.time() if now is None else now
    if now - float(holder.get("heartbeat", 0)) > STALE_AFTER_S:
        return True
    if holder.get("host") == socket.gethostname():
        return not _alive(int(holder.get("pid", 0)))
    return False


def describe(holder: dict) -> str:
    age = time.time() - float(holder.get("heartbeat", 0))
    job = f"Ray job {holder['ray_job']}, " if holder.get("ray_job") else ""
    return (f"{job}pid {holder.get('pid')} on host {holder.get('host')}, since {holder.get('since')}, "
            f"last heartbeat {age:.0f} s ago")


RAY_JOB_CONFIG = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # what Ray Jobs sets for a job's entrypoint


def ray_job_id() -> str | None:
    """The submission id of the Ray job this process is the entrypoint of (or a child of), from
    the job config Ray Jobs puts in its environment; None outside a Ray job."""
    config = os.environ.get(RAY_JOB_CONFIG)
    if config is None:
        return None
    try:
        metadata = json.loads(config).get("metadata") or {}
    except (ValueError, AttributeError):
        metadata = {}
    return str(metadata.get("job_submission_id") or "(unknown id)")


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))
