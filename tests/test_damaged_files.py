"""Every file a resume or an evaluation reads, damaged: exit 2 before Ray starts, one line naming the file, never a
crash of the interpreter; and the status service over a folder of damaged runs (no 5xx for the default page, no
server paths in errors, no symlink followed out of the runs root)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from popvae.cluster.cli import main
from popvae.cluster.service import create_app
from popvae.models.checkpoint import atomic_torch_save


def copy(pristine: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(pristine, run)
    return run


def middle_noise(path: Path) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid : mid + 4096] = os.urandom(min(4096, len(data) - mid))
    path.write_bytes(bytes(data))


def nan_weights(path: Path) -> None:
    blob = torch.load(path, weights_only=True)
    weights = blob["weights"] if "weights" in blob else blob["state_dict"]
    next(t for t in weights.values() if t.is_floating_point()).fill_(float("nan"))
    atomic_torch_save(blob, path)  # a valid checksum: only the values are wrong


DAMAGE = {
    "checkpoints/latest.pt": [middle_noise, lambda p: p.write_bytes(p.read_bytes()[:1000]), nan_weights],
    "best.pt": [middle_noise, nan_weights],
    "history.parquet": [middle_noise, lambda p: p.write_bytes(b"PAR1 not parquet")],
    "lineage.json": [lambda p: p.write_text("[{"), lambda p: p.write_text('{"epoch": 0}'), lambda p: p.write_text("[1, 2]")],
    "config.json": [lambda p: p.write_text("{"), lambda p: p.write_text("[]"), lambda p: p.write_bytes(b"\xff\xfe{}"),
                    lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "members": True}))],
}
# best.pt with finite-checksummed NaN weights is no resume's input (a resume writes a new best.pt): evaluate's case
CASES = [(name, i) for name, fns in DAMAGE.items() for i in range(len(fns)) if (name, i) != ("best.pt", 1)]


@pytest.mark.parametrize(("name", "i"), CASES)
def test_resume_of_a_damaged_file_exits_2_naming_it(pristine, tmp_path, capsys, name, i):
    run = copy(pristine, tmp_path)
    DAMAGE[name][i](run / name)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    code = main(["train", "--resume", str(run), "--epochs", "3"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and name.split("/")[-1] in err, err
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before  # nothing written


@pytest.mark.parametrize(("name", "i"), [("best.pt", 0), ("best.pt", 1), ("config.json", 0), ("config.json", 1)])
def test_evaluate_of_a_damaged_run_exits_2_naming_the_file(pristine, tmp_path, capsys, name, i):
    run = copy(pristine, tmp_path)
    DAMAGE[name][i](run / name)
    code = main(["evaluate", str(run), "--experiments", "purification", "--subset", "4", "--quick"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and name in err and len(err.splitlines()) == 1, err
    assert not (run / "jobs").exists() and not (run / "report.json").exists()


def test_service_over_damaged_runs(pristine, tmp_path):
    root = tmp_path / "runs"
    root.mkdir()
    for name in ["good", "bad-status", "bad-history", "bad-lineage"]:
        shutil.copytree(pristine, root / name)
    (root / "bad-history" / "history.parquet").write_bytes(b"garbage")
    (root / "bad-lineage" / "lineage.json").write_text("{")
    (root / "bad-status" / "status.json").write_text("{not json")  # the newest: written last
    outside = tmp_path / "outside"
    shutil.copytree(pristine, outside)
    (root / "escape").symlink_to(outside)
    client = TestClient(create_app(root), raise_server_exceptions=False)
    answers = [client.get(path, params=params) for path, params in [
        ("/population", {}), ("/runs", {}), ("/population/history", {}), ("/jobs", {}),
        *[(p, {"run": r}) for p in ("/population", "/population/history", "/jobs")
          for r in ("good", "bad-status", "bad-history", "bad-lineage", "escape", "nope")]]]
    assert [a.status_code for a in answers if a.status_code >= 500 and a.status_code != 503] == []
    assert answers[0].status_code == 200 and answers[0].json()["run_id"] != "bad-status"
    assert "escape" not in [r["run_id"] for r in answers[1].json()["runs"]]
    assert client.get("/population", params={"run": "escape"}).status_code == 404
    assert all(str(tmp_path) not in a.text for a in answers)


SECRET = "do-not-serve-7f3a"


@pytest.mark.parametrize("name", ["config.json", "summary.json", "status.json", "history.parquet", "lineage.json"])
@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_service_refuses_a_run_file_that_links_out_of_the_folder(pristine, tmp_path, name, link):
    """A run file that is a link to a file elsewhere is never read: the answers that would read it say 403 and name the
    file, and the linked file's content appears in no answer."""
    root = tmp_path / "runs"
    run = root / "x"
    shutil.copytree(pristine, run)
    secret = tmp_path / "credentials.json"
    secret.write_text(json.dumps({"state": "done", "run_id": SECRET, "members": SECRET, "kind": SECRET}))
    (run / name).unlink(missing_ok=True)
    (run / name).symlink_to(secret) if link == "symlink" else os.link(secret, run / name)
    client = TestClient(create_app(root), raise_server_exceptions=False)
    paths = ["/runs", "/runs/x/summary", "/runs/x/lineage", "/population", "/population/history", "/jobs"]
    answers = {p: client.get(p, params={} if p.startswith("/runs") else {"run": "x"}) for p in paths}
    assert all(SECRET not in a.text for a in answers.values()), {p: a.text[:200] for p, a in answers.items()}
    assert all(a.status_code in (200, 403, 404) for a in answers.values()), {p: a.status_code for p, a in answers.items()}
    reads = {"config.json": ["/runs/x/summary"], "summary.json": ["/runs/x/summary"], "lineage.json": ["/runs/x/lineage"],
             "status.json": ["/runs/x/summary", "/population"], "history.parquet": ["/population/history"]}[name]
    for path in reads:
        assert answers[path].status_code == 403 and name in answers[path].json()["detail"], (path, answers[path].text)


def test_service_refuses_a_job_folder_reached_through_a_symlink(pristine, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(pristine, root / "x")
    elsewhere = tmp_path / "elsewhere" / "job-1"
    elsewhere.mkdir(parents=True)
    (elsewhere / "status.json").write_text(json.dumps({"id": SECRET, "kind": "robust", "state": "done"}))
    (root / "x" / "jobs").symlink_to(tmp_path / "elsewhere")
    client = TestClient(create_app(root), raise_server_exceptions=False)
    answers = [client.get("/jobs", params={"run": "x"}), client.get("/jobs/job-1", params={"run": "x"})]
    assert all(SECRET not in a.text for a in answers) and all(a.status_code in (200, 403, 404) for a in answers)
