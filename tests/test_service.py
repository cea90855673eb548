"""The status service: every endpoint over hand-made run folders (tests/fake_runs.py), auth, error codes, real uvicorn,
and the live path twice: with stand-in actors that answer only `status()` under a coordinator's name (how the service
finds, prefers and falls back), and with a real coordinator training a tiny population."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fake_runs import make_run, make_runs, status
from fastapi.testclient import TestClient
from ray_heads import free_port

from popvae.cluster.service import create_app, serve
from popvae.cluster.status_table import print_status
from popvae.population.contract import NAMESPACE, coordinator_name
from popvae.population.folder_io import write_json

REPO = Path(__file__).resolve().parents[1]
POPVAE = str(Path(sys.executable).with_name("popvae"))


@pytest.fixture()
def runs_root(tmp_path: Path) -> Path:
    return make_runs(tmp_path / "runs")


@pytest.fixture()
def client(runs_root: Path) -> TestClient:
    return TestClient(create_app(runs_root), raise_server_exceptions=False)


def test_healthz(client: TestClient) -> None:
    body = client.get("/healthz").json()
    assert body["status"] == "ok" and body["ray"] == "disabled"


def test_runs_newest_first_and_corrupt_run_listed(client: TestClient) -> None:
    runs = client.get("/runs").json()["runs"]
    assert [r["run_id"] for r in runs] == ["robust", "newest", "older", "broken"]
    assert runs[1]["epoch"] == 5 and runs[1]["live"] is False and runs[1]["has_folder"] is True
    assert runs[0]["state"] == "running" and runs[3]["state"] is None  # a run of jobs: its jobs' state


def test_population_defaults_to_newest_population_run_from_folder(client: TestClient) -> None:
    body = client.get("/population").json()
    assert body["run_id"] == "newest" and body["source"] == "run_folder" and "no Ray address" in body["note"]
    assert body["epoch"] == 5 and body["generation_seconds"] == 1.25 and body["best_member"] == 1
    first = body["members"][0]
    assert set(first) >= {"index", "strategy", "tau", "loss", "patience", "state"}
    assert set(first["loss"]) == {"total", "reconstruction", "kl_z1", "kl_z2"}
    assert client.get("/population", params={"run": "older"}).json()["members"][3]["index"] == 4


@pytest.mark.parametrize(
    ("path", "params", "code"),
    [
        ("/population", {"run": "nope"}, 404),
        ("/population", {"run": "../etc"}, 422),
        ("/population", {"run": "broken"}, 503),
        ("/population", {"run": "robust"}, 404),
        ("/population/history", {"run": "robust", "member": 1}, 404),
        ("/population", {"runs": "older"}, 422),
        ("/population/history", {"member": 99}, 404),
        ("/population/history", {"member": 0}, 422),
        ("/population/history", {"limit": 0}, 422),
        ("/population/history", {"limit": "many"}, 422),
        ("/population/history", {"run": "nope"}, 404),
        ("/jobs", {"run": "nope"}, 404),
        ("/jobs/nope", {}, 404),
        ("/jobs/job-a", {"run": "older"}, 404),
        ("/jobs/%2e%2e", {}, 422),  # a literal /jobs/.. is normalised to / by the client: the dashboard page
    ],
)
def test_errors_are_json_4xx_or_503(client: TestClient, path: str, params: dict, code: int) -> None:
    response = client.get(path, params=params)
    assert response.status_code == code, response.text
    assert "detail" in response.json()


def test_history_filters_and_pages(client: TestClient) -> None:
    everything = client.get("/population/history").json()
    assert everything["run_id"] == "newest" and everything["total"] == 15 and len(everything["rows"]) == 15
    page = client.get("/population/history", params={"limit": 4, "offset": 2}).json()
    assert page["total"] == 15 and [(r["epoch"], r["member"]) for r in page["rows"]] == [(1, 3), (2, 1), (2, 2), (2, 3)]
    assert page["rows"][2]["loss_total"] is None and page["rows"][2]["event"] == "nan_reset"
    one = client.get("/population/history", params={"member": 2, "epoch_min": 2, "epoch_max": 4}).json()
    assert [(r["epoch"], r["member"]) for r in one["rows"]] == [(2, 2), (3, 2), (4, 2)]
    assert client.get("/population/history", params={"offset": 100}).json()["rows"] == []
    assert client.get("/population/history", params={"epoch_min": 4, "epoch_max": 2}).json()["total"] == 0


def test_jobs_list_and_get(client: TestClient, runs_root: Path) -> None:
    robust = client.get("/jobs").json()  # the newest run of any kind; NaN metrics arrive as null
    assert robust["run_id"] == "robust" and robust["jobs"][0]["metrics"] == {"mse": None} and robust["jobs"][0]["method"] is None
    listed = client.get("/jobs", params={"run": "newest"}).json()
    assert listed["run_id"] == "newest" and [j["id"] for j in listed["jobs"]] == ["job-a", "job-b"]
    assert client.get("/jobs", params={"run": "older"}).json()["jobs"] == []
    assert client.get("/jobs/job-b").json()["metrics"] == {"mse": 0.01}
    assert client.get("/jobs/job-a", params={"run": "newest"}).json()["kind"] == "robust"
    (runs_root / "newest" / "jobs" / "job-b" / "status.json").write_text("[]")
    listed = client.get("/jobs", params={"run": "newest"}).json()
    assert [j["id"] for j in listed["jobs"]] == ["job-a"] and listed["unreadable"] == ["job-b"]
    assert client.get("/jobs/job-b").status_code == 503


def test_empty_root(tmp_path: Path) -> None:
    client = TestClient(create_app(tmp_path / "missing"), raise_server_exceptions=False)
    assert client.get("/runs").json() == {"runs": []}
    assert client.get("/population").status_code == 404


def test_status_written_later_is_picked_up(tmp_path: Path) -> None:
    run = make_run(tmp_path, "r1")
    client = TestClient(create_app(tmp_path), raise_server_exceptions=False)
    assert client.get("/population").json()["epoch"] == 3
    snapshot = status("r1", 4, 5, 4)
    snapshot["members"][0]["loss"] = None
    write_json(run / "status.json", snapshot)
    os.utime(run / "status.json", (time.time() + 5, time.time() + 5))
    body = client.get("/population").json()
    assert body["epoch"] == 4 and body["members"][0]["loss"] is None


def test_a_stopped_run_is_served(tmp_path: Path) -> None:
    """A run stopped early (resumable) writes state "stopped": it must be served, not answered with a 503."""
    run = make_run(tmp_path, "r1")
    write_json(run / "status.json", status("r1", 1, 3, 3, state="stopped"))
    client = TestClient(create_app(tmp_path), raise_server_exceptions=False)
    response = client.get("/population", params={"run": "r1"})
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "stopped"
    assert client.get("/runs").json()["runs"][0]["state"] == "stopped"


def test_a_copied_run_answers_with_its_folder_name(tmp_path: Path) -> None:
    make_run(tmp_path, "r1")
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "status.json").write_bytes((tmp_path / "r1" / "status.json").read_bytes())
    client = TestClient(create_app(tmp_path), raise_server_exceptions=False)
    assert client.get("/population", params={"run": "copy"}).json()["run_id"] == "copy"
    assert client.get("/population", params={"run": "r1"}).json()["run_id"] == "r1"


def test_a_folder_without_population_has_no_history(tmp_path: Path) -> None:
    (tmp_path / "jobs-only" / "jobs").mkdir(parents=True)
    (tmp_path / "jobs-only" / "config.json").write_text("{}")
    client = TestClient(create_app(tmp_path), raise_server_exceptions=False)
    answer = client.get("/population/history", params={"run": "jobs-only"})
    assert answer.status_code == 404 and "no population history" in answer.json()["detail"]


def test_token_required_when_set(runs_root: Path) -> None:
    client = TestClient(create_app(runs_root, token="s3cret"), raise_server_exceptions=False)
    assert client.get("/healthz").status_code == 200
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
        response = client.get("/population", headers=headers)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert client.get("/population", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert "HTTPBearer" in client.get("/openapi.json").json()["components"]["securitySchemes"]


def test_serve_refuses_public_bind_without_token(runs_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POPVAE_API_TOKEN", raising=False)
    with pytest.raises(SystemExit, match="POPVAE_API_TOKEN"):
        serve(runs_root, host="0.0.0.0", port=1)


@pytest.fixture()
def uvicorn_url(runs_root: Path):
    """`serve()` in a subprocess on a free loopback port, as `popvae serve` runs it."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "POPVAE_API_TOKEN")}
    code = f"from popvae.cluster.service import serve; serve({str(runs_root)!r}, port={port})"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the service did not come up"
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def test_real_uvicorn_and_status_table(uvicorn_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    body = httpx.get(f"{uvicorn_url}/population", params={"run": "older"}).json()
    assert body["run_id"] == "older" and len(body["members"]) == 4
    assert httpx.get(f"{uvicorn_url}/openapi.json").json()["info"]["title"] == "popvae status"
    assert httpx.get(f"{uvicorn_url}/population", params={"run": "broken"}).status_code == 503
    assert print_status(uvicorn_url) == 0
    out = capsys.readouterr().out
    assert "newest" in out and "linear_increase" in out
    assert print_status(uvicorn_url, run="nope") == 1
    assert "not found" in capsys.readouterr().err


def test_status_table_jobs_view(uvicorn_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert print_status(uvicorn_url, jobs=True) == 0
    out = capsys.readouterr().out
    assert "linear_increase" in out and "jobs of newest" in out and "job-a" in out and "job-b" in out
    assert print_status(uvicorn_url, run="robust", jobs=True) == 0  # no population: the jobs alone
    out = capsys.readouterr().out
    assert "jobs of robust" in out and "gmm_dae" in out and "strategy" not in out


def test_status_table_unreachable(capsys: pytest.CaptureFixture[str]) -> None:
    assert print_status(f"http://127.0.0.1:{free_port()}") == 1
    assert "cannot reach" in capsys.readouterr().err


def _poll_until(get, done, seconds: float = 15.0):
    """The service learns about coordinators from a background poll (every 0.5 s): wait for it."""
    deadline = time.monotonic() + seconds
    while not done(value := get()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert done(value), value
    return value


def test_live_status_preferred_then_folder(ray_session, runs_root: Path) -> None:
    """Stand-ins, not coordinators: actors named as a run's coordinator whose `status()` returns a fixed RunStatus
    snapshot (the one call the service makes), so that the live answer (epoch 42) differs from the folder's (epoch 5)
    and a live run can have no folder. Live while they live, the folder (with a note) after."""
    ray = ray_session

    @ray.remote(num_cpus=0)
    class StatusStub:
        def __init__(self, snapshot: dict) -> None:
            self.snapshot = snapshot

        def status(self) -> dict:
            return self.snapshot

    def coordinator(run_id: str, snapshot: dict):
        return StatusStub.options(name=coordinator_name(run_id), namespace=NAMESPACE).remote(snapshot)

    live_only = coordinator("liveonly", status("liveonly", 1, 2, 2))
    newest = coordinator("newest", status("newest", 42, 50, 3))
    client = TestClient(create_app(runs_root, ray_address=ray.get_runtime_context().gcs_address), raise_server_exceptions=False)
    _poll_until(lambda: client.get("/healthz").json(), lambda b: b["ray"] == "connected")
    body = _poll_until(lambda: client.get("/population", params={"run": "newest"}).json(), lambda b: b["source"] == "live")
    assert body["epoch"] == 42 and body["note"] is None
    assert client.get("/population", params={"run": "liveonly"}).json()["source"] == "live"
    runs = {r["run_id"]: r for r in client.get("/runs").json()["runs"]}
    assert runs["liveonly"]["live"] and not runs["liveonly"]["has_folder"] and runs["newest"]["live"]
    assert client.get("/jobs", params={"run": "liveonly"}).json()["jobs"] == []
    ray.kill(newest)
    ray.kill(live_only)
    body = _poll_until(lambda: client.get("/population", params={"run": "newest"}).json(), lambda b: b["source"] == "run_folder")
    assert body["epoch"] == 5 and "no live coordinator" in body["note"]
    assert client.get("/population", params={"run": "liveonly"}).status_code == 404


def test_a_real_coordinator_is_served_live_while_it_lives_then_from_its_folder(ray_session, tmp_path: Path) -> None:
    """population/coordinator.py itself, over a tiny synthetic population: one generation trained, then killed."""
    from popvae.population.config import parse_config
    from popvae.population.coordinator import Coordinator
    from popvae.population.driver import load_run_data

    ray = ray_session
    cfg = parse_config({"dataset": "synthetic", "synthetic_size": 64, "members": 2, "epochs": 3, "batch_size": 16,
                        "steps_per_epoch": 1, "val_size": 16, "seed": 1,
                        "model": {"widths": [4, 8, 8, 8], "z1_vars": 2, "z1_categories": 4, "z2_vars": 2, "z2_categories": 4}})
    data = load_run_data(cfg)
    root = tmp_path / "runs"
    coord = Coordinator.options(name=coordinator_name("real"), namespace=NAMESPACE).remote(
        cfg, str(root / "real"), (data.train.images, data.val.images), False)
    try:
        entry = ray.get(coord.run_generation.remote(0))
        client = TestClient(create_app(root, ray_address=ray.get_runtime_context().gcs_address), raise_server_exceptions=False)
        body = _poll_until(lambda: client.get("/population", params={"run": "real"}).json(), lambda b: b.get("source") == "live")
        assert body["note"] is None and body["epoch"] == 1 and body["epochs"] == 3 and body["best_member"] == entry["best"]
        assert [m["index"] for m in body["members"]] == [1, 2] and all(m["loss"]["total"] > 0 for m in body["members"])
        listed = {r["run_id"]: r for r in client.get("/runs").json()["runs"]}["real"]
        assert listed["live"] and listed["has_folder"]
    finally:
        for handle in ray.get(coord.member_handles.remote()).values():
            ray.kill(handle)
        ray.kill(coord)
    body = _poll_until(lambda: client.get("/population", params={"run": "real"}).json(), lambda b: b["source"] == "run_folder")
    assert body["epoch"] == 1 and "no live coordinator" in body["note"]


@pytest.mark.parametrize(("env", "says"), [
    ({}, "set RAY_AUTH_MODE=token and RAY_AUTH_TOKEN to the cluster's token"),
    ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": "/nonexistent/token"},
     "set RAY_AUTH_TOKEN to the cluster's token (RAY_AUTH_MODE=token is set)"),
    ({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "abc"}, "RAY_AUTH_TOKEN is set: check it is the cluster's token"),
])
def test_a_refused_ray_connection_names_the_variable_to_set(monkeypatch: pytest.MonkeyPatch, env: dict, says: str) -> None:
    from popvae.cluster.live_status import connect_failure

    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    line = connect_failure(ConnectionError("Failed to connect to GCS at 10.0.0.1:6379\nmore detail"))
    assert line.startswith("ConnectionError: Failed to connect to GCS at 10.0.0.1:6379") and says in line
    assert "\n" not in line

