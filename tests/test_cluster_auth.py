"""Cluster commands against a real Ray head with token authentication (issue 21, item 3): without the token, or with
a wrong one, `popvae train --address` and `popvae serve --address` say so in one line naming the variable and exit
1, before Ray's client floods InvalidAuthToken; with it, `serve --address` stops on SIGTERM without Ray's crash-style
stack."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from ray_heads import free_port, start_head, stop_head

POPVAE = str(Path(sys.executable).with_name("popvae"))
TOKEN = "token-of-the-test-cluster"


@pytest.fixture(scope="module")
def token_head() -> Iterator[str]:
    """A one-node Ray head with RAY_AUTH_MODE=token."""
    temp = Path(tempfile.mkdtemp(prefix="pa", dir="/tmp"))  # Ray's socket paths must stay short
    port = free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN}
    address, head = f"127.0.0.1:{port}", None
    try:
        head = start_head(port, temp / "ray", env, num_cpus=1)
        deadline = time.monotonic() + 60
        while subprocess.run([sys.executable, "-c", "import sys; from popvae.population.bounds import check_ray_auth; "
                              "check_ray_auth(sys.argv[1])", address], env=env, capture_output=True).returncode != 0:
            assert head.poll() is None and time.monotonic() < deadline, "the Ray head did not take its token"
            time.sleep(0.5)
        yield address
    finally:
        if head is not None:
            stop_head(head)
        shutil.rmtree(temp, ignore_errors=True)


def _client_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """A client's environment: no Ray token variables, a HOME without ~/.ray/auth_token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    return {**env, "HOME": str(tmp_path), **extra}


@pytest.mark.parametrize("command", ["train", "serve"])
@pytest.mark.parametrize("token", [None, "a-wrong-token"])
def test_a_cluster_client_without_the_right_token_is_one_line(token_head, tmp_path, command, token):
    runs = tmp_path / "runs"
    runs.mkdir()
    args = ["--dataset", "synthetic", "--run-dir", str(runs / "r")] if command == "train" else ["--runs-root", str(runs),
                                                                                                 "--port", str(free_port())]
    env = _client_env(tmp_path, **({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token} if token else {}))
    done = subprocess.run([POPVAE, command, *args, "--address", token_head], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "RAY_AUTH_TOKEN" in done.stderr and token_head in done.stderr, done.stderr
    assert ("none is set here" if token is None else "refused this token") in done.stderr, done.stderr
    assert "InvalidAuthToken" not in done.stderr and not list(runs.iterdir())  # nothing written


def test_serve_with_the_token_stops_cleanly_on_sigterm(token_head, tmp_path):
    (tmp_path / "runs").mkdir()
    port = free_port()
    proc = subprocess.Popen([POPVAE, "serve", "--runs-root", str(tmp_path / "runs"), "--port", str(port), "--address",
                             token_head], env=_client_env(tmp_path, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=TOKEN),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:  # until the live view has joined Ray (that is when Ray's driver would install its signal handlers)
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
                    if json.load(answer)["ray"] == "connected":
                        break
            except OSError:
                pass
            time.sleep(0.5)
        time.sleep(3)  # a few polls of the coordinators: Ray's driver is fully up
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGTERM, err  # uvicorn shuts down, then ends by the signal it got, as is usual
    assert "SIGTERM received" not in err and "Traceback" not in err, err
    assert f"listening on http://127.0.0.1:{port}/" in out, out
