"""When the cluster's head goes away. Ray ends a driver whose head has been gone for
RAY_gcs_rpc_server_reconnect_timeout_s (60 s by default; a few seconds here), with a line of its own. The status
service must outlive that and find a restarted head; a training command must say, before Ray ends it, what its run
keeps and how to go on. Each test runs a head of its own (`ray start --head`), which it kills."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fake_runs import make_runs, status
from ray_heads import free_port, start_head, stop_head

from popvae.population.contract import NAMESPACE, coordinator_name
from popvae.population.run_folder import RunFolder

POPVAE = str(Path(sys.executable).with_name("popvae"))


@pytest.fixture
def ray_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="pvh-", dir="/tmp"))  # short: Ray's unix sockets live under it
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _env(head_loss_s: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "POPVAE_API_TOKEN")}
    return env | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0123456789abcdef" * 4,
                  "RAY_gcs_rpc_server_reconnect_timeout_s": str(head_loss_s)}


def _poll_until(get, done, seconds: float):
    deadline = time.monotonic() + seconds
    while not done(value := get()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert done(value), value
    return value


def test_a_training_command_says_what_its_run_keeps_before_ray_ends_it(tmp_path: Path, ray_dir: Path) -> None:
    """Before, the command was silent for a minute and then Ray ended it with "Failed to connect to GCS within 60
    seconds", nothing about the run. Now popvae's line comes first, at half of Ray's bound: what the run folder
    keeps and the command that continues it on a cluster (--address included)."""
    env, gcs = _env(head_loss_s=8), free_port()
    address, run = f"127.0.0.1:{gcs}", tmp_path / "run"
    head = start_head(gcs, ray_dir, env, num_cpus=2)
    train = subprocess.Popen([POPVAE, "train", "--address", address, "--dataset", "synthetic", "--members", "2",
                              "--epochs", "500", "--steps-per-epoch", "2", "--run-dir", str(run)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _poll_until(lambda: RunFolder(run).has_checkpoint() or train.poll() is not None, bool, 180)
        assert train.poll() is None, train.communicate()[0][-3000:]
        stop_head(head, signal.SIGKILL)
        out = train.communicate(timeout=120)[0]
    finally:
        if train.poll() is None:
            train.kill()
        stop_head(head)  # gone already, unless the test failed before killing it
    assert train.returncode != 0
    said = [line for line in out.splitlines() if line.startswith("popvae: the Ray cluster")]
    assert len(said) == 1, out[-3000:]
    assert said[0].startswith(f"popvae: the Ray cluster at {address} stopped answering; Ray ends this command unless "
                              "its head is back within 8 s.")
    assert said[0].endswith(f"; continue with: popvae train --resume {run} --address {address}")
    assert RunFolder(run).state() == "interrupted" and RunFolder(run).has_checkpoint()


_STAND_IN = """
import json, sys, ray
ray.init(address=sys.argv[1], namespace=sys.argv[2], log_to_driver=False)

@ray.remote(num_cpus=0)
class StatusStub:
    def __init__(self, snapshot):
        self.snapshot = snapshot

    def status(self):
        return self.snapshot

stub = StatusStub.options(name=sys.argv[3], lifetime="detached").remote(json.loads(sys.argv[4]))
ray.get(stub.status.remote())
"""


def test_the_service_outlives_its_ray_head_and_is_live_again_once_a_head_is_back(tmp_path: Path, ray_dir: Path) -> None:
    """`popvae serve --address` as users run it, over a head of its own. Ray ends a driver whose head has been gone
    for RAY_gcs_rpc_server_reconnect_timeout_s (60 s; 3 here), so a service that joined Ray in its own process died
    with the head. It must keep answering from the run folders, say that Ray is unreachable, and answer live again
    once a head is back at the same address."""
    env = _env(head_loss_s=3)
    runs_root = make_runs(tmp_path / "runs")
    gcs, service_port = free_port(), free_port()
    address, url, log = f"127.0.0.1:{gcs}", f"http://127.0.0.1:{service_port}", tmp_path / "serve.log"

    def health() -> dict:
        try:
            return httpx.get(f"{url}/healthz", timeout=5).json()
        except httpx.TransportError:  # not listening (yet)
            return {}

    def population() -> dict:
        return httpx.get(f"{url}/population", params={"run": "newest"}, timeout=5).json()

    head = start_head(gcs, ray_dir, env)
    service = subprocess.Popen([POPVAE, "serve", "--runs-root",
                                str(runs_root), "--port", str(service_port), "--address", address],
                               env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        _poll_until(health, lambda b: b.get("ray") == "connected", 60)
        stop_head(head, signal.SIGKILL)  # the whole node at once, as when its machine goes away
        gone = time.monotonic()
        body = _poll_until(health, lambda b: b.get("ray") == "unreachable", 30)
        assert address in body["ray_note"]
        time.sleep(max(0.0, gone + 8 - time.monotonic()))  # past Ray's bound on a driver without its head, twice
        assert service.poll() is None, log.read_text()[-2000:]
        body = population()
        assert body["source"] == "run_folder" and body["epoch"] == 5 and "unreachable" in body["note"]

        head = start_head(gcs, ray_dir, env)
        snapshot = json.dumps(status("newest", 77, 80, 2))
        made = subprocess.run([sys.executable, "-c", _STAND_IN, address, NAMESPACE, coordinator_name("newest"), snapshot],
                              env=env, timeout=120, capture_output=True, text=True)
        assert made.returncode == 0, made.stderr[-3000:]
        body = _poll_until(population, lambda b: b["source"] == "live", 90)
        assert body["epoch"] == 77 and body["note"] is None
    finally:
        service.terminate()
        service.wait(10)
        stop_head(head)  # the restarted head: its node ends cleanly
