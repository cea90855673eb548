"""Free loopback ports for cluster/local_cluster.sh, whose nodes take ports at fixed offsets from one base."""

from __future__ import annotations

import socket

# The offsets local_cluster.sh uses from POPVAE_RAY_PORT: GCS, node managers, object managers, agents,
# metrics, runtime-env agents (three nodes each), the dashboard (jobs API) and the status service.
SCRIPT_OFFSETS = (0, 1, 10, 11, 12, 20, 21, 22, 30, 31, 32, 40, 41, 42, 50, 51, 52, 60, 61, 62, 998, 999)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_base_port(first: int = 41000, last: int = 60000) -> int | None:
    """A base port (a multiple of 1000 from `first`) whose script offsets are all free; None if there is none."""
    return next((b for b in range(first, last, 1000) if all(port_free(b + o) for o in SCRIPT_OFFSETS)), None)
