"""One writer per suite results folder: a second command refuses and names the holder; a lock
whose holder is gone is taken over with a notice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from conftest import REPO
from harness.errors import UserError
from harness.lock import LOCK_NAME, STALE_AFTER_S, SuiteLock, read_holder

HOLD = """
import sys, time
from pathlib import Path
from harness.lock import SuiteLock
with SuiteLock(Path(sys.argv[1]), "harness run"):
    Path(sys.argv[2]).write_text("held")
    time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of tmp_path/results/suite, until the test ends."""
    suite_dir, ready = tmp_path / "results" / "tiny_lock", tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(suite_dir), str(ready)], cwd=REPO)
    deadline = time.time() + 60
    while not ready.exists():
        assert proc.poll() is None and time.time() < deadline, "the holder did not start"
        time.sleep(0.1)
    yield proc, suite_dir
    proc.kill()
    proc.wait()


def test_a_second_writer_is_refused_naming_the_holder(holder):
    proc, suite_dir = holder
    with pytest.raises(UserError, match=f"pid {proc.pid} on host"):
        with SuiteLock(suite_dir):
            raise AssertionError("entered a held lock")
    assert read_holder(suite_dir / LOCK_NAME)["pid"] == proc.pid  # the holder's lock is intact


def test_harness_run_refuses_before_writing_anything(holder, tmp_path):
    proc, suite_dir = holder
    suite = tmp_path / "tiny_lock.yaml"
    suite.write_text(yaml.safe_dump({
        "objectives": ["clm"], "sizes": ["tiny"], "budget": {"flops": 1e9},
        "data": {"synthetic": {"entities": 8, "documents": 200}, "seq_len": 32}}))
    done = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(suite), "--results",
                           str(suite_dir.parent)], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 2, done.stderr
    assert f"pid {proc.pid}" in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in suite_dir.parent.iterdir()) == ["tiny_lock"]  # no data prepared
    assert [p.name for p in suite_dir.iterdir()] == [LOCK_NAME]  # no run started


def test_the_lock_of_a_process_that_ended_is_taken_over_with_a_notice(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    pid = int(gone.stdout)
    (tmp_path / LOCK_NAME).write_text(json.dumps(
        {"pid": pid, "host": os.uname().nodename, "since": "earlier", "heartbeat": time.time()}))
    notices = []
    with SuiteLock(tmp_path, notice=notices.append):
        assert read_holder(tmp_path / LOCK_NAME)["pid"] == os.getpid()
    assert len(notices) == 1 and "stale lock" in notices[0] and f"pid {pid}" in notices[0]
    assert not (tmp_path / LOCK_NAME).exists()  # released on exit


def test_a_lock_on_another_host_is_stale_only_when_its_heartbeat_stopped(tmp_path):
    lock = tmp_path / LOCK_NAME
    other = {"pid": 1, "host": "another-node", "since": "earlier"}
    lock.write_text(json.dumps({**other, "heartbeat": time.time() - 5}))
    with pytest.raises(UserError, match="another-node"):
        with SuiteLock(tmp_path):
            pass
    lock.write_text(json.dumps({**other, "heartbeat": time.time() - STALE_AFTER_S - 1}))
    notices = []
    with SuiteLock(tmp_path, notice=notices.append):
        assert read_holder(lock)["host"] != "another-node"
    assert "another-node" in notices[0]


def test_a_refused_command_leaves_no_empty_folder(tmp_path):
    with SuiteLock(tmp_path / "new_suite"):
        assert (tmp_path / "new_suite" / LOCK_NAME).exists()
    assert not (tmp_path / "new_suite").exists()
