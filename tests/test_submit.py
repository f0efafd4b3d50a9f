"""`harness submit` and `harness jobs` against a real `ray start --head` with token auth; the
refusals that must happen before anything is sent; an embedded Ray that listens on loopback only.

Everything runs for real: `harness` commands in subprocesses, Ray's Jobs API on a loopback head
started by tests/ray_cluster.py, a tiny suite trained by Ray Train and DeepSpeed on CPU inside the
job. Refusals are proven by a listening socket that records every connection made to it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

import ray_cluster
from conftest import REPO

TINY = {
    "name": "tiny_submit", "objectives": ["clm"], "sizes": ["tiny"], "seeds": [0],
    "data": {"synthetic": {"entities": 12, "documents": 600, "seed": 3}, "seq_len": 32,
             "val_fraction": 0.1, "eval_examples": 40},
    "budget": {"tokens": 20 * 8 * 32, "min_steps": 10},
    "train": {"micro_batch_size": 8, "log_every": 5, "eval_every": 20, "checkpoint_every": 20, "val_batches": 2},
    "resources": {"workers_per_run": 1},
    "eval": {"tasks": ["synthetic_glue"], "limit": 20, "bits_per_byte": False, "finetune": {"tasks": []}},
}


def _harness(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    full = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], capture_output=True, text=True,
                          cwd=REPO, env={k: v for k, v in full.items() if v is not None}, timeout=timeout)


@pytest.fixture
def suite_file(tmp_path):
    path = tmp_path / "tiny_submit.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


class Recorder:
    """A listening socket that counts the connections made to it."""

    def __init__(self, host: str):
        self.sock = socket.create_server((host, 0))
        self.sock.setblocking(False)
        self.address = f"http://{host}:{self.sock.getsockname()[1]}"

    def connections(self) -> int:
        count = 0
        while True:
            try:
                self.sock.accept()[0].close()
                count += 1
            except BlockingIOError:
                return count


def _machine_address() -> str | None:
    for addresses in psutil.net_if_addrs().values():
        for a in addresses:
            if a.family == socket.AF_INET and not ipaddress.ip_address(a.address).is_loopback:
                return a.address
    return None


# --- refusals before anything is sent ------------------------------------------------------------


@pytest.mark.parametrize("results, expected", [
    ("results", "is relative"), ("s3://bucket/results", "is a URI")])
def test_submit_refuses_results_that_the_nodes_would_not_share(suite_file, results, expected):
    recorder = Recorder("127.0.0.1")
    done = _harness("submit", str(suite_file), "--results", results, "--address", recorder.address)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(f"error: --results: {results} {expected}") and "absolute path" in done.stderr
    assert recorder.connections() == 0


def test_submit_to_a_network_address_without_auth_is_refused_before_any_connection(suite_file, tmp_path):
    host = _machine_address()
    if host is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    recorder = Recorder(host)
    done = _harness("submit", str(suite_file), "--results", str(tmp_path / "r"), "--address", recorder.address,
                    env={"RAY_AUTH_MODE": None})
    assert done.returncode == 2, done.stderr
    assert "(ShadowRay, CVE-2023-48022)" in done.stderr and "--insecure" in done.stderr
    assert recorder.connections() == 0
    assert not (tmp_path / "r").exists()


def test_a_bad_suite_is_refused_before_the_cluster_is_contacted(tmp_path):
    recorder = Recorder("127.0.0.1")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "lrr": 1}}))
    done = _harness("submit", str(bad), "--results", str(tmp_path / "r"), "--address", recorder.address)
    assert done.returncode == 2 and "train.lrr: unknown key" in done.stderr, done.stderr
    assert recorder.connections() == 0


@pytest.mark.parametrize("command", [["submit"], ["jobs"], ["jobs", "list"], ["jobs", "status"],
                                     ["jobs", "logs"], ["jobs", "stop"]])
def test_submit_and_jobs_commands_describe_themselves(command):
    done = _harness(*command, "--help")
    assert done.returncode == 0 and "usage: harness " + " ".join(command) in done.stdout


def test_the_job_ships_requirements_only_when_asked(tmp_path):
    from harness import submit
    assert "pip" not in submit.runtime_env(tmp_path, pip=False)
    packages = submit.runtime_env(tmp_path, pip=True)["pip"]["packages"]
    assert any(p.startswith("deepspeed") for p in packages) and any(p.startswith("ray[") for p in packages)


# --- embedded Ray: loopback only ------------------------------------------------------------------

LISTEN = """
import json, os, psutil
from harness import schedule
import ray
schedule.start_embedded(schedule.runtime_env(False))
ray.get([ray.remote(lambda: os.getpid()).remote() for _ in range(2)])
rows = []
for p in [psutil.Process()] + psutil.Process().children(recursive=True):
    try:
        rows += [[c.laddr.ip, c.laddr.port, p.name()] for c in p.net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN or (c.type == 2 and not c.raddr)]
    except psutil.Error:
        pass
print("SOCKETS", json.dumps(rows))
schedule.shutdown()
"""


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    return address.is_loopback or bool(getattr(address, "ipv4_mapped", None) and address.ipv4_mapped.is_loopback)


def test_an_embedded_ray_listens_on_loopback_only_and_its_token_file_is_private(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(tmp_path), "RAY_AUTH_MODE": None,
           "RAY_AUTH_TOKEN": None, "RAY_AUTH_TOKEN_PATH": None}
    done = subprocess.run([sys.executable, "-c", LISTEN], capture_output=True, text=True, timeout=400,
                          env={k: v for k, v in env.items() if v is not None})
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(done.stdout.split("SOCKETS ", 1)[1].splitlines()[0])
    names = {name for _, _, name in rows}
    assert {"gcs_server", "raylet"} <= names and any("DashboardAgent" in n for n in names), rows
    assert [row for row in rows if not _loopback(row[0])] == []
    token = tmp_path / ".ray" / "auth_token"
    assert token.is_file() and token.stat().st_mode & 0o777 == 0o600


# --- a real cluster with token auth: submit, follow, refuse a second submit ----------------------


@pytest.fixture(scope="module")
def cluster():
    """A head node with the dashboard (the Jobs API) and token auth. The job's `python` is this
    environment's; no PYTHONPATH, so the job runs the code it carries."""
    token = secrets.token_hex(32)
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "PYTHONPATH": "",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    head = ray_cluster.start_head(num_cpus=2, env=env)
    try:
        yield head, token
    finally:
        ray_cluster.stop(head)


def _job_id(stdout: str) -> str:
    return re.search(r"as Ray job (\S+);", stdout).group(1)


def _wait_for_end(dashboard: str, job_id: str, auth: dict, results: Path, timeout_s: float = 600):
    """Poll `harness jobs status` until the job ends; the lock holders seen meanwhile."""
    deadline, holders = time.time() + timeout_s, []
    while time.time() < deadline:
        lock = results / TINY["name"] / ".lock"
        if lock.is_file():
            holders.append(lock.read_text())
        state = _harness("jobs", "status", job_id, "--address", dashboard, env=auth).stdout.split()
        if state[1:2] and state[1] in ("SUCCEEDED", "FAILED", "STOPPED"):
            return state[1], holders
        time.sleep(2)
    raise TimeoutError(f"job {job_id} did not end within {timeout_s:.0f} s")


def test_a_submitted_suite_runs_to_completion_after_the_submitter_exits(cluster, suite_file, tmp_path):
    head, token = cluster
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    results = tmp_path / "shared-results"
    first = _harness("submit", str(suite_file), "--results", str(results), "--address", head.dashboard, env=auth)
    assert first.returncode == 0, first.stderr[-3000:]
    job_id = _job_id(first.stdout)
    assert f"harness jobs logs --follow {job_id}" in first.stdout  # the submitter has exited

    second = _harness("submit", str(suite_file), "--results", str(results), "--address", head.dashboard, env=auth)
    assert second.returncode == 2 and f"Ray job {job_id}" in second.stderr, second.stderr[-2000:]

    state, holders = _wait_for_end(head.dashboard, job_id, auth, results)
    logs = _harness("jobs", "logs", job_id, "--address", head.dashboard, env=auth).stdout
    assert state == "SUCCEEDED", logs[-4000:]
    assert re.search(r"train +clm-tiny-s0-\w+ started", logs) and "report: " in logs
    assert (results / TINY["name"] / "report.md").is_file()
    holders = [json.loads(h) for h in holders if h.strip()]
    assert holders and all(h.get("ray_job") == job_id for h in holders)  # the lock names the job
    for path in results.rglob("*"):
        assert not path.is_file() or token.encode() not in path.read_bytes(), path
    assert token not in logs
    listed = _harness("jobs", "list", "--address", head.dashboard, env=auth).stdout
    assert job_id in listed and str(results) in listed


RAW_JOB = """
import sys, time
from pathlib import Path
from harness import submit
jobs = submit.client(sys.argv[1])
suite = submit.stage(Path(sys.argv[2]), Path(sys.argv[3]))
job_id = jobs.submit_job(entrypoint=f"python -m harness.cli run {suite}", runtime_env={"working_dir": sys.argv[3]})
while str(jobs.get_job_status(job_id)) not in ("SUCCEEDED", "FAILED", "STOPPED"):
    time.sleep(1)
print("JOB", job_id, jobs.get_job_status(job_id))
print(jobs.get_job_logs(job_id))
"""


def test_harness_run_in_a_ray_job_refuses_a_relative_results_path(cluster, suite_file, tmp_path):
    """What a new user tries: `ray job submit --working-dir . -- harness run SUITE` (the results
    would stay in Ray's temporary copy of the working directory)."""
    head, token = cluster
    staged = tmp_path / "staged"
    staged.mkdir()
    done = subprocess.run([sys.executable, "-c", RAW_JOB, head.dashboard, str(suite_file), str(staged)],
                          capture_output=True, text=True, timeout=400, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})
    assert done.returncode == 0, done.stderr[-3000:]
    job_id, state = done.stdout.split("JOB ", 1)[1].split()[:2]
    assert state == "FAILED"
    assert f"error: --results: this `harness run` is Ray job {job_id}" in done.stdout, done.stdout[-3000:]
    assert "absolute path" in done.stdout and "Traceback" not in done.stdout
