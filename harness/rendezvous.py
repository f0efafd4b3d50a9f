"""Where a run's workers meet: torch's rendezvous store, listening on the node's address only.

Ray Train's TorchTrainer makes the process group of a run's workers through torch's `env://`
rendezvous, whose store (a TCPStore server in rank 0) listens on every interface of the node,
whatever MASTER_ADDR says: torch offers no setting for where it binds. Here rank 0 binds the
socket itself, to its node's address (127.0.0.1 in embedded mode, see harness.loopback), and
hands it to the store (`master_listen_fd`); every rank then joins the group through that store.
Everything else is Ray Train's own start-up: the environment variables torch reads (RANK,
LOCAL_RANK, WORLD_SIZE, ...), GPU visibility, the collective timeout.

This reaches into Ray Train's torch backend (`_TorchBackend`), so it is kept to this one module.
"""

from __future__ import annotations

import os
import socket
from datetime import timedelta

import ray
import torch.distributed as dist
from ray.train.torch import TorchConfig
from ray.train.torch.config import _set_torch_distributed_env_vars, _TorchBackend

_SERVED: dict[str, object] = {}  # rank 0's listening socket and store, kept alive with the process


class NodeBoundTorchConfig(TorchConfig):
    """TorchConfig whose process group meets at a store bound to the node's address only."""

    @property
    def backend_cls(self):
        return _NodeBoundBackend


class _NodeBoundBackend(_TorchBackend):
    def on_start(self, worker_group, backend_config: TorchConfig) -> None:
        host, port = worker_group.execute_single(0, _serve_store, backend_config.timeout_s)
        worker_group.execute(_set_torch_distributed_env_vars)
        world = len(worker_group)
        ray.get([worker_group.execute_single_async(rank, _join_group, backend_config.backend, rank, world,
                                                   host, port, backend_config.timeout_s)
                 for rank in range(world)])


def _serve_store(timeout_s: int) -> tuple[str, int]:
    """In rank 0: a store listening on this node's address, on a port the system picks."""
    host = ray.util.get_node_ip_address()
    listener = socket.create_server((host, 0))
    store = dist.TCPStore(host, listener.getsockname()[1], is_master=True, wait_for_workers=False,
                          timeout=timedelta(seconds=timeout_s), master_listen_fd=listener.fileno())
    _SERVED.update(listener=listener, store=store)
    return host, listener.getsockname()[1]


def _join_group(backend: str, rank: int, world: int, host: str, port: int, timeout_s: int) -> None:
    timeout = timedelta(seconds=timeout_s)
    store = _SERVED["store"] if rank == 0 else dist.TCPStore(host, port, is_master=False, timeout=timeout)
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = host, str(port)
    if backend == "nccl" and "TORCH_NCCL_BLOCKING_WAIT" not in os.environ:
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")  # as Ray Train does: fail a timed-out collective
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
