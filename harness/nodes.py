"""Ray: the nodes of a cluster, as the scheduler sees them. Beside harness.schedule, the only
module that imports ray.

- `check_shared_storage`: before any run starts, every alive node must see the results folder.
  The driver writes a token file there and a task pinned to each node reads it back; a node that
  cannot (no such file, other content, an error) stops the suite with a UserError naming the node
  and the path. Results are written with plain file I/O on whichever node a worker or unit runs,
  so `--results` must be a folder on storage every node mounts (NFS, Lustre, a FUSE-mounted
  bucket); a URI is refused by the command line.
- `slots`: how many runs the cluster holds at once, counted node by node (a worker's CPUs cannot
  straddle two nodes).
- `on_driver_node`: Ray options that pin a task to the driver's node. A run's `_fit` task goes
  there, and Ray Train attaches the run's controller to the node of the task that calls `fit`:
  so losing a worker node never takes a run's controller with it.
- `this_node`: the node id and address of the calling process (recorded per rank in train.json).
- `limit_threads`: a unit computes with the CPUs it reserved, not with whatever the reused Ray
  worker process had (see the function).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from harness.errors import UserError
from harness.schema import ResourcesConfig

STORAGE_CHECK_TIMEOUT_S = 300  # a node's first task may wait for its runtime env (the code) to arrive


def alive_nodes() -> list[dict]:
    return [node for node in ray.nodes() if node.get("Alive")]


def check_shared_storage(results_root: Path, timeout_s: float = STORAGE_CHECK_TIMEOUT_S) -> int:
    """Every alive node of the cluster reads back a token file the driver writes under
    `results_root`; a UserError (--results) names each node that cannot, and the path. A cluster
    whose only node is the driver's is not asked (0 is returned), else the number of nodes asked.
    The token file is removed afterwards."""
    nodes, here = alive_nodes(), ray.get_runtime_context().get_node_id()
    if [node["NodeID"] for node in nodes] == [here]:
        return 0
    token = secrets.token_hex(16)
    probe = results_root / f".storage-check-{token[:12]}"
    probe.write_text(token)
    try:
        refs = {_read_back.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
                .remote(str(probe)): node for node in nodes}
        blind = [f"node {node['NodeID']} ({node['NodeManagerAddress']}) {why}"
                 for node, why in _answers(refs, token, probe, timeout_s)]
    finally:
        probe.unlink(missing_ok=True)
    if blind:
        raise UserError(
            f"the results folder is not shared with every node of the cluster: {'; '.join(blind)} (a "
            f"file the driver, on node {here}, wrote there). Give a folder on storage that every node "
            f"mounts at the same path (NFS, Lustre, a FUSE-mounted bucket)", where="--results")
    return len(nodes)


def _answers(refs: dict, token: str, path: Path, timeout_s: float) -> list[tuple[dict, str]]:
    """(node, what it did instead of reading `token` at `path`) for each node that did not."""
    ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
    wrong = [(refs[ref], f"did not read {path} within {timeout_s:.0f} s") for ref in late]
    for ref in late:
        ray.cancel(ref, force=True)
    for ref in ready:
        try:
            seen = ray.get(ref)
        except Exception as e:  # the read failed there (permissions, a stale mount, ...)
            lines = str(e).strip().splitlines()
            wrong.append((refs[ref], f"failed to read {path} ({lines[-1] if lines else type(e).__name__})"))
            continue
        if seen != token:
            wrong.append((refs[ref], f"cannot see {path}" if seen is None else f"sees other content in {path}"))
    return wrong


@ray.remote(num_cpus=0, max_retries=0)
def _read_back(path: str) -> str | None:
    """The content of `path` as this node sees it; None where there is no such file."""
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        return None


def slots(resources: ResourcesConfig | None) -> int:
    """How many runs the cluster holds at once (at least one)."""
    if resources is None:  # nothing to train
        return 1
    return runs_that_fit([node.get("Resources", {}) for node in alive_nodes()], resources)


def runs_that_fit(nodes: list[dict], resources: ResourcesConfig) -> int:
    """How many runs fit on nodes holding these resources ({"CPU": 4, "GPU": 1, ...} each), at
    least one: each node holds as many workers as its CPUs (and GPUs, for GPU runs) allow, and a
    run needs workers_per_run of them. Counting the cluster's total CPUs instead would promise a
    2-CPU worker on two 1-CPU nodes."""
    workers = 0
    for held in nodes:
        fits = int(held.get("CPU", 0) // resources.cpus_per_worker)
        if resources.use_gpu:
            fits = min(fits, int(held.get("GPU", 0)))
        workers += fits
    return max(1, workers // resources.workers_per_run)


def on_driver_node() -> dict:
    """Ray options that run a task on the driver's node, and only there."""
    return {"scheduling_strategy": NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                                                  soft=False)}


def this_node() -> dict:
    """The Ray node id and IP address of the calling process (inside a Ray task or actor)."""
    return {"node_id": ray.get_runtime_context().get_node_id(), "node_ip": ray.util.get_node_ip_address()}


def limit_threads(cpus: int) -> None:
    """Compute with `cpus` threads in this process. Ray reserves a task's CPUs only logically: it
    sets OMP_NUM_THREADS for the task unless the user's environment already did, and a reused
    worker process keeps the thread count torch took when it was first imported there (measured:
    a 1-CPU task in a process first used by a 2-CPU task computes on 2 threads; with
    OMP_NUM_THREADS=8 in the environment, every task of a 2-core machine computes on 2)."""
    import torch

    torch.set_num_threads(cpus)
    os.environ["OMP_NUM_THREADS"] = str(cpus)  # for libraries that start their own pools later
    print(f"computing on {torch.get_num_threads()} threads (eval.cpus: {cpus})", flush=True)
