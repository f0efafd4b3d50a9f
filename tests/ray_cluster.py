"""A real multi-node Ray cluster for tests: `ray start` processes on this machine.

    cluster = RayCluster()
    address = cluster.start_head(num_cpus=0)     # the driver's node: GCS, dashboard (optional)
    a = cluster.add_node(num_cpus=1)              # a worker node: its own raylet, object manager, ...
    b = cluster.add_node(num_cpus=1, wrap=[...])  # a command that execs `ray start` (unshare, ...)
    cluster.node_ids()                            # {node manager port: Ray's node id}, from the cluster
    cluster.kill(b)                               # SIGKILL the node's process group (a lost node)
    cluster.stop()                                # every node, by process group, and the temp dir

Every node has ports of its own (GCS, node manager, object manager, dashboard and its agent,
runtime-env agent, metrics export, client server, and a range of worker ports), keeps its files
under one short temp dir (Ray's socket paths must fit in 107 bytes), and runs in a process group
of its own (`ray start --block` in a new session), so that `stop` and `kill` end exactly the
processes this cluster started, and nothing else on the host. The cluster requires a token of its
own (`env` carries it to every process that joins).

Nodes are started with `--node-ip-address 127.0.0.1`, but Ray replaces a loopback address with
the machine's own for a cluster (ray._private.services.resolve_ip_for_localhost; the single-host
switch RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 would keep loopback but refuses worker nodes), so the
nodes register, and many of their servers listen, on the machine's address.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

RAY = Path(sys.executable).with_name("ray")
PORT_FLAGS = ("node-manager", "object-manager", "ray-client-server", "dashboard-agent-listen",
              "dashboard-agent-grpc", "runtime-env-agent", "metrics-export")
WORKER_PORTS = 40  # per node: its workers' gRPC servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_range(n: int = WORKER_PORTS, taken: set[int] = frozenset()) -> tuple[int, int]:
    """`n` consecutive ports, all free on 127.0.0.1 now and none in `taken`."""
    for start in random.sample(range(20_000, 60_000, n), 200):
        ports = range(start, start + n)
        if not taken.intersection(ports) and all(_free(port) for port in ports):
            return start, start + n - 1
    raise RuntimeError(f"no {n} consecutive free ports")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@dataclass
class Node:
    name: str
    process: subprocess.Popen
    ports: dict[str, int]
    log: Path

    @property
    def node_manager_port(self) -> int:
        return self.ports["node-manager"]


@dataclass
class RayCluster:
    temp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="rc-", dir="/tmp")))
    nodes: list[Node] = field(default_factory=list)
    address: str = ""
    dashboard: str = ""  # http://127.0.0.1:PORT where the head has a dashboard
    # Token authentication with a token of its own (not ~/.ray/auth_token): pass `env` to every
    # process that joins the cluster.
    env: dict = field(default_factory=lambda: {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                                               "RAY_AUTH_TOKEN_PATH": None})
    taken: set[int] = field(default_factory=set)

    def start_head(self, num_cpus: int = 0, dashboard: bool = False, timeout_s: float = 180) -> str:
        """The head node; returns the GCS address (127.0.0.1:PORT)."""
        port = self._port()
        args = ["--head", "--port", str(port), "--include-dashboard", str(dashboard).lower()]
        if dashboard:
            dash = self._port()
            args += ["--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash)]
            self.dashboard = f"http://127.0.0.1:{dash}"
        self.address = f"127.0.0.1:{port}"
        head = self._start("head", num_cpus, args, [], {"gcs": port})
        self._wait_for(port, head, timeout_s)
        if dashboard:
            self._wait_for(int(self.dashboard.rsplit(":", 1)[1]), head, timeout_s)
        return self.address

    def add_node(self, num_cpus: int = 1, wrap: list[str] | None = None, name: str | None = None,
                 timeout_s: float = 180) -> Node:
        """A worker node joined to the head; `wrap` is a command line that ends by running the
        `ray start` arguments it is given (e.g. a shell that first mounts something). Returns once
        the cluster lists the node as alive."""
        node = self._start(name or f"node{len(self.nodes)}", num_cpus, ["--address", self.address], wrap or [], {})
        deadline = time.time() + timeout_s
        while not self._joined(node):
            assert node.process.poll() is None, f"{node.name} exited; see {node.log}"
            assert time.time() < deadline, f"{node.name} did not join within {timeout_s} s; see {node.log}"
            time.sleep(1)
        return node

    def _joined(self, node: Node) -> bool:
        try:
            return node.node_manager_port in self.node_ids(alive_only=True)
        except RuntimeError:  # under load, a driver can miss its wait for the GCS: ask again
            return False

    def _start(self, name: str, num_cpus: int, args: list[str], wrap: list[str], ports: dict) -> Node:
        ports = {**ports, **{flag: self._port() for flag in PORT_FLAGS}}
        low, high = free_range(taken=self.taken)
        self.taken.update(range(low, high + 1))
        log = self.temp / f"{name}.log"
        command = [str(RAY), "start", "--block", *args, "--num-cpus", str(num_cpus),
                   "--node-ip-address", "127.0.0.1", "--temp-dir", str(self.temp / "ray"),
                   "--disable-usage-stats", "--min-worker-port", str(low), "--max-worker-port", str(high),
                   *(a for flag in PORT_FLAGS for a in (f"--{flag}-port", str(ports[flag])))]
        env = {k: v for k, v in {**os.environ, **self.env}.items() if v is not None}
        process = subprocess.Popen([*wrap, *command], env=env, start_new_session=True,
                                   stdout=log.open("w"), stderr=subprocess.STDOUT)
        node = Node(name, process, ports, log)
        self.nodes.append(node)
        return node

    def _port(self) -> int:
        while (port := free_port()) in self.taken:
            pass
        self.taken.add(port)
        return port

    def _wait_for(self, port: int, node: Node, timeout_s: float) -> None:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            assert node.process.poll() is None, f"{node.name} exited; see {node.log}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"{node.name} did not listen on {port}; see {node.log}")

    def node_ids(self, alive_only: bool = False) -> dict[int, str]:
        """{node manager port: Ray node id} of the cluster's nodes, asked of the cluster by a
        driver of its own (a subprocess: this process may have joined another Ray)."""
        code = ("import json, ray; ray.init(address=%r, log_to_driver=False, configure_logging=False); "
                "print(json.dumps([[n['NodeManagerPort'], n['NodeID'], n['Alive']] for n in ray.nodes()]))"
                % self.address)
        env = {k: v for k, v in {**os.environ, **self.env}.items() if v is not None}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
        if done.returncode:
            raise RuntimeError(f"listing the nodes failed: {done.stderr[-2000:]}")
        rows = json.loads(done.stdout.strip().splitlines()[-1])
        return {port: node_id for port, node_id, alive in rows if alive or not alive_only}

    def kill(self, node: Node) -> None:
        """SIGKILL every process of the node (its process group): the node is lost, as when its
        machine is preempted. Worker processes that left the group are found by their raylet."""
        _kill_group(node.process)

    def stop(self) -> None:
        """Every node, worker nodes first, by process group; then the temp dir."""
        for node in reversed(self.nodes):
            _kill_group(node.process)
        if not os.environ.get("KEEP_RAY_LOGS"):  # set it to read the nodes' logs after a test
            shutil.rmtree(self.temp, ignore_errors=True)


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process group of `process` (a session leader), then any process left in its
    session that moved to a group of its own."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
    for other in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getsid(other.pid) == process.pid:
                other.kill()
