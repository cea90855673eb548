"""Several nodes, for real: cluster/local_cluster.sh starts a head, two workers and the status service as processes;
`popvae train --address` runs a population across them while /population is polled; history.parquet shows that
members ran on both worker nodes; then cluster/train.py (the `ray submit` entry) joins the same cluster.
Everything started here is stopped again, also on failure.

Select or skip it with `-m multinode` / `-m "not multinode"` (about two minutes on two cores)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from popvae.cluster.ports import free_base_port
from popvae.population.folder_io import read_rows

pytestmark = pytest.mark.multinode

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "cluster" / "local_cluster.sh"
BIN = Path(sys.executable).parent


def _node_resources(address: str, env: dict[str, str]) -> dict[str, dict[str, float]]:
    code = (
        f"import json, ray; ray.init(address={address!r}, log_to_driver=False); "
        "print(json.dumps({n['NodeID']: n['Resources'] for n in ray.nodes() if n['Alive']}))"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_population_trains_across_two_worker_nodes() -> None:
    state = Path(tempfile.mkdtemp(prefix="pvlc-", dir="/tmp"))  # short: Ray's unix sockets live under it
    base = free_base_port()
    if base is None:
        pytest.skip("no free port range on loopback")
    address, url = f"127.0.0.1:{base}", f"http://127.0.0.1:{base + 999}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RAY_")},
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PYTHON": sys.executable,
        "POPVAE_CLUSTER_DIR": str(state),
        "POPVAE_RAY_PORT": str(base),
        "POPVAE_SERVICE_PORT": str(base + 999),
        "POPVAE_DASHBOARD_PORT": str(base + 998),
    }
    try:
        subprocess.run([str(SCRIPT), "start"], env=env, cwd=REPO, check=True, timeout=240)
        env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": (state / "auth_token").read_text()}
        run_dir = state / "runs" / "multinode"
        train = [str(BIN / "popvae"), "train", "--address", address, "--dataset", "synthetic", "--members", "2"]
        train += ["--epochs", "3", "--steps-per-epoch", "4", "--run-dir", str(run_dir), "--quiet"]
        proc = subprocess.Popen(train, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        seen: list[tuple[str, int]] = []
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            response = httpx.get(f"{url}/population", params={"run": "multinode"}, timeout=5)
            assert response.status_code in (200, 404, 503), response.text  # 404/503: the run folder is not written yet
            if response.status_code == 200:
                body = response.json()
                seen.append((body["source"], body["epoch"]))
            time.sleep(0.5)
        if proc.poll() is None:
            proc.kill()
        output = proc.communicate()[0]
        assert proc.returncode == 0, output[-3000:]
        assert any(src == "live" for src, _ in seen), seen
        final = httpx.get(f"{url}/population", params={"run": "multinode"}, timeout=5).json()
        assert final["state"] == "done" and final["epoch"] == 3 and final["source"] == "run_folder"

        nodes = _node_resources(address, env)
        used = {row["node_id"] for row in read_rows(run_dir / "history.parquet")}
        kinds = {name for node in used for name in ("worker1", "worker2") if name in nodes.get(node, {})}
        assert kinds == {"worker1", "worker2"}, (used, nodes)

        # the README's recipe, as written: `ray job submit -- python -m popvae.cluster.train ARGS`, token auth on
        submit = [str(BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{base + 998}",
                  "--", "python", "-m", "popvae.cluster.train", "--dataset", "synthetic", "--members", "2", "--epochs", "1",
                  "--steps-per-epoch", "2", "--run-dir", str(state / "runs" / "submitted"), "--quiet"]
        done = subprocess.run(submit, env=env, cwd=REPO, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0 and "succeeded" in done.stdout + done.stderr, done.stdout[-3000:] + done.stderr[-3000:]
        assert read_rows(state / "runs" / "submitted" / "history.parquet")[0]["node_id"] in nodes
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, cwd=REPO, timeout=180)
        shutil.rmtree(state, ignore_errors=True)
