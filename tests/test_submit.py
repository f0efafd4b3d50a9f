"""`harness submit` and `harness jobs`: the refusals that must happen before anything is sent,
and an embedded Ray that listens on loopback only. (A real submission, followed to its end, runs
on the multi-node cluster of tests/test_cluster.py.)

Everything runs for real: `harness` commands in subprocesses, a real embedded Ray. Refusals are
proven by a listening socket that records every connection made to it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys

import psutil
import pytest
import yaml

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
import json, os, sys, psutil
from harness import rendezvous, schedule
import ray
from ray.train import ScalingConfig
from ray.train.torch import TorchTrainer

def listening(pid):
    rows = []
    for p in [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True):
        try:
            rows += [[c.laddr.ip, c.laddr.port, p.name()] for c in p.net_connections(kind="inet")
                     if c.status == psutil.CONN_LISTEN or (c.type == 2 and not c.raddr)]
        except psutil.Error:
            pass
    return rows

def loop(config):  # two training workers, their process group made as harness.schedule makes it
    import torch, torch.distributed as dist
    total = torch.ones(1)
    dist.all_reduce(total)
    if dist.get_rank() == 0:  # while the group and its store are up: every process of this Ray
        with open(config["out"], "w") as f:
            json.dump({"sum": total.item(), "rows": listening(config["driver"])}, f)
    dist.barrier()

schedule.start_embedded(schedule.runtime_env(False))
TorchTrainer(loop, train_loop_config={"out": sys.argv[1], "driver": os.getpid()},
             scaling_config=ScalingConfig(num_workers=2),
             torch_config=rendezvous.NodeBoundTorchConfig(backend="gloo", timeout_s=120)).fit()
print("SOCKETS", json.dumps(listening(os.getpid()) + json.load(open(sys.argv[1]))["rows"]))
schedule.shutdown()
"""


def _loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    return address.is_loopback or bool(getattr(address, "ipv4_mapped", None) and address.ipv4_mapped.is_loopback)


def test_an_embedded_ray_listens_on_loopback_only_and_its_token_file_is_private(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(tmp_path), "RAY_AUTH_MODE": None,
           "RAY_AUTH_TOKEN": None, "RAY_AUTH_TOKEN_PATH": None}
    done = subprocess.run([sys.executable, "-c", LISTEN, str(tmp_path / "training.json")],
                          capture_output=True, text=True, timeout=400,
                          env={k: v for k, v in env.items() if v is not None})
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(done.stdout.split("SOCKETS ", 1)[1].splitlines()[0])
    names = {name for _, _, name in rows}
    assert {"gcs_server", "raylet"} <= names and any("DashboardAgent" in n for n in names), rows
    assert json.loads((tmp_path / "training.json").read_text())["sum"] == 2.0  # the workers' group worked
    assert any("RayTrainWorker" in n for n in names), rows  # sampled while they trained
    assert [row for row in rows if not _loopback(row[0])] == []
    token = tmp_path / ".ray" / "auth_token"
    assert token.is_file() and token.stat().st_mode & 0o777 == 0o600
