"""The package as a user installs it (issue 21, item 4): `pip wheel` builds without a packaging warning, the wheel
holds the dashboard's files, and the installed wheel serves the dashboard from outside the checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "popvae", "models", "attacks", "population", "cluster")
STATIC = ROOT / "cluster" / "static"


def test_the_wheel_ships_the_dashboard_and_serves_it_from_outside_the_checkout(tmp_path):
    src = tmp_path / "src"  # a copy: an in-tree build would leave build/ in the checkout
    src.mkdir()
    for name in SOURCES:
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if (ROOT / name).is_dir() else {}))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=120)
    assert built.returncode == 0 and "Warning" not in built.stderr and "absent from" not in built.stderr, built.stderr
    (wheel,) = (tmp_path / "dist").glob("popvae-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"popvae/cluster/static/{f.relative_to(STATIC)}" for f in STATIC.rglob("*") if f.is_file()}
    assert expected and expected <= names, sorted(expected - names)

    target = tmp_path / "site"
    installed = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                               capture_output=True, text=True, timeout=120)
    assert installed.returncode == 0, installed.stderr
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "runs").mkdir(parents=True)
    probe = (
        "import popvae, sys\n"
        "from fastapi.testclient import TestClient\n"
        "from popvae.cluster.service import create_app\n"
        "client = TestClient(create_app('runs'))\n"
        "page, js, docs = client.get('/'), client.get('/static/app.js'), client.get('/static/swagger/swagger-ui.css')\n"
        "print(popvae.__file__, page.status_code, 'popvae' in page.text, js.status_code, docs.status_code)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}  # the venv's dependencies, the wheel's popvae
    served = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert served.returncode == 0, served.stderr
    where, page, named, js, docs = served.stdout.split()
    assert Path(where).is_relative_to(target), where  # not the checkout's (editable) copy
    assert (page, named, js, docs) == ("200", "True", "200", "200"), served.stdout
