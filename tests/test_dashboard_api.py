"""The REST a dashboard reads (run kinds, overview, lineage, files) and the page's own assets, over fake run folders:
no browser, no Ray. Files are served only from inside a run folder, only as pictures, reports or CSV."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_runs import make_runs
from fastapi.testclient import TestClient

from popvae.cluster.service import create_app
from popvae.population.folder_io import write_json

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32


@pytest.fixture
def root(tmp_path: Path) -> Path:
    make_runs(tmp_path / "runs")
    run = tmp_path / "runs" / "newest"
    (run / "plots").mkdir()
    (run / "plots" / "tau.png").write_bytes(PNG)
    (run / "report.md").write_text("# report\n")
    write_json(run / "summary.json", {"test_mse": 0.1})
    write_json(run / "lineage.json", [{"epoch": 0, "best": 2, "best_loss": 1.0, "received": {"1": 2, "3": 2},
                                       "tau_before": {"1": 1.0}, "tau_after": {"1": 1.1}}])
    (tmp_path / "secret.png").write_bytes(PNG)
    (run / "plots" / "link.png").symlink_to(tmp_path / "secret.png")
    (tmp_path / "runs" / "evals" / "jobs" / "evaluation-1").mkdir(parents=True)
    write_json(tmp_path / "runs" / "evals" / "jobs" / "evaluation-1" / "status.json",
               {"id": "evaluation-1", "kind": "evaluation", "state": "done"})
    write_json(tmp_path / "runs" / "evals" / "config.json", {"kind": "evaluation"})
    return tmp_path / "runs"


@pytest.fixture
def client(root: Path) -> TestClient:
    return TestClient(create_app(root), raise_server_exceptions=False)


def test_runs_say_their_kind(client: TestClient) -> None:
    kinds = {r["run_id"]: r["kind"] for r in client.get("/runs").json()["runs"]}
    assert kinds["newest"] == kinds["older"] == "population"
    assert kinds["robust"] == "robust" and kinds["evals"] == "evaluation"


def test_overview_lists_pictures_reports_and_summary(client: TestClient) -> None:
    body = client.get("/runs/newest/summary").json()
    assert body["kind"] == "population" and body["summary"] == {"test_mse": 0.1}
    assert [p["path"] for p in body["pictures"]] == ["plots/tau.png"]  # the symlink out of the run is not listed
    assert body["reports"] == ["report.md"] and body["status"]["run_id"] == "newest"
    robust = client.get("/runs/robust/summary").json()
    assert robust["kind"] == "robust" and robust["status"] is None and robust["pictures"] == []
    assert client.get("/runs/nope/summary").status_code == 404


def test_lineage(client: TestClient) -> None:
    gens = client.get("/runs/newest/lineage").json()["generations"]
    assert gens[0]["best"] == 2 and gens[0]["received"] == {"1": 2, "3": 2}
    assert client.get("/runs/older/lineage").json()["generations"] == []


def test_files_inside_the_run_only(client: TestClient) -> None:
    ok = client.get("/runs/newest/files/plots/tau.png")
    assert ok.status_code == 200 and ok.headers["content-type"] == "image/png" and ok.content == PNG
    assert client.get("/runs/newest/files/report.md").headers["content-type"].startswith("text/markdown")
    for bad in ("../older/status.json", "plots/../../older/history.parquet", "%2e%2e/secret.png", "..%2Fsecret.png",
                "plots/link.png", "status.json", "history.parquet", ".hidden.png", "plots//tau.png", "/etc/passwd",
                "plots/missing.png", "plots"):
        response = client.get(f"/runs/newest/files/{bad}")
        assert response.status_code == 404, (bad, response.status_code)


def test_page_swagger_and_schema_descriptions(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    for asset in ("/static/app.js", "/static/app.css", "/static/swagger/swagger-ui-bundle.js", "/static/swagger/swagger-ui.css"):
        assert client.get(asset).status_code == 200, asset
    docs = client.get("/docs").text
    assert "/static/swagger/swagger-ui-bundle.js" in docs and "cdn.jsdelivr" not in docs
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert "trained with" in schemas["HistoryRow"]["properties"]["tau"]["description"]
    assert "next generation" in schemas["MemberStatus"]["properties"]["tau"]["description"]
    assert "done" in schemas["Population"]["properties"]["epoch"]["description"]
    assert "score" in schemas["HistoryRow"]["properties"]
