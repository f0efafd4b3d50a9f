"""A real Ray cluster for tests: `ray start` processes on loopback, each in its own process group,
with its own ports and a short temp dir (Ray's socket paths must fit in 107 bytes). Stop kills
the process groups it started, and only those."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

RAY = Path(sys.executable).with_name("ray")
PORT_FLAGS = ("node-manager", "object-manager", "dashboard-agent-listen", "dashboard-agent-grpc",
              "runtime-env-agent", "metrics-export")


@dataclass
class Cluster:
    temp: Path
    gcs_port: int
    dashboard_port: int | None
    env: dict
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_head(num_cpus: int = 2, dashboard: bool = True, env: dict | None = None,
               resources: str | None = None, timeout_s: float = 180) -> Cluster:
    """`ray start --head --block` on 127.0.0.1, with the dashboard (the Jobs API) if asked."""
    temp = Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp"))
    cluster = Cluster(temp, free_port(), free_port() if dashboard else None, {**os.environ, **(env or {})})
    args = ["--head", "--port", str(cluster.gcs_port), "--node-ip-address", "127.0.0.1",
            "--ray-client-server-port", str(free_port())]
    if dashboard:
        args += ["--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
                 "--dashboard-port", str(cluster.dashboard_port)]
    else:
        args += ["--include-dashboard", "false"]
    _start(cluster, args, num_cpus, resources, "head")
    try:
        _wait_for_port(cluster.gcs_port, cluster.processes[0], timeout_s)
        if dashboard:
            _wait_for_port(cluster.dashboard_port, cluster.processes[0], timeout_s)
    except BaseException:
        stop(cluster)
        raise
    return cluster


def add_node(cluster: Cluster, num_cpus: int = 1, resources: str | None = None) -> subprocess.Popen:
    """A worker node joining the head, with its own ports and temp dir."""
    _start(cluster, ["--address", cluster.address, "--node-ip-address", "127.0.0.1"], num_cpus,
           resources, f"node{len(cluster.processes)}")
    return cluster.processes[-1]


def _start(cluster: Cluster, args: list[str], num_cpus: int, resources: str | None, name: str) -> None:
    ports = [a for flag in PORT_FLAGS for a in (f"--{flag}-port", str(free_port()))]
    extra = ["--resources", resources] if resources else []
    log = (cluster.temp / f"{name}.log").open("w")
    cluster.processes.append(subprocess.Popen(
        [str(RAY), "start", "--block", "--num-cpus", str(num_cpus), "--disable-usage-stats",
         "--temp-dir", str(cluster.temp), *args, *ports, *extra],
        env=cluster.env, start_new_session=True, stdout=log, stderr=subprocess.STDOUT))


def _wait_for_port(port: int, process: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ray start exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"ray start did not listen on {port} within {timeout_s:.0f} s")


def stop(cluster: Cluster) -> None:
    """Kill each `ray start` by its own process group (worker nodes first), remove the temp dir."""
    for process in reversed(cluster.processes):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=60)
    shutil.rmtree(cluster.temp, ignore_errors=True)
