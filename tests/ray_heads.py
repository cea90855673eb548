"""A Ray head as users start one (`ray start --head --block`), in its own process group and on free ports, for the
tests that stop or restart a cluster (which the session's Ray must never be)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(port: int) -> bool:
    """Something takes connections on 127.0.0.1:`port`."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def start_head(port: int, temp_dir: Path, env: dict[str, str], num_cpus: int = 0) -> subprocess.Popen:
    """A one-node cluster whose GCS listens on `port` (its other ports free ones), once its GCS takes connections.
    `temp_dir` must be short: Ray's unix sockets live under it."""
    ports = [f"--{name}={free_port()}" for name in ("ray-client-server-port", "node-manager-port", "object-manager-port",
                                                    "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                    "metrics-export-port", "runtime-env-agent-port")]
    head = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--port={port}",
                             f"--num-cpus={num_cpus}", "--include-dashboard=false", "--node-ip-address=127.0.0.1",
                             f"--temp-dir={temp_dir}", "--disable-usage-stats", *ports],
                            env={**env, "RAY_USAGE_STATS_ENABLED": "0"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while not answers(port):
        assert head.poll() is None and time.monotonic() < deadline, "the Ray head did not start"
        time.sleep(0.2)
    return head


def stop_head(head: subprocess.Popen, sig: signal.Signals = signal.SIGTERM) -> None:
    """Signal the head's whole process group (SIGKILL if it has not ended 5 s after `sig`)."""
    for each in (sig, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(head.pid, each)
            head.wait(timeout=5)
            return
    head.wait(timeout=5)
