"""An embedded Ray that listens on loopback only, and a token file that only its owner reads.

Ray's node address decides where its processes listen. On Linux Ray replaces a loopback node
address with the machine's own, and its processes then listen on every interface (GCS, raylet,
every worker's gRPC) or on that address (the dashboard agent, the runtime-env agent, the metrics
exporter). Ray's single-machine mode (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, its default on macOS
and Windows) keeps 127.0.0.1, and each of them then binds to loopback. Ray reads the setting when
it is imported, so this process's copy is set too; Ray's processes and workers inherit the
variable. Gloo's sockets (the training workers' collectives) follow GLOO_SOCKET_IFNAME.

The rendezvous store of the training workers (torch's TCPStore) would listen on every interface
whatever its address: harness.rendezvous binds it to the node's address, here 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import psutil

LOOPBACK = "127.0.0.1"
SINGLE_MACHINE = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def loopback_only(runtime_env: dict) -> None:
    """Set Ray (this process and the ones it starts) to bind to loopback; gloo too."""
    from ray._private import ray_constants

    os.environ[SINGLE_MACHINE] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    if interface := loopback_interface():
        runtime_env.setdefault("env_vars", {}).setdefault("GLOO_SOCKET_IFNAME", interface)


def restore() -> None:
    """Undo loopback_only's setting, once the embedded Ray is shut down."""
    from ray._private import ray_constants

    if os.environ.get(SINGLE_MACHINE) == "0":
        os.environ.pop(SINGLE_MACHINE)
        ray_constants.ENABLE_RAY_CLUSTER = True


def loopback_interface() -> str | None:
    """The network interface that carries 127.0.0.1 (lo on Linux, lo0 on macOS)."""
    for name, addresses in psutil.net_if_addrs().items():
        if any(a.address == LOOPBACK for a in addresses):
            return name
    return None


def private_token_file(home: Path | None = None) -> Path | None:
    """A new local Ray makes a token (~/.ray/auth_token) when token auth is on (Ray's default for
    a new local cluster) and none exists; Ray writes it with the default umask, so every user of
    the machine can read it. Made here first, readable by its owner only (0600). An existing file,
    or a token given by RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, is left alone. The path when made."""
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        return None
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return None
    path = (home or Path.home()) / ".ray" / "auth_token"
    if path.exists():
        return None
    from ray._private.authentication.authentication_token_generator import (
        generate_new_authentication_token)

    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(generate_new_authentication_token())
        return path
    return None
